//! A bounded schemathesis run (pinned in `tests/fuzz/requirements.txt`, installed by
//! `scripts/test.sh` into `target/fuzz-venv`) against the real server with a signed-in user:
//! every operation of the schema with generated arguments, and not one 5xx response or error
//! without a public code (`tests/fuzz/hooks.py`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::support::app::{Backend, TestApp};

fn schemathesis() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-venv/bin/schemathesis");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {} is missing (scripts/test.sh installs it)",
        path.display()
    );
    eprintln!("SKIPPED the API fuzzer: {} is missing", path.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_operations_get_no_server_error() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.sign_up("fuzzer@example.com").await;
    // A project of its own, so operations on owned objects have something to find.
    app.create_project(&token, "a todo app").await;
    let run = Command::new(schemathesis)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz"))
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .args(["run", &app.url("/graphql")])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "no_server_errors"])
        .args([
            "--hypothesis-max-examples",
            "25",
            "--hypothesis-derandomize",
        ])
        .args([
            "--hypothesis-deadline",
            "none",
            "--request-timeout",
            "10000",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the fuzzer ends within 5 minutes")
        .expect("the fuzzer runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("no_server_errors"), "{stdout}");
    assert!(stdout.contains("PASSED"), "{stdout}");
}
