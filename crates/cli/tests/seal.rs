//! End-to-end: the seal modes, the sealed state and master key rotation, through the real binary.

mod common;

use std::collections::BTreeMap;

use common::*;
use keyplane_testkit::process::{Client, Server};
use serde_json::{Value, json};

async fn get(c: &Client, path: &str) -> (u16, Value) {
    let r = c.get(path).await.unwrap();
    (r.status, r.body)
}

async fn unseal(c: &Client, body: Value) -> (u16, Value) {
    let r = c.post("/api/v4/system/unseal", &body).await.unwrap();
    (r.status, r.body)
}

/// Key operations and key metadata answer 503 `sealed`; health says so too.
async fn assert_sealed(c: &Client, keystore: Option<(&str, &str)>) {
    let health = c
        .http
        .get(format!("{}/health", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "sealed");
    // Not ready either, and the load balancer is told why.
    let ready = c
        .http
        .get(format!("{}/ready", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["reasons"], json!(["sealed"]), "{body}");
    let (status, body) = get(c, "/api/v4/vaults").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errors"][0]["code"], "sealed");
    if let Some((keystore, key_ref)) = keystore {
        let (status, body) = data_plane(c, keystore, key_ref, "wrap", &json!({})).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["resources"][0]["reasons"][0]["code"], "sealed");
        assert!(
            body["resources"][0]["errorMsg"]
                .as_str()
                .unwrap()
                .starts_with("Service Unavailable")
        );
    }
}

fn shamir_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_SEAL", "shamir"),
    ]
}

/// The key ceremony and the custodians' unseal: init prints the shares once; the server starts
/// sealed; progress is visible; a wrong or repeated share is refused without changing progress;
/// the emergency seal stops key use at once; after a restart the same shares unseal again.
#[tokio::test]
async fn shamir_ceremony_unseal_emergency_seal_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let init = admin(
        &[
            "init",
            "--data-dir",
            data_dir,
            "--shares",
            "5",
            "--threshold",
            "3",
        ],
        None,
        "",
    )
    .await;
    assert!(init.success, "{}", init.stderr);
    let shares: Vec<String> = init
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, s)| s.trim().to_owned()))
        .filter(|s| s.starts_with("kpshare1-"))
        .collect();
    assert_eq!(shares.len(), 5, "{}", init.stdout);
    let again = admin(
        &[
            "init",
            "--data-dir",
            data_dir,
            "--shares",
            "3",
            "--threshold",
            "2",
        ],
        None,
        "",
    )
    .await;
    assert!(!again.success, "a second ceremony is refused");

    let server = Server::start(&binary(), dir.path(), &shamir_env())
        .await
        .unwrap();
    let c = server.client();
    assert_sealed(&c, None).await;
    let (status, s) = get(&c, "/api/v4/system/seal_status").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            s["sealed"].clone(),
            s["type"].clone(),
            s["threshold"].clone(),
            s["shares"].clone(),
            s["progress"].clone()
        ),
        (json!(true), json!("shamir"), json!(3), json!(5), json!(0))
    );

    let (status, s) = unseal(&c, json!({ "key": shares[0] })).await;
    assert_eq!((status, s["progress"].clone()), (200, json!(1)));
    let (status, e) = unseal(&c, json!({ "key": shares[0] })).await;
    assert_eq!(status, 400, "a repeated share is refused");
    assert!(
        e["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already submitted")
    );
    let mut altered = shares[1].clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'a' { 'b' } else { 'a' });
    let (status, e) = unseal(&c, json!({ "key": altered })).await;
    assert_eq!(status, 400, "a wrong share is refused");
    let message = e["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains(&shares[1][9..20]),
        "the refusal reveals nothing"
    );
    let (status, _) = unseal(&c, json!({ "passphrase": "not a share at all" })).await;
    assert_eq!(status, 400);
    let (_, s) = get(&c, "/api/v4/system/seal_status").await;
    assert_eq!(s["progress"], 1, "refused shares change nothing");

    // A custodian at the CLI, share on standard input.
    let cli = admin(&["unseal"], Some(&server), &format!("{}\n", shares[3])).await;
    assert!(cli.success, "{}", cli.stderr);
    assert!(cli.stdout.contains("\"progress\": 2"), "{}", cli.stdout);
    let (status, s) = unseal(&c, json!({ "key": shares[4] })).await;
    assert_eq!((status, s["sealed"].clone()), (200, json!(false)));
    for probe in ["health", "ready"] {
        let r = c
            .http
            .get(format!("{}/{probe}", c.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }

    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "custodied").await;
    let key_ref = key_ref(&key);
    let (plain, ciphertext) = wrap_new(&c, &keystore, &key_ref).await;

    // The emergency button.
    let sealed = admin(&["seal"], Some(&server), "").await;
    assert!(sealed.success, "{}", sealed.stderr);
    assert_sealed(&c, Some((&keystore, &key_ref))).await;
    assert!(server.terminate().await.unwrap());

    // After a restart: sealed until three shares (another three) arrive.
    let server = Server::start(&binary(), dir.path(), &shamir_env())
        .await
        .unwrap();
    let c = server.client();
    assert_sealed(&c, Some((&keystore, &key_ref))).await;
    for share in &shares[1..4] {
        let (status, _) = unseal(&c, json!({ "key": share })).await;
        assert_eq!(status, 200);
    }
    let (status, _) = unseal(&c, json!({ "key": shares[0] })).await;
    assert_eq!(status, 409, "unsealing an unsealed server is a conflict");
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    // The master key rotates under the same shares.
    let rotated = admin(&["rotate-master-key"], Some(&server), "").await;
    assert!(rotated.success, "{}", rotated.stderr);
    assert!(server.terminate().await.unwrap());
    let server = Server::start(&binary(), dir.path(), &shamir_env())
        .await
        .unwrap();
    let c = server.client();
    for share in [&shares[4], &shares[0], &shares[2]] {
        let (status, _) = unseal(&c, json!({ "key": share })).await;
        assert_eq!(status, 200);
    }
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    assert!(server.terminate().await.unwrap());

    // The shares were shown once: not in the database, not in the log.
    let files = data_files(dir.path());
    for share in &shares {
        for bytes in &files {
            assert!(
                find(bytes, &share.as_bytes()[9..41]).is_none(),
                "a share was stored"
            );
        }
    }
}

