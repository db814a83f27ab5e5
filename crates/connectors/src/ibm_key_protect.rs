//! IBM Key Protect and Hyper Protect Crypto Services (its KMS API): the Key Protect v2 REST API
//! with IAM API-key tokens. Keys are imported as root keys, their material RSA-OAEP encrypted
//! under the instance's import token with the token's nonce as proof; the label is the key's
//! name and alias. Disable and enable map to the provider's actions, rotation imports a new
//! version, destroy deletes the key.

use std::time::{Duration, Instant};

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
use uuid::Uuid;

use crate::http::{self, rejected};

const KEY_MEDIA_TYPE: &str = "application/vnd.ibm.kms.key+json";
const APIKEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";
/// How long an import token this connector creates lives.
const IMPORT_TOKEN_SECONDS: u64 = 3600;
/// Tokens are renewed this long before they expire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

pub struct Settings {
    /// Base URL of the KMS API, e.g. `https://us-south.kms.cloud.ibm.com`.
    pub api_endpoint: String,
    /// Base URL of IAM, e.g. `https://iam.cloud.ibm.com`.
    pub iam_endpoint: String,
    pub api_key: String,
    pub instance_id: String,
    /// Key ring; `None` or `default` is the instance's default ring.
    pub key_ring: Option<String>,
}

/// An import token as retrieved: its public key and nonce.
#[derive(Clone)]
struct ImportToken {
    public_key_der: Vec<u8>,
    nonce: Vec<u8>,
    renew_at: Instant,
}

pub struct KeyProtect {
    api: String,
    iam: String,
    api_key: String,
    instance_id: String,
    key_ring: Option<String>,
    access_token: Mutex<Option<(String, Instant)>>,
    import_token: Mutex<Option<ImportToken>>,
    client: reqwest::Client,
}

