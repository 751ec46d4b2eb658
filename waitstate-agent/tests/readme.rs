//! The README's agent snippets are agent configurations (the core's docs test checks the
//! rest of each snippet as an SDK configuration).

use waitstate_agent::AgentConfig;

#[test]
fn the_readme_agent_snippets_are_agent_configurations() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut checked = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("a closed code block");
        let snippet = &body[..end];
        if snippet.contains("[agent") {
            // Tags the snippet may map to must be declared, as in a real file.
            let text = format!("{snippet}\n[tags]\nfree = 10\ncheckout = 50\n");
            let text = if snippet.contains("[tags]") {
                snippet.to_owned()
            } else {
                text
            };
            AgentConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            checked += 1;
        }
        rest = &body[end + 3..];
    }
    assert!(checked >= 1, "found {checked} agent snippets");
}