/// A shamir server that was never initialised refuses to start, saying what to do.
#[tokio::test]
async fn shamir_without_a_ceremony_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Server::start(&binary(), dir.path(), &shamir_env())
            .await
            .is_err()
    );
    let log =
        std::fs::read_to_string(dir.path().join(keyplane_testkit::process::SERVER_LOG)).unwrap();
    assert!(log.contains("keyplane admin init"), "{log}");
}

fn vault_key_roots(dir: &std::path::Path) -> BTreeMap<String, String> {
    let conn = db(dir);
    let mut stmt = conn
        .prepare("SELECT vault_id, root_id FROM vault_keys")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn material(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let conn = db(dir);
    let mut stmt = conn
        .prepare("SELECT key_id, sealed FROM key_material ORDER BY key_id, version")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `keyplane admin rotate-master-key` rewraps every vault key under a new master key while the
/// data plane keeps serving; no key material changes; old ciphertexts still unwrap, also after a
/// restart.
#[tokio::test]
async fn master_key_rotation_is_online_and_touches_no_material() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let mut keys = Vec::new();
    for i in 0..3 {
        let (vault, keystore) = setup(&c, "active", "aes", "256").await;
        let key = create_key(&c, &vault, &format!("rotating-{i}")).await;
        let key_ref = key_ref(&key);
        let wrapped = wrap_new(&c, &keystore, &key_ref).await;
        keys.push((keystore, key_ref, wrapped));
    }
    let roots_before = vault_key_roots(dir.path());
    let material_before = material(dir.path());
    let (_, s) = get(&c, "/api/v4/system/seal_status").await;
    let first_master = s["master_key_id"].as_str().unwrap().to_owned();

    // Traffic while the rotation runs: every request must succeed.
    let traffic = {
        let c = c.clone();
        let (keystore, key_ref, (plain, ciphertext)) = keys[0].clone();
        tokio::spawn(async move {
            let mut served = 0;
            for _ in 0..200 {
                assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
                wrap_new(&c, &keystore, &key_ref).await;
                served += 1;
            }
            served
        })
    };
    let rotated = admin(&["rotate-master-key"], Some(&server), "").await;
    assert!(rotated.success, "{}", rotated.stderr);
    let report: Value = serde_json::from_str(&rotated.stdout).unwrap();
    assert_eq!(report["previous_master_key_id"], first_master.as_str());
    let second_master = report["master_key_id"].as_str().unwrap().to_owned();
    assert_ne!(second_master, first_master);
    assert!(
        report["vault_keys_rewrapped"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert_eq!(traffic.await.unwrap(), 200);

    let roots_after = vault_key_roots(dir.path());
    assert_eq!(
        roots_after.keys().collect::<Vec<_>>(),
        roots_before.keys().collect::<Vec<_>>()
    );
    assert!(
        roots_after.values().all(|r| *r == second_master),
        "{roots_after:?}"
    );
    let conn = db(dir.path());
    let masters: Vec<String> = conn
        .prepare("SELECT id FROM root_keys")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        masters,
        vec![second_master.clone()],
        "the old master key is gone"
    );
    assert_eq!(
        material(dir.path()),
        material_before,
        "material is untouched"
    );

    // A vault made after the rotation, and a second rotation.
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "after-rotation").await;
    let late = (keystore, key_ref(&key));
    let late_wrapped = wrap_new(&c, &late.0, &late.1).await;
    let rotated = admin(&["rotate-master-key"], Some(&server), "").await;
    assert!(rotated.success, "{}", rotated.stderr);
    // The dev seal's emergency button, and its unseal (the key file is the secret).
    assert!(admin(&["seal"], Some(&server), "").await.success);
    assert_sealed(&c, Some((&late.0, &late.1))).await;
    let status = admin(&["seal-status"], Some(&server), "").await;
    assert!(
        status.stdout.contains("\"sealed\": true"),
        "{}",
        status.stdout
    );
    assert!(admin(&["unseal"], Some(&server), "").await.success);
    assert_eq!(
        unwrap_ok(&c, &late.0, &late.1, &late_wrapped.1).await,
        late_wrapped.0
    );
    assert!(server.terminate().await.unwrap());

    let server = start(dir.path()).await;
    let c = server.client();
    for (keystore, key_ref, (plain, ciphertext)) in &keys {
        assert_eq!(&unwrap_ok(&c, keystore, key_ref, ciphertext).await, plain);
    }
    assert_eq!(
        unwrap_ok(&c, &late.0, &late.1, &late_wrapped.1).await,
        late_wrapped.0
    );
    assert!(server.terminate().await.unwrap());
}

/// The passphrase seal after an emergency seal: the wrong passphrase is refused and leaves the
/// server sealed; the right one unseals; after a master key rotation it still opens everything.
#[tokio::test]
async fn passphrase_seal_unseals_through_the_api_after_an_emergency_seal() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_SEAL", "passphrase"),
        ("KEYPLANE_SEAL_PASSPHRASE", "correct horse battery staple"),
    ];
    let server = Server::start(&binary(), dir.path(), &env).await.unwrap();
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "phrase").await;
    let key_ref = key_ref(&key);
    let (plain, ciphertext) = wrap_new(&c, &keystore, &key_ref).await;
    let r = c.post("/api/v4/system/seal", &json!({})).await.unwrap();
    assert_eq!((r.status, r.body["sealed"].clone()), (200, json!(true)));
    assert_sealed(&c, Some((&keystore, &key_ref))).await;

    let (status, e) = unseal(&c, json!({ "passphrase": "wrong horse battery staple" })).await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("passphrase is wrong")
    );
    assert_sealed(&c, None).await;
    let cli = admin(&["unseal"], Some(&server), "correct horse battery staple\n").await;
    assert!(cli.success, "{}", cli.stderr);
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    let rotated = admin(&["rotate-master-key"], Some(&server), "").await;
    assert!(rotated.success, "{}", rotated.stderr);
    assert!(server.terminate().await.unwrap());
    // After the rotation the same passphrase opens the new master key.
    let server = Server::start(&binary(), dir.path(), &env).await.unwrap();
    let c = server.client();
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    assert!(server.terminate().await.unwrap());
    let log =
        std::fs::read_to_string(dir.path().join(keyplane_testkit::process::SERVER_LOG)).unwrap();
    assert!(!log.contains("horse battery"), "no passphrase in the log");
}

