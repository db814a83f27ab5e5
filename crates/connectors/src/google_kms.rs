//! Google Cloud KMS: the Cloud KMS REST API (v1) with a service account's OAuth 2.0 token.
//!
//! Sign-in is Google's for service accounts: a JWT (RS256, the account's key id in its header)
//! asserting the account and the `cloudkms` scope, signed with the account's private key from
//! the credentials JSON and exchanged for an access token at the token URL. Tokens are cached
//! until shortly before they expire.
//!
//! Material goes in as Google defines import: an import job (`RSA_OAEP_3072_SHA256_AES_256`, at
//! the key's protection level) gives a public key; the material is wrapped under it (RSA-OAEP
//! SHA-256 of a fresh AES-256 key, then that key's RFC 5649 wrap of the material: PKCS#8 for
//! RSA and EC keys) and imported as a new version of an import-only key. The key's name is its
//! label; its label `keyplane-managed-key-id` names the managed key, and each version's import
//! job is named for the managed key and version it carries (`kp-{key id}-{version}-{nonce}`),
//! which is how a version is known to be which managed version. Google keeps a key's name for
//! ever: a destroyed key's versions are scheduled for destruction (and restored, when the same
//! managed key comes back before that ends), never the key itself.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex as StdMutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, RemoteFailure, RemoteKey, RemoteResult, TransferWrapping,
};
use keyplane_core::distribution::google_key_version;
use keyplane_core::model::ProtectionLevel;
use reqwest::Method;
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::http::{self, error_message, rejected};
use crate::pace::Pace;

/// Google's endpoints, used when the connection names none.
pub const DEFAULT_ENDPOINT: &str = "https://cloudkms.googleapis.com";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The key label naming the managed key a Cloud KMS key holds.
pub const LABEL_KEY_ID: &str = "keyplane-managed-key-id";
const IMPORT_METHOD: &str = "RSA_OAEP_3072_SHA256_AES_256";
/// How often, and how far apart, an import job's key or an import's result is looked for.
const POLLS: usize = 40;
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most pages of a key's versions read (100 each).
const MAX_VERSION_PAGES: usize = 40;
/// Attempts of a call Google answers `RESOURCE_EXHAUSTED`, backing off from the first delay.
const THROTTLE_RETRIES: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The permissions keyplane uses on the key ring, proven at connect.
const PERMISSIONS: &[&str] = &[
    "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.restore",
    "cloudkms.cryptoKeyVersions.update",
    "cloudkms.importJobs.create",
    "cloudkms.importJobs.get",
    "cloudkms.importJobs.useToImport",
];

/// Where a connection's key ring is and how to sign in.
pub struct Settings {
    /// The service-account JSON (`google_credentials`), as JSON or base64 of it.
    pub credentials: String,
    /// `google_project_id`; the credentials' project when `None`.
    pub project_id: Option<String>,
    /// `google_private_key_id`: when given, must be the credentials' key.
    pub private_key_id: Option<String>,
    pub location: String,
    pub key_ring: String,
    pub endpoint: Option<String>,
    pub token_url: Option<String>,
}

/// Calls per project, paced under Cloud KMS's published per-project quotas (300 reads and 60
/// writes a minute): half drawn at once at most, the rest spread.
struct Quotas {
    reads: Pace,
    writes: Pace,
}

impl Quotas {
    /// One set per project in this process, shared by every keystore of the project.
    fn of(project: &str) -> Arc<Quotas> {
        static BY_PROJECT: LazyLock<StdMutex<HashMap<String, Weak<Quotas>>>> =
            LazyLock::new(StdMutex::default);
        let mut all = BY_PROJECT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = all.get(project).and_then(Weak::upgrade) {
            return held;
        }
        all.retain(|_, q| q.strong_count() > 0);
        let quotas = Arc::new(Quotas {
            reads: Pace::with_burst(2.5, 150),
            writes: Pace::with_burst(0.5, 30),
        });
        all.insert(project.to_owned(), Arc::downgrade(&quotas));
        quotas
    }
}

pub struct GoogleKms {
    client_email: String,
    private_key_id: String,
    signer: RsaKeyPair,
    token_url: String,
    endpoint: String,
    /// `projects/{project}/locations/{location}/keyRings/{ring}`.
    ring: String,
    parent: String,
    ring_id: String,
    token: Mutex<Option<http::AccessToken>>,
    ring_ready: Mutex<bool>,
    quotas: Arc<Quotas>,
    client: reqwest::Client,
}

/// Whether `id` can name a key ring, key or import job: 1 to 63 letters, digits, `_` and `-`.
fn is_resource_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `id` can be a project id or a location: lowercase letters, digits and hyphens (a
/// legacy project's `domain:` prefix included).
fn is_project_or_location(id: &str) -> bool {
    (2..=100).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-:.".contains(c))
        && !id.contains("..")
}

/// The last segment of a resource name (a version's id, an import job's id).
fn last_segment(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or_default()
}

/// The import-job id for managed version `version` of key `key_id`; a nonce keeps it unused.
fn import_job_id(key_id: &str, version: u32) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("kp-{key_id}-{version}-{}", &nonce[..8])
}

