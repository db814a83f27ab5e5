//! End-to-end: the real `keyplane` binary over HTTP, as a UKO client would use it.

mod common;

use base64::Engine as _;
use common::*;
use keyplane_testkit::process::Server;
use serde_json::{Value, json};

/// The seed page's flow: a disconnect is refused while a key lives in the keystore, and allowed
/// once only pre-active or destroyed keys remain; afterwards the keystore is gone.
#[tokio::test]
async fn seed_disconnect_rule_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "billing-key").await;
    let key_path = format!("/api/v4/managed_keys/{}", id(&key));
    let ks_path = format!("/api/v4/keystores/{keystore}");
    assert_eq!(key["state"], "active");
    assert_eq!(key["status_in_keystores"][0]["status"], "active");

    let refused = c.with_etag("DELETE", &ks_path, "").await.unwrap();
    assert_eq!(refused.status, 409);
    assert_eq!(refused.body["errors"][0]["code"], "keystore_not_empty");
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&id(&key)) && message.contains("billing-key"),
        "{message}"
    );

    // A pre-active key never blocks.
    let pre = c
        .post(
            "/api/v4/templates",
            &json!({"vault": {"id": vault}, "name": "T2", "key": {"algorithm": "aes", "size": "256", "state": "pre_activation"},
                    "keystores": [{"type": "ibm_cloud_kms", "group": "prod"}]}),
        )
        .await
        .unwrap();
    assert_eq!(pre.status, 201);
    let pre_key = c
        .post(
            "/api/v4/managed_keys",
            &json!({"vault": {"id": vault}, "template_name": "T2", "label": "later"}),
        )
        .await
        .unwrap();
    assert_eq!(pre_key.status, 201);

    assert_eq!(
        c.with_etag("POST", &key_path, "/deactivate")
            .await
            .unwrap()
            .status,
        200
    );
    let still = c.with_etag("DELETE", &ks_path, "").await.unwrap();
    assert_eq!(still.status, 409, "a deactivated key still blocks");
    let destroyed = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(destroyed.status, 200, "{}", destroyed.body);
    assert_eq!(destroyed.body["state"], "destroyed");
    assert_eq!(
        destroyed.body["status_in_keystores"][0]["status"],
        "not_present"
    );

    let done = c.with_etag("DELETE", &ks_path, "").await.unwrap();
    assert_eq!(done.status, 204, "{}", done.body);
    assert_eq!(c.get(&ks_path).await.unwrap().status, 404);
    let after = c.get(&key_path).await.unwrap().body;
    assert_eq!(after["referenced_keystores"], json!([]));
    assert_eq!(
        after["status_in_keystores"][0]["keystore_sync_flag_detail"],
        "target_keystore_removed_by_user"
    );
    assert!(server.terminate().await.unwrap(), "clean exit on SIGTERM");
}

