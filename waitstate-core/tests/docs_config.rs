//! The configuration files the repository publishes, and every TOML snippet of the README,
//! are valid configurations: the docs cannot drift from the engine.

#![cfg(feature = "toml")]

use std::path::Path;

use waitstate_core::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn parse(what: &str, text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"))
}

/// The text without the tables of the agent (`[agent*]`) and of the control plane
/// (`[server]`, `[[keys]]`): each reads the SDK's format plus its own tables, and its own
/// tests check those (`waitstate-agent/tests/readme.rs`, `waitstate-control`'s
/// `the_readme_control_plane_snippets_are_configurations`), so the rest must be an SDK
/// configuration.
fn without_agent_tables(text: &str) -> String {
    let mut in_agent = false;
    let mut out = String::new();
    for line in text.lines() {
        let header = line.trim_start();
        if header.starts_with('[') {
            let name = header.trim_start_matches('[');
            in_agent = name.starts_with("agent")
                || name.starts_with("server")
                || name.starts_with("keys]");
        }
        if !in_agent {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_readme_toml_snippets_are_configurations() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut snippets = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("a closed code block");
        parse("README.md", &without_agent_tables(&body[..end]));
        snippets += 1;
        rest = &body[end + 3..];
    }
    assert!(snippets >= 3, "found {snippets} TOML snippets");
}

#[test]
fn the_published_configurations_parse() {
    let scenarios = parse(
        "scenarios/waitstate.toml",
        &std::fs::read_to_string(root().join("scenarios/waitstate.toml")).unwrap(),
    );
    // No capacity number: the scenarios run on adaptive admission.
    assert_eq!(scenarios.limits.concurrency, None);
    assert!(scenarios.admission.adaptive);
    for file in ["examples/axum-tiers.toml", "examples/actix-tiers.toml"] {
        parse(file, &std::fs::read_to_string(root().join(file)).unwrap());
    }
}