/// The managed key and version a Cloud KMS version carries, told by its import job's id.
fn imported_as(version: &Value) -> Option<(String, u32)> {
    let job = last_segment(version["importJob"].as_str()?);
    let rest = job.strip_prefix("kp-")?;
    // `{uuid}-{version}-{nonce}`: the uuid has four hyphens of its own.
    let mut parts = rest.rsplitn(3, '-');
    let _nonce = parts.next()?;
    let managed_version = parts.next()?.parse().ok()?;
    let key_id = parts.next()?;
    uuid::Uuid::parse_str(key_id).ok()?;
    Some((key_id.to_owned(), managed_version))
}

fn state(version: &Value) -> &str {
    version["state"].as_str().unwrap_or_default()
}

/// A version that holds material and can be enabled, disabled or destroyed.
fn is_live(version: &Value) -> bool {
    matches!(state(version), "ENABLED" | "DISABLED")
}

/// The managed key a Cloud KMS key is labelled for.
fn owner(crypto_key: &Value) -> Option<&str> {
    crypto_key["labels"][LABEL_KEY_ID].as_str()
}

/// The versions of a key that carry managed versions of `key_id`, with the version each
/// carries.
fn carried<'a>(versions: &'a [Value], key_id: &'a str) -> impl Iterator<Item = (&'a Value, u32)> {
    versions.iter().filter_map(move |v| {
        imported_as(v)
            .filter(|(id, _)| id == key_id)
            .map(|(_, n)| (v, n))
    })
}

/// A key and its versions as a remote key: the newest live version keyplane imported for the
/// managed key the key is labelled for (any live version of a key labelled for none), enabled
/// when that version is and, for a symmetric key, is primary; `None` when no such version is
/// live (destroyed or scheduled for destruction).
fn remote_of(name: &str, crypto_key: &Value, versions: &[Value]) -> Option<RemoteKey> {
    let (newest, version) = match owner(crypto_key) {
        Some(id) => carried(versions, id)
            .filter(|(v, _)| is_live(v))
            .max_by_key(|(_, n)| *n)?,
        None => (versions.iter().rfind(|v| is_live(v))?, 1),
    };
    let primary_ok = crypto_key["purpose"] != "ENCRYPT_DECRYPT"
        || crypto_key["primary"]["name"] == newest["name"];
    Some(RemoteKey {
        remote_id: name.to_owned(),
        enabled: state(newest) == "ENABLED" && primary_ok,
        version,
    })
}

fn protection(level: Option<ProtectionLevel>) -> &'static str {
    match level {
        Some(ProtectionLevel::Software) => "SOFTWARE",
        _ => "HSM",
    }
}

/// The credentials JSON, given as JSON or base64 of it.
fn credentials_json(text: &str) -> Result<Value, String> {
    let trimmed = text.trim();
    let bytes = if trimmed.starts_with('{') {
        trimmed.as_bytes().to_vec()
    } else {
        B64.decode(trimmed)
            .map_err(|_| "is neither a service-account JSON nor base64 of one".to_owned())?
    };
    serde_json::from_slice(&bytes).map_err(|_| "is not a service-account JSON".to_owned())
}

