//! IBM's own Key Protect clients, unchanged but for their URLs, against the real binary: each
//! runs an application's scenario (`tests/clients/`) signed in with a principal's API key through
//! `/identity/token`, and what the server then holds is checked here.

mod common;

use std::path::{Path, PathBuf};

use common::{principal_with_api_key, setup, start};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `program scenario` against a fresh server as an application principal of one vault, then
/// checks that the key the scenario made, named `key_name`, is what the store holds: destroyed,
/// made by that principal, rotated once.
async fn run_scenario(program: &Path, scenario: &str, passed: &str, key_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let apikey = principal_with_api_key(
        &c,
        "kp-application",
        "service",
        &[
            ("key_custodian_creator", Some(vault.as_str())),
            ("key_custodian_deployer", Some(vault.as_str())),
            // Deleting a key destroys it: a vault administrator's right.
            ("vault_administrator", Some(vault.as_str())),
        ],
    )
    .await;
    let run = tokio::process::Command::new(program)
        .arg(repo_root().join("tests/clients").join(scenario))
        .current_dir(repo_root().join("tests/clients"))
        .env("KEYPLANE_URL", &server.base)
        .env("KEYPLANE_API_KEY", &apikey)
        .env("KEYPLANE_INSTANCE", &keystore)
        .output()
        .await
        .expect("the client runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(passed), "{stdout}");

    let keys = c
        .get(&format!(
            "/api/v4/managed_keys?vault.id={vault}&state=destroyed&label={key_name}"
        ))
        .await
        .unwrap();
    assert_eq!(keys.body["total_count"], 1, "{}", keys.body);
    let key = &keys.body["managed_keys"][0];
    assert_eq!(key["created_by"], "kp-application");
    assert_eq!(key["version"], 2);
}

#[tokio::test]
async fn ibms_python_client_runs_an_applications_scenario() {
    let python = std::env::var("KEYPLANE_TEST_KP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/clients-venv/bin/python"));
    assert!(
        python.exists(),
        "this test needs IBM's Python client (PyPI keyprotect) in {} (scripts/test.sh installs it)",
        python.display()
    );
    run_scenario(
        &python,
        "key_protect.py",
        "python client scenario passed",
        "py-root-1",
    )
    .await;
}

#[tokio::test]
async fn ibms_node_client_runs_an_applications_scenario() {
    assert!(
        repo_root()
            .join("tests/clients/node_modules/@ibm-cloud/ibm-key-protect")
            .is_dir(),
        "this test needs IBM's Node.js client (npm @ibm-cloud/ibm-key-protect) in tests/clients \
         (scripts/test.sh installs it)"
    );
    run_scenario(
        Path::new("node"),
        "key_protect.js",
        "node client scenario passed",
        "node_key.v2-x",
    )
    .await;
}
