//! The real `keyplane` binary on a free loopback port, with a plain HTTP client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The file in the data directory that receives the server's log.
pub const SERVER_LOG: &str = "server.log";

pub struct Server {
    child: Child,
    pub base: String,
    pub token: String,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `binary serve` on port 0 with the given extra environment; waits until it listens.
    /// The server's log (standard error) is appended to `server.log` in the data directory, and
    /// no RSA pool is kept unless the environment asks for one.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join(SERVER_LOG))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .env("KEYPLANE_DATA_DIR", data_dir)
            .env("KEYPLANE_LISTEN", "127.0.0.1:0")
            .env("KEYPLANE_LOG", "info")
            .env("KEYPLANE_RSA_POOL", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning keyplane")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut token = env
            .iter()
            .find(|(k, _)| *k == "KEYPLANE_BOOTSTRAP_TOKEN")
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_default();
        let base = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(t) = line.strip_prefix("admin token (shown once, store it now): ") {
                    token = t.trim().to_owned();
                }
                if let Some(addr) = line.strip_prefix("keyplane listening on ") {
                    return Ok::<_, anyhow::Error>(addr.trim().to_owned());
                }
            }
            bail!("keyplane exited before listening")
        })
        .await
        .context("keyplane did not start in time")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            base,
            token,
            data_dir: data_dir.to_owned(),
        })
    }

    pub fn client(&self) -> Client {
        Client {
            http: crate::http_client(),
            base: self.base.clone(),
            token: self.token.clone(),
        }
    }

    /// SIGKILL: no chance to flush or checkpoint.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for a clean exit and returns whether it exited successfully.
    pub async fn terminate(mut self) -> anyhow::Result<bool> {
        let pid = self.child.id().context("no pid")?;
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??;
        Ok(status.success())
    }
}

/// A plain HTTP client of the API, sending what any UKO client sends.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub struct Reply {
    pub status: u16,
    pub etag: String,
    pub body: Value,
}

impl Client {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok(Reply { status, etag, body })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send("GET", path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send("POST", path, Some(body), None).await
    }

    /// Reads the resource's ETag and sends `method resource+action` with it.
    pub async fn with_etag(
        &self,
        method: &str,
        resource: &str,
        action: &str,
    ) -> anyhow::Result<Reply> {
        let etag = self.get(resource).await?.etag;
        self.send(method, &format!("{resource}{action}"), None, Some(&etag))
            .await
    }
}
