//! Distribution to a real OpenBao through the real binary: the transit key OpenBao holds is the
//! managed key (OpenBao encrypts, the test decrypts with the managed material), through create,
//! rotate, deactivate, reactivate, destroy and sync.

mod common;

use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use keyplane_testkit::peers::{Fault, FaultProxy, OpenBao};
use keyplane_testkit::process::Client;
use serde_json::json;

const ROOT: &str = "distribution-root-token";

/// Decrypts a transit `aes256-gcm96` ciphertext (`vault:vN:` ‖ base64(nonce ‖ sealed)) with
/// the managed material.
fn decrypt_transit(material: &[u8], ciphertext: &str) -> Vec<u8> {
    let body = ciphertext.splitn(3, ':').nth(2).expect("vault:vN:…");
    let mut bytes = B64.decode(body).unwrap();
    let (nonce, sealed) = bytes.split_at_mut(12);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).unwrap());
    key.open_in_place(
        Nonce::try_assume_unique_for_key(nonce).unwrap(),
        Aad::empty(),
        sealed,
    )
    .expect("the managed material opens what OpenBao sealed")
    .to_vec()
}

#[tokio::test]
async fn openbao_holds_the_managed_key_through_its_lifecycle() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_DESTROY_GRACE_PERIOD", "0s"),
            ("KEYPLANE_DRIFT_INTERVAL", "1s"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();

    let vault = new_vault(&c).await;
    let ks = connect_keystore(
        &c,
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                    "hashicorp_address": bao.address, "hashicorp_token": ROOT}),
    )
    .await;
    active_aes_template(&c, &vault, "hashicorp_vault", "bao").await;
    let key = create_key(&c, &vault, "payments-key").await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");

    // Create (active): OpenBao holds the managed key.
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;
    assert_eq!(entry["keystore_sync_flag"], "ok", "{entry}");
    assert_eq!(entry["key_id_in_keystore"], "payments-key");
    let v1 = bao_encrypt(&bao, "payments-key", "first secret").await;
    assert!(v1.starts_with("vault:v1:"), "{v1}");
    assert_eq!(
        decrypt_transit(open_material_version(dir.path(), &key, 1).expose(), &v1),
        b"first secret"
    );

    // Rotate: the new version is imported as transit's version 2.
    let r = c.with_etag("POST", &key_path, "/rotate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..300 {
        if transit_key(&bao, "payments-key").await.unwrap()["data"]["latest_version"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v2 = bao_encrypt(&bao, "payments-key", "second secret").await;
    assert!(v2.starts_with("vault:v2:"), "{v2}");
    assert_eq!(
        decrypt_transit(open_material_version(dir.path(), &key, 2).expose(), &v2),
        b"second secret"
    );
    // The live read agrees.
    let live = c
        .get(&format!("{key_path}/status_in_keystores"))
        .await
        .unwrap();
    assert_eq!(live.status, 200, "{}", live.body);
    let text = live.body.to_string();
    assert!(
        text.contains("\"active\"") && !text.contains("out_of_sync"),
        "{text}"
    );

    // Deactivate, then reactivate: transit has no disabled state; the copy stays and is
    // reported as keyplane set it.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "not_active").await;
    assert_eq!(entry["keystore_sync_flag"], "ok", "{entry}");
    assert!(transit_key(&bao, "payments-key").await.is_some());
    let r = c.with_etag("POST", &key_path, "/activate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&c, &key_id, &ks, |s| s["status"] == "active").await;

    // Sync after the remote lost the key: it is installed again, equal to the managed key.
    bao.call(
        "POST",
        "transit/keys/payments-key/config",
        Some(json!({"deletion_allowed": true})),
    )
    .await
    .unwrap();
    bao.call("DELETE", "transit/keys/payments-key", None)
        .await
        .unwrap();
    let drift = c
        .get(&format!("{key_path}/status_in_keystores"))
        .await
        .unwrap();
    assert!(
        drift.body.to_string().contains("not_present"),
        "{}",
        drift.body
    );
    // The periodic drift check flags it on the key itself, without a sync.
    let flagged = wait_status(&c, &key_id, &ks, |s| {
        s["keystore_sync_flag"] == "out_of_sync"
    })
    .await;
    assert_eq!(flagged["status"], "not_present", "{flagged}");
    let r = c
        .with_etag("POST", &key_path, "/sync_status_in_keystores")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for _ in 0..300 {
        if transit_key(&bao, "payments-key").await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = bao_encrypt(&bao, "payments-key", "after sync").await;
    assert_eq!(
        decrypt_transit(open_material_version(dir.path(), &key, 2).expose(), &again),
        b"after sync"
    );

    // Destroy: the transit key is deleted.
    let r = c.with_etag("POST", &key_path, "/deactivate").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.with_etag("POST", &key_path, "/destroy").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &ks, |s| s["status"] == "not_present").await;
    assert_eq!(entry["keystore_sync_flag"], "ok", "{entry}");
    assert!(transit_key(&bao, "payments-key").await.is_none());

    // Every task finishes: the destroy's own task may still be queued when the keystore
    // already reports the key gone, so the distributor gets up to a minute to drain.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let tasks = c
            .get(&format!("/api/v4/keystores/{ks}/tasks"))
            .await
            .unwrap();
        assert_eq!(tasks.status, 200, "{}", tasks.body);
        let states: Vec<&str> = tasks.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        assert!(!states.is_empty(), "{}", tasks.body);
        assert!(!states.contains(&"failed"), "{}", tasks.body);
        if states.iter().all(|s| *s == "done") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", tasks.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bao.stop().await;
}

async fn connect_bao(c: &Client, vault: &str, bao: &OpenBao, name: &str) -> String {
    connect_keystore(
        c,
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": name, "groups": ["bao"],
                "hashicorp_address": bao.address, "hashicorp_token": ROOT}),
    )
    .await
}

