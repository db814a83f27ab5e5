//! The source: a UKO v4 server, signed in to with an IAM API key and read page by page at a
//! bounded rate, retrying throttling and server errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use keyplane_client::{Client, ClientError, Credential, Settings};
use serde_json::Value;
use zeroize::Zeroizing;

use super::text;

pub(super) struct Source {
    /// Replaced by a new sign-in when the token expires (IAM tokens last about an hour).
    client: tokio::sync::RwLock<Client>,
    login: Login,
    every: Duration,
    last: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What a sign-in to the source takes.
struct Login {
    url: String,
    iam_url: String,
    api_key: Zeroizing<String>,
    ca_cert_pem: Option<String>,
}

impl Login {
    async fn sign_in(&self) -> anyhow::Result<Client> {
        Client::connect(Settings {
            url: self.url.clone(),
            credential: Credential::ApiKey(self.api_key.to_string()),
            ca_cert_pem: self.ca_cert_pem.clone(),
            iam_url: Some(self.iam_url.clone()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("signing in to the source: {e}"))
    }
}

/// Page size of source reads.
pub(super) const PAGE: u32 = 100;
/// Attempts per source read that is throttled or fails on the server's side.
pub(super) const SOURCE_ATTEMPTS: u32 = 6;

impl Source {
    /// Signs in with the API key from `key_file`, or `IBMCLOUD_API_KEY`, exchanged at `iam_url`
    /// (trusting `ca_file` for both, when given).
    pub(super) async fn connect(
        url: &str,
        iam_url: &str,
        key_file: Option<&Path>,
        ca_file: Option<&Path>,
        rate: u32,
    ) -> anyhow::Result<Self> {
        let api_key = match key_file {
            Some(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => Zeroizing::new(std::env::var("IBMCLOUD_API_KEY").map_err(|_| {
                anyhow::anyhow!(
                    "no source API key: give --source-api-key-file, or set IBMCLOUD_API_KEY"
                )
            })?),
        };
        let ca_cert_pem = ca_file
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .transpose()?;
        let login = Login {
            url: url.to_owned(),
            iam_url: iam_url.to_owned(),
            api_key,
            ca_cert_pem,
        };
        Ok(Self {
            client: tokio::sync::RwLock::new(login.sign_in().await?),
            login,
            every: Duration::from_secs(1) / rate.max(1),
            last: tokio::sync::Mutex::new(None),
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut wait = Duration::from_millis(500);
        let mut signed_in_again = false;
        for attempt in 1..=SOURCE_ATTEMPTS {
            {
                let mut last = self.last.lock().await;
                if let Some(at) = *last {
                    tokio::time::sleep_until(at + self.every).await;
                }
                *last = Some(tokio::time::Instant::now());
            }
            let answer = self.client.read().await.get(path).await;
            match answer {
                Ok(reply) => return Ok(reply.body),
                // The token expired: sign in again, once per read.
                Err(e) if e.status() == Some(401) && !signed_in_again => {
                    *self.client.write().await = self.login.sign_in().await?;
                    signed_in_again = true;
                }
                Err(e)
                    if attempt < SOURCE_ATTEMPTS
                        && (matches!(e.status(), Some(429 | 500..=599))
                            || matches!(e, ClientError::Unreachable { .. })) =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!("reading {path} from the source: {e}"));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Every item of a source list, page by page.
    async fn list(&self, path: &str, collection: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        loop {
            let page = self
                .get(&format!(
                    "{path}{separator}limit={PAGE}&offset={}",
                    items.len()
                ))
                .await?;
            let batch = page[collection].as_array().cloned().unwrap_or_default();
            let done = batch.len() < PAGE as usize;
            items.extend(batch);
            // A source that gives no total is read until a page comes back short.
            let total = page["total_count"].as_u64().map(|t| t as usize);
            if done || total.is_some_and(|t| items.len() >= t) {
                return Ok(items);
            }
        }
    }
}

/// Everything the source shows.
pub(super) struct Estate {
    pub(super) vaults: Vec<Value>,
    pub(super) templates: Vec<Value>,
    pub(super) keystores: Vec<Value>,
    pub(super) keys: Vec<Value>,
    /// Earlier versions' states of rotated keys, by key id.
    pub(super) versions: BTreeMap<String, Vec<Value>>,
}

pub(super) const EVERY_STATE: &str =
    "pre_activation,active,deactivated,compromised,destroyed,destroyed_compromised";

pub(super) async fn read_estate(source: &Source) -> anyhow::Result<Estate> {
    let vaults = source.list("/api/v4/vaults", "vaults").await?;
    let templates = source.list("/api/v4/templates", "templates").await?;
    let keystores = source.list("/api/v4/keystores", "keystores").await?;
    let keys = source
        .list(
            &format!("/api/v4/managed_keys?state={EVERY_STATE}"),
            "managed_keys",
        )
        .await?;
    let mut versions = BTreeMap::new();
    for key in &keys {
        if key["version"].as_u64().unwrap_or(1) > 1 {
            let id = text(key, "/id");
            let list = source
                .list(
                    // UKO lists only pre-active and active versions unless told.
                    &format!("/api/v4/managed_keys/{id}/versions?state={EVERY_STATE}"),
                    "managed_keys",
                )
                .await?;
            versions.insert(id.to_owned(), list);
        }
    }
    Ok(Estate {
        vaults,
        templates,
        keystores,
        keys,
        versions,
    })
}
