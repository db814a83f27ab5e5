//! Canary: distinctive secrets — keystore credentials, an API key and its access token, the
//! seal passphrase, key material, data keys — go through the real binary, and a scan of its log,
//! its audit trail and every response finds none of them outside the one answer that must carry
//! each (the API key's creation, the token exchange, the wrap that generated a data key, the
//! unwrap that returns it). Key material is scanned for the same way in `e2e.rs`, where the dev
//! seal lets the test open it.

mod common;

use base64::Engine as _;
use common::*;
use keyplane_testkit::process::{SERVER_LOG, Server};
use serde_json::{Value, json};

const AWS_SECRET: &str = "CANARY-aws-secret-8f2c1d7e";
const VAULT_TOKEN: &str = "CANARY-vault-token-4b9e0a13";
const PASSPHRASE: &str = "CANARY-passphrase-51ad93c0e2";
const DATA_KEY: &[u8; 32] = b"CANARY-data-key-32-bytes-long!!!";

#[tokio::test]
async fn no_secret_escapes_into_logs_events_or_responses() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_SEAL", "passphrase"),
            ("KEYPLANE_SEAL_PASSPHRASE", PASSPHRASE),
            ("KEYPLANE_LOG", "debug"),
            ("KEYPLANE_LOG_FORMAT", "json"),
        ],
    )
    .await
    .unwrap();
    let c = server.client();
    // Every answer is kept, except the few that must carry a secret.
    let mut seen: Vec<Value> = Vec::new();

    // A real OpenBao whose root token is the canary: connecting tests it for real.
    let bao = keyplane_testkit::peers::OpenBao::start(VAULT_TOKEN)
        .await
        .unwrap();
    let (vault, keystore) = setup(&c, "active", "aes", "256").await;
    for body in [
        json!({"type": "aws_kms", "vault": {"id": vault}, "name": "aws", "groups": ["cloud"],
               "aws_region": "eu_central_1", "aws_access_key_id": "AKIACANARY", "aws_secret_access_key": AWS_SECRET,
               "aws_endpoint": keyplane_testkit::peers::localstack()}),
        json!({"type": "hashicorp_vault", "vault": {"id": vault}, "name": "bao", "groups": ["cloud"],
               "hashicorp_address": bao.address, "hashicorp_token": VAULT_TOKEN}),
    ] {
        let r = c.post("/api/v4/keystores", &body).await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        seen.push(r.body);
    }
    seen.push(c.get("/api/v4/keystores").await.unwrap().body);
    let key = create_key(&c, &vault, "canary-key").await;
    seen.push(key.clone());
    let key_ref = key_ref(&key);

    // A data key the caller brings: only the unwrap may return it.
    let data_key = base64::engine::general_purpose::STANDARD.encode(DATA_KEY);
    let (status, wrapped) = data_plane(
        &c,
        &keystore,
        &key_ref,
        "wrap",
        &json!({ "plaintext": data_key }),
    )
    .await;
    assert_eq!(status, 200);
    seen.push(wrapped.clone());
    let (status, rewrapped) = data_plane(
        &c,
        &keystore,
        &key_ref,
        "rewrap",
        &json!({ "ciphertext": wrapped["ciphertext"] }),
    )
    .await;
    assert_eq!(status, 200);
    seen.push(rewrapped);
    assert_eq!(
        unwrap_ok(
            &c,
            &keystore,
            &key_ref,
            wrapped["ciphertext"].as_str().unwrap()
        )
        .await,
        data_key
    );
    // A data key the server makes: only its wrap answer carries it.
    let (generated, _) = wrap_new(&c, &keystore, &key_ref).await;

    // An API key and its access token.
    let principal = c
        .post("/api/v4/access/principals", &json!({"name": "canary-app"}))
        .await
        .unwrap();
    seen.push(principal.body.clone());
    let created = c
        .post(
            &format!("/api/v4/access/principals/{}/api_keys", id(&principal.body)),
            &json!({}),
        )
        .await
        .unwrap();
    let apikey = created.body["apikey"].as_str().unwrap().to_owned();
    let token: Value = keyplane_testkit::http_client()
        .post(format!("{}/identity/token", c.base))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", &apikey),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_owned();
    seen.push(
        c.get(&format!(
            "/api/v4/access/principals/{}/api_keys",
            id(&principal.body)
        ))
        .await
        .unwrap()
        .body,
    );

    // The seal: sealed and unsealed again with the passphrase.
    seen.push(
        c.post("/api/v4/system/seal", &json!({}))
            .await
            .unwrap()
            .body,
    );
    seen.push(
        c.post(
            "/api/v4/system/unseal",
            &json!({ "passphrase": PASSPHRASE }),
        )
        .await
        .unwrap()
        .body,
    );

    // Reads of everything.
    for path in [
        "/api/v4/vaults".to_owned(),
        "/api/v4/managed_keys".to_owned(),
        format!("/api/v4/managed_keys/{}", id(&key)),
        format!("/api/v4/managed_keys/{}/versions", id(&key)),
        "/api/v4/templates".to_owned(),
        "/api/v4/access/principals".to_owned(),
        "/api/v4/system/seal_status".to_owned(),
        "/api/v4/audit_events?limit=1000".to_owned(),
    ] {
        seen.push(c.get(&path).await.unwrap().body);
    }
    assert!(server.terminate().await.unwrap());

    let log = std::fs::read_to_string(dir.path().join(SERVER_LOG)).unwrap();
    // The log is one JSON object per line; each call has its access line.
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let unwrap_call = lines
        .iter()
        .find(|l| {
            l["target"] == "keyplane::access"
                && l["route"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("/actions/unwrap"))
        })
        .expect("an access line for the unwrap");
    assert_eq!(unwrap_call["status"], 200, "{unwrap_call}");
    assert_eq!(unwrap_call["method"], "POST");
    assert!(
        unwrap_call["caller"]
            .as_str()
            .is_some_and(|c| !c.is_empty() && c != "anonymous")
    );
    assert!(unwrap_call["latency_ms"].as_f64().is_some());
    assert_eq!(
        unwrap_call["correlation_id"].as_str().map(str::len),
        Some(36),
        "{unwrap_call}"
    );
    let answers: String = seen.iter().map(Value::to_string).collect();
    let canaries = [
        AWS_SECRET.to_owned(),
        VAULT_TOKEN.to_owned(),
        PASSPHRASE.to_owned(),
        data_key.clone(),
        String::from_utf8_lossy(DATA_KEY).into_owned(),
        generated,
        apikey.clone(),
        access.clone(),
    ];
    for canary in &canaries {
        assert!(!log.contains(canary.as_str()), "a secret is in the log");
        assert!(
            !answers.contains(canary.as_str()),
            "a secret is in a response or an audit event"
        );
    }
    assert!(
        log.contains("keyplane sealed") && log.contains("keyplane unsealed"),
        "the log holds this run's events: {log}"
    );
}