#[tokio::test]
async fn disconnect_modes_and_reconnecting_the_same_openbao() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let c = server.client();
    let vault = new_vault(&c).await;
    let first = connect_bao(&c, &vault, &bao, "bao").await;
    active_aes_template(&c, &vault, "hashicorp_vault", "bao").await;
    let key = create_key(&c, &vault, "orders-key").await;
    let key_id = id(&key);
    let key_path = format!("/api/v4/managed_keys/{key_id}");
    wait_status(&c, &key_id, &first, |s| s["status"] == "active").await;

    // The seed's rule: an active key blocks a restricted disconnect, and is named.
    let refused = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{first}"),
            "?mode=restrict",
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["errors"][0]["code"], "keystore_not_empty");
    assert!(refused.body.to_string().contains(&key_id));

    // Disconnect leaves the remote material untouched.
    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{first}"),
            "?mode=disconnect",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(transit_names(&bao).await, ["orders-key"]);
    let before = bao_encrypt(&bao, "orders-key", "kept").await;

    // Reconnecting the same OpenBao: a new keystore id; realigning the key with its template
    // re-links the copy found there (proven to be this key), without a duplicate.
    let second = connect_bao(&c, &vault, &bao, "bao-again").await;
    assert_ne!(second, first);
    let r = c
        .with_etag("POST", &key_path, "/update_from_template")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let entry = wait_status(&c, &key_id, &second, |s| s["status"] == "active").await;
    assert_eq!(entry["key_id_in_keystore"], "orders-key", "{entry}");
    assert_eq!(transit_names(&bao).await, ["orders-key"], "no duplicate");
    let info = transit_key(&bao, "orders-key").await.unwrap();
    assert_eq!(info["data"]["latest_version"], 1, "nothing was re-imported");
    assert_eq!(
        decrypt_transit(open_material(dir.path(), &key).expose(), &before),
        b"kept"
    );

    // A key of the same name that is not this key is never adopted.
    bao.call(
        "POST",
        "transit/keys/lookalike",
        Some(json!({"type": "aes256-gcm96"})),
    )
    .await
    .unwrap();
    let other = create_key(&c, &vault, "lookalike").await;
    let entry = wait_status(&c, &id(&other), &second, |s| s["status"] == "error").await;
    assert!(
        entry
            .to_string()
            .contains("already holds a key named 'lookalike' that is not this key"),
        "{entry}"
    );

    // Destroy mode destroys every copy keyplane put there, then unlinks.
    let gone = c
        .with_etag(
            "DELETE",
            &format!("/api/v4/keystores/{second}"),
            "?mode=destroy",
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(
        transit_names(&bao).await,
        ["lookalike"],
        "the foreign key stays"
    );
    bao.stop().await;
}

