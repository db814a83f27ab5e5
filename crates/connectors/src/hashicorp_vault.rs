//! `hashicorp_vault`: the transit engine of HashiCorp Vault or OpenBao.
//!
//! Install is transit's BYOK import under the engine's RSA wrapping key; a rotation imports the
//! new version with `import_version`; destroy sets `deletion_allowed` and deletes. Transit keys
//! have no disabled state, so a deactivated key's copy stays as it is (existing ciphertexts keep
//! decrypting) and is reported as present.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, ProbeCiphertext, RemoteFailure, RemoteKey, RemoteResult,
    TransferWrapping,
};
use keyplane_core::model::Algorithm;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::http;

/// How the connector proves who it is.
pub enum Credentials {
    Token(String),
    AppRole { role_id: String, secret_id: String },
}

pub struct Settings {
    /// Base URL, e.g. `https://vault.example:8200`.
    pub address: String,
    pub credentials: Credentials,
    pub mount: String,
    pub namespace: Option<String>,
    pub ca_cert: Option<String>,
}

pub struct HashicorpVault {
    base: String,
    mount: String,
    namespace: Option<String>,
    credentials: Credentials,
    /// The token in use: the static one, or the last AppRole login's.
    token: Mutex<Option<String>>,
    wrapping_key: Mutex<Option<Vec<u8>>>,
    client: reqwest::Client,
}

/// Transit's key type for a managed key.
fn transit_type(algorithm: Algorithm, size: u32) -> RemoteResult<&'static str> {
    Ok(match (algorithm, size) {
        (Algorithm::Aes, 128) => "aes128-gcm96",
        (Algorithm::Aes, 256) => "aes256-gcm96",
        (Algorithm::Rsa, 2048) => "rsa-2048",
        (Algorithm::Rsa, 3072) => "rsa-3072",
        (Algorithm::Rsa, 4096) => "rsa-4096",
        (Algorithm::Ec, 256) => "ecdsa-p256",
        (Algorithm::Ec, 384) => "ecdsa-p384",
        (Algorithm::Ec, 521) => "ecdsa-p521",
        (Algorithm::Hmac, _) => "hmac",
        _ => {
            return Err(RemoteFailure::new(
                FailureKind::Rejected,
                format!("transit has no key type for {algorithm} {size}"),
            ));
        }
    })
}