fn pooled(dir: &std::path::Path, size: u32) -> i64 {
    db(dir)
        .query_row(
            "SELECT COUNT(*) FROM key_pool WHERE algorithm = 'rsa' AND size = ?",
            [size],
            |r| r.get(0),
        )
        .unwrap()
}

async fn wait_for_pool(dir: &std::path::Path, size: u32, count: i64) {
    for _ in 0..600 {
        if pooled(dir, size) >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the RSA pool never reached {count} keys of {size} bits");
}

/// RSA keys are activated from the pre-generated pool (sealed in the store), which refills in
/// the background; an activated key's material is its own and verifies.
#[tokio::test]
async fn rsa_keys_activate_from_the_background_pool() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_RSA_POOL", "2048:2"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    wait_for_pool(dir.path(), 2048, 2).await;
    let pool_before: Vec<Vec<u8>> = db(dir.path())
        .prepare("SELECT sealed FROM key_pool")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (vault, _) = setup(&c, "active", "rsa", "2048").await;
    let first = create_key(&c, &vault, "pooled-1").await;
    let second = create_key(&c, &vault, "pooled-2").await;
    assert_eq!(first["state"], "active");
    assert_ne!(
        first["verification_patterns"], second["verification_patterns"],
        "every key gets its own pair"
    );
    // Both came from the pool: the sealed pairs that were waiting are gone.
    let conn = db(dir.path());
    for sealed in &pool_before {
        let still: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM key_pool WHERE sealed = ?",
                [sealed],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(still, 0, "a pooled pair was left behind");
    }
    // The pool refills in the background.
    wait_for_pool(dir.path(), 2048, 2).await;
    assert!(server.terminate().await.unwrap());

    // Each key's material was resealed under its vault's key and matches its pattern.
    for key in [&first, &second] {
        let plain = open_material(dir.path(), key);
        let patterns = keyplane_crypto::verification_patterns(
            keyplane_crypto::KeyKind::Rsa { bits: 2048 },
            plain.expose(),
        )
        .unwrap();
        assert_eq!(key["verification_patterns"][0]["value"], patterns[0].value);
    }
}