/// The first error message of a Key Protect error body.
fn error_message(body: &Value) -> String {
    let resource = &body["resources"][0];
    resource["reasons"][0]["message"]
        .as_str()
        .or_else(|| resource["errorMsg"].as_str())
        .or_else(|| body["errorMessage"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The key a Key Protect key resource describes; `None` once it is destroyed.
fn remote_key(resource: &Value) -> RemoteResult<Option<RemoteKey>> {
    let id = resource["id"]
        .as_str()
        .ok_or_else(|| RemoteFailure::new(FailureKind::Rejected, "a key resource without an id"))?;
    let state = resource["state"].as_u64().unwrap_or(0);
    if state == 5 || resource["deleted"] == true {
        return Ok(None);
    }
    Ok(Some(RemoteKey {
        remote_id: id.to_owned(),
        // 1 active; 2 suspended and 3 deactivated cannot be used.
        enabled: state == 1,
        version: 1,
    }))
}

impl KeyProtect {
    pub fn new(settings: Settings) -> Result<Self, String> {
        Ok(Self {
            api: settings.api_endpoint.trim_end_matches('/').to_owned(),
            iam: settings.iam_endpoint.trim_end_matches('/').to_owned(),
            api_key: settings.api_key,
            instance_id: settings.instance_id,
            key_ring: settings
                .key_ring
                .filter(|r| !r.is_empty() && r != "default"),
            access_token: Mutex::new(None),
            import_token: Mutex::new(None),
            client: http::client(None)?,
        })
    }

    /// An IAM access token for the API key, reused until shortly before it expires.
    async fn access_token(&self) -> RemoteResult<String> {
        let mut held = self.access_token.lock().await;
        if let Some((token, renew_at)) = held.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let target = format!("IAM at {}", self.iam);
        let response = self
            .client
            .post(format!("{}/identity/token", self.iam))
            .header("Accept", "application/json")
            .form(&[("grant_type", APIKEY_GRANT), ("apikey", &self.api_key)])
            .send()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            let mut failure =
                http::status_failure(status, "exchanging the API key", &error_message(&body));
            // IAM answers an unknown or disabled API key with 400.
            if matches!(status, 400 | 401) {
                failure.kind = FailureKind::BadCredentials;
            }
            return Err(failure);
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| rejected("IAM returned no access token"))?
            .to_owned();
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(600));
        let renew_at = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        *held = Some((token.clone(), renew_at));
        Ok(token)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: &str,
    ) -> RemoteResult<(u16, Value)> {
        let target = format!("the KMS API at {}", self.api);
        let mut request = self
            .client
            .request(method, format!("{}/api/v2/{path}", self.api))
            .bearer_auth(token)
            .header("bluemix-instance", &self.instance_id)
            .header("Accept", "application/json");
        if let Some(ring) = &self.key_ring {
            request = request.header("X-Kms-Key-Ring", ring);
        }
        if let Some(b) = body {
            request = request
                .header("Content-Type", KEY_MEDIA_TYPE)
                .body(b.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// An authenticated call; a token the API no longer accepts is renewed once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> RemoteResult<(u16, Value)> {
        let token = self.access_token().await?;
        let (status, value) = self.send(method.clone(), path, body, &token).await?;
        if status != 401 {
            return Ok((status, value));
        }
        *self.access_token.lock().await = None;
        let token = self.access_token().await?;
        self.send(method, path, body, &token).await
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> RemoteResult<Value> {
        let (status, value) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(http::status_failure(status, what, &error_message(&value)))
        }
    }

    /// The instance's import token, created and retrieved once and reused until it nears expiry.
    async fn import_token(&self) -> RemoteResult<ImportToken> {
        let mut held = self.import_token.lock().await;
        if let Some(t) = held.as_ref()
            && Instant::now() < t.renew_at
        {
            return Ok(t.clone());
        }
        let (status, body) = self
            .call(
                Method::POST,
                "import_token",
                Some(&json!({"expiration": IMPORT_TOKEN_SECONDS, "maxAllowedRetrievals": 1})),
            )
            .await?;
        match status {
            200 | 201 => {}
            404 => {
                return Err(rejected(
                    "the instance offers no import token; keyplane sends key material only \
                     encrypted under one",
                ));
            }
            _ => {
                return Err(http::status_failure(
                    status,
                    "creating an import token",
                    &error_message(&body),
                ));
            }
        }
        let body = self
            .expect(
                Method::GET,
                "import_token",
                None,
                "retrieving the import token",
            )
            .await?;
        let pem = body["payload"]
            .as_str()
            .and_then(|p| B64.decode(p).ok())
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| rejected("the import token has no public key"))?;
        let nonce = body["nonce"]
            .as_str()
            .and_then(|n| B64.decode(n).ok())
            .ok_or_else(|| rejected("the import token has no nonce"))?;
        let token = ImportToken {
            public_key_der: http::pem_to_der(&pem, "the import token's public key")?,
            nonce,
            renew_at: Instant::now()
                + Duration::from_secs(IMPORT_TOKEN_SECONDS).saturating_sub(EXPIRY_MARGIN),
        };
        *held = Some(token.clone());
        Ok(token)
    }

    /// The material fields of a create or rotate: the key encrypted under the import token, and
    /// the token's nonce encrypted under the key.
    async fn material_fields(&self, key: &KeyToInstall<'_>) -> RemoteResult<Value> {
        if key.algorithm != Algorithm::Aes {
            return Err(rejected(format!(
                "Key Protect root keys are AES; a {} key cannot be imported",
                key.algorithm
            )));
        }
        let token = self.import_token().await?;
        let local = |e: keyplane_core::Error| rejected(e.to_string());
        let payload = key
            .material
            .wrapped_for(&TransferWrapping::RsaOaepSha256 {
                public_key_der: token.public_key_der.clone(),
            })
            .await
            .map_err(local)?;
        let (iv, encrypted_nonce) = key
            .material
            .encrypt_nonce(&token.nonce)
            .await
            .map_err(local)?;
        Ok(json!({
            "payload": B64.encode(payload),
            "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
            "encryptedNonce": B64.encode(encrypted_nonce),
            "iv": B64.encode(iv),
        }))
    }

    /// Runs an import; when the instance refuses the token (another client replaced it), a new
    /// token is fetched and the import tried once more.
    async fn import(
        &self,
        key: &KeyToInstall<'_>,
        path: &str,
        body_of: impl Fn(Value) -> Value + Send + Sync,
    ) -> RemoteResult<(u16, Value)> {
        let body = body_of(self.material_fields(key).await?);
        let (status, answer) = self.call(Method::POST, path, Some(&body)).await?;
        if !matches!(status, 400 | 409) || !error_message(&answer).contains("import token") {
            return Ok((status, answer));
        }
        *self.import_token.lock().await = None;
        let body = body_of(self.material_fields(key).await?);
        self.call(Method::POST, path, Some(&body)).await
    }

    /// `keys/{id}`, the id (or alias) encoded as one path segment.
    fn key_path(id: &str) -> String {
        let mut url = reqwest::Url::parse("http://instance/keys/").expect("a constant URL");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(id);
        }
        url.path().trim_start_matches('/').to_owned()
    }
}

#[async_trait]
impl Connector for KeyProtect {
    async fn test(&self) -> RemoteResult<()> {
        let (status, body) = self.call(Method::GET, "keys?limit=1", None).await?;
        match status {
            200 => Ok(()),
            400 | 404 => Err(rejected(format!(
                "the KMS API does not know instance '{}': {}",
                self.instance_id,
                error_message(&body)
            ))),
            _ => Err(http::status_failure(
                status,
                "listing keys",
                &error_message(&body),
            )),
        }
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        for reference in remote_id.into_iter().chain([label]) {
            let (status, body) = self
                .call(Method::GET, &Self::key_path(reference), None)
                .await?;
            match status {
                200 => {
                    if let Some(found) = remote_key(&body["resources"][0])? {
                        return Ok(Some(found));
                    }
                }
                404 | 410 => {}
                _ => {
                    return Err(http::status_failure(
                        status,
                        &format!("reading key '{reference}'"),
                        &error_message(&body),
                    ));
                }
            }
        }
        Ok(None)
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let create = |material: Value| {
            let mut resource = json!({
                "type": KEY_MEDIA_TYPE,
                "name": key.label,
                "description": format!("managed by keyplane (key {})", key.key_id),
                "extractable": false,
            });
            if let (Some(r), Value::Object(m)) = (resource.as_object_mut(), material) {
                r.extend(m);
            }
            json!({
                "metadata": {"collectionType": KEY_MEDIA_TYPE, "collectionTotal": 1},
                "resources": [resource],
            })
        };
        let (status, body) = self.import(key, "keys", create).await?;
        match status {
            200 | 201 => remote_key(&body["resources"][0])?
                .ok_or_else(|| rejected("the created key is reported destroyed")),
            // Created by an earlier attempt that did not see its answer.
            409 => self.find(None, key.label).await?.ok_or_else(|| {
                rejected(format!(
                    "a key named '{}' exists but cannot be read",
                    key.label
                ))
            }),
            _ => Err(http::status_failure(
                status,
                &format!("importing key '{}'", key.label),
                &error_message(&body),
            )),
        }
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        let action = if enabled { "enable" } else { "disable" };
        self.expect(
            Method::POST,
            &format!("{}/actions/{action}", Self::key_path(&remote.remote_id)),
            None,
            &format!("{action} of key '{}'", remote.remote_id),
        )
        .await?;
        Ok(RemoteKey {
            enabled,
            ..remote.clone()
        })
    }

    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let path = format!("{}/actions/rotate", Self::key_path(&remote.remote_id));
        let (status, body) = self.import(key, &path, |material| material).await?;
        if !(200..300).contains(&status) {
            return Err(http::status_failure(
                status,
                &format!("rotating key '{}'", remote.remote_id),
                &error_message(&body),
            ));
        }
        Ok(RemoteKey {
            version: remote.version + 1,
            ..remote.clone()
        })
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        let (status, body) = self
            .call(Method::DELETE, &Self::key_path(&remote.remote_id), None)
            .await?;
        match status {
            200..=299 | 404 | 410 => Ok(()),
            _ => Err(http::status_failure(
                status,
                &format!("deleting key '{}'", remote.remote_id),
                &error_message(&body),
            )),
        }
    }

    async fn encrypt_probe(
        &self,
        remote: &RemoteKey,
        plaintext: &[u8],
    ) -> RemoteResult<Option<ProbeCiphertext>> {
        let Ok(key_id) = Uuid::parse_str(&remote.remote_id) else {
            return Ok(None);
        };
        let body = self
            .expect(
                Method::POST,
                &format!("{}/actions/wrap", Self::key_path(&remote.remote_id)),
                Some(&json!({"plaintext": B64.encode(plaintext)})),
                &format!("wrapping with key '{}'", remote.remote_id),
            )
            .await?;
        // Only a keyplane instance's ciphertext can be opened here; Key Protect's is opaque.
        Ok(body["ciphertext"]
            .as_str()
            .and_then(|c| B64.decode(c).ok())
            .and_then(|c| keyplane_core::service::wrapped_probe(key_id, &c)))
    }
}