#[tokio::test]
async fn every_api_call_needs_a_valid_token_and_data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    c.token = "not-the-token".into();
    let denied = c.get("/api/v4/vaults").await.unwrap();
    assert_eq!(denied.status, 401);
    assert_eq!(denied.body["errors"][0]["code"], "unauthorized");
    assert!(server.terminate().await.unwrap());

    let server = start(dir.path()).await;
    let c = server.client();
    let v = c.get(&format!("/api/v4/vaults/{vault}")).await.unwrap();
    assert_eq!(v.status, 200);
    assert_eq!(v.body["keystores_count"], 1);
    assert!(server.terminate().await.unwrap());

    // The database refuses a different master key.
    std::fs::write(
        dir.path().join("master.key"),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    assert!(
        Server::start(
            &binary(),
            dir.path(),
            &[("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN)]
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn zero_config_start_prints_a_working_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let server = Server::start(&binary(), dir.path(), &[]).await.unwrap();
    assert!(
        server.token.starts_with("kp_"),
        "a token is printed on first start"
    );
    let c = server.client();
    assert_eq!(c.get("/api/v4/vaults").await.unwrap().status, 200);
    // Only the server's user may read what it keeps: the directory is 0700 (the test made it
    // 0755 before the start), its files 0600.
    let mode = |name: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .permissions(),
        ) & 0o777
    };
    assert_eq!(mode(""), 0o700, "the data directory");
    for file in [
        "master.key",
        "keyplane.sqlite",
        "keyplane.sqlite-wal",
        "keyplane.sqlite-shm",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    assert!(server.terminate().await.unwrap());
    // Only a hash is stored: the token's text is nowhere in the data directory.
    for bytes in data_files(dir.path()) {
        assert!(find(&bytes, c.token.as_bytes()).is_none());
    }
}

/// Generated key material is stored only sealed: the plaintext (opened here through the key
/// hierarchy and checked against the key's verification pattern) appears in no database file
/// and not in the server's log; neither do the vault keys.
#[tokio::test]
async fn database_files_hold_no_plaintext_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let mut keys = Vec::new();
    for (i, (alg, size)) in [
        ("aes", "256"),
        ("aes", "128"),
        ("hmac", "512"),
        ("ec", "384"),
        ("rsa", "2048"),
    ]
    .iter()
    .enumerate()
    {
        let vault = c
            .post("/api/v4/vaults", &json!({"name": format!("scan-{i}")}))
            .await
            .unwrap();
        let vault_id = id(&vault.body);
        c.post(
            "/api/v4/keystores",
            &json!({"type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": {"id": vault_id}, "name": "ks", "groups": ["g"]}),
        )
        .await
        .unwrap();
        let t = c
            .post(
                "/api/v4/templates",
                &json!({"vault": {"id": vault_id}, "name": "T1", "key": {"algorithm": alg, "size": size, "state": "active"},
                        "keystores": [{"type": "ibm_cloud_kms", "group": "g"}]}),
            )
            .await
            .unwrap();
        assert_eq!(t.status, 201, "{}", t.body);
        keys.push((vault_id.clone(), create_key(&c, &vault_id, "scanned").await));
    }
    assert!(server.terminate().await.unwrap());

    let conn = db(dir.path());
    let files = data_files(dir.path());
    let mut materials = Vec::new();
    for (vault_id, key) in &keys {
        let vault_key = vault_key(dir.path(), &conn, vault_id);
        for bytes in &files {
            assert!(
                find(bytes, &vault_key.expose()[..16]).is_none(),
                "a vault key is stored in clear"
            );
        }
        let plain = open_material(dir.path(), key);
        let kind = match (
            key["algorithm"].as_str().unwrap(),
            key["size"].as_str().unwrap(),
        ) {
            ("aes", s) => keyplane_crypto::KeyKind::Aes {
                bits: s.parse().unwrap(),
            },
            ("hmac", s) => keyplane_crypto::KeyKind::Hmac {
                bits: s.parse().unwrap(),
            },
            ("rsa", s) => keyplane_crypto::KeyKind::Rsa {
                bits: s.parse().unwrap(),
            },
            _ => keyplane_crypto::KeyKind::Ec(keyplane_crypto::EcCurve::P384),
        };
        let patterns = keyplane_crypto::verification_patterns(kind, plain.expose()).unwrap();
        assert_eq!(
            key["verification_patterns"][0]["value"], patterns[0].value,
            "opened the key's real material"
        );
        // Any 16-byte window of the plaintext would betray it.
        let probe = &plain.expose()[..16];
        for bytes in &files {
            assert!(
                find(bytes, probe).is_none(),
                "plaintext of a {} key found in a database file",
                key["algorithm"]
            );
            assert!(find(bytes, hex::encode(probe).as_bytes()).is_none());
        }
        materials.push(plain);
    }
    drop(conn);

    // Nor in any response: every read of the keys, in UKO's and in Key Protect's API.
    let server = start(dir.path()).await;
    let c = server.client();
    let mut bodies = vec![c.get("/api/v4/managed_keys").await.unwrap().body];
    for (_, key) in &keys {
        let key_path = format!("/api/v4/managed_keys/{}", id(key));
        for path in [
            key_path.clone(),
            format!("{key_path}/versions"),
            format!("{key_path}/status_in_keystores"),
            format!("{key_path}/associated_resources"),
        ] {
            bodies.push(c.get(&path).await.unwrap().body);
        }
        let keystore = key["status_in_keystores"][0]["keystore"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for path in [
            "/api/v2/keys".to_owned(),
            format!("/api/v2/keys/{}", key_ref(key)),
        ] {
            let r = c
                .http
                .get(format!("{}{path}", c.base))
                .bearer_auth(&c.token)
                .header("bluemix-instance", &keystore)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            bodies.push(r.json().await.unwrap());
        }
    }
    assert!(server.terminate().await.unwrap());
    let text: String = bodies.iter().map(Value::to_string).collect();
    for plain in &materials {
        let bytes = plain.expose();
        assert!(!text.contains(&hex::encode(&bytes[..16])));
        assert!(!text.to_lowercase().contains(&hex::encode(&bytes[..16])));
        for offset in 0..3 {
            // Base64 of any stretch of the material, at each alignment.
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(&bytes[offset..offset + 12]);
            assert!(!text.contains(&encoded), "key material in a response");
        }
    }
}

/// Destroy erases the sealed material; the version row stays as a record.
#[tokio::test]
async fn destroy_erases_the_sealed_material() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "short-lived").await;
    let path = format!("/api/v4/managed_keys/{}", id(&key));
    assert_eq!(
        c.with_etag("POST", &path, "/deactivate")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.with_etag("POST", &path, "/destroy").await.unwrap().status,
        200
    );
    assert!(server.terminate().await.unwrap());
    let conn = db(dir.path());
    let (sealed, state): (Option<Vec<u8>>, String) = conn
        .query_row(
            "SELECT sealed, state FROM key_material WHERE key_id = ?",
            [id(&key)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(sealed.is_none());
    assert_eq!(state, "destroyed");
}

/// SIGKILL during a burst of writes: every acknowledged write is there after a restart and the
/// database passes SQLite's integrity check.
#[tokio::test]
async fn sigkill_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut writers = Vec::new();
    for w in 0..8 {
        let c = c.clone();
        let tx = tx.clone();
        let vault = vault.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let body = json!({"vault": {"id": vault}, "template_name": "T1", "label": format!("burst-{w}-{i}")});
                match c.post("/api/v4/managed_keys", &body).await {
                    Ok(r) if r.status == 201 => {
                        let _ = tx.send(id(&r.body));
                    }
                    _ => break,
                }
            }
        }));
    }
    drop(tx);
    // Let the burst run, then kill without warning.
    let mut acknowledged = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(k)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await
        {
            acknowledged.push(k);
        }
    }
    server.kill().await;
    for w in writers {
        let _ = w.await;
    }
    while let Some(k) = rx.recv().await {
        acknowledged.push(k);
    }
    assert!(
        acknowledged.len() > 20,
        "the burst wrote something before the kill ({})",
        acknowledged.len()
    );

    let server = start(dir.path()).await;
    let c = server.client();
    for k in &acknowledged {
        let r = c.get(&format!("/api/v4/managed_keys/{k}")).await.unwrap();
        assert_eq!(r.status, 200, "acknowledged key {k} is lost");
        assert_eq!(r.body["state"], "active");
    }
    assert!(server.terminate().await.unwrap());
    let conn = db(dir.path());
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let orphans: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM managed_keys k WHERE k.state = 'active' AND NOT EXISTS (SELECT 1 FROM key_material m WHERE m.key_id = k.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "every active key has its material");
}

