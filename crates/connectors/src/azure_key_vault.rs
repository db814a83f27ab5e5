//! Azure Key Vault and Azure Managed HSM: the Key Vault data-plane REST API (7.5) with a
//! Microsoft Entra ID client-credentials token.
//!
//! Sign-in follows the service's bearer challenge, as Azure's own clients do: a first call
//! without a token is answered 401 with the tenant's authority and the resource to ask a token
//! for (`vault.azure.net`, `managedhsm.azure.net` or a sovereign cloud's), which also tells a
//! Managed HSM from a vault. Tokens are cached until shortly before they expire.
//!
//! Material goes in as Azure's BYOK defines it: a transfer blob (`CKM_RSA_AES_KEY_WRAP`: RSA-OAEP
//! SHA-1 of a fresh AES key, then that key's RFC 5649 wrap of the material) under the
//! key-exchange key `EKMF-BYOK-KEK-FOR-IMPORT` (RSA-HSM 4096, `key_ops: ["import"]`), created
//! when absent. What can live where is decided before anything is sent: AES (`oct-HSM`) only in
//! a Managed HSM, RSA in a Managed HSM or a Premium vault; a Standard vault holds no
//! HSM-protected key. The key's name is its label; each managed version is one Azure version,
//! tagged with the managed key's id and version. Enable and disable set every version's
//! attributes; destroy deletes the key, then purges it where the vault allows (under purge
//! protection it stays deleted until Azure purges it); a deleted copy of this key found when
//! installing is recovered.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex as StdMutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::PublicKeyComponents;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, ProbeCiphertext, RemoteFailure, RemoteKey, RemoteResult,
    TransferWrapping,
};
use keyplane_core::model::{Algorithm, AzureEnvironment, AzureKeyOperation, ProtectionLevel};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::http::{self, error_message, rejected};
use crate::pace::Pace;

const API_VERSION: &str = "7.5";
/// How often, and how far apart, a deletion is looked for before its purge.
const DELETION_POLLS: usize = 20;
const DELETION_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most pages of a key's versions read (25 each).
const MAX_VERSION_PAGES: usize = 40;
/// The key-exchange key BYOK imports go under (the name Azure's BYOK tooling uses).
pub const KEK_NAME: &str = "EKMF-BYOK-KEK-FOR-IMPORT";
const TAG_KEY_ID: &str = "keyplane-managed-key-id";
const TAG_VERSION: &str = "keyplane-version";
/// The longest `Retry-After` waited for within one call; beyond, the call reports throttling.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The resources a token may be asked for: Key Vault and Managed HSM in each Azure cloud.
const KEY_VAULT_RESOURCES: &[&str] = &[
    "https://vault.azure.net",
    "https://vault.usgovcloudapi.net",
    "https://vault.azure.cn",
    "https://vault.microsoftazure.de",
    "https://managedhsm.azure.net",
    "https://managedhsm.usgovcloudapi.net",
    "https://managedhsm.azure.cn",
];

/// Where a connection's Entra ID and Key Vault live.
pub struct Settings {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub environment: AzureEnvironment,
    /// `azure_login_url`; the environment's login host when `None`.
    pub login_url: Option<String>,
    /// `azure_vault_url`; `https://{service_name}.{the environment's vault domain}` when `None`.
    pub vault_url: Option<String>,
    pub service_name: String,
}

/// The login host and vault domain of an Azure cloud.
fn cloud(environment: AzureEnvironment) -> (&'static str, &'static str) {
    match environment {
        AzureEnvironment::Azure => ("https://login.microsoftonline.com", "vault.azure.net"),
        AzureEnvironment::AzureUsGovernment => (
            "https://login.microsoftonline.us",
            "vault.usgovcloudapi.net",
        ),
        AzureEnvironment::AzureChina => ("https://login.chinacloudapi.cn", "vault.azure.cn"),
        AzureEnvironment::AzureGermany => (
            "https://login.microsoftonline.de",
            "vault.microsoftazure.de",
        ),
    }
}

/// What the endpoint is, as its bearer challenge and key-exchange key tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ManagedHsm,
    /// A vault that holds HSM-protected keys (Premium); a Standard vault refuses the
    /// key-exchange key, so no connection to one gets this far.
    PremiumVault,
}

/// The key-exchange key: its version's id (for the blob's header) and public key.
#[derive(Clone)]
struct Kek {
    kid: String,
    public_key_der: Vec<u8>,
}

/// Calls per second, paced under Azure's published per-vault limits (HSM key creates and
/// imports: 10 per 10 s; other key transactions: far more).
struct Quotas {
    hsm_writes: Pace,
    other: Pace,
}

