//! End-to-end: an API key exchanged for an access token at `POST /identity/token` exactly as the
//! IBM SDKs' IAM authenticator sends it; the token is checked on every call and dies with its key.

mod common;

use common::*;
use keyplane_testkit::process::{Client, Server};
use serde_json::{Value, json};

const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// The IAM authenticator's request: a form post with `Authorization: Basic bx:bx`.
async fn exchange(base: &str, apikey: &str, grant: &str) -> (u16, Value) {
    let r = keyplane_testkit::http_client()
        .post(format!("{base}/identity/token"))
        .header("Authorization", "Basic Yng6Yng=")
        .header("Accept", "application/json")
        .form(&[("grant_type", grant), ("apikey", apikey)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn as_bearer(server: &Server, token: &str) -> Client {
    Client {
        token: token.to_owned(),
        ..server.client()
    }
}

async fn new_api_key(admin: &Client, principal: &str) -> (String, String) {
    let key = admin
        .post(
            &format!("/api/v4/access/principals/{principal}/api_keys"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(key.status, 201, "{}", key.body);
    (
        id(&key.body),
        key.body["apikey"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn api_keys_become_access_tokens_that_end_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let admin = server.client();
    let principal = admin
        .post(
            "/api/v4/access/principals",
            &json!({"name": "deployer", "kind": "service"}),
        )
        .await
        .unwrap();
    assert_eq!(principal.status, 201);
    let principal = id(&principal.body);
    let (key_id, apikey) = new_api_key(&admin, &principal).await;

    let (status, token) = exchange(&server.base, &apikey, APIKEY_GRANT).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    let now = chrono::Utc::now().timestamp();
    let expiration = token["expiration"].as_i64().unwrap();
    assert!((now + 3590..=now + 3610).contains(&expiration));
    let access = token["access_token"].as_str().unwrap().to_owned();

    let caller = as_bearer(&server, &access);
    // Without a policy the principal may do nothing; a policy applies at once, token unchanged.
    let refused = caller
        .post("/api/v4/vaults", &json!({"name": "made-with-a-token"}))
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    let policy = admin
        .post(
            "/api/v4/access/policies",
            &json!({"principal": {"id": principal}, "role": "vault_administrator"}),
        )
        .await
        .unwrap();
    assert_eq!(policy.status, 201, "{}", policy.body);
    let vault = caller
        .post("/api/v4/vaults", &json!({"name": "made-with-a-token"}))
        .await
        .unwrap();
    assert_eq!(vault.status, 201, "{}", vault.body);
    assert_eq!(vault.body["created_by"], "deployer");
    // Access, the seal and the audit trail are for administrators only.
    for (method, path) in [
        ("GET", "/api/v4/access/principals"),
        ("POST", "/api/v4/system/seal"),
        ("GET", "/api/v4/audit_events"),
    ] {
        let r = caller.send(method, path, None, None).await.unwrap();
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.body["errors"][0]["code"], "forbidden");
    }
    let seal = admin.get("/api/v4/system/seal_status").await.unwrap();
    assert_eq!(
        seal.body["sealed"], false,
        "the principal could not seal the server"
    );

    // Refusals: a wrong key, a wrong grant, a token whose signature was altered.
    let (status, e) = exchange(&server.base, "kp_not-a-key", APIKEY_GRANT).await;
    assert_eq!((status, e["errorCode"].as_str()), (400, Some("BXNIM0415E")));
    let (status, _) = exchange(&server.base, &apikey, "password").await;
    assert_eq!(status, 400);
    let mut forged = access.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        as_bearer(&server, &forged)
            .get("/api/v4/vaults")
            .await
            .unwrap()
            .status,
        401
    );

    // The same through the CLI.
    let made = keyplane(
        &[
            "access",
            "principal-create",
            "--name",
            "cli-made",
            "--kind",
            "user",
        ],
        Some(&server),
        "",
    )
    .await;
    assert!(made.success, "{}", made.stderr);
    let made: Value = serde_json::from_str(&made.stdout).unwrap();
    let key = keyplane(
        &[
            "access",
            "api-key-create",
            "--principal",
            made["id"].as_str().unwrap(),
        ],
        Some(&server),
        "",
    )
    .await;
    assert!(key.success, "{}", key.stderr);
    let key: Value = serde_json::from_str(&key.stdout).unwrap();
    let (status, _) = exchange(&server.base, key["apikey"].as_str().unwrap(), APIKEY_GRANT).await;
    assert_eq!(status, 200);
    let listed = keyplane(&["access", "principals"], Some(&server), "").await;
    assert!(listed.stdout.contains("cli-made") && listed.stdout.contains("deployer"));

    // Tokens survive a restart (the signing key is kept, sealed).
    assert!(server.terminate().await.unwrap());
    let server = start(dir.path()).await;
    let admin = server.client();
    let caller = as_bearer(&server, &access);
    assert_eq!(caller.get("/api/v4/vaults").await.unwrap().status, 200);

    // Revoking the key ends the token at once, and the key can no longer be exchanged.
    let revoked = admin
        .send(
            "DELETE",
            &format!("/api/v4/access/api_keys/{key_id}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, 204);
    assert_eq!(caller.get("/api/v4/vaults").await.unwrap().status, 401);
    let (status, _) = exchange(&server.base, &apikey, APIKEY_GRANT).await;
    assert_eq!(status, 400);

    // The audit trail names the principal, records the failed exchanges, and holds no key.
    let events = admin
        .get("/api/v4/audit_events?limit=200")
        .await
        .unwrap()
        .body;
    let text = events.to_string();
    assert!(!text.contains(&apikey) && !text.contains(&access));
    let list = events["audit_events"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|e| e["initiator"] == "deployer" && e["action"] == "keyplane.vaults.write")
    );
    assert!(
        list.iter()
            .any(|e| e["action"] == "keyplane.identity.token" && e["outcome"] == "failure")
    );
    assert!(server.terminate().await.unwrap());
}

/// A caller over its call rate gets 429 with `Retry-After`; an address that keeps presenting
/// wrong API keys is held back, even with a right one, until its window passes.
#[tokio::test]
async fn callers_over_their_rate_and_key_guessers_are_held_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &binary(),
        dir.path(),
        &[
            ("KEYPLANE_BOOTSTRAP_TOKEN", TOKEN),
            ("KEYPLANE_RATE_LIMIT", "3"),
        ],
    )
    .await
    .unwrap();
    let admin = server.client();
    let mut limited = None;
    for _ in 0..20 {
        let r = admin
            .http
            .get(format!("{}/api/v4/vaults", admin.base))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the sixth call in a burst of three per second is refused");
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "rate_limited");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let principal = admin
        .post("/api/v4/access/principals", &json!({"name": "guessed"}))
        .await
        .unwrap();
    let (_, apikey) = new_api_key(&admin, &id(&principal.body)).await;
    for _ in 0..10 {
        let (status, _) = exchange(&server.base, "kp_wrong", APIKEY_GRANT).await;
        assert_eq!(status, 400);
    }
    let (status, body) = exchange(&server.base, &apikey, APIKEY_GRANT).await;
    assert_eq!(status, 429, "{body}");
    assert!(server.terminate().await.unwrap());
}
