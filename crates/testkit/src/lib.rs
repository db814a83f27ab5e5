//! Test harnesses: the API in-process over a real store (SQLite, or PostgreSQL when
//! `KEYPLANE_TEST_DATABASE_URL` names a database), and the real `keyplane` binary.

pub mod azure;
pub mod google;
pub mod kmip;
pub mod peers;

/// An HTTP client for tests (TLS through aws-lc-rs, like the server).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}
pub mod process;
pub mod softhsm;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use keyplane_api::{Authenticator, HttpSettings, Identity};
use keyplane_core::lifecycle::LifecyclePolicy;
use keyplane_core::model::Actor;
use keyplane_core::service::Keyplane;
use keyplane_crypto::{KeyHierarchy, SealMode};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";
pub const PUBLIC_URL: &str = "http://keyplane.test";

/// Fixed tokens, for in-process tests: the administrator's, and any a test adds with roles; the
/// binary's stored tokens are tested end to end.
#[derive(Default)]
struct FixedToken {
    others: std::sync::Mutex<std::collections::HashMap<String, Identity>>,
}

#[async_trait]
impl Authenticator for FixedToken {
    async fn authenticate(&self, bearer: &str) -> keyplane_core::Result<Option<Identity>> {
        if bearer == TEST_TOKEN {
            return Ok(Some(Identity::administrator(Actor("tester".into()))));
        }
        Ok(self
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(bearer)
            .cloned())
    }

    fn mint_api_key(&self) -> keyplane_core::Result<(zeroize::Zeroizing<String>, String)> {
        let key = zeroize::Zeroizing::new(
            keyplane_crypto::new_token()
                .map_err(|e| keyplane_core::Error::internal(e.to_string()))?,
        );
        let digest = keyplane_crypto::token_digest(&key);
        Ok((key, digest))
    }

    /// In-process tests use the fixed token; the token exchange is tested through the binary.
    async fn exchange_api_key(
        &self,
        _apikey: &str,
    ) -> keyplane_core::Result<Option<keyplane_api::AccessToken>> {
        Ok(None)
    }
}

/// The router over a fresh, empty store.
pub struct TestApp {
    pub router: Router,
    pub store: Arc<dyn keyplane_core::ports::Store>,
    /// The services behind the router, for what no HTTP call reaches (shutdown steps).
    pub keyplane: Keyplane,
    pub dir: tempfile::TempDir,
    tokens: Arc<FixedToken>,
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    pub fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }

    /// The first error of the body: UKO's `errors[0]`, or Key Protect's
    /// `resources[0].reasons[0]` on the data plane.
    fn first_error(&self) -> &Value {
        if self.body.get("errors").is_some() {
            &self.body["errors"][0]
        } else {
            &self.body["resources"][0]["reasons"][0]
        }
    }

    /// The first error's code.
    pub fn code(&self) -> &str {
        self.first_error()["code"].as_str().unwrap_or_default()
    }

    pub fn target(&self) -> &str {
        self.first_error()["target"]["name"]
            .as_str()
            .unwrap_or_default()
    }

    pub fn message(&self) -> &str {
        self.first_error()["message"].as_str().unwrap_or_default()
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_policy(LifecyclePolicy {
            destroy_grace_period: chrono::Duration::zero(),
            rotation_min_interval: chrono::Duration::zero(),
        })
        .await
    }

    pub async fn with_policy(policy: LifecyclePolicy) -> Self {
        Self::build(policy, std::time::Duration::from_secs(30)).await
    }

    /// An app whose requests time out after `timeout`.
    pub async fn with_request_timeout(timeout: std::time::Duration) -> Self {
        Self::build(LifecyclePolicy::default(), timeout).await
    }

    async fn build(policy: LifecyclePolicy, request_timeout: std::time::Duration) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // SQLite, or a schema of its own in PostgreSQL when the suite runs on that engine.
        let store = keyplane_store::open_scratch_store()
            .await
            .expect("open store");
        let engine = KeyHierarchy::start(store.clone(), SealMode::Ephemeral)
            .await
            .expect("key hierarchy");
        // No connectors: external keystores are only stored here (their remote side is tested
        // through the real binary against real targets).
        let keyplane = Keyplane::new(store.clone(), engine, policy);
        let tokens = Arc::new(FixedToken::default());
        let router = keyplane_api::app(
            keyplane.clone(),
            tokens.clone(),
            &HttpSettings {
                public_url: PUBLIC_URL.into(),
                request_timeout,
                metrics: Default::default(),
            },
        );
        Self {
            router,
            store,
            keyplane,
            dir,
            tokens,
        }
    }

    /// Adds a token for a caller named `name` holding `policies` (role, vault or every vault).
    pub fn add_caller(
        &self,
        token: &str,
        name: &str,
        policies: &[(keyplane_core::authz::Role, Option<uuid::Uuid>)],
    ) {
        self.tokens
            .others
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.to_owned(),
                Identity {
                    actor: Actor(name.to_owned()),
                    grants: std::sync::Arc::new(keyplane_core::authz::Grants::from_policies(
                        policies,
                    )),
                },
            );
    }

    /// Sends a request with `token` instead of the test caller's.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    /// Sends `body` as it is, labelled JSON, with `token`: for bodies no `Value` can hold.
    pub async fn call_raw_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: impl Into<Body>,
    ) -> TestResponse {
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request");
        self.send(req).await
    }

    /// Sends a request as the test caller. `body` is sent as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        self.call_as(TEST_TOKEN, method, path, body, headers).await
    }

    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.call("GET", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.call("POST", path, Some(body), &[]).await
    }

    /// Reads the resource's ETag, then sends the change with it.
    pub async fn with_etag(
        &self,
        method: &str,
        resource: &str,
        action: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let etag = self.get(resource).await.expect(200).etag();
        self.call(
            method,
            &format!("{resource}{action}"),
            body,
            &[("if-match", &etag)],
        )
        .await
    }

    pub async fn vault(&self, name: &str) -> String {
        self.post("/api/v4/vaults", json!({ "name": name }))
            .await
            .expect(201)
            .id()
    }

    /// Puts the vault under dual control (as the admin).
    pub async fn require_dual_control(&self, vault: &str) {
        self.call(
            "PUT",
            &format!("/api/v4/vaults/{vault}/dual_control"),
            Some(json!({ "enabled": true })),
            &[],
        )
        .await
        .expect(200);
    }

    pub async fn internal_keystore(&self, vault: &str, name: &str, groups: &[&str]) -> String {
        self.post(
            "/api/v4/keystores",
            json!({ "type": "ibm_cloud_kms", "ibm_variant": "internal", "vault": { "id": vault }, "name": name, "groups": groups }),
        )
        .await
        .expect(201)
        .id()
    }

    pub async fn template(
        &self,
        vault: &str,
        name: &str,
        algorithm: &str,
        size: &str,
        state: &str,
        group: &str,
    ) -> String {
        self.post(
            "/api/v4/templates",
            json!({
                "vault": { "id": vault }, "name": name,
                "key": { "algorithm": algorithm, "size": size, "state": state },
                "keystores": [{ "type": "ibm_cloud_kms", "group": group }]
            }),
        )
        .await
        .expect(201)
        .id()
    }

    pub async fn key(&self, vault: &str, template: &str, label: &str) -> TestResponse {
        self.post(
            "/api/v4/managed_keys",
            json!({ "vault": { "id": vault }, "template_name": template, "label": label }),
        )
        .await
    }
}
