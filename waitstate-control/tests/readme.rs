//! The README's control-plane snippets (`[server]`, `[[keys]]`) are control-plane
//! configurations (the core's docs test checks the rest of each snippet as an SDK one).

use waitstate_control::ControlConfig;

#[test]
fn the_readme_control_plane_snippets_are_configurations() {
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
        rest = &body[end + 3..];
        if !(snippet.contains("[server]") || snippet.contains("[[keys]]")) {
            continue;
        }
        // A snippet shows one part; a file needs a key to load.
        let text = if snippet.contains("[[keys]]") {
            snippet.to_owned()
        } else {
            format!(
                "{snippet}\n[[keys]]\npublish_key = \"pk\"\nsecret_key = \"sk\"\norg_id = \"o\"\n"
            )
        };
        let redis = text.contains("redis_url");
        match ControlConfig::from_toml_str(&text) {
            Ok(_) => {}
            // Without the `redis` feature a Redis URL is refused, by design, naming it.
            Err(e) if redis && !cfg!(feature = "redis") && e.key.contains("redis") => {}
            Err(e) => panic!("{e}\n{text}"),
        }
        checked += 1;
    }
    assert!(checked >= 1, "found {checked} control-plane snippets");
}
