//! The client verbs of the `keyplane` binary against a running server: tables and JSON, ETags
//! read for the user or pinned, confirmations, the refused disconnect with its way out, and the
//! documented exit codes.

mod common;

use common::*;
use serde_json::{Value, json};

fn json_of(run: &AdminRun) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr))
}

/// `keyplane approval DECISION ID` run by a second principal (a vault administrator), signed in
/// with its own API key and no profile.
async fn decide_as_second_person(
    server: &keyplane_testkit::process::Server,
    dir: &std::path::Path,
    decision: &str,
    approval: &str,
) -> AdminRun {
    let apikey = principal_with_api_key(
        &server.client(),
        "second",
        "user",
        &[("vault_administrator", None)],
    )
    .await;
    keyplane_with(
        &[
            "approval",
            decision,
            approval,
            "--url",
            &server.base,
            "--api-key",
            &apikey,
        ],
        None,
        "",
        &[("KEYPLANE_CONFIG", dir.join("none.toml").to_str().unwrap())],
    )
    .await
}

#[tokio::test]
async fn vaults_keys_and_keystores_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let s = Some(&server);

    // Vaults: create (JSON for scripts), list as a table, get.
    let created = keyplane(
        &["vault", "create", "--name", "payments", "--output", "json"],
        s,
        "",
    )
    .await;
    assert!(created.success, "{}", created.stderr);
    let vault = json_of(&created)["id"].as_str().unwrap().to_owned();
    let listed = keyplane(&["vault", "list"], s, "").await;
    assert!(listed.success, "{}", listed.stderr);
    let header = listed.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("NAME"),
        "{header}"
    );
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with(&vault) && l.contains("payments")),
        "{}",
        listed.stdout
    );
    let got = keyplane(&["vault", "get", &vault], s, "").await;
    assert!(got.stdout.contains("payments"), "{}", got.stdout);
    let yaml = keyplane(&["vault", "get", &vault, "--output", "yaml"], s, "").await;
    assert!(
        yaml.stdout.lines().any(|l| l == "name: payments"),
        "{}",
        yaml.stdout
    );

    // A keystore (tested first with --dry-run) and a template, then a key.
    let tried = keyplane(
        &[
            "keystore",
            "connect",
            "internal",
            "--vault",
            &vault,
            "--name",
            "internal-1",
            "--group",
            "prod",
            "--dry-run",
        ],
        s,
        "",
    )
    .await;
    assert!(tried.success, "{}", tried.stderr);
    assert!(
        tried.stdout.contains("nothing was saved"),
        "{}",
        tried.stdout
    );
    let connected = keyplane(
        &[
            "keystore",
            "connect",
            "internal",
            "--vault",
            &vault,
            "--name",
            "internal-1",
            "--group",
            "prod",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    assert!(connected.success, "{}", connected.stderr);
    let keystore = json_of(&connected)["id"].as_str().unwrap().to_owned();
    let template = keyplane(
        &[
            "template",
            "create",
            "--vault",
            &vault,
            "--name",
            "T1",
            "--algorithm",
            "aes",
            "--size",
            "256",
            "--keystore-type",
            "ibm_cloud_kms",
            "--group",
            "prod",
        ],
        s,
        "",
    )
    .await;
    assert!(template.success, "{}", template.stderr);
    assert!(
        template.stdout.starts_with("created template T1"),
        "{}",
        template.stdout
    );
    let made = keyplane(
        &[
            "key",
            "create",
            "--template",
            "T1",
            "--vault",
            &vault,
            "--label",
            "orders",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    assert!(made.success, "{}", made.stderr);
    let key = json_of(&made);
    assert_eq!(key["state"], "active");
    let key_id = key["id"].as_str().unwrap().to_owned();
    let listed = keyplane(
        &[
            "key",
            "list",
            "--vault.id",
            &vault,
            "--state",
            "active",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    assert_eq!(json_of(&listed).as_array().unwrap().len(), 1);
    let shown = keyplane(&["key", "get", &key_id], s, "").await;
    assert!(shown.stdout.contains("internal-1"), "{}", shown.stdout);
    assert!(shown.stdout.contains("active"), "{}", shown.stdout);
    let versions = keyplane(&["key", "versions", &key_id, "--output", "json"], s, "").await;
    assert_eq!(json_of(&versions).as_array().unwrap().len(), 1);

    // The seed's refusal: the blocking key is named with the command that unblocks it.
    let refused = keyplane(&["keystore", "disconnect", &keystore, "--yes"], s, "").await;
    assert_eq!(refused.code, Some(6), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("cannot be disconnected"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains(&format!("keyplane key deactivate {key_id}")),
        "{}",
        refused.stderr
    );

    // A stale ETag pinned by the user: refused, nothing changes.
    let stale = keyplane(
        &[
            "key",
            "deactivate",
            &key_id,
            "--if-match",
            "\"r0-00000000\"",
        ],
        s,
        "",
    )
    .await;
    assert_eq!(stale.code, Some(6), "{}", stale.stderr);
    assert!(stale.stderr.contains("ETag"), "{}", stale.stderr);
    let deactivated = keyplane(&["key", "deactivate", &key_id, "--wait"], s, "").await;
    assert!(deactivated.success, "{}", deactivated.stderr);
    assert!(
        deactivated.stdout.contains("now deactivated"),
        "{}",
        deactivated.stdout
    );
    assert!(
        deactivated
            .stderr
            .contains("1/1 keystores report not_active"),
        "{}",
        deactivated.stderr
    );

    // Destroy asks first; anything but "yes" leaves the key as it was.
    let declined = keyplane(&["key", "destroy", &key_id], s, "no\n").await;
    assert_eq!(declined.code, Some(8), "{}", declined.stderr);
    let still = keyplane(&["key", "get", &key_id, "--output", "json"], s, "").await;
    assert_eq!(json_of(&still)["state"], "deactivated");
    let destroyed = keyplane(&["key", "destroy", &key_id], s, "yes\n").await;
    assert!(destroyed.success, "{}", destroyed.stderr);

    // Now the disconnect goes through, and the keystore is gone.
    let gone = keyplane(&["keystore", "disconnect", &keystore, "--yes"], s, "").await;
    assert!(gone.success, "{}", gone.stderr);
    let listed = keyplane(
        &["keystore", "list", "--vault.id", &vault, "--output", "json"],
        s,
        "",
    )
    .await;
    assert_eq!(json_of(&listed), json!([]));
}

#[tokio::test]
async fn keys_in_bulk_from_a_csv_file_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let s = Some(&server);
    let c = server.client();
    let vault = new_vault(&c).await;
    connect_keystore(
        &c,
        &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault},
                "name": "internal-1", "groups": ["prod"]}),
    )
    .await;
    active_aes_template(&c, &vault, "ibm_cloud_kms", "prod").await;
    let mut csv = String::from("label,description\n");
    for i in 0..30 {
        csv.push_str(&format!("bulk-{i},made in bulk\n"));
    }
    // One label breaks the label rules: reported, the rest are created.
    csv.push_str("bad/label!,nope\n");
    let file = dir.path().join("keys.csv");
    std::fs::write(&file, csv).unwrap();
    let run = keyplane(
        &[
            "key",
            "create-bulk",
            "--file",
            file.to_str().unwrap(),
            "--vault",
            &vault,
            "--template",
            "T1",
        ],
        s,
        "",
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stdout.contains("created 30 of 31 keys"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("31/31 keys, 1 failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 32 (bad/label!)"),
        "{}",
        run.stderr
    );
    let listed = keyplane(
        &[
            "key",
            "list",
            "--vault.id",
            &vault,
            "--all-pages",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    assert_eq!(json_of(&listed).as_array().unwrap().len(), 30);
    let synced = keyplane(&["key", "sync-all", "--vault.id", &vault], s, "").await;
    assert!(synced.success, "{}", synced.stderr);
    assert!(
        synced.stdout.contains("synced 30 of 30 keys"),
        "{}",
        synced.stdout
    );
    assert!(
        synced.stderr.contains("30/30 keys synced, 0 failed"),
        "{}",
        synced.stderr
    );
    // Shell completions come from the same command definitions.
    let completions = keyplane(&["completions", "bash"], None, "").await;
    assert!(completions.success);
    assert!(
        completions.stdout.contains("create-bulk"),
        "completions cover the verbs"
    );
}

#[tokio::test]
async fn errors_become_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let s = Some(&server);
    let bad = keyplane(&["vault", "create", "--name", ""], s, "").await;
    assert_eq!(bad.code, Some(3), "{}", bad.stderr);
    assert!(bad.stderr.starts_with("error: "), "{}", bad.stderr);
    let missing = keyplane(
        &["key", "get", "0191c0a0-0000-7000-8000-000000000000"],
        s,
        "",
    )
    .await;
    assert_eq!(missing.code, Some(5), "{}", missing.stderr);
    let unknown_key = keyplane(&["vault", "list", "--token", "not-a-token"], s, "").await;
    assert_eq!(unknown_key.code, Some(4), "{}", unknown_key.stderr);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = keyplane(&["vault", "list", "--url", &nowhere], s, "").await;
    assert_eq!(unreachable.code, Some(7), "{}", unreachable.stderr);
}

#[tokio::test]
async fn login_keeps_a_checked_api_key_in_a_private_profile() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let apikey = principal_with_api_key(
        &server.client(),
        "operator",
        "user",
        &[("vault_administrator", None)],
    )
    .await;
    let config = dir.path().join("cli").join("config.toml");
    let env = [("KEYPLANE_CONFIG", config.to_str().unwrap())];

    // A wrong key is refused and nothing is kept.
    let wrong = keyplane_with(
        &["login", "--url", &server.base, "--profile", "ops"],
        None,
        "kp_not-a-key\n",
        &env,
    )
    .await;
    assert_eq!(wrong.code, Some(4), "{}", wrong.stderr);
    assert!(!config.exists());

    let ok = keyplane_with(
        &["login", "--url", &server.base, "--profile", "ops"],
        None,
        &format!("{apikey}\n"),
        &env,
    )
    .await;
    assert!(ok.success, "{}", ok.stderr);
    assert!(ok.stdout.contains("profile 'ops' saved"), "{}", ok.stdout);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file holds API keys");
    }

    // The profile (the default one, or named) is all a later command needs.
    let made = keyplane_with(
        &["vault", "create", "--name", "from-profile"],
        None,
        "",
        &env,
    )
    .await;
    assert!(made.success, "{}", made.stderr);
    let listed = keyplane_with(
        &["vault", "list", "--profile", "ops", "--output", "json"],
        None,
        "",
        &env,
    )
    .await;
    assert!(listed.success, "{}", listed.stderr);
    assert_eq!(json_of(&listed)[0]["created_by"], "operator");
    let unknown = keyplane_with(&["vault", "list", "--profile", "nope"], None, "", &env).await;
    assert_eq!(unknown.code, Some(1), "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no profile named 'nope'"),
        "{}",
        unknown.stderr
    );
}

#[tokio::test]
async fn updates_archives_and_a_destroy_under_dual_control() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let s = Some(&server);
    let c = server.client();
    let vault = new_vault(&c).await;
    let keystore = connect_keystore(
        &c,
        &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault},
                "name": "internal-1", "groups": ["prod"]}),
    )
    .await;
    active_aes_template(&c, &vault, "ibm_cloud_kms", "prod").await;
    let ok = |run: &AdminRun| assert!(run.success, "{}\n{}", run.stdout, run.stderr);

    let run = keyplane(
        &["vault", "update", &vault, "--description", "payments team"],
        s,
        "",
    )
    .await;
    ok(&run);
    let shown = keyplane(&["vault", "get", &vault, "--output", "json"], s, "").await;
    assert_eq!(json_of(&shown)["description"], "payments team");

    let templates = keyplane(
        &["template", "list", "--vault.id", &vault, "--output", "json"],
        s,
        "",
    )
    .await;
    let template = json_of(&templates)[0]["id"].as_str().unwrap().to_owned();
    ok(&keyplane(
        &[
            "template",
            "update",
            &template,
            "--description",
            "AES for prod",
        ],
        s,
        "",
    )
    .await);
    ok(&keyplane(&["template", "archive", &template], s, "").await);
    let refused = keyplane(
        &[
            "key",
            "create",
            "--template",
            "T1",
            "--vault",
            &vault,
            "--label",
            "late",
        ],
        s,
        "",
    )
    .await;
    assert_eq!(refused.code, Some(6), "archived: {}", refused.stderr);
    ok(&keyplane(&["template", "unarchive", &template], s, "").await);

    let made = keyplane(
        &[
            "key",
            "create",
            "--template",
            "T1",
            "--vault",
            &vault,
            "--label",
            "guarded",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    ok(&made);
    let key = json_of(&made)["id"].as_str().unwrap().to_owned();
    ok(&keyplane(
        &[
            "key",
            "update",
            &key,
            "--description",
            "two people to destroy",
        ],
        s,
        "",
    )
    .await);
    let dry = keyplane(&["key", "update-from-template", &key, "--dry-run"], s, "").await;
    ok(&dry);
    assert!(
        dry.stdout.contains("would target") && dry.stdout.contains("internal-1"),
        "{}",
        dry.stdout
    );
    ok(&keyplane(
        &["keystore", "update", &keystore, "--description", "EU"],
        s,
        "",
    )
    .await);
    let held = keyplane(&["keystore", "keys", &keystore], s, "").await;
    assert!(held.stdout.contains("guarded"), "{}", held.stdout);
    ok(&keyplane(&["keystore", "tasks", &keystore], s, "").await);

    // Dual control: the destroy becomes a request that a second person approves.
    ok(&keyplane(&["vault", "dual-control", &vault, "on"], s, "").await);
    ok(&keyplane(&["key", "deactivate", &key], s, "").await);
    let requested = keyplane(&["key", "destroy", &key, "--yes"], s, "").await;
    ok(&requested);
    assert!(
        requested.stdout.contains("awaits approval"),
        "{}",
        requested.stdout
    );
    let pending = keyplane(&["approval", "list", "--output", "json"], s, "").await;
    let approval = json_of(&pending)[0]["id"].as_str().unwrap().to_owned();
    let approved = decide_as_second_person(&server, dir.path(), "approve", &approval).await;
    ok(&approved);
    let gone = keyplane(&["key", "get", &key, "--output", "json"], s, "").await;
    assert_eq!(json_of(&gone)["state"], "destroyed");
    ok(&keyplane(&["vault", "dual-control", &vault, "off"], s, "").await);
    ok(&keyplane(&["key", "delete", &key, "--yes"], s, "").await);
    let missing = keyplane(&["key", "get", &key], s, "").await;
    assert_eq!(missing.code, Some(5), "{}", missing.stderr);
}

#[tokio::test]
async fn the_other_verbs_in_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let s = Some(&server);
    let c = server.client();
    let ok = |run: &AdminRun| assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let (vault, keystore) = setup(&c, "pre_activation", "aes", "256").await;

    let shown = keyplane(&["keystore", "get", &keystore], s, "").await;
    ok(&shown);
    assert!(shown.stdout.contains("internal-1"), "{}", shown.stdout);
    let health = keyplane(
        &["keystore", "status", &keystore, "--output", "json"],
        s,
        "",
    )
    .await;
    assert_eq!(json_of(&health)["health_status"], "ok", "{}", health.stdout);
    let listed = keyplane(
        &["template", "list", "--vault.id", &vault, "--output", "json"],
        s,
        "",
    )
    .await;
    let template = json_of(&listed)[0]["id"].as_str().unwrap().to_owned();
    let got = keyplane(&["template", "get", &template], s, "").await;
    ok(&got);
    assert!(got.stdout.contains("T1"), "{}", got.stdout);

    // A pre-active key: activate, rotate (waiting for every keystore), sync, status, compromise.
    let made = keyplane(
        &[
            "key",
            "create",
            "--template",
            "T1",
            "--vault",
            &vault,
            "--label",
            "k-first",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    let key = json_of(&made)["id"].as_str().unwrap().to_owned();
    assert_eq!(json_of(&made)["state"], "pre_activation");
    let activated = keyplane(&["key", "activate", &key, "--wait"], s, "").await;
    ok(&activated);
    assert!(
        activated.stdout.contains("now active"),
        "{}",
        activated.stdout
    );
    let rotated = keyplane(
        &["key", "rotate", &key, "--wait", "--output", "json"],
        s,
        "",
    )
    .await;
    ok(&rotated);
    let versions = keyplane(&["key", "versions", &key, "--output", "json"], s, "").await;
    assert_eq!(json_of(&versions).as_array().unwrap().len(), 2);
    let synced = keyplane(&["key", "sync", &key], s, "").await;
    ok(&synced);
    assert!(synced.stdout.contains("internal-1"), "{}", synced.stdout);
    let status = keyplane(&["key", "status", &key, "--output", "json"], s, "").await;
    ok(&status);
    assert_eq!(json_of(&status)[0]["status"], "active", "{}", status.stdout);
    let compromised = keyplane(&["key", "compromise", &key, "--yes"], s, "").await;
    ok(&compromised);
    let after = keyplane(&["key", "get", &key, "--output", "json"], s, "").await;
    assert_eq!(json_of(&after)["state"], "compromised");

    // Guards: a template in use and a vault that is not empty are refused (exit 6).
    let in_use = keyplane(&["template", "delete", &template, "--yes"], s, "").await;
    assert_eq!(in_use.code, Some(6), "{}", in_use.stderr);
    let not_empty = keyplane(&["vault", "delete", &vault, "--yes"], s, "").await;
    assert_eq!(not_empty.code, Some(6), "{}", not_empty.stderr);

    // Dual control: a request that the second person rejects leaves the key as it was.
    let second = new_vault(&c).await;
    ok(&keyplane(&["vault", "dual-control", &second, "on"], s, "").await);
    active_aes_template(&c, &second, "ibm_cloud_kms", "none").await;
    let guarded = keyplane(
        &[
            "key",
            "create",
            "--template",
            "T1",
            "--vault",
            &second,
            "--label",
            "k-guarded",
            "--output",
            "json",
        ],
        s,
        "",
    )
    .await;
    let guarded = json_of(&guarded)["id"].as_str().unwrap().to_owned();
    ok(&keyplane(&["key", "deactivate", &guarded], s, "").await);
    ok(&keyplane(&["key", "destroy", &guarded, "--yes"], s, "").await);
    let pending = keyplane(&["approval", "list", "--output", "json"], s, "").await;
    let approval = json_of(&pending)[0]["id"].as_str().unwrap().to_owned();
    let one = keyplane(&["approval", "get", &approval], s, "").await;
    ok(&one);
    assert!(one.stdout.contains("pending"), "{}", one.stdout);
    let rejected = decide_as_second_person(&server, dir.path(), "reject", &approval).await;
    ok(&rejected);
    let kept = keyplane(&["key", "get", &guarded, "--output", "json"], s, "").await;
    assert_eq!(json_of(&kept)["state"], "deactivated");

    // An empty vault goes.
    let empty = new_vault(&c).await;
    ok(&keyplane(&["vault", "delete", &empty, "--yes"], s, "").await);
    let gone = keyplane(&["vault", "get", &empty], s, "").await;
    assert_eq!(gone.code, Some(5), "{}", gone.stderr);
}
