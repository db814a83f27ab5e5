//! IBM's own Key Protect clients, unchanged but for their URLs, against the real binary: each
//! runs an application's scenario (`tests/clients/`) signed in with a principal's API key through
//! `/identity/token`, and what the server then holds is checked here.

mod common;

use std::path::PathBuf;

use common::{principal_with_api_key, setup, start};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn ibms_python_client_runs_an_applications_scenario() {
    let root = repo_root();
    let python = std::env::var("KEYPLANE_TEST_KP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/clients-venv/bin/python"));
    assert!(
        python.exists(),
        "the Key Protect client test needs IBM's Python client (PyPI keyprotect) in {} \
         (scripts/test.sh installs it)",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let apikey = principal_with_api_key(
        &c,
        "py-application",
        "service",
        &[
            ("key_custodian_creator", Some(vault.as_str())),
            ("key_custodian_deployer", Some(vault.as_str())),
            // Deleting a key destroys it: a vault administrator's right.
            ("vault_administrator", Some(vault.as_str())),
        ],
    )
    .await;
    let run = tokio::process::Command::new(&python)
        .arg(root.join("tests/clients/key_protect.py"))
        .env("KEYPLANE_URL", &server.base)
        .env("KEYPLANE_API_KEY", &apikey)
        .env("KEYPLANE_INSTANCE", &keystore)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("python client scenario passed"), "{stdout}");

    // What the client did is what the store holds: its key, destroyed, made by its principal.
    let keys = c
        .get(&format!(
            "/api/v4/managed_keys?vault.id={vault}&state=destroyed&label=py-root-1"
        ))
        .await
        .unwrap();
    assert_eq!(keys.body["total_count"], 1, "{}", keys.body);
    assert_eq!(keys.body["managed_keys"][0]["created_by"], "py-application");
    assert_eq!(keys.body["managed_keys"][0]["version"], 2);
}