/// Transit key names are path segments: keep them to a safe alphabet.
fn key_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl HashicorpVault {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let token = match &settings.credentials {
            Credentials::Token(t) => Some(t.clone()),
            Credentials::AppRole { .. } => None,
        };
        Ok(Self {
            base: settings.address.trim_end_matches('/').to_owned(),
            mount: settings.mount.trim_matches('/').to_owned(),
            namespace: settings.namespace.filter(|n| !n.is_empty()),
            credentials: settings.credentials,
            token: Mutex::new(token),
            wrapping_key: Mutex::new(None),
            client: http::client(settings.ca_cert.as_deref())?,
        })
    }

    async fn token(&self) -> RemoteResult<String> {
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref() {
            return Ok(t.clone());
        }
        let Credentials::AppRole { role_id, secret_id } = &self.credentials else {
            return Err(RemoteFailure::new(FailureKind::BadCredentials, "no token"));
        };
        let (status, body) = self
            .send(
                Method::POST,
                "auth/approle/login",
                Some(json!({"role_id": role_id, "secret_id": secret_id})),
                None,
            )
            .await?;
        if status != 200 {
            let mut failure = http::status_failure(status, "AppRole login", &errors(&body));
            if matches!(status, 400 | 403) {
                failure.kind = FailureKind::BadCredentials;
            }
            return Err(failure);
        }
        let token = body["auth"]["client_token"]
            .as_str()
            .ok_or_else(|| {
                RemoteFailure::new(FailureKind::Rejected, "AppRole login returned no token")
            })?
            .to_owned();
        *held = Some(token.clone());
        Ok(token)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> RemoteResult<(u16, Value)> {
        let url = format!("{}/v1/{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(t) = token {
            request = request.header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| http::transport_failure(&format!("Vault at {}", self.base), &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| http::transport_failure(&format!("Vault at {}", self.base), &e))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// An authenticated call; an AppRole token that expired is renewed once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> RemoteResult<(u16, Value)> {
        let token = self.token().await?;
        let (status, value) = self
            .send(method.clone(), path, body.clone(), Some(&token))
            .await?;
        if status == 403 && matches!(self.credentials, Credentials::AppRole { .. }) {
            *self.token.lock().await = None;
            let token = self.token().await?;
            return self.send(method, path, body, Some(&token)).await;
        }
        Ok((status, value))
    }

    async fn expect_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> RemoteResult<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(http::status_failure(status, what, &errors(&value)))
        }
    }

    /// The engine's wrapping key, read once (it does not change for a mount).
    async fn wrapping_key(&self) -> RemoteResult<Vec<u8>> {
        let mut held = self.wrapping_key.lock().await;
        if let Some(der) = held.as_ref() {
            return Ok(der.clone());
        }
        let der = self.read_wrapping_key().await?;
        *held = Some(der.clone());
        Ok(der)
    }

    async fn read_wrapping_key(&self) -> RemoteResult<Vec<u8>> {
        let what = format!("reading {}/wrapping_key", self.mount);
        let (status, value) = self
            .call(Method::GET, &format!("{}/wrapping_key", self.mount), None)
            .await?;
        match status {
            200 => {}
            // Vault answers an unmounted path with 400 ("no handler for route") or 404.
            400 | 404 => {
                return Err(RemoteFailure::new(
                    FailureKind::Rejected,
                    format!("no transit engine is mounted at '{}'", self.mount),
                ));
            }
            _ => return Err(http::status_failure(status, &what, &errors(&value))),
        }
        let pem = value["data"]["public_key"].as_str().ok_or_else(|| {
            RemoteFailure::new(FailureKind::Rejected, "the transit wrapping key is missing")
        })?;
        http::pem_to_der(pem, "the transit wrapping key")
    }

    async fn wrapped(&self, key: &KeyToInstall<'_>) -> RemoteResult<String> {
        let der = self.wrapping_key().await?;
        let blob = key
            .material
            .wrapped_for(&TransferWrapping::RsaAesKeyWrapSha256 {
                public_key_der: der,
            })
            .await
            .map_err(|e| RemoteFailure::new(FailureKind::Rejected, e.to_string()))?;
        Ok(B64.encode(blob))
    }

    fn key_path(&self, name: &str) -> String {
        format!("{}/keys/{name}", self.mount)
    }
}

fn errors(body: &Value) -> String {
    match body["errors"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().replace('\n', " "))
            .collect::<Vec<_>>()
            .join("; "),
        None => String::new(),
    }
}

