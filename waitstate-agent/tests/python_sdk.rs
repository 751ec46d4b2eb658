//! The published Python SDK (`waitstate` 0.1 from PyPI) in agent mode against a running
//! agent: gate, report latency, report error, report metric all accepted; a rule on the
//! reported latency sheds `free` through the agent while `enterprise` passes.
//!
//! `scripts/test` installs the SDK in a venv and sets `WAITSTATE_PYTHON` to its python.
//! Without the variable (a plain `cargo test`) the test is skipped with a message; with
//! it, an SDK that cannot be imported or does not behave fails the test.

use std::path::Path;
use std::time::Duration;

use tokio::net::TcpListener;
use waitstate_agent::{Agent, AgentConfig, AgentServer};

const CONFIG: &str = r#"
[tags]
enterprise = 100
pro = 50
free = 10
[[rules]]
rule = "when p95_latency of free > 500ms then block free"
[[rules]]
rule = "when queue_depth of pro > 5 then block pro"
[metrics]
custom = ["queue_depth"]
"#;

async fn python(python: &str, url: &str, phase: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_agent.py");
    let out = tokio::process::Command::new(python)
        .arg(&script)
        .arg(url)
        .arg(phase)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("WAITSTATE_PYTHON={python} cannot be run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- python {phase} ---\n{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the Python SDK's {phase} phase failed ({}):\n{stdout}{stderr}",
        out.status
    );
}

#[tokio::test]
async fn the_published_python_sdk_works_against_the_agent() {
    let Ok(py) = std::env::var("WAITSTATE_PYTHON") else {
        println!(
            "SKIPPED: WAITSTATE_PYTHON is not set. Run `scripts/test` (it installs the \
             published Python SDK, `pip install 'waitstate==0.1.*'`, in target/py-venv)."
        );
        return;
    };
    let agent = Agent::new(AgentConfig::from_toml_str(CONFIG).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = AgentServer::serve(agent.clone(), Some(listener), None).unwrap();
    let url = server.url().unwrap();

    python(&py, &url, "feed").await;

    // Everything the SDK sent arrived: the latency reports (the last one failed) ...
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(300)).await;
    agent.housekeep();
    let free = agent.waitstate().counters("free").unwrap();
    assert_eq!((free.completed, free.errors), (21, 1), "{free:?}");
    assert_eq!(free.rejected_total(), 1, "the NaN weight");
    assert_eq!(
        agent.waitstate().counters("enterprise").unwrap().completed,
        20
    );
    // ... and the rules' next ticks read them (and the metric).
    tokio::time::advance(Duration::from_millis(2100)).await;
    tokio::time::resume();

    python(&py, &url, "shed").await;
    server.shutdown().await;
}
