//! The Debian package (`scripts/package.sh`), built from this build's binary: what it holds,
//! installed for real with `dpkg -i` (it needs root, as CI runs), its unit file accepted by
//! `systemd-analyze verify`, then purged. The database directory survives the purge.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_debian_package_installs_a_hardened_service() {
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(repo().join("scripts/package.sh"))
        .arg(out.path())
        .env("KEYPLANE_PACKAGE_BINARY", common::binary())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    let deb = deb.as_str();

    let (ok, contents) = run("dpkg-deb", &["--contents", deb]);
    assert!(ok, "{contents}");
    for path in [
        "./usr/bin/keyplane",
        "./lib/systemd/system/keyplane.service",
        "./etc/keyplane/keyplane.toml",
        "./usr/share/man/man1/keyplane.1.gz",
    ] {
        assert!(contents.contains(path), "{path} missing: {contents}");
    }
    let (_, package) = run("dpkg-deb", &["--field", deb, "Package", "Depends"]);
    assert!(package.contains("Package: keyplane") && package.contains("adduser"));
    // An edited configuration survives upgrades.
    let (_, conffiles) = run("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/keyplane/keyplane.toml");

    // The man page is generated from the CLI's definition.
    let extracted = tempfile::tempdir().unwrap();
    let dir = extracted.path().to_str().unwrap();
    assert!(run("dpkg-deb", &["-x", deb, dir]).0);
    let (ok, page) = run(
        "sh",
        &[
            "-c",
            &format!("gzip -dc {dir}/usr/share/man/man1/keyplane.1.gz"),
        ],
    );
    assert!(ok);
    assert!(page.contains(".TH keyplane 1"), "{page}");
    assert!(page.contains("serve") && page.contains("admin"));

    let root = run("id", &["-u"]).1.trim() == "0";
    assert!(root, "installing the package needs root (CI runs as root)");
    let (ok, log) = run("dpkg", &["-i", deb]);
    assert!(ok, "dpkg -i: {log}");
    let installed = || {
        let (ok, verify) = run(
            "systemd-analyze",
            &["verify", "/lib/systemd/system/keyplane.service"],
        );
        assert!(
            ok && verify.trim().is_empty(),
            "systemd-analyze verify: {verify}"
        );
        let unit = std::fs::read_to_string("/lib/systemd/system/keyplane.service").unwrap();
        for setting in [
            "User=keyplane",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ProtectSystem=strict",
            "StateDirectory=keyplane",
            "LimitCORE=0",
            "Environment=KEYPLANE_ADMIN_TOKEN_FILE=/var/lib/keyplane/first-admin-token",
            "ExecStart=/usr/bin/keyplane serve --config /etc/keyplane/keyplane.toml",
        ] {
            assert!(unit.contains(setting), "{setting}");
        }
        let (ok, user) = run("id", &["keyplane"]);
        assert!(ok, "{user}");
        let (_, state) = run("stat", &["-c", "%U %a", "/var/lib/keyplane"]);
        assert_eq!(state.trim(), "keyplane 700");
        let (_, config) = run("stat", &["-c", "%U:%G %a", "/etc/keyplane/keyplane.toml"]);
        assert_eq!(config.trim(), "root:keyplane 640");
        let (ok, version) = run("/usr/bin/keyplane", &["--version"]);
        assert!(ok && version.contains("keyplane"), "{version}");
    };
    let outcome = std::panic::catch_unwind(installed);
    let (purged, log) = run("dpkg", &["--purge", "keyplane"]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(purged, "dpkg --purge: {log}");
    assert!(!Path::new("/usr/bin/keyplane").exists());
    assert!(
        Path::new("/var/lib/keyplane").exists(),
        "the keys' database is kept"
    );
    let _ = std::fs::remove_dir("/var/lib/keyplane");
}
