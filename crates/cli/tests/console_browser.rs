//! The web console in a real browser: headless Chromium, driven by `tests/browser/console.mjs`
//! (playwright-core), walks a custodian's whole flow against the real binary. Screenshots of each
//! step are kept in `target/console-screenshots`.

mod common;

use std::path::PathBuf;

use common::{principal_with_api_key, start};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn a_custodian_connects_distributes_and_disconnects_in_the_browser() {
    let root = repo_root();
    let browser_tests = root.join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").is_dir()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and playwright-core in tests/browser \
         (scripts/test.sh installs both)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let apikey = principal_with_api_key(
        &server.client(),
        "custodian",
        "user",
        &[("administrator", None)],
    )
    .await;
    let screenshots = root.join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let run = tokio::process::Command::new("node")
        .arg("console.mjs")
        .current_dir(&browser_tests)
        .env("KEYPLANE_URL", &server.base)
        .env("KEYPLANE_API_KEY", &apikey)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("console flow passed"), "{stdout}");

    // What the browser did is what the store holds: the keystore is gone, the key destroyed.
    let c = server.client();
    let keystores = c.get("/api/v4/keystores").await.unwrap();
    assert_eq!(keystores.body["total_count"], 0, "{}", keystores.body);
    let keys = c.get("/api/v4/managed_keys?state=destroyed").await.unwrap();
    assert_eq!(keys.body["total_count"], 1, "{}", keys.body);
    assert_eq!(keys.body["managed_keys"][0]["created_by"], "custodian");
    // Every step left its screenshot.
    let shots = std::fs::read_dir(&screenshots).unwrap().count();
    assert!(shots >= 14, "{shots} screenshots");
}