impl Quotas {
    /// The quotas of the vault at `vault_url`, one set per vault in this process: every
    /// keystore connected to that vault (and every revision of one) draws on it.
    fn of(vault_url: &str) -> Arc<Quotas> {
        static BY_VAULT: LazyLock<StdMutex<HashMap<String, Weak<Quotas>>>> =
            LazyLock::new(StdMutex::default);
        let mut all = BY_VAULT.lock().unwrap_or_else(|e| e.into_inner());
        let key = vault_url.to_ascii_lowercase();
        if let Some(held) = all.get(&key).and_then(Weak::upgrade) {
            return held;
        }
        all.retain(|_, q| q.strong_count() > 0);
        let quotas = Arc::new(Quotas {
            hsm_writes: Pace::per_second(1.0),
            other: Pace::per_second(100.0),
        });
        all.insert(key, Arc::downgrade(&quotas));
        quotas
    }
}

pub struct AzureKeyVault {
    tenant: String,
    client_id: String,
    client_secret: String,
    login_url: String,
    vault_url: String,
    /// The resource the vault's challenge named (`https://vault.azure.net`, …).
    resource: Mutex<Option<String>>,
    token: Mutex<Option<http::AccessToken>>,
    endpoint: Mutex<Option<Endpoint>>,
    kek: Mutex<Option<Kek>>,
    quotas: Arc<Quotas>,
    client: reqwest::Client,
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .unwrap_or_default()
}

/// The `resource="…"` a `WWW-Authenticate: Bearer …` challenge names.
fn challenged_resource(header: &str) -> Option<String> {
    header
        .split(',')
        .map(str::trim)
        .map(|p| p.trim_start_matches("Bearer").trim())
        .find_map(|p| {
            p.strip_prefix("resource=")
                .or_else(|| p.strip_prefix("scope="))
        })
        .map(|v| v.trim_matches('"').trim_end_matches("/.default").to_owned())
}

/// A key bundle's newest version as a remote key; the name is its id here.
fn remote_key(name: &str, bundle: &Value) -> RemoteKey {
    RemoteKey {
        remote_id: name.to_owned(),
        enabled: bundle["attributes"]["enabled"].as_bool().unwrap_or(false),
        version: bundle["tags"][TAG_VERSION]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    }
}

/// Whether `name` can be a vault's name (its URL's first label): 3 to 24 letters, digits and
/// hyphens.
pub fn is_vault_name(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A key operation as Azure spells it.
fn key_op(op: AzureKeyOperation) -> &'static str {
    match op {
        AzureKeyOperation::Encrypt => "encrypt",
        AzureKeyOperation::Decrypt => "decrypt",
        AzureKeyOperation::Sign => "sign",
        AzureKeyOperation::Verify => "verify",
        AzureKeyOperation::WrapKey => "wrapKey",
        AzureKeyOperation::UnwrapKey => "unwrapKey",
    }
}

/// The version id at the end of a `kid` (letters and digits; anything else is no version).
fn version_of(kid: &str) -> &str {
    let id = kid.rsplit('/').next().unwrap_or_default();
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        id
    } else {
        "unknown-version"
    }
}