/// A data key the data plane generated reaches the caller and nowhere in the database.
#[tokio::test]
async fn wrapped_data_keys_are_not_stored() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "envelope").await;
    let key_ref = key["status_in_keystores"][0]["key_id_in_keystore"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut data_keys = Vec::new();
    for _ in 0..20 {
        let r = c
            .http
            .post(format!("{}/api/v2/keys/{key_ref}/actions/wrap", c.base))
            .bearer_auth(&c.token)
            .header("bluemix-instance", &keystore)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let plain = base64::engine::general_purpose::STANDARD
            .decode(body["plaintext"].as_str().unwrap())
            .unwrap();
        assert_eq!(plain.len(), 32);
        data_keys.push(plain);
    }
    assert!(server.terminate().await.unwrap());
    let files = data_files(dir.path());
    assert!(!files.is_empty());
    for data_key in &data_keys {
        for bytes in &files {
            assert!(
                find(bytes, &data_key[..16]).is_none(),
                "a data key was written to the database"
            );
        }
    }
}

/// The passphrase seal: the master key is stored only sealed, in the database; the right passphrase opens it
/// after a restart; a wrong one refuses to start and opens nothing.
#[tokio::test]
async fn passphrase_seal_survives_restarts_and_refuses_a_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let env = |passphrase: &'static str| {
        vec![
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_SEAL", "passphrase"),
            ("KEYPLANE_SEAL_PASSPHRASE", passphrase),
        ]
    };
    let server = Server::start(&binary(), dir.path(), &env("correct horse battery staple"))
        .await
        .unwrap();
    let c = server.client();
    let (vault, _) = setup(&c, "active", "aes", "256").await;
    let key = create_key(&c, &vault, "sealed-key").await;
    assert!(server.terminate().await.unwrap());
    assert!(
        !dir.path().join("master.key").exists(),
        "no plain key file in passphrase mode"
    );
    // The sealed master key is kept in the database (every node sharing it opens the same one).
    assert!(!dir.path().join("master.sealed").exists());
    let database = data_files(dir.path()).concat();
    assert!(find(&database, b"kdf=argon2id").is_some());

    assert!(
        Server::start(&binary(), dir.path(), &env("wrong horse battery staple"))
            .await
            .is_err()
    );

    let server = Server::start(&binary(), dir.path(), &env("correct horse battery staple"))
        .await
        .unwrap();
    let c = server.client();
    let again = c
        .get(&format!("/api/v4/managed_keys/{}", id(&key)))
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["verification_patterns"],
        key["verification_patterns"]
    );
    assert!(server.terminate().await.unwrap());
}