fn remote_key(name: &str, body: &Value) -> RemoteKey {
    RemoteKey {
        remote_id: name.to_owned(),
        // Transit has no disabled state.
        enabled: true,
        version: body["data"]["latest_version"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(1),
    }
}

#[async_trait]
impl Connector for HashicorpVault {
    async fn test(&self) -> RemoteResult<()> {
        let token = self.token().await?;
        let (status, value) = self
            .send(Method::GET, "auth/token/lookup-self", None, Some(&token))
            .await?;
        match status {
            200 => {}
            // An unknown token answers "permission denied".
            401 | 403 => {
                return Err(RemoteFailure::new(
                    FailureKind::BadCredentials,
                    format!("Vault at {} refused the token", self.base),
                ));
            }
            _ => {
                return Err(http::status_failure(
                    status,
                    "checking the token",
                    &errors(&value),
                ));
            }
        }
        self.read_wrapping_key().await.map(|_| ()).map_err(|mut f| {
            if f.kind == FailureKind::MissingPermission {
                f.message = format!(
                    "the token may not read {}/wrapping_key, which importing keys needs",
                    self.mount
                );
            }
            f
        })
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        let name = remote_id.map_or_else(|| key_name(label), str::to_owned);
        let (status, value) = self.call(Method::GET, &self.key_path(&name), None).await?;
        match status {
            200 => Ok(Some(remote_key(&name, &value))),
            404 => Ok(None),
            _ => Err(http::status_failure(
                status,
                &format!("reading transit key '{name}'"),
                &errors(&value),
            )),
        }
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let name = key_name(key.label);
        let body = json!({
            "ciphertext": self.wrapped(key).await?,
            "type": transit_type(key.algorithm, key.size)?,
            "hash_function": "SHA256",
        });
        let (status, value) = self
            .call(
                Method::POST,
                &format!("{}/import", self.key_path(&name)),
                Some(body),
            )
            .await?;
        match status {
            200..=299 => Ok(RemoteKey {
                remote_id: name,
                enabled: true,
                version: 1,
            }),
            // Already there (an earlier attempt got this far): report what is there.
            400 if errors(&value).contains("existing key") => {
                self.find(Some(&name), key.label).await?.ok_or_else(|| {
                    RemoteFailure::new(
                        FailureKind::Transient,
                        format!("transit key '{name}' exists and cannot be read"),
                    )
                })
            }
            _ => Err(http::status_failure(
                status,
                &format!("importing transit key '{name}'"),
                &errors(&value),
            )),
        }
    }

    async fn cannot_govern(
        &self,
        remote: &RemoteKey,
        _key_id: uuid::Uuid,
    ) -> RemoteResult<Option<String>> {
        let (status, value) = self
            .call(Method::GET, &self.key_path(&remote.remote_id), None)
            .await?;
        if status != 200 {
            return Err(http::status_failure(
                status,
                &format!("reading transit key '{}'", remote.remote_id),
                &errors(&value),
            ));
        }
        // Transit takes new versions only into keys that were imported.
        Ok((value["data"]["imported_key"] == false).then(|| {
            "transit generated this key rather than importing it, so no version Keyplane makes can \
             be added to it"
                .to_owned()
        }))
    }

    async fn set_enabled(&self, remote: &RemoteKey, _enabled: bool) -> RemoteResult<RemoteKey> {
        Ok(remote.clone())
    }

    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let body = json!({
            "ciphertext": self.wrapped(key).await?,
            "hash_function": "SHA256",
        });
        self.expect_ok(
            Method::POST,
            &format!("{}/import_version", self.key_path(&remote.remote_id)),
            Some(body),
            &format!(
                "importing a new version of transit key '{}'",
                remote.remote_id
            ),
        )
        .await?;
        self.find(Some(&remote.remote_id), key.label)
            .await?
            .ok_or_else(|| {
                RemoteFailure::new(
                    FailureKind::Transient,
                    format!("transit key '{}' disappeared", remote.remote_id),
                )
            })
    }

    async fn encrypt_probe(
        &self,
        remote: &RemoteKey,
        plaintext: &[u8],
    ) -> RemoteResult<Option<ProbeCiphertext>> {
        let info = self
            .expect_ok(
                Method::GET,
                &self.key_path(&remote.remote_id),
                None,
                "reading a transit key",
            )
            .await?;
        if info["data"]["type"] != "aes256-gcm96" {
            return Ok(None);
        }
        let answer = self
            .expect_ok(
                Method::POST,
                &format!("{}/encrypt/{}", self.mount, remote.remote_id),
                Some(json!({"plaintext": B64.encode(plaintext)})),
                &format!("encrypting with transit key '{}'", remote.remote_id),
            )
            .await?;
        // `vault:vN:` ‖ base64(nonce ‖ ciphertext ‖ tag).
        let sealed = answer["data"]["ciphertext"]
            .as_str()
            .and_then(|c| c.splitn(3, ':').nth(2))
            .and_then(|b| B64.decode(b).ok())
            .map(|sealed| ProbeCiphertext {
                sealed,
                aad: Vec::new(),
            });
        Ok(sealed)
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        let path = self.key_path(&remote.remote_id);
        let (status, value) = self
            .call(
                Method::POST,
                &format!("{path}/config"),
                Some(json!({"deletion_allowed": true})),
            )
            .await?;
        match status {
            200..=299 => {}
            // Already gone (Vault answers a missing key's config with 400 or 404).
            400 | 404 if self.find(Some(&remote.remote_id), "").await?.is_none() => return Ok(()),
            _ => {
                return Err(http::status_failure(
                    status,
                    &format!("allowing deletion of transit key '{}'", remote.remote_id),
                    &errors(&value),
                ));
            }
        }
        let (status, value) = self.call(Method::DELETE, &path, None).await?;
        // Deleted meanwhile by another caller (OpenBao answers 400 "not found" then).
        let gone = status == 404
            || (status == 400 && self.find(Some(&remote.remote_id), "").await?.is_none());
        if (200..300).contains(&status) || gone {
            Ok(())
        } else {
            Err(http::status_failure(
                status,
                &format!("deleting transit key '{}'", remote.remote_id),
                &errors(&value),
            ))
        }
    }
}