const USER_PIN: &str = "custodian-pin-1234";

/// The pkcs11 seal on SoftHSM2: the master key is created inside the token and never stored
/// in the database; keys survive a restart; a wrong PIN refuses to start; rotation makes a new
/// token key; after an emergency seal the PIN unseals.
#[tokio::test]
async fn pkcs11_seal_on_softhsm() {
    let hsm = tempfile::tempdir().unwrap();
    let conf = keyplane_testkit::softhsm::token(hsm.path(), "keyplane-e2e", USER_PIN);
    let dir = tempfile::tempdir().unwrap();
    let env = |pin: &'static str| {
        vec![
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_SEAL", "pkcs11"),
            ("KEYPLANE_PKCS11_MODULE", keyplane_testkit::softhsm::MODULE),
            ("KEYPLANE_PKCS11_TOKEN", "keyplane-e2e"),
            ("KEYPLANE_PKCS11_PIN", pin),
            ("SOFTHSM2_CONF", conf.as_str()),
        ]
    };
    let server = Server::start(&binary(), dir.path(), &env(USER_PIN))
        .await
        .unwrap();
    let c = server.client();
    let (_, s) = get(&c, "/api/v4/system/seal_status").await;
    assert_eq!(
        (s["sealed"].clone(), s["type"].clone()),
        (json!(false), json!("pkcs11"))
    );
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "hsm-backed").await;
    let key_ref = key_ref(&key);
    let (plain, ciphertext) = wrap_new(&c, &keystore, &key_ref).await;
    assert!(server.terminate().await.unwrap());

    let conn = db(dir.path());
    let sealed_roots: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM root_keys WHERE sealed IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        sealed_roots, 0,
        "the master key is only named in the database"
    );
    drop(conn);

    assert!(
        Server::start(&binary(), dir.path(), &env("wrong-pin-0000"))
            .await
            .is_err(),
        "a wrong PIN opens nothing"
    );

    let server = Server::start(&binary(), dir.path(), &env(USER_PIN))
        .await
        .unwrap();
    let c = server.client();
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    let rotated = admin(&["rotate-master-key"], Some(&server), "").await;
    assert!(rotated.success, "{}", rotated.stderr);
    let report: Value = serde_json::from_str(&rotated.stdout).unwrap();
    assert!(report["vault_keys_rewrapped"].as_u64().unwrap() >= 1);
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);

    let sealed = admin(&["seal"], Some(&server), "").await;
    assert!(sealed.success, "{}", sealed.stderr);
    assert_sealed(&c, Some((&keystore, &key_ref))).await;
    let (status, _) = unseal(&c, json!({ "pin": "wrong-pin-0000" })).await;
    assert_eq!(status, 400);
    let cli = admin(&["unseal"], Some(&server), &format!("{USER_PIN}\n")).await;
    assert!(cli.success, "{}", cli.stderr);
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    assert!(server.terminate().await.unwrap());

    // After the rotation and a restart the new token key opens everything.
    let server = Server::start(&binary(), dir.path(), &env(USER_PIN))
        .await
        .unwrap();
    let c = server.client();
    let (_, s) = get(&c, "/api/v4/system/seal_status").await;
    assert_eq!(s["master_key_id"], report["master_key_id"]);
    assert_eq!(unwrap_ok(&c, &keystore, &key_ref, &ciphertext).await, plain);
    assert!(server.terminate().await.unwrap());
    let log =
        std::fs::read_to_string(dir.path().join(keyplane_testkit::process::SERVER_LOG)).unwrap();
    assert!(!log.contains(USER_PIN), "no PIN in the log");
}
