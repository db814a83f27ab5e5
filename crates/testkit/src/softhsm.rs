//! SoftHSM2 tokens for tests (the softhsm2 package `scripts/test.sh` installs).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once per process, when its library initialises: a test that
//! talks to a token itself runs in a process that has the variable set from its start.

use std::path::Path;

/// SoftHSM2's PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A fresh token labelled `label` with user PIN `pin`, kept in `dir`; returns the
/// `SOFTHSM2_CONF` path a process sets to see it.
pub fn token(dir: &Path, label: &str, pin: &str) -> String {
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM2 is missing: scripts/test.sh installs the softhsm2 package"
    );
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).expect("a token directory");
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("the SoftHSM2 configuration");
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", "security-officer-1234", "--pin", pin])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    conf.to_str().expect("a UTF-8 path").to_owned()
}

/// Runs test `test` of the current test binary in a child process that sees a fresh token
/// (`label`, `pin`), with `child_var` set to the configuration's path; asserts it passed. In
/// the child (where `child_var` is set) returns that path instead, and the caller runs the body.
pub fn in_child_with_token(test: &str, child_var: &str, label: &str, pin: &str) -> Option<String> {
    if let Ok(conf) = std::env::var(child_var) {
        return Some(conf);
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let conf = token(dir.path(), label, pin);
    let child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(child_var, &conf)
        .output()
        .expect("the test binary runs");
    let out = String::from_utf8_lossy(&child.stdout);
    // "1 passed" guards against a filter that ran nothing.
    assert!(
        child.status.success() && out.contains("1 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    None
}