/// Whether `name` can name a key: 1 to 127 letters, digits and hyphens (Azure's rule, and what
/// keyplane's labels in a vault become).
fn is_key_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl AzureKeyVault {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let (login, domain) = cloud(settings.environment);
        let vault_url = settings
            .vault_url
            .unwrap_or_else(|| format!("https://{}.{domain}", settings.service_name));
        Ok(Self {
            tenant: settings.tenant,
            client_id: settings.client_id,
            client_secret: settings.client_secret,
            login_url: settings
                .login_url
                .unwrap_or_else(|| login.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            vault_url: vault_url.trim_end_matches('/').to_owned(),
            resource: Mutex::new(None),
            token: Mutex::new(None),
            endpoint: Mutex::new(None),
            kek: Mutex::new(None),
            quotas: Quotas::of(vault_url.trim_end_matches('/')),
            client: http::client(None)?,
        })
    }

    /// The resource the vault wants tokens for, learnt from its challenge to a call without one.
    async fn resource(&self) -> RemoteResult<String> {
        let mut held = self.resource.lock().await;
        if let Some(r) = held.as_ref() {
            return Ok(r.clone());
        }
        let target = format!("the key vault at {}", self.vault_url);
        let response = self
            .client
            .get(format!(
                "{}/keys?api-version={API_VERSION}&maxresults=1",
                self.vault_url
            ))
            .send()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(challenged_resource);
        let Some(resource) = challenge else {
            return Err(rejected(format!(
                "{target} is not an Azure key vault or Managed HSM (HTTP {status} without a bearer challenge)"
            )));
        };
        // The token goes to this URL: it is asked for a Key Vault resource only, never for
        // whatever a look-alike endpoint's challenge names (Azure Resource Manager, Graph, …).
        if !KEY_VAULT_RESOURCES.contains(&resource.as_str()) {
            return Err(rejected(format!(
                "{target} asked for a token for '{resource}', which is not a Key Vault or Managed HSM resource; no token was requested"
            )));
        }
        // And the vault must be one of that resource's (`*.vault.azure.net` for
        // `https://vault.azure.net`): a token valid for every vault the application can reach
        // goes to no other host. A loopback vault (a local test double) is exempt.
        let domain = resource.trim_start_matches("https://");
        let vault = reqwest::Url::parse(&self.vault_url).ok();
        let host = vault
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_default();
        if !vault.as_ref().is_some_and(http::is_local) && !host.ends_with(&format!(".{domain}")) {
            return Err(rejected(format!(
                "{target} is not a host of '{resource}' (a vault's host ends in .{domain}); no token was requested"
            )));
        }
        *held = Some(resource.clone());
        Ok(resource)
    }

    /// An Entra ID access token for the vault, reused until shortly before it expires.
    async fn access_token(&self) -> RemoteResult<String> {
        let resource = self.resource().await?;
        let mut held = self.token.lock().await;
        if let Some(current) = held.as_ref().and_then(http::AccessToken::current) {
            return Ok(current.to_owned());
        }
        let target = format!("Microsoft Entra ID at {}", self.login_url);
        let scope = format!("{resource}/.default");
        let response = self
            .client
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.login_url, self.tenant
            ))
            .header("Accept", "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
                ("scope", &scope),
            ])
            .send()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        let status = response.status().as_u16();
        let body = http::read_json(response, &target).await?;
        if status != 200 {
            let message = error_message(&body);
            let mut failure = http::status_failure(status, "signing in to Entra ID", &message);
            // Entra ID answers a wrong tenant, client or secret with 400 or 401 and an AADSTS
            // code; an expired secret is AADSTS7000222.
            if matches!(status, 400 | 401)
                && matches!(
                    error_code(&body),
                    "invalid_client" | "unauthorized_client" | "invalid_request"
                )
            {
                failure.kind = FailureKind::BadCredentials;
                if message.contains("AADSTS7000222") {
                    failure.message = format!(
                        "the client secret of application '{}' has expired: {}",
                        self.client_id,
                        message.chars().take(200).collect::<String>()
                    );
                }
            }
            return Err(failure);
        }
        let token = http::AccessToken::from_answer(&body, "Entra ID")?;
        let value = token.value().to_owned();
        *held = Some(token);
        Ok(value)
    }

    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        token: &str,
    ) -> RemoteResult<(u16, Option<Duration>, Value)> {
        let target = format!("the key vault at {}", self.vault_url);
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut request = self
            .client
            .request(
                method.clone(),
                format!(
                    "{}/{path}{separator}api-version={API_VERSION}",
                    self.vault_url
                ),
            )
            .bearer_auth(token)
            .header("Accept", "application/json");
        if let Some(b) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Ok((
            status,
            retry_after,
            http::read_json(response, &target).await?,
        ))
    }

    /// An authenticated call: a token no longer accepted is renewed once, and a 429 whose
    /// `Retry-After` is short is waited out once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        pace: &Pace,
    ) -> RemoteResult<(u16, Value)> {
        let mut renewed = false;
        let mut waited = false;
        loop {
            pace.ready().await;
            let token = self.access_token().await?;
            let (status, retry_after, value) = self.send(&method, path, body, &token).await?;
            match status {
                401 if !renewed => {
                    renewed = true;
                    *self.token.lock().await = None;
                }
                429 if !waited => {
                    let wait = retry_after.unwrap_or(Duration::from_secs(1));
                    if wait > MAX_RETRY_AFTER {
                        return Ok((status, value));
                    }
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok((status, value)),
            }
        }
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> RemoteResult<Value> {
        let (status, value) = self.call(method, path, body, &self.quotas.other).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(http::status_failure(status, what, &error_message(&value)))
        }
    }

    /// `keys/{name}[/{more}…]`, each part encoded as one path segment. Names and version ids
    /// are checked first ([`is_key_name`], [`version_of`]), so no part can be empty or a dot
    /// segment that would name another resource.
    fn key_path(name: &str) -> String {
        Self::key_path_with(name, &[])
    }

    fn key_path_with(name: &str, more: &[&str]) -> String {
        let mut url = reqwest::Url::parse("http://vault/keys/").expect("a constant URL");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(name).extend(more);
        }
        url.path().trim_start_matches('/').to_owned()
    }

    /// The newest version of key `name` (`None` when absent or deleted).
    async fn key_bundle(&self, name: &str) -> RemoteResult<Option<Value>> {
        if !is_key_name(name) {
            return Err(rejected(format!(
                "'{name}' cannot name an Azure key (1 to 127 letters, digits and hyphens)"
            )));
        }
        let (status, body) = self
            .call(Method::GET, &Self::key_path(name), None, &self.quotas.other)
            .await?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => Err(http::status_failure(
                status,
                &format!("reading key '{name}'"),
                &error_message(&body),
            )),
        }
    }

    /// The key-exchange key, created (RSA-HSM 4096, import only) when absent. Its creation
    /// also tells a Premium vault from a Standard one, which refuses HSM-protected keys.
    async fn kek(&self) -> RemoteResult<Kek> {
        let mut held = self.kek.lock().await;
        if let Some(k) = held.as_ref() {
            return Ok(k.clone());
        }
        let bundle = match self.key_bundle(KEK_NAME).await? {
            Some(b) => b,
            None => {
                let (status, body) = self
                    .call(
                        Method::POST,
                        &format!("{}/create", Self::key_path(KEK_NAME)),
                        Some(
                            &json!({"kty": "RSA-HSM", "key_size": 4096, "key_ops": ["import"],
                                     "tags": {"created-by": "keyplane"}}),
                        ),
                        &self.quotas.hsm_writes,
                    )
                    .await?;
                if status == 400 && *self.endpoint.lock().await != Some(Endpoint::ManagedHsm) {
                    // Not remembered: the refusal is asked again at the next attempt.
                    return Err(rejected(format!(
                        "the vault refused the HSM-protected key-exchange key '{KEK_NAME}' (a Standard vault holds no HSM-protected keys; BYOK needs a Premium vault or a Managed HSM): {}",
                        error_message(&body)
                    )));
                }
                if !(200..300).contains(&status) {
                    return Err(http::status_failure(
                        status,
                        &format!("creating the key-exchange key '{KEK_NAME}'"),
                        &error_message(&body),
                    ));
                }
                body
            }
        };
        let key = &bundle["key"];
        if key["kty"] != "RSA-HSM"
            || !key["key_ops"]
                .as_array()
                .is_some_and(|ops| ops.contains(&json!("import")))
        {
            return Err(rejected(format!(
                "'{KEK_NAME}' exists but is not an RSA-HSM key for import"
            )));
        }
        let decode = |field: &str| {
            key[field]
                .as_str()
                .and_then(|v| B64URL.decode(v.trim_end_matches('=')).ok())
                .ok_or_else(|| rejected(format!("'{KEK_NAME}' has no public {field}")))
        };
        let components = PublicKeyComponents {
            n: decode("n")?,
            e: decode("e")?,
        };
        let der: PublicKeyX509Der<'static> = components
            .as_der()
            .map_err(|_| rejected(format!("'{KEK_NAME}' is not a usable RSA public key")))?;
        let kek = Kek {
            kid: key["kid"].as_str().unwrap_or_default().to_owned(),
            public_key_der: der.as_ref().to_vec(),
        };
        *held = Some(kek.clone());
        Ok(kek)
    }

    /// What the endpoint is: a Managed HSM by its challenge's resource; a vault is Premium once
    /// it holds the key-exchange key.
    async fn endpoint(&self) -> RemoteResult<Endpoint> {
        if let Some(e) = *self.endpoint.lock().await {
            return Ok(e);
        }
        if self.resource().await?.contains("managedhsm") {
            *self.endpoint.lock().await = Some(Endpoint::ManagedHsm);
            return Ok(Endpoint::ManagedHsm);
        }
        self.kek().await?;
        *self.endpoint.lock().await = Some(Endpoint::PremiumVault);
        Ok(Endpoint::PremiumVault)
    }

    /// The Azure key type a managed key becomes here, or why it cannot live here.
    async fn kty_for(&self, key: &KeyToInstall<'_>) -> RemoteResult<&'static str> {
        if key.properties.azure_key_protection_level == Some(ProtectionLevel::Software) {
            // A software-protected key is imported as a JWK: the material itself in the request
            // body. Keyplane sends material only wrapped under the target's own key.
            return Err(rejected(
                "a software-protected Azure key would be imported as a JWK, the material in the clear; keyplane sends material only wrapped (BYOK): use protection level hsm",
            ));
        }
        let endpoint = self.endpoint().await?;
        match (key.algorithm, endpoint) {
            (Algorithm::Aes, Endpoint::ManagedHsm) => Ok("oct-HSM"),
            (Algorithm::Aes, _) => Err(rejected(format!(
                "AES keys (oct-HSM) exist only in an Azure Managed HSM; {} is a key vault",
                self.vault_url
            ))),
            (Algorithm::Rsa, Endpoint::ManagedHsm | Endpoint::PremiumVault) => Ok("RSA-HSM"),
            (Algorithm::Ec, Endpoint::ManagedHsm | Endpoint::PremiumVault) => Ok("EC-HSM"),
            (other, _) => Err(rejected(format!(
                "keyplane does not distribute {other} keys to Azure Key Vault"
            ))),
        }
    }

    /// Imports `key`'s newest version as a new version of the Azure key named by its label.
    /// Imports `key`'s newest version, enabled or not, as a new version of the Azure key named
    /// by its label.
    async fn import(&self, key: &KeyToInstall<'_>, enabled: bool) -> RemoteResult<RemoteKey> {
        let kty = self.kty_for(key).await?;
        let kek = self.kek().await?;
        let wrapped = key
            .material
            .wrapped_for(&TransferWrapping::RsaAesKeyWrapSha1 {
                public_key_der: kek.public_key_der.clone(),
            })
            .await
            .map_err(|e| rejected(e.to_string()))?;
        let blob = json!({
            "schema_version": "1.0.0",
            "header": {"kid": kek.kid, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
            "ciphertext": B64URL.encode(wrapped),
            "generator": "keyplane",
        });
        let key_ops: Vec<&str> = match key.properties.azure_key_operations.as_deref() {
            Some([]) => {
                return Err(rejected(
                    "the template's azure_key_operations is empty: an Azure key allowing no operation is of no use",
                ));
            }
            Some(ops) => ops.iter().map(|op| key_op(*op)).collect(),
            _ => match key.algorithm {
                Algorithm::Aes => vec!["encrypt", "decrypt", "wrapKey", "unwrapKey"],
                Algorithm::Ec => vec!["sign", "verify"],
                _ => vec![
                    "encrypt",
                    "decrypt",
                    "wrapKey",
                    "unwrapKey",
                    "sign",
                    "verify",
                ],
            },
        };
        let mut target =
            json!({"kty": kty, "key_ops": key_ops, "key_hsm": B64URL.encode(blob.to_string())});
        if key.algorithm == Algorithm::Ec {
            target["crv"] = json!(match key.size {
                256 => "P-256",
                384 => "P-384",
                521 => "P-521",
                other => return Err(rejected(format!("no Azure curve for EC-{other}"))),
            });
        }
        let body = json!({
            "key": target,
            "Hsm": true,
            "attributes": {"enabled": enabled, "exportable": false},
            "tags": {TAG_KEY_ID: key.key_id.to_string(), TAG_VERSION: key.version.to_string()},
        });
        let (status, answer) = self
            .call(
                Method::PUT,
                &Self::key_path(key.label),
                Some(&body),
                &self.quotas.hsm_writes,
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(http::status_failure(
                status,
                &format!("importing key '{}'", key.label),
                &error_message(&answer),
            ));
        }
        Ok(remote_key(key.label, &answer))
    }

    /// Recovers a deleted copy of this key under its name (Azure keeps deleted keys, and their
    /// names, until they are purged); `None` when no deleted key holds the name.
    async fn recover(&self, key: &KeyToInstall<'_>) -> RemoteResult<Option<RemoteKey>> {
        let path = format!(
            "deletedkeys/{}",
            Self::key_path(key.label).trim_start_matches("keys/")
        );
        let (status, deleted) = self
            .call(Method::GET, &path, None, &self.quotas.other)
            .await?;
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(http::status_failure(
                status,
                &format!("reading deleted key '{}'", key.label),
                &error_message(&deleted),
            ));
        }
        if deleted["tags"][TAG_KEY_ID] != key.key_id.to_string().as_str() {
            return Err(rejected(format!(
                "a deleted key named '{}' that is not this key holds the name until it is purged",
                key.label
            )));
        }
        self.expect(
            Method::POST,
            &format!("{path}/recover"),
            None,
            &format!("recovering deleted key '{}'", key.label),
        )
        .await?;
        // Recovery completes in the background: the key is usable once it reads back.
        for _ in 0..DELETION_POLLS {
            if let Some(bundle) = self.key_bundle(key.label).await? {
                return Ok(Some(remote_key(key.label, &bundle)));
            }
            tokio::time::sleep(DELETION_POLL_INTERVAL).await;
        }
        Err(RemoteFailure::new(
            FailureKind::Transient,
            format!("deleted key '{}' is still being recovered", key.label),
        ))
    }

    /// Every version's id of key `name`, page after page (a `nextLink` is followed only on
    /// the vault's own origin, and at most [`MAX_VERSION_PAGES`] of them).
    async fn version_ids(&self, name: &str) -> RemoteResult<Vec<String>> {
        let what = format!("listing the versions of key '{name}'");
        let mut path = format!("{}/versions?maxresults=25", Self::key_path(name));
        let mut ids = Vec::new();
        for _ in 0..MAX_VERSION_PAGES {
            let listed = self.expect(Method::GET, &path, None, &what).await?;
            ids.extend(
                listed["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["kid"].as_str().map(|k| version_of(k).to_owned())),
            );
            let Some(next) = listed["nextLink"].as_str().filter(|n| !n.is_empty()) else {
                return Ok(ids);
            };
            path = self.same_origin_path(next).ok_or_else(|| {
                rejected(format!(
                    "{what}: the next page is not on the vault's own origin"
                ))
            })?;
        }
        Err(rejected(format!(
            "{what}: more than {MAX_VERSION_PAGES} pages of versions"
        )))
    }

    /// The path and query of `link` (without its api-version, which every call adds), when it
    /// is on the vault's own scheme, host and port.
    fn same_origin_path(&self, link: &str) -> Option<String> {
        let (base, next) = (
            reqwest::Url::parse(&self.vault_url).ok()?,
            reqwest::Url::parse(link).ok()?,
        );
        if base.origin() != next.origin() {
            return None;
        }
        let kept: Vec<(String, String)> = next
            .query_pairs()
            .filter(|(k, _)| k != "api-version")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut rebuilt = next.clone();
        rebuilt.query_pairs_mut().clear().extend_pairs(kept);
        let path = rebuilt.path().trim_start_matches('/');
        Some(match rebuilt.query().filter(|q| !q.is_empty()) {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        })
    }
}

#[async_trait]
impl Connector for AzureKeyVault {
    async fn test(&self) -> RemoteResult<()> {
        // Signs in (the challenge, then the token) and reads keys: the credentials and the
        // permission to list keys are proven; the key-exchange key proves the rest.
        let (status, body) = self
            .call(Method::GET, "keys?maxresults=1", None, &self.quotas.other)
            .await?;
        if status != 200 {
            return Err(http::status_failure(
                status,
                "listing keys",
                &error_message(&body),
            ));
        }
        self.endpoint().await?;
        self.kek().await?;
        Ok(())
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        let name = remote_id.unwrap_or(label);
        Ok(self
            .key_bundle(name)
            .await?
            .map(|bundle| remote_key(name, &bundle)))
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        if key.label.eq_ignore_ascii_case(KEK_NAME) {
            return Err(rejected(format!(
                "'{KEK_NAME}' is the vault's key-exchange key; a managed key cannot take its name"
            )));
        }
        if let Some(bundle) = self.key_bundle(key.label).await? {
            // An earlier attempt that did not see its answer; anything else is not adopted here.
            if bundle["tags"][TAG_KEY_ID] == key.key_id.to_string().as_str() {
                return Ok(remote_key(key.label, &bundle));
            }
            return Err(rejected(format!(
                "the vault already holds a key named '{}' that is not this key",
                key.label
            )));
        }
        if let Some(recovered) = self.recover(key).await? {
            return if recovered.version >= key.version {
                Ok(recovered)
            } else {
                self.rotate(&recovered, key).await
            };
        }
        self.import(key, key.enabled).await
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        for version in self.version_ids(&remote.remote_id).await? {
            self.expect(
                Method::PATCH,
                &Self::key_path_with(&remote.remote_id, &[&version]),
                Some(&json!({"attributes": {"enabled": enabled}})),
                &format!(
                    "{} key '{}'",
                    if enabled { "enabling" } else { "disabling" },
                    remote.remote_id
                ),
            )
            .await?;
        }
        Ok(RemoteKey {
            enabled,
            ..remote.clone()
        })
    }

    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        if remote.version >= key.version {
            return Ok(remote.clone());
        }
        // The new version takes the copy's state: a deactivated key's is never usable, even
        // for the moment until its state is set.
        self.import(
            &KeyToInstall {
                label: &remote.remote_id,
                ..*key
            },
            remote.enabled,
        )
        .await
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        let path = Self::key_path(&remote.remote_id);
        let (status, body) = self
            .call(Method::DELETE, &path, None, &self.quotas.other)
            .await?;
        if !matches!(status, 200 | 404) {
            return Err(http::status_failure(
                status,
                &format!("deleting key '{}'", remote.remote_id),
                &error_message(&body),
            ));
        }
        // Deleting completes in the background: the deleted key shows once it is done, and
        // says whether it may be purged.
        let deleted = format!("deleted{path}");
        let mut bundle = None;
        for _ in 0..DELETION_POLLS {
            let (status, body) = self
                .call(Method::GET, &deleted, None, &self.quotas.other)
                .await?;
            match status {
                200 => {
                    bundle = Some(body);
                    break;
                }
                404 => tokio::time::sleep(DELETION_POLL_INTERVAL).await,
                _ => {
                    return Err(http::status_failure(
                        status,
                        &format!("reading deleted key '{}'", remote.remote_id),
                        &error_message(&body),
                    ));
                }
            }
        }
        let Some(bundle) = bundle else {
            if self.key_bundle(&remote.remote_id).await?.is_none() {
                // Neither live nor deleted: purged already (by an earlier attempt or Azure).
                return Ok(());
            }
            return Err(RemoteFailure::new(
                FailureKind::Transient,
                format!("key '{}' is still being deleted", remote.remote_id),
            ));
        };
        let level = bundle["attributes"]["recoveryLevel"]
            .as_str()
            .unwrap_or_default();
        if !level.contains("Purgeable") {
            // Purge protection: the key stays deleted (not usable, not listed) until Azure
            // purges it at the end of its retention.
            tracing::info!(
                key = %remote.remote_id,
                recovery_level = level,
                "the vault protects deleted keys from purge: the key stays deleted until its retention ends"
            );
            return Ok(());
        }
        let (status, body) = self
            .call(Method::DELETE, &deleted, None, &self.quotas.other)
            .await?;
        match status {
            200..=299 | 404 => Ok(()),
            // Still being deleted, or purged meanwhile by another call: tried again later.
            409 => Err(RemoteFailure::new(
                FailureKind::Transient,
                format!(
                    "purging deleted key '{}': {}",
                    remote.remote_id,
                    error_message(&body)
                ),
            )),
            _ => Err(http::status_failure(
                status,
                &format!("purging deleted key '{}'", remote.remote_id),
                &error_message(&body),
            )),
        }
    }

    async fn pending_removal(&self, remote: &RemoteKey) -> RemoteResult<Option<String>> {
        let path = format!("deleted{}", Self::key_path(&remote.remote_id));
        let (status, deleted) = self
            .call(Method::GET, &path, None, &self.quotas.other)
            .await?;
        if status != 200 {
            return Ok(None);
        }
        let level = deleted["attributes"]["recoveryLevel"]
            .as_str()
            .unwrap_or_default();
        let purge_date = deleted["scheduledPurgeDate"]
            .as_i64()
            .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map_or_else(|| "the end of its retention".to_owned(), |t| t.to_rfc3339());
        Ok(Some(if level.contains("Purgeable") {
            format!("deleted in the vault; its purge is pending (Azure purges it by {purge_date})")
        } else {
            format!(
                "deleted in the vault and kept under purge protection until Azure purges it on {purge_date}; it is not usable meanwhile"
            )
        }))
    }

    async fn encrypt_probe(
        &self,
        remote: &RemoteKey,
        plaintext: &[u8],
    ) -> RemoteResult<Option<ProbeCiphertext>> {
        let Some(bundle) = self.key_bundle(&remote.remote_id).await? else {
            return Ok(None);
        };
        if bundle["key"]["kty"] != "oct-HSM" {
            return Ok(None);
        }
        let version = version_of(bundle["key"]["kid"].as_str().unwrap_or_default()).to_owned();
        let version_path = Self::key_path_with(&remote.remote_id, &[&version]);
        // A disabled key cannot encrypt (a keystore disconnected in `deactivate` mode leaves its
        // copies so): it is enabled for the probe only, and left as it was found.
        let disabled = bundle["attributes"]["enabled"] == false;
        let set_enabled = async |enabled: bool| {
            self.expect(
                Method::PATCH,
                &version_path,
                Some(&json!({"attributes": {"enabled": enabled}})),
                "setting a key's state around the probe",
            )
            .await
        };
        if disabled {
            set_enabled(true).await?;
        }
        let answer = self
            .expect(
                Method::POST,
                &format!("{version_path}/encrypt"),
                Some(&json!({"alg": "A256GCM", "value": B64URL.encode(plaintext)})),
                &format!("encrypting with key '{}'", remote.remote_id),
            )
            .await;
        if disabled {
            set_enabled(false).await?;
        }
        let answer = answer?;
        let field = |f: &str| {
            answer[f]
                .as_str()
                .and_then(|v| B64URL.decode(v.trim_end_matches('=')).ok())
        };
        let (Some(iv), Some(value), Some(tag)) = (field("iv"), field("value"), field("tag")) else {
            return Ok(None);
        };
        Ok(Some(ProbeCiphertext {
            sealed: [iv, value, tag].concat(),
            aad: Vec::new(),
        }))
    }

    async fn mark(&self, remote: &RemoteKey) -> RemoteResult<Option<String>> {
        Ok(self
            .key_bundle(&remote.remote_id)
            .await?
            .and_then(|bundle| bundle["tags"][TAG_KEY_ID].as_str().map(str::to_owned)))
    }

    async fn is_labelled_for(
        &self,
        remote: &RemoteKey,
        key_id: uuid::Uuid,
    ) -> RemoteResult<Option<bool>> {
        Ok(Some(self.key_bundle(&remote.remote_id).await?.is_some_and(
            |bundle| bundle["tags"][TAG_KEY_ID] == key_id.to_string().as_str(),
        )))
    }

    async fn prove_copy(
        &self,
        remote: &RemoteKey,
        key: &KeyToInstall<'_>,
    ) -> RemoteResult<Option<bool>> {
        // A key keyplane did not tag as this one is never adopted; a tagged one still has to
        // prove its material (the encryption probe).
        let Some(bundle) = self.key_bundle(&remote.remote_id).await? else {
            return Ok(Some(false));
        };
        if bundle["tags"][TAG_KEY_ID] != key.key_id.to_string().as_str() {
            return Ok(Some(false));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_names_the_resource_to_ask_a_token_for() {
        assert_eq!(
            challenged_resource(
                r#"Bearer authorization="https://login.microsoftonline.com/t", resource="https://vault.azure.net""#
            ),
            Some("https://vault.azure.net".into())
        );
        assert_eq!(
            challenged_resource(
                r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://managedhsm.azure.net/.default""#
            ),
            Some("https://managedhsm.azure.net".into())
        );
        assert_eq!(challenged_resource("Basic realm=x"), None);
    }

    #[test]
    fn secrets_go_over_https_but_to_this_machine() {
        assert!(http::check_endpoint("https://billing.vault.azure.net").is_ok());
        assert!(http::check_endpoint("http://127.0.0.1:8080").is_ok());
        assert!(http::check_endpoint("http://[::1]:8080").is_ok());
        assert!(http::check_endpoint("http://billing.vault.azure.net").is_err());
        assert!(http::check_endpoint("ftp://billing.vault.azure.net").is_err());
        assert!(is_vault_name("billing-prod-01"));
        for bad in [
            "ab",
            "evil.com/#",
            "-lead",
            "trail-",
            "a_b",
            &"x".repeat(25),
        ] {
            assert!(!is_vault_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_next_page_is_followed_on_the_vault_origin_only() {
        let settings = Settings {
            tenant: "t".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            environment: AzureEnvironment::Azure,
            login_url: None,
            vault_url: Some("https://billing.vault.azure.net".into()),
            service_name: "billing".into(),
        };
        let v = AzureKeyVault::new(settings).unwrap();
        assert_eq!(
            v.same_origin_path(
                "https://billing.vault.azure.net/keys/k/versions?api-version=7.5&maxresults=25&$skiptoken=abc%2Bdef"
            )
            .as_deref(),
            Some("keys/k/versions?maxresults=25&%24skiptoken=abc%2Bdef")
        );
        assert_eq!(
            v.same_origin_path("https://evil.example/keys/k/versions?$skiptoken=1"),
            None
        );
        assert_eq!(
            v.same_origin_path("http://billing.vault.azure.net/keys/k/versions"),
            None
        );
    }

    #[test]
    fn only_plain_names_and_versions_reach_a_path() {
        assert!(is_key_name("billing-2024"));
        for bad in ["", ".", "..", "a/b", "a.b", &"k".repeat(128)] {
            assert!(!is_key_name(bad), "{bad:?}");
        }
        assert_eq!(version_of("https://v/keys/k/0123abcd"), "0123abcd");
        assert_eq!(version_of("https://v/keys/k/.."), "unknown-version");
        assert_eq!(
            AzureKeyVault::key_path_with("k", &["0123abcd"]),
            "keys/k/0123abcd"
        );
    }

    #[test]
    fn keystores_on_one_vault_share_its_quotas() {
        let connect = |url: &str| {
            AzureKeyVault::new(Settings {
                tenant: "t".into(),
                client_id: "c".into(),
                client_secret: "s".into(),
                environment: AzureEnvironment::Azure,
                login_url: None,
                vault_url: Some(url.into()),
                service_name: "x".into(),
            })
            .unwrap()
        };
        let a = connect("https://billing.vault.azure.net");
        let b = connect("https://BILLING.vault.azure.net/");
        let other = connect("https://ledger.vault.azure.net");
        assert!(Arc::ptr_eq(&a.quotas, &b.quotas));
        assert!(!Arc::ptr_eq(&a.quotas, &other.quotas));
    }

    #[test]
    fn a_vault_url_defaults_to_the_service_name_in_its_cloud() {
        let settings = |environment| Settings {
            tenant: "t".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            environment,
            login_url: None,
            vault_url: None,
            service_name: "billing".into(),
        };
        let v = AzureKeyVault::new(settings(AzureEnvironment::AzureUsGovernment)).unwrap();
        assert_eq!(v.vault_url, "https://billing.vault.usgovcloudapi.net");
        assert_eq!(v.login_url, "https://login.microsoftonline.us");
        let v = AzureKeyVault::new(settings(AzureEnvironment::Azure)).unwrap();
        assert_eq!(v.vault_url, "https://billing.vault.azure.net");
    }
}
