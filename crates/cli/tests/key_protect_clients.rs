//! IBM's own Key Protect clients, unchanged but for their URLs, against the real binary: each
//! runs an application's scenario (`tests/clients/`) signed in with a principal's API key through
//! `/identity/token`, and what the server then holds is checked here.

mod common;

use std::path::{Path, PathBuf};

use common::{principal_with_api_key, setup, start};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What the store holds of a key a scenario made, by its name: nothing once purged, else its state.
enum Left {
    Purged,
    Destroyed,
    Active,
}

/// Runs `program scenario` against a fresh server as an application principal of one vault, then
/// checks that the keys the scenario made are what the store holds: each `(name, left)`, made by
/// that principal.
async fn run_scenario(program: &Path, scenario: &str, passed: &str, keys: &[(&str, Left)]) {
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
    // A client that hangs fails the test within two minutes, with what it printed so far.
    let run = tokio::process::Command::new("timeout")
        .args(["--signal=KILL", "120"])
        .arg(program)
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

    for (name, left) in keys {
        let found = c
            .get(&format!(
                "/api/v4/managed_keys?vault.id={vault}&label={name}\
                 &state=pre_activation,active,deactivated,destroyed,compromised,destroyed_compromised"
            ))
            .await
            .unwrap();
        let state = match left {
            Left::Purged => {
                assert_eq!(found.body["total_count"], 0, "{name}: {}", found.body);
                continue;
            }
            Left::Destroyed => "destroyed",
            Left::Active => "active",
        };
        assert_eq!(found.body["total_count"], 1, "{name}: {}", found.body);
        let key = &found.body["managed_keys"][0];
        assert_eq!(key["state"], state, "{name}: {key}");
        assert_eq!(key["created_by"], "kp-application");
    }
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
        &[
            ("py-root-1", Left::Purged),
            ("py-imported", Left::Active),
            ("py-ringed", Left::Active),
        ],
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
        &[
            ("node_key.v2-x", Left::Destroyed),
            ("node-imported", Left::Active),
        ],
    )
    .await;
}