#[tokio::test]
async fn a_target_that_throttles_or_goes_down_converges_when_it_returns() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let proxy = FaultProxy::start(&bao.address).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = keyplane_testkit::process::Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_KEYSTORE_CONCURRENCY", "2"),
            ("KEYPLANE_DISTRIBUTION_BACKOFF", "100ms"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(
        &c,
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                    "hashicorp_address": proxy.address, "hashicorp_token": ROOT}),
    )
    .await;
    active_aes_template(&c, &vault, "hashicorp_vault", "bao").await;

    // Throttled: the API answers at once, the status shows the error, tasks retry.
    proxy.set(Fault::Throttle);
    let mut keys = Vec::new();
    for i in 0..6 {
        let started = std::time::Instant::now();
        keys.push(id(&create_key(&c, &vault, &format!("throttled-{i}")).await));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the API does not wait for the target"
        );
    }
    for key in &keys {
        let entry = wait_status(&c, key, &ks, |s| s["status"] == "error").await;
        assert!(entry.to_string().contains("throttled"), "{entry}");
    }
    let tasks = c
        .get(&format!("/api/v4/keystores/{ks}/tasks"))
        .await
        .unwrap();
    assert!(
        tasks.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["state"] == "pending"
                && t["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("throttled"))),
        "{}",
        tasks.body
    );
    let status = c
        .get(&format!("/api/v4/keystores/{ks}/status"))
        .await
        .unwrap();
    assert_eq!(
        status.body["health_status"], "not_responding",
        "{}",
        status.body
    );
    // The metrics show the queue waiting on that keystore, and its health.
    let http = reqwest::Client::new();
    let metrics = format!("{}/metrics", server.base);
    let (_, samples) = scrape(&http, &metrics, Some(TOKEN)).await;
    let on_keystore = [("keystore", ks.as_str()), ("keystore_name", "bao")];
    let pending = value(
        &samples,
        "keyplane_distribution_tasks",
        &[on_keystore[0], on_keystore[1], ("state", "pending")],
    );
    assert!(pending.is_some_and(|n| n >= 1.0), "pending: {pending:?}");
    let age = value(
        &samples,
        "keyplane_distribution_oldest_task_age_seconds",
        &on_keystore,
    );
    assert!(age.is_some_and(|a| a > 0.0), "oldest task's age: {age:?}");
    assert_eq!(
        value(
            &samples,
            "keyplane_keystore_health",
            &[
                on_keystore[0],
                ("type", "hashicorp_vault"),
                ("health", "not_responding")
            ]
        ),
        Some(1.0)
    );
    proxy.set(Fault::None);
    for key in &keys {
        wait_status(&c, key, &ks, |s| s["status"] == "active").await;
    }
    // Once it answers again: healthy, nothing waiting (the counts are read once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, samples) = scrape(&http, &metrics, Some(TOKEN)).await;
    assert_eq!(
        value(
            &samples,
            "keyplane_keystore_health",
            &[on_keystore[0], ("health", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "keyplane_distribution_tasks",
            &[on_keystore[0], ("state", "pending")]
        ),
        None
    );

    // Down: connections are dropped; everything converges once it is back.
    proxy.set(Fault::Down);
    let down: Vec<String> = [
        id(&create_key(&c, &vault, "while-down-1").await),
        id(&create_key(&c, &vault, "while-down-2").await),
    ]
    .into();
    for key in &down {
        wait_status(&c, key, &ks, |s| s["status"] == "error").await;
    }
    proxy.set(Fault::None);
    for key in &down {
        wait_status(&c, key, &ks, |s| s["status"] == "active").await;
    }

    // Slow: 50 ms a request; the per-keystore limit holds.
    proxy.set(Fault::Latency(Duration::from_millis(50)));
    let mut slow = Vec::new();
    for i in 0..8 {
        slow.push(id(&create_key(&c, &vault, &format!("slow-{i}")).await));
    }
    for key in &slow {
        wait_status(&c, key, &ks, |s| s["status"] == "active").await;
    }
    assert!(
        proxy.max_in_flight() <= 2,
        "in flight at once: {}",
        proxy.max_in_flight()
    );
    assert!(proxy.refused() > 0);
    assert_eq!(transit_names(&bao).await.len(), 16, "every key once");
    bao.stop().await;
}

#[tokio::test]
async fn a_server_killed_while_distributing_converges_after_restart() {
    let bao = OpenBao::start(ROOT).await.unwrap();
    let proxy = FaultProxy::start(&bao.address).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
        ("KEYPLANE_KEYSTORE_CONCURRENCY", "4"),
        ("KEYPLANE_DISTRIBUTION_BACKOFF", "100ms"),
    ];
    let server = keyplane_testkit::process::Server::start(&binary(), dir.path(), &env)
        .await
        .unwrap();
    let c = server.client();
    let vault = new_vault(&c).await;
    let ks = connect_keystore(
        &c,
        &json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["bao"],
                    "hashicorp_address": proxy.address, "hashicorp_token": ROOT}),
    )
    .await;
    active_aes_template(&c, &vault, "hashicorp_vault", "bao").await;
    // Slow enough that the kill lands with installs under way.
    proxy.set(Fault::Latency(Duration::from_millis(40)));
    let mut keys = Vec::new();
    for i in 0..40 {
        keys.push(create_key(&c, &vault, &format!("crash-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let partial = transit_names(&bao).await.len();
    server.kill().await;
    assert!(
        partial < 40,
        "the kill came too late to test anything ({partial} done)"
    );

    let server = keyplane_testkit::process::Server::start(&binary(), dir.path(), &env)
        .await
        .unwrap();
    let c = server.client();
    for key in &keys {
        wait_status(&c, &id(key), &ks, |s| s["status"] == "active").await;
    }
    let names = transit_names(&bao).await;
    assert_eq!(names.len(), 40, "every key once: {names:?}");
    // Every copy is the managed key, including those whose install the kill interrupted.
    for key in &keys {
        let label = key["label"].as_str().unwrap();
        let sealed = bao_encrypt(&bao, label, label).await;
        assert_eq!(
            decrypt_transit(open_material(dir.path(), key).expose(), &sealed),
            label.as_bytes()
        );
    }
    let tasks = c
        .get(&format!("/api/v4/keystores/{ks}/tasks"))
        .await
        .unwrap();
    assert!(
        tasks.body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "done"),
        "{}",
        tasks.body
    );
    bao.stop().await;
}