impl GoogleKms {
    /// Errors name the connection field at fault and what is wrong with it, never the key the
    /// credentials hold.
    pub fn new(settings: Settings) -> Result<Self, (&'static str, String)> {
        let credentials = |why: String| ("google_credentials", format!("the credentials {why}"));
        let json = credentials_json(&settings.credentials).map_err(credentials)?;
        if json["type"] != "service_account" {
            return Err(credentials(
                "are not a service account's key (their type is not service_account)".into(),
            ));
        }
        let field = |name: &str| {
            json[name]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| credentials(format!("have no {name}")))
        };
        let client_email = field("client_email")?;
        let private_key_id = field("private_key_id")?;
        if let Some(wanted) = settings.private_key_id.filter(|k| !k.is_empty())
            && wanted != private_key_id
        {
            return Err((
                "google_private_key_id",
                format!("the credentials hold key '{private_key_id}', not '{wanted}'"),
            ));
        }
        let pem = field("private_key")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| credentials("have a private_key that is not a PKCS#8 PEM key".into()))?;
        let signer = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| credentials("have a private_key that is not a usable RSA key".into()))?;
        let project = match settings.project_id.filter(|p| !p.is_empty()) {
            Some(p) => p,
            None => field("project_id")?,
        };
        for (field, id) in [
            ("google_project_id", &project),
            ("google_location", &settings.location),
        ] {
            if !is_project_or_location(id) {
                return Err((
                    field,
                    format!("'{id}' is not a Google project id or location"),
                ));
            }
        }
        if !is_resource_id(&settings.key_ring) {
            return Err((
                "google_key_ring",
                "a key ring's name is 1 to 63 letters, digits, _ and -".into(),
            ));
        }
        let parent = format!("projects/{project}/locations/{}", settings.location);
        Ok(Self {
            client_email,
            private_key_id,
            signer,
            token_url: settings
                .token_url
                .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_owned()),
            endpoint: settings
                .endpoint
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            ring: format!("{parent}/keyRings/{}", settings.key_ring),
            parent,
            ring_id: settings.key_ring,
            token: Mutex::new(None),
            ring_ready: Mutex::new(false),
            quotas: Quotas::of(&project),
            client: http::client(None).map_err(|e| ("google_kms_endpoint", e))?,
        })
    }

    /// The signed assertion exchanged for a token (RS256, valid for an hour).
    fn assertion(&self) -> RemoteResult<String> {
        let issued = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        // The audience is Google's token endpoint whichever URL the assertion is sent to (a
        // private endpoint of it included), as Google's own clients do.
        let claims = json!({"iss": self.client_email, "scope": SCOPE, "aud": DEFAULT_TOKEN_URL,
                            "iat": issued, "exp": issued + 3600});
        let signed = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.signer.public_modulus_len()];
        self.signer
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| rejected("signing the token request failed"))?;
        Ok(format!("{signed}.{}", B64URL.encode(signature)))
    }

    /// An access token for Cloud KMS, reused until shortly before it expires.
    async fn access_token(&self) -> RemoteResult<String> {
        let mut held = self.token.lock().await;
        if let Some(current) = held.as_ref().and_then(http::AccessToken::current) {
            return Ok(current.to_owned());
        }
        let target = format!("Google's token endpoint at {}", self.token_url);
        let assertion = self.assertion()?;
        let response = self
            .client
            .post(&self.token_url)
            .header("Accept", "application/json")
            .form(&[("grant_type", JWT_BEARER), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| http::transport_failure(&target, &e))?;
        let status = response.status().as_u16();
        let body = http::read_json(response, &target).await?;
        if status != 200 {
            let message = error_message(&body);
            let mut failure = http::status_failure(status, "signing in to Google", &message);
            if matches!(status, 400 | 401) {
                failure.kind = FailureKind::BadCredentials;
                // A key Google no longer knows (deleted, disabled or past its expiry) fails the
                // signature check; an account that is gone is not found.
                if message.contains("Invalid JWT Signature") {
                    failure.message = format!(
                        "Google refused key '{}' of service account '{}': the key is deleted, disabled or expired; create a new key for the account",
                        self.private_key_id, self.client_email
                    );
                } else if message.contains("account not found") {
                    failure.message = format!(
                        "service account '{}' does not exist (or is deleted)",
                        self.client_email
                    );
                }
            }
            return Err(failure);
        }
        let token = http::AccessToken::from_answer(&body, "Google")?;
        let value = token.value().to_owned();
        *held = Some(token);
        Ok(value)
    }

    /// The URL of `path` (resource names, a `:verb`, a query) under the API's `v1`.
    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.endpoint)
    }

    /// An authenticated call: a token no longer accepted is renewed once; `RESOURCE_EXHAUSTED`
    /// (429) is retried with exponential backoff and jitter.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        pace: &Pace,
    ) -> RemoteResult<(u16, Value)> {
        let target = format!("Cloud KMS at {}", self.endpoint);
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            pace.ready().await;
            let token = self.access_token().await?;
            let mut request = self
                .client
                .request(method.clone(), self.url(path))
                .bearer_auth(&token)
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
            let value = http::read_json(response, &target).await?;
            let exhausted = status == 429 || value["error"]["status"] == "RESOURCE_EXHAUSTED";
            match status {
                401 if !renewed => {
                    renewed = true;
                    *self.token.lock().await = None;
                }
                _ if exhausted && attempt < THROTTLE_RETRIES => {
                    let jitter = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0;
                    let backoff = FIRST_BACKOFF * 2u32.pow(attempt);
                    attempt += 1;
                    tokio::time::sleep(backoff.mul_f64(0.5 + jitter / 2.0)).await;
                }
                _ if exhausted => return Ok((429, value)),
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
        let pace = if method == Method::GET {
            &self.quotas.reads
        } else {
            &self.quotas.writes
        };
        let (status, value) = self.call(method, path, body, pace).await?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            Err(http::status_failure(status, what, &error_message(&value)))
        }
    }

    /// `{ring}/cryptoKeys/{name}`, the name checked first so no path can be made of it.
    fn key_path(&self, name: &str) -> RemoteResult<String> {
        if !is_resource_id(name) {
            return Err(rejected(format!(
                "'{name}' cannot name a Cloud KMS key (1 to 63 letters, digits, _ and -)"
            )));
        }
        Ok(format!("{}/cryptoKeys/{name}", self.ring))
    }

    /// The key ring, created when absent.
    async fn ensure_key_ring(&self) -> RemoteResult<()> {
        let mut ready = self.ring_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let (status, body) = self
            .call(Method::GET, &self.ring, None, &self.quotas.reads)
            .await?;
        match status {
            200 => {}
            404 => {
                let (status, body) = self
                    .call(
                        Method::POST,
                        &format!("{}/keyRings?keyRingId={}", self.parent, self.ring_id),
                        Some(&json!({})),
                        &self.quotas.writes,
                    )
                    .await?;
                // 409: made meanwhile by another call.
                if !(200..300).contains(&status) && status != 409 {
                    return Err(http::status_failure(
                        status,
                        &format!("creating key ring '{}'", self.ring),
                        &error_message(&body),
                    ));
                }
            }
            _ => {
                return Err(http::status_failure(
                    status,
                    &format!("reading key ring '{}'", self.ring),
                    &error_message(&body),
                ));
            }
        }
        *ready = true;
        Ok(())
    }

    /// The key `name` (`None` when there is none).
    async fn crypto_key(&self, name: &str) -> RemoteResult<Option<Value>> {
        let path = self.key_path(name)?;
        let (status, body) = self
            .call(Method::GET, &path, None, &self.quotas.reads)
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

    /// Every version of key `name`, page by page.
    async fn versions(&self, name: &str) -> RemoteResult<Vec<Value>> {
        let base = format!("{}/cryptoKeyVersions?pageSize=100", self.key_path(name)?);
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_VERSION_PAGES {
            let path = match &token {
                Some(t) => {
                    let mut query = reqwest::Url::parse("http://x/").expect("a constant URL");
                    query.query_pairs_mut().append_pair("pageToken", t);
                    format!("{base}&{}", query.query().unwrap_or_default())
                }
                None => base.clone(),
            };
            let page = self
                .expect(
                    Method::GET,
                    &path,
                    None,
                    &format!("listing the versions of key '{name}'"),
                )
                .await?;
            if let Some(versions) = page["cryptoKeyVersions"].as_array() {
                all.extend(versions.iter().cloned());
            }
            match page["nextPageToken"].as_str().filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(all),
            }
        }
        Err(rejected(format!(
            "key '{name}' has more than {MAX_VERSION_PAGES} pages of versions"
        )))
    }

    /// Sets one version of key `key` to `wanted` (`ENABLED` or `DISABLED`).
    async fn set_version_state(
        &self,
        key: &str,
        version: &Value,
        wanted: &str,
    ) -> RemoteResult<()> {
        let path = self.own_version_path(key, version)?;
        self.expect(
            Method::PATCH,
            &format!("{path}?updateMask=state"),
            Some(&json!({"state": wanted})),
            &format!(
                "setting version {} of key '{key}' to {wanted}",
                last_segment(&path)
            ),
        )
        .await?;
        Ok(())
    }

    /// A version's resource name as a path, when it is a version of key `key` in this key ring
    /// (names come from Google's answers: nothing else is ever called).
    fn own_version_path(&self, key: &str, version: &Value) -> RemoteResult<String> {
        let name = version["name"].as_str().unwrap_or_default();
        let prefix = format!("{}/cryptoKeyVersions/", self.key_path(key)?);
        match name.strip_prefix(&prefix) {
            Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => {
                Ok(name.to_owned())
            }
            _ => Err(rejected(format!(
                "'{name}' is not a version of key '{key}' in this key ring"
            ))),
        }
    }

    /// A new import job for `key`'s newest version at `protection_level`, once Google has made
    /// its key: its name and public key (DER).
    async fn import_job(
        &self,
        key: &KeyToInstall<'_>,
        protection_level: &str,
    ) -> RemoteResult<(String, Vec<u8>)> {
        let id = import_job_id(&key.key_id.to_string(), key.version);
        let mut job = self
            .expect(
                Method::POST,
                &format!("{}/importJobs?importJobId={id}", self.ring),
                Some(&json!({"importMethod": IMPORT_METHOD, "protectionLevel": protection_level})),
                "creating an import job",
            )
            .await?;
        let name = format!("{}/importJobs/{id}", self.ring);
        for _ in 0..POLLS {
            match job["state"].as_str().unwrap_or_default() {
                "ACTIVE" => {
                    let pem = job["publicKey"]["pem"].as_str().unwrap_or_default();
                    return Ok((name, http::pem_to_der(pem, "the import job's public key")?));
                }
                "PENDING_GENERATION" => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    job = self
                        .expect(Method::GET, &name, None, "reading the import job")
                        .await?;
                }
                other => {
                    return Err(rejected(format!(
                        "import job '{id}' is {other}, not ACTIVE"
                    )));
                }
            }
        }
        Err(RemoteFailure::new(
            FailureKind::Transient,
            format!("import job '{id}' was still generating its key"),
        ))
    }

    /// Waits for an import to leave `PENDING_IMPORT`; an import still under way after that is
    /// reported as such (retried later, never imported twice).
    async fn settled(&self, key: &str, mut version: Value) -> RemoteResult<Value> {
        let path = self.own_version_path(key, &version)?;
        for _ in 0..POLLS {
            if state(&version) != "PENDING_IMPORT" {
                return Ok(version);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            version = self
                .expect(Method::GET, &path, None, "reading an imported version")
                .await?;
        }
        Err(RemoteFailure::new(
            FailureKind::Transient,
            format!(
                "version {} of key '{key}' is still being imported",
                last_segment(&path)
            ),
        ))
    }

    /// Refuses to change a key while one of its imports is under way: the version it makes
    /// would escape the change.
    fn no_import_under_way(key: &str, versions: &[Value]) -> RemoteResult<()> {
        if versions.iter().any(|v| state(v) == "PENDING_IMPORT") {
            return Err(RemoteFailure::new(
                FailureKind::Transient,
                format!("an import into key '{key}' is still under way"),
            ));
        }
        Ok(())
    }

    /// Makes `key`'s newest version live in key `name` (imported unless a version carries it
    /// already, an interrupted import waited for), primary for a symmetric key, and `enabled`
    /// or not. The import takes the key's own algorithm and protection level.
    async fn import(
        &self,
        name: &str,
        key: &KeyToInstall<'_>,
        enabled: bool,
    ) -> RemoteResult<RemoteKey> {
        let crypto_key = self.crypto_key(name).await?.ok_or_else(|| {
            RemoteFailure::new(FailureKind::Transient, format!("key '{name}' is gone"))
        })?;
        let key_id = key.key_id.to_string();
        if owner(&crypto_key) != Some(key_id.as_str()) {
            return Err(rejected(format!(
                "key '{name}' in key ring '{}' is not labelled for this key",
                self.ring_id
            )));
        }
        let algorithm = crypto_key["versionTemplate"]["algorithm"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let protection_level = crypto_key["versionTemplate"]["protectionLevel"]
            .as_str()
            .unwrap_or("HSM")
            .to_owned();
        let versions = self.versions(name).await?;
        let existing = carried(&versions, &key_id)
            .filter(|(v, n)| *n == key.version && (is_live(v) || state(v) == "PENDING_IMPORT"))
            .map(|(v, _)| v.clone())
            .next();
        let version = match existing {
            Some(v) => self.settled(name, v).await?,
            None => {
                let (job, public_key_der) = self.import_job(key, &protection_level).await?;
                let wrapped = key
                    .material
                    .wrapped_for(&TransferWrapping::RsaAesKeyWrapSha256 { public_key_der })
                    .await
                    .map_err(|e| rejected(e.to_string()))?;
                let version = self
                    .expect(
                        Method::POST,
                        &format!("{}/cryptoKeyVersions:import", self.key_path(name)?),
                        Some(&json!({"algorithm": algorithm, "importJob": job,
                                     "wrappedKey": B64.encode(wrapped)})),
                        &format!("importing version {} of key '{name}'", key.version),
                    )
                    .await?;
                self.settled(name, version).await?
            }
        };
        match state(&version) {
            "ENABLED" | "DISABLED" => {}
            "IMPORT_FAILED" => {
                return Err(rejected(format!(
                    "Cloud KMS could not import version {} of key '{name}': {}",
                    key.version,
                    version["importFailureReason"]
                        .as_str()
                        .unwrap_or("no reason given")
                )));
            }
            other => {
                return Err(rejected(format!(
                    "the version carrying version {} of key '{name}' is {other}",
                    key.version
                )));
            }
        }
        if state(&version) == "DISABLED" && enabled {
            self.set_version_state(name, &version, "ENABLED").await?;
        }
        // Google makes only an enabled version primary: the new one becomes primary before a
        // disabled copy's version is disabled.
        if crypto_key["purpose"] == "ENCRYPT_DECRYPT"
            && crypto_key["primary"]["name"] != version["name"]
        {
            if state(&version) == "DISABLED" {
                self.set_version_state(name, &version, "ENABLED").await?;
            }
            self.expect(
                Method::POST,
                &format!("{}:updatePrimaryVersion", self.key_path(name)?),
                Some(&json!({"cryptoKeyVersionId": last_segment(version["name"].as_str().unwrap_or_default())})),
                &format!("making version {} of key '{name}' primary", key.version),
            )
            .await?;
        }
        if !enabled {
            self.set_version_state(name, &version, "DISABLED").await?;
        }
        Ok(RemoteKey {
            remote_id: name.to_owned(),
            enabled,
            version: key.version,
        })
    }

    /// Makes import-only key `name` for `key`.
    async fn create_key(&self, name: &str, key: &KeyToInstall<'_>) -> RemoteResult<()> {
        let (purpose, algorithm) = google_key_version(key.algorithm, key.size, key.properties)
            .map_err(|why| rejected(format!("key '{name}': {why}")))?;
        let body = json!({
            "purpose": purpose.as_str().to_ascii_uppercase(),
            "importOnly": true,
            "versionTemplate": {
                "algorithm": algorithm.as_str().to_ascii_uppercase(),
                "protectionLevel": protection(key.properties.google_key_protection_level),
            },
            "labels": {LABEL_KEY_ID: key.key_id.to_string()},
        });
        let (status, answer) = self
            .call(
                Method::POST,
                &format!(
                    "{}/cryptoKeys?cryptoKeyId={name}&skipInitialVersionCreation=true",
                    self.ring
                ),
                Some(&body),
                &self.quotas.writes,
            )
            .await?;
        match status {
            200..=299 => Ok(()),
            409 => Err(RemoteFailure::new(
                FailureKind::Transient,
                format!("key '{name}' was made meanwhile by another call"),
            )),
            _ => Err(http::status_failure(
                status,
                &format!("creating key '{name}'"),
                &error_message(&answer),
            )),
        }
    }

    /// Key `name` and its versions, when it is labelled for a managed key; `None` when absent.
    async fn managed_key(&self, name: &str) -> RemoteResult<Option<(Value, Vec<Value>, String)>> {
        let Some(crypto_key) = self.crypto_key(name).await? else {
            return Ok(None);
        };
        let Some(key_id) = owner(&crypto_key).map(str::to_owned) else {
            return Err(rejected(format!(
                "key '{name}' in key ring '{}' is not labelled for a managed key; keyplane does not change it",
                self.ring_id
            )));
        };
        let versions = self.versions(name).await?;
        Ok(Some((crypto_key, versions, key_id)))
    }
}

#[async_trait]
impl Connector for GoogleKms {
    async fn test(&self) -> RemoteResult<()> {
        // Signs in, makes the key ring when absent, then asks Google which of the permissions
        // keyplane uses the account holds on it.
        self.ensure_key_ring().await?;
        let answer = self
            .expect(
                Method::POST,
                &format!("{}:testIamPermissions", self.ring),
                Some(&json!({"permissions": PERMISSIONS})),
                "testing permissions on the key ring",
            )
            .await?;
        let granted: Vec<&str> = answer["permissions"]
            .as_array()
            .map(|ps| ps.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = PERMISSIONS
            .iter()
            .copied()
            .filter(|p| !granted.contains(p))
            .collect();
        if !missing.is_empty() {
            return Err(RemoteFailure::new(
                FailureKind::MissingPermission,
                format!(
                    "service account '{}' lacks {} on key ring '{}' (roles Cloud KMS Admin and Cloud KMS Importer grant them)",
                    self.client_email,
                    missing.join(", "),
                    self.ring
                ),
            ));
        }
        Ok(())
    }

    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        let name = remote_id.unwrap_or(label);
        let Some(crypto_key) = self.crypto_key(name).await? else {
            return Ok(None);
        };
        Ok(remote_of(name, &crypto_key, &self.versions(name).await?))
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        self.ensure_key_ring().await?;
        let name = key.label;
        let key_id = key.key_id.to_string();
        let enabled = match self.crypto_key(name).await? {
            None => {
                self.create_key(name, key).await?;
                true
            }
            Some(existing) => {
                if owner(&existing) != Some(key_id.as_str()) {
                    return Err(rejected(format!(
                        "key ring '{}' already holds a key named '{name}' that is not this key (Cloud KMS never frees a key's name)",
                        self.ring_id
                    )));
                }
                // This key, left by an earlier attempt or destroyed by a disconnect: its own
                // versions still scheduled for destruction are restored (disabled, as Google
                // restores them) before anything new is imported.
                let versions = self.versions(name).await?;
                for (version, _) in carried(&versions, &key_id) {
                    if state(version) == "DESTROY_SCHEDULED" {
                        let path = self.own_version_path(name, version)?;
                        self.expect(
                            Method::POST,
                            &format!("{path}:restore"),
                            Some(&json!({})),
                            &format!("restoring version {} of key '{name}'", last_segment(&path)),
                        )
                        .await?;
                    }
                }
                let versions = self.versions(name).await?;
                remote_of(name, &existing, &versions).is_none_or(|r| r.enabled)
            }
        };
        self.import(name, key, enabled).await
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        let name = &remote.remote_id;
        let Some((crypto_key, versions, key_id)) = self.managed_key(name).await? else {
            return Err(rejected(format!("key '{name}' is gone")));
        };
        Self::no_import_under_way(name, &versions)?;
        let wanted = if enabled { "ENABLED" } else { "DISABLED" };
        for (version, _) in carried(&versions, &key_id) {
            if is_live(version) && state(version) != wanted {
                self.set_version_state(name, version, wanted).await?;
            }
        }
        // An enabled symmetric key encrypts with its newest managed version (a primary moved
        // by hand, or left behind by an interrupted rotation, is put back).
        if enabled
            && crypto_key["purpose"] == "ENCRYPT_DECRYPT"
            && let Some((newest, _)) = carried(&versions, &key_id)
                .filter(|(v, _)| is_live(v))
                .max_by_key(|(_, n)| *n)
            && crypto_key["primary"]["name"] != newest["name"]
        {
            self.expect(
                Method::POST,
                &format!("{}:updatePrimaryVersion", self.key_path(name)?),
                Some(&json!({"cryptoKeyVersionId": last_segment(newest["name"].as_str().unwrap_or_default())})),
                &format!("making the newest version of key '{name}' primary"),
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
        // The new version takes the copy's state (Google imports it enabled; it is disabled
        // before the call returns when the copy is).
        self.import(&remote.remote_id, key, remote.enabled).await
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        let name = &remote.remote_id;
        let Some((_, versions, key_id)) = self.managed_key(name).await? else {
            return Ok(());
        };
        Self::no_import_under_way(name, &versions)?;
        // Every version keyplane imported for the key is scheduled for destruction (disabled
        // first, as an organisation policy may require); Google destroys it at the end of the
        // key's destroy-scheduled duration (30 days unless set otherwise).
        for (version, _) in carried(&versions, &key_id) {
            if !is_live(version) {
                continue;
            }
            if state(version) == "ENABLED" {
                self.set_version_state(name, version, "DISABLED").await?;
            }
            let path = self.own_version_path(name, version)?;
            let (status, body) = self
                .call(
                    Method::POST,
                    &format!("{path}:destroy"),
                    Some(&json!({})),
                    &self.quotas.writes,
                )
                .await?;
            if (200..300).contains(&status) {
                continue;
            }
            // Scheduled meanwhile by another call is done; anything else is a failure.
            if body["error"]["status"] == "FAILED_PRECONDITION" {
                let now = self
                    .expect(Method::GET, &path, None, "reading a version")
                    .await?;
                if matches!(state(&now), "DESTROY_SCHEDULED" | "DESTROYED") {
                    continue;
                }
            }
            return Err(http::status_failure(
                status,
                &format!("destroying version {} of key '{name}'", last_segment(&path)),
                &error_message(&body),
            ));
        }
        Ok(())
    }

    async fn pending_removal(&self, remote: &RemoteKey) -> RemoteResult<Option<String>> {
        let Some((_, versions, key_id)) = self.managed_key(&remote.remote_id).await? else {
            return Ok(None);
        };
        let scheduled: Vec<&str> = carried(&versions, &key_id)
            .filter(|(v, _)| state(v) == "DESTROY_SCHEDULED")
            .filter_map(|(v, _)| v["destroyTime"].as_str())
            .collect();
        let Some(last) = scheduled.iter().max() else {
            return Ok(None);
        };
        Ok(Some(format!(
            "{} version(s) scheduled for destruction by Cloud KMS, the last at {last}; the key keeps its name in the key ring",
            scheduled.len()
        )))
    }

    async fn cannot_govern(
        &self,
        remote: &RemoteKey,
        key_id: uuid::Uuid,
    ) -> RemoteResult<Option<String>> {
        let labelled = self
            .crypto_key(&remote.remote_id)
            .await?
            .is_some_and(|k| owner(&k) == Some(key_id.to_string().as_str()));
        Ok((!labelled).then(|| {
            format!(
                "Keyplane changes only Cloud KMS keys labelled {LABEL_KEY_ID}={key_id}, and this one is not"
            )
        }))
    }

    async fn mark(&self, remote: &RemoteKey) -> RemoteResult<Option<String>> {
        Ok(self
            .crypto_key(&remote.remote_id)
            .await?
            .and_then(|k| owner(&k).map(str::to_owned)))
    }

    async fn is_labelled_for(
        &self,
        remote: &RemoteKey,
        key_id: uuid::Uuid,
    ) -> RemoteResult<Option<bool>> {
        Ok(Some(self.crypto_key(&remote.remote_id).await?.is_some_and(
            |k| owner(&k) == Some(key_id.to_string().as_str()),
        )))
    }

    async fn prove_copy(
        &self,
        remote: &RemoteKey,
        key: &KeyToInstall<'_>,
    ) -> RemoteResult<Option<bool>> {
        // Cloud KMS shows nothing of a version's material (no check value, no raw encryption
        // for these keys). A copy is this key when the key's label names it and every version
        // that holds material came through an import job named for it.
        let Some(crypto_key) = self.crypto_key(&remote.remote_id).await? else {
            return Ok(Some(false));
        };
        let key_id = key.key_id.to_string();
        if owner(&crypto_key) != Some(key_id.as_str()) {
            return Ok(Some(false));
        }
        let versions = self.versions(&remote.remote_id).await?;
        let live: Vec<&Value> = versions.iter().filter(|v| is_live(v)).collect();
        if live.is_empty() {
            return Ok(None);
        }
        let ours = live.iter().all(|v| {
            imported_as(v).is_some_and(|(id, version)| id == key_id && version <= key.version)
        });
        if !ours {
            return Ok(Some(false));
        }
        // A copy left behind (the key rotated while the keystore was away) is brought up to the
        // key's newest version here: the copy is then recorded as holding it.
        if !carried(&versions, &key_id).any(|(v, n)| n == key.version && is_live(v)) {
            let enabled =
                remote_of(&remote.remote_id, &crypto_key, &versions).is_some_and(|r| r.enabled);
            self.import(&remote.remote_id, key, enabled).await?;
        }
        // A key pair's copy shows its public key: it must be the managed one's (an enabled
        // version's; a disabled one shows none).
        if let Some(expected) = key
            .material
            .public_key_der()
            .await
            .map_err(|e| rejected(e.to_string()))?
        {
            let versions = self.versions(&remote.remote_id).await?;
            let newest = carried(&versions, &key_id)
                .find(|(v, n)| *n == key.version && state(v) == "ENABLED")
                .map(|(v, _)| v.clone());
            if let Some(version) = newest {
                let path = self.own_version_path(&remote.remote_id, &version)?;
                let shown = self
                    .expect(
                        Method::GET,
                        &format!("{path}/publicKey"),
                        None,
                        "reading a version's public key",
                    )
                    .await?;
                let der = http::pem_to_der(
                    shown["pem"].as_str().unwrap_or_default(),
                    "the version's public key",
                )?;
                return Ok(Some(der == expected));
            }
        }
        Ok(Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_job_id_names_the_managed_key_and_version() {
        let key_id = "6f1c0d3e-8a7b-4c2d-9e0f-1a2b3c4d5e6f";
        let id = import_job_id(key_id, 12);
        assert!(is_resource_id(&id), "{id}");
        let version =
            json!({"importJob": format!("projects/p/locations/l/keyRings/r/importJobs/{id}")});
        assert_eq!(imported_as(&version), Some((key_id.to_owned(), 12)));
        for other in [
            "kp-x-1-abc",
            "job-1",
            "kp-6f1c0d3e-8a7b-4c2d-9e0f-1a2b3c4d5e6f-x-abc",
        ] {
            assert_eq!(imported_as(&json!({ "importJob": other })), None, "{other}");
        }
    }

    #[test]
    fn a_remote_key_is_its_newest_live_managed_version() {
        let v = |n: u32, state: &str| {
            json!({"state": state, "name": format!("k/cryptoKeyVersions/{n}"),
                   "importJob": format!("r/importJobs/kp-6f1c0d3e-8a7b-4c2d-9e0f-1a2b3c4d5e6f-{n}-0a1b2c3d")})
        };
        let key = json!({"purpose": "ENCRYPT_DECRYPT",
                         "labels": {LABEL_KEY_ID: "6f1c0d3e-8a7b-4c2d-9e0f-1a2b3c4d5e6f"},
                         "primary": {"name": "k/cryptoKeyVersions/2"}});
        let mut versions = vec![v(1, "DISABLED"), v(2, "ENABLED"), v(3, "DESTROY_SCHEDULED")];
        let remote = remote_of("k", &key, &versions).unwrap();
        assert_eq!((remote.version, remote.enabled), (2, true));
        // A primary moved elsewhere is not the managed key's state.
        let moved = json!({"purpose": "ENCRYPT_DECRYPT", "labels": key["labels"],
                           "primary": {"name": "k/cryptoKeyVersions/1"}});
        assert!(!remote_of("k", &moved, &versions).unwrap().enabled);
        // A version imported for another key does not count.
        versions.push(json!({"state": "ENABLED", "name": "k/cryptoKeyVersions/4",
                             "importJob": "r/importJobs/kp-00000000-0000-4000-8000-000000000000-9-0a1b2c3d"}));
        assert_eq!(remote_of("k", &key, &versions).unwrap().version, 2);
        assert_eq!(
            remote_of("k", &key, &[v(1, "DESTROY_SCHEDULED"), v(2, "DESTROYED")]),
            None
        );
    }

    fn credentials() -> String {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let der = pair.as_der().unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(der.as_ref())
        );
        json!({"type": "service_account", "project_id": "payments-prod",
               "private_key_id": "abc123", "private_key": pem,
               "client_email": "keyplane@payments-prod.iam.gserviceaccount.com"})
        .to_string()
    }

    fn settings(credentials: String) -> Settings {
        Settings {
            credentials,
            project_id: None,
            private_key_id: None,
            location: "europe-west1".into(),
            key_ring: "keyplane".into(),
            endpoint: None,
            token_url: None,
        }
    }

    #[test]
    fn credentials_are_read_as_json_or_base64_and_checked() {
        let json = credentials();
        let kms = GoogleKms::new(settings(json.clone())).unwrap();
        assert_eq!(
            kms.ring,
            "projects/payments-prod/locations/europe-west1/keyRings/keyplane"
        );
        assert!(GoogleKms::new(settings(B64.encode(&json))).is_ok());
        let err = GoogleKms::new(Settings {
            private_key_id: Some("other".into()),
            ..settings(json.clone())
        })
        .err()
        .unwrap();
        assert_eq!(err.0, "google_private_key_id");
        for (bad, why) in [
            ("not json".to_owned(), "neither"),
            (
                r#"{"type":"authorized_user"}"#.to_owned(),
                "service_account",
            ),
            (json.replace("client_email", "email"), "no client_email"),
            (
                json.replace("BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY"),
                "PKCS#8",
            ),
        ] {
            let (field, err) = GoogleKms::new(settings(bad)).err().unwrap();
            assert_eq!(field, "google_credentials");
            assert!(err.contains(why), "{err}");
            assert!(
                !err.contains("PRIVATE KEY-----"),
                "no key material in {err}"
            );
        }
        let err = GoogleKms::new(Settings {
            key_ring: "../x".into(),
            ..settings(json)
        })
        .err()
        .unwrap();
        assert_eq!(err.0, "google_key_ring");
    }

    #[test]
    fn only_the_keys_own_versions_are_called() {
        let kms = GoogleKms::new(settings(credentials())).unwrap();
        let ring = "projects/payments-prod/locations/europe-west1/keyRings/keyplane";
        let named = |n: &str| json!({ "name": n });
        let good = format!("{ring}/cryptoKeys/k/cryptoKeyVersions/3");
        assert!(kms.own_version_path("k", &named(&good)).is_ok());
        for bad in [
            format!("{ring}/cryptoKeys/k/cryptoKeyVersions/3/../../../x"),
            format!("{ring}/cryptoKeys/k/cryptoKeyVersions/3:destroy"),
            format!("{ring}/cryptoKeys/other/cryptoKeyVersions/3"),
            format!("{ring}-other/cryptoKeys/k/cryptoKeyVersions/3"),
            "projects/other/locations/x/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1".to_owned(),
        ] {
            assert!(kms.own_version_path("k", &named(&bad)).is_err(), "{bad}");
        }
        assert!(kms.key_path("a/b").is_err());
    }
}
