//! A contract fake of Azure Key Vault (Premium or Standard) and Azure Managed HSM, with
//! Microsoft Entra ID's client-credentials token endpoint, for tests: no emulator of either
//! exists, and neither cloud can be reached from here.
//!
//! It follows Microsoft's published references: the Key Vault data-plane REST specification
//! (keys: create, import, get, versions, update, delete, encrypt, decrypt and sign; deleted keys: get,
//! purge, recover; `api-version` required; `{"error":{"code","message"}}` bodies), the bearer
//! challenge a call without a token gets (`WWW-Authenticate` naming the tenant's authority and
//! the resource to ask a token for), and the BYOK specification: a `key_hsm` transfer blob whose
//! ciphertext is RSA-OAEP (SHA-1) of a fresh AES key followed by that key's RFC 5649 wrap of the
//! target key, under a key-exchange key made with `key_ops: ["import"]`. The fake **really
//! unwraps** what it receives with that key-exchange key's private key and keeps the material:
//! its encrypt and decrypt use it, so a test proves that the remote key is the managed key.
//!
//! State rules kept: a disabled version refuses encrypt and decrypt; a deleted key is soft
//! deleted (recoverable under its name, which cannot be reused meanwhile) until purged, and
//! purge is refused under purge protection; `oct-HSM` keys exist only in a Managed HSM, HSM keys
//! not in a Standard vault. HSM key creates and imports are throttled per 10 s as Azure
//! publishes it (429 with `Retry-After`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::{
    KeyPair, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicKeyComponents,
};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use keyplane_crypto::transfer::{self, OaepHash};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// What the fake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureKind {
    /// A Managed HSM: `oct-HSM` (AES) and `RSA-HSM` keys.
    ManagedHsm,
    /// A Premium vault: HSM-protected RSA keys (and software ones), no AES.
    Premium,
    /// A Standard vault: software keys only.
    Standard,
}

/// The key-exchange key's name in Azure's BYOK tooling (what a connection is expected to make).
pub const KEK_NAME: &str = "EKMF-BYOK-KEK-FOR-IMPORT";

/// HSM key creates and imports allowed per 10 seconds (Azure's published per-vault figure).
const HSM_WRITES_PER_10_SECONDS: usize = 10;

enum Material {
    Oct(Zeroizing<Vec<u8>>),
    Rsa {
        pkcs8: Zeroizing<Vec<u8>>,
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        pkcs8: Zeroizing<Vec<u8>>,
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// The curves of `EC-HSM` keys, with their JWK names and signing algorithms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    fn jwk(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }

    /// The JWS algorithm that signs with it (`ES256`, …) and its digest.
    fn jws(self) -> (&'static str, &'static aws_lc_rs::digest::Algorithm) {
        match self {
            Self::P256 => ("ES256", &aws_lc_rs::digest::SHA256),
            Self::P384 => ("ES384", &aws_lc_rs::digest::SHA384),
            Self::P521 => ("ES512", &aws_lc_rs::digest::SHA512),
        }
    }

    fn signing(self) -> &'static aws_lc_rs::signature::EcdsaSigningAlgorithm {
        match self {
            Self::P256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::P384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::P521 => &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }
}

/// An EC private key (PKCS#8) as the curve it is on and its public point's coordinates.
fn ec_components(pkcs8: &[u8]) -> Option<(Curve, Vec<u8>, Vec<u8>)> {
    use aws_lc_rs::signature::KeyPair as _;
    Curve::ALL.into_iter().find_map(|curve| {
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8).ok()?;
        let point = pair.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        Some((curve, point[1..=half].to_vec(), point[1 + half..].to_vec()))
    })
}

struct Version {
    id: String,
    kty: String,
    key_ops: Vec<String>,
    material: Material,
    enabled: bool,
    tags: Map<String, Value>,
    created: i64,
    updated: i64,
}

impl Version {
    /// A new version as a create or import body asks for it (its attributes and tags).
    fn new(kty: String, key_ops: Vec<String>, material: Material, body: &Value) -> Self {
        let at = now();
        Self {
            id: new_version_id(),
            kty,
            key_ops,
            material,
            enabled: body["attributes"]["enabled"].as_bool().unwrap_or(true),
            tags: body["tags"].as_object().cloned().unwrap_or_default(),
            created: at,
            updated: at,
        }
    }
}

/// A `key_ops` array's operations.
fn key_ops_of(ops: &Value) -> Option<Vec<String>> {
    ops.as_array().map(|a| {
        a.iter()
            .filter_map(|o| o.as_str().map(str::to_owned))
            .collect()
    })
}

struct DeletedKey {
    versions: Vec<Version>,
    deleted: i64,
}

struct Inner {
    kind: AzureKind,
    url: String,
    login_url: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    secret_expired: AtomicBool,
    permissions_denied: AtomicBool,
    purge_protection: AtomicBool,
    throttle_next: AtomicUsize,
    page_size: AtomicUsize,
    challenge_resource: Mutex<Option<String>>,
    tokens: Mutex<HashMap<String, Instant>>,
    keys: Mutex<BTreeMap<String, Vec<Version>>>,
    deleted: Mutex<BTreeMap<String, DeletedKey>>,
    hsm_writes: Mutex<Vec<Instant>>,
    requests: AtomicUsize,
    /// Versions ever turned from disabled to enabled through an update.
    enablings: AtomicUsize,
}

/// A running fake; dropped, it stops.
pub struct AzureKeyVault {
    /// The vault (or Managed HSM) URL: `azure_vault_url`.
    pub url: String,
    /// Entra ID's login host: `azure_login_url`.
    pub login_url: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// A refusal on its way out of a helper (boxed: a response is large).
type Refusal = Box<Response>;

fn refusal(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
    Box::new(error(status, code, message))
}

fn new_version_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn rsa_components(pkcs8: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use aws_lc_rs::signature::KeyPair as _;
    let pair = KeyPair::from_pkcs8(pkcs8).ok()?;
    let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    Some((components.n, components.e))
}

impl Inner {
    fn resource(&self) -> String {
        if let Some(r) = self.challenge_resource.lock().unwrap().clone() {
            return r;
        }
        match self.kind {
            AzureKind::ManagedHsm => "https://managedhsm.azure.net",
            _ => "https://vault.azure.net",
        }
        .to_owned()
    }

    fn kid(&self, name: &str, version: &str) -> String {
        format!("{}/keys/{name}/{version}", self.url)
    }

    fn bundle(&self, name: &str, v: &Version) -> Value {
        let mut key = json!({"kid": self.kid(name, &v.id), "kty": v.kty, "key_ops": v.key_ops});
        match &v.material {
            Material::Rsa { n, e, .. } => {
                key["n"] = json!(B64URL.encode(n));
                key["e"] = json!(B64URL.encode(e));
            }
            Material::Ec { curve, x, y, .. } => {
                key["crv"] = json!(curve.jwk());
                key["x"] = json!(B64URL.encode(x));
                key["y"] = json!(B64URL.encode(y));
            }
            Material::Oct(_) => {}
        }
        json!({
            "key": key,
            "attributes": {
                "enabled": v.enabled,
                "created": v.created,
                "updated": v.updated,
                "exportable": false,
                "recoveryLevel": if self.purge_protection.load(Ordering::SeqCst) {
                    "Recoverable"
                } else {
                    "Recoverable+Purgeable"
                },
            },
            "tags": v.tags,
        })
    }

    fn deleted_bundle(&self, name: &str, d: &DeletedKey) -> Value {
        let mut b = self.bundle(name, d.versions.last().expect("a key has a version"));
        b["recoveryId"] = json!(format!("{}/deletedkeys/{name}", self.url));
        b["deletedDate"] = json!(d.deleted);
        b["scheduledPurgeDate"] = json!(d.deleted + 90 * 86_400);
        b
    }

    /// Checks the caller's token and the call's api-version; `Some` is the refusal.
    fn refuse(&self, headers: &HeaderMap, query: &HashMap<String, String>) -> Option<Response> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = token.is_some_and(|t| {
            self.tokens
                .lock()
                .unwrap()
                .get(t)
                .is_some_and(|expiry| Instant::now() < *expiry)
        });
        if !valid {
            let challenge = format!(
                "Bearer authorization=\"{}/{}\", resource=\"{}\"",
                self.login_url,
                self.tenant,
                self.resource()
            );
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
            );
            r.headers_mut().insert(
                "www-authenticate",
                challenge.parse().expect("a header value"),
            );
            return Some(r);
        }
        if !query.contains_key("api-version") {
            return Some(error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ));
        }
        if self
            .throttle_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Some(throttled());
        }
        if self.permissions_denied.load(Ordering::SeqCst) {
            return Some(error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "The user, group or application 'appid={}' does not have keys permissions on key vault '{}'.",
                    self.client_id, self.url
                ),
            ));
        }
        None
    }

    /// Counts an HSM key create or import; `Some` when the vault's limit is reached.
    fn hsm_write(&self) -> Option<Response> {
        let mut writes = self.hsm_writes.lock().unwrap();
        let window = Instant::now() - Duration::from_secs(10);
        writes.retain(|t| *t > window);
        if writes.len() >= HSM_WRITES_PER_10_SECONDS {
            return Some(throttled());
        }
        writes.push(Instant::now());
        None
    }

    fn check_kty(&self, kty: &str) -> Result<(), Refusal> {
        let hsm = kty.ends_with("-HSM");
        let why = match (self.kind, kty) {
            (AzureKind::ManagedHsm, "oct-HSM" | "RSA-HSM" | "EC-HSM") => None,
            (AzureKind::ManagedHsm, _) => Some("a Managed HSM holds HSM-protected keys only"),
            (_, "oct-HSM" | "oct") => Some("AES keys (oct-HSM) exist only in a Managed HSM"),
            (AzureKind::Standard, _) if hsm => {
                Some("HSM-protected keys need a Premium vault; this vault is Standard")
            }
            (_, "RSA" | "RSA-HSM" | "EC-HSM") => None,
            _ => Some("this fake holds oct-HSM, RSA and EC-HSM keys only"),
        };
        match why {
            Some(m) => Err(refusal(StatusCode::BAD_REQUEST, "BadParameter", m)),
            None => Ok(()),
        }
    }

    /// Refuses a name held by a soft-deleted key.
    fn name_free(&self, name: &str) -> Result<(), Refusal> {
        if self.deleted.lock().unwrap().contains_key(name) {
            return Err(refusal(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
                ),
            ));
        }
        Ok(())
    }

    fn add_version(&self, name: &str, version: Version) -> Value {
        let mut keys = self.keys.lock().unwrap();
        let versions = keys.entry(name.to_owned()).or_default();
        let bundle = self.bundle(name, &version);
        versions.push(version);
        bundle
    }

    /// The material an import's `key_hsm` transfer blob carries, unwrapped with the key-exchange
    /// key it names.
    fn open_transfer_blob(&self, key_hsm: &str) -> Result<Zeroizing<Vec<u8>>, Refusal> {
        let bad = |m: &str| refusal(StatusCode::BAD_REQUEST, "BadParameter", m.to_owned());
        let blob: Value = B64URL
            .decode(key_hsm)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("key_hsm is not a base64url transfer blob"))?;
        if blob["schema_version"] != "1.0.0"
            || blob["header"]["alg"] != "dir"
            || blob["header"]["enc"] != "CKM_RSA_AES_KEY_WRAP"
        {
            return Err(bad(
                "the transfer blob must be schema 1.0.0 with alg dir and enc CKM_RSA_AES_KEY_WRAP",
            ));
        }
        let kek_kid = blob["header"]["kid"].as_str().unwrap_or_default();
        let ciphertext = blob["ciphertext"]
            .as_str()
            .and_then(|c| B64URL.decode(c).ok())
            .ok_or_else(|| bad("the transfer blob has no base64url ciphertext"))?;
        let keys = self.keys.lock().unwrap();
        let kek = keys.iter().find_map(|(name, versions)| {
            versions.iter().find(|v| self.kid(name, &v.id) == kek_kid)
        });
        let Some(kek) = kek else {
            return Err(bad("the key-exchange key the blob names does not exist"));
        };
        let Material::Rsa { pkcs8, .. } = &kek.material else {
            return Err(bad("the key-exchange key is not an RSA key"));
        };
        if !kek.key_ops.iter().any(|o| o == "import") || !kek.kty.ends_with("-HSM") {
            return Err(bad(
                "the key-exchange key must be an RSA-HSM key with key_ops import",
            ));
        }
        transfer::open_rsa_aes_key_wrap(pkcs8, OaepHash::Sha1, &ciphertext)
            .map(|m| Zeroizing::new(m.expose().to_vec()))
            .map_err(|_| bad("the transfer blob does not open under the key-exchange key"))
    }

    /// A version of `name`: the newest when `version` is empty.
    fn with_version<T>(
        &self,
        name: &str,
        version: &str,
        f: impl FnOnce(&mut Version) -> T,
    ) -> Result<T, Refusal> {
        let mut keys = self.keys.lock().unwrap();
        let found = keys.get_mut(name).and_then(|vs| {
            if version.is_empty() {
                vs.last_mut()
            } else {
                vs.iter_mut().find(|v| v.id == version)
            }
        });
        match found {
            Some(v) => Ok(f(v)),
            None => Err(refusal(
                StatusCode::NOT_FOUND,
                "KeyNotFound",
                format!("A key with (name/id) {name} was not found in this key vault."),
            )),
        }
    }
}

fn throttled() -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "Throttled",
        "Request was not processed because too many requests were received. Reason: A throttling limit of this vault was reached.",
    );
    r.headers_mut()
        .insert("retry-after", "1".parse().expect("a header value"));
    r
}

type Shared = State<Arc<Inner>>;
type Q = Query<HashMap<String, String>>;

async fn token(
    State(s): Shared,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let oauth = |status: StatusCode, code: &str, description: String| {
        (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response()
    };
    if tenant != s.tenant {
        return oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.".into(),
        );
    }
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if client_id != s.client_id {
        return oauth(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
            ),
        );
    }
    if form.get("client_secret") != Some(&s.client_secret) {
        return oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            format!("AADSTS7000215: Invalid client secret provided for app '{client_id}'."),
        );
    }
    if s.secret_expired.load(Ordering::SeqCst) {
        return oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            format!(
                "AADSTS7000222: The provided client secret keys for app '{client_id}' are expired."
            ),
        );
    }
    let wanted = format!("{}/.default", s.resource());
    if form.get("scope") != Some(&wanted) {
        return oauth(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!(
                "AADSTS70011: The provided value for scope is not valid; this resource wants '{wanted}'."
            ),
        );
    }
    let access_token = uuid::Uuid::new_v4().simple().to_string();
    let lifetime = 3599;
    s.tokens.lock().unwrap().insert(
        access_token.clone(),
        Instant::now() + Duration::from_secs(lifetime),
    );
    Json(
        json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": access_token}),
    )
    .into_response()
}

async fn list_keys(State(s): Shared, headers: HeaderMap, Query(q): Q) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let keys = s.keys.lock().unwrap();
    let value: Vec<Value> = keys
        .iter()
        .filter_map(|(name, vs)| vs.last().map(|v| (name, v)))
        .map(|(name, v)| {
            let b = s.bundle(name, v);
            json!({"kid": format!("{}/keys/{name}", s.url), "attributes": b["attributes"], "tags": b["tags"]})
        })
        .collect();
    Json(json!({"value": value, "nextLink": null})).into_response()
}

async fn create_key(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let kty = body["kty"].as_str().unwrap_or_default().to_owned();
    if let Err(r) = s.check_kty(&kty).and_then(|()| s.name_free(&name)) {
        return *r;
    }
    if kty.ends_with("-HSM")
        && let Some(r) = s.hsm_write()
    {
        return r;
    }
    let material = if kty.starts_with("RSA") {
        let bits = body["key_size"].as_u64().unwrap_or(2048);
        let size = match bits {
            2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
            3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
            4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "key_size must be 2048, 3072 or 4096",
                );
            }
        };
        let private = PrivateDecryptingKey::generate(size).expect("RSA generation");
        let pkcs8 = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&private)
            .expect("PKCS#8");
        let pkcs8 = Zeroizing::new(pkcs8.as_ref().to_vec());
        let (n, e) = rsa_components(&pkcs8).expect("a fresh RSA key");
        Material::Rsa { pkcs8, n, e }
    } else {
        let bytes = usize::try_from(body["key_size"].as_u64().unwrap_or(256) / 8).unwrap_or(32);
        let mut key = Zeroizing::new(vec![0u8; bytes]);
        aws_lc_rs::rand::fill(&mut key).expect("random");
        Material::Oct(key)
    };
    let key_ops = key_ops_of(&body["key_ops"]).unwrap_or_default();
    let version = Version::new(kty, key_ops, material, &body);
    Json(s.add_version(&name, version)).into_response()
}

async fn import_key(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let key = &body["key"];
    let kty = key["kty"].as_str().unwrap_or_default().to_owned();
    if let Err(r) = s.check_kty(&kty).and_then(|()| s.name_free(&name)) {
        return *r;
    }
    let Some(key_hsm) = key["key_hsm"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "this fake imports HSM keys only: key.key_hsm is required",
        );
    };
    if body["Hsm"] != true || !kty.ends_with("-HSM") {
        return error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "a transfer blob imports an HSM key: Hsm must be true and kty end in -HSM",
        );
    }
    if let Some(r) = s.hsm_write() {
        return r;
    }
    let plain = match s.open_transfer_blob(key_hsm) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let material = if kty == "oct-HSM" {
        if ![16, 24, 32].contains(&plain.len()) {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "an oct-HSM key is 128, 192 or 256 bits",
            );
        }
        Material::Oct(plain)
    } else if kty == "EC-HSM" {
        let Some((curve, x, y)) = ec_components(&plain) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "the EC-HSM key material is not an EC private key on P-256, P-384 or P-521",
            );
        };
        if key["crv"] != curve.jwk() {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "crv does not name the curve of the imported key",
            );
        }
        Material::Ec {
            pkcs8: plain,
            curve,
            x,
            y,
        }
    } else {
        let Some((n, e)) = rsa_components(&plain) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "the RSA-HSM key material is not an RSA private key",
            );
        };
        Material::Rsa { pkcs8: plain, n, e }
    };
    let key_ops =
        key_ops_of(&key["key_ops"]).unwrap_or_else(|| vec!["encrypt".into(), "decrypt".into()]);
    let version = Version::new(kty, key_ops, material, &body);
    Json(s.add_version(&name, version)).into_response()
}

async fn get_key(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    get_version(State(s), headers, Query(q), Path((name, String::new()))).await
}

async fn get_version(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    match s.with_version(&name, &version, |v| s.bundle(&name, v)) {
        Ok(b) => Json(b).into_response(),
        Err(r) => *r,
    }
}

async fn list_versions(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let keys = s.keys.lock().unwrap();
    let Some(versions) = keys.get(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("A key with (name/id) {name} was not found in this key vault."),
        );
    };
    // Pages of `maxresults` (at most 25, or the fake's own page size), newest first as the
    // service lists them; `$skiptoken` continues.
    let size = q
        .get("maxresults")
        .and_then(|m| m.parse::<usize>().ok())
        .unwrap_or(25)
        .clamp(1, 25)
        .min(s.page_size.load(Ordering::SeqCst));
    let skip = q
        .get("$skiptoken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let value: Vec<Value> = versions
        .iter()
        .rev()
        .skip(skip)
        .take(size)
        .map(|v| {
            let b = s.bundle(&name, v);
            json!({"kid": b["key"]["kid"], "attributes": b["attributes"], "tags": b["tags"]})
        })
        .collect();
    let next = (skip + size < versions.len()).then(|| {
        format!(
            "{}/keys/{name}/versions?api-version=7.5&maxresults={size}&$skiptoken={}",
            s.url,
            skip + size
        )
    });
    Json(json!({"value": value, "nextLink": next})).into_response()
}

async fn update_key(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    update_version(
        State(s),
        headers,
        Query(q),
        Path((name, String::new())),
        Json(body),
    )
    .await
}

async fn update_version(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path((name, version)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let updated = s.with_version(&name, &version, |v| {
        if let Some(enabled) = body["attributes"]["enabled"].as_bool() {
            if enabled && !v.enabled {
                s.enablings.fetch_add(1, Ordering::SeqCst);
            }
            v.enabled = enabled;
        }
        if let Some(tags) = body["tags"].as_object() {
            v.tags = tags.clone();
        }
        v.updated = now();
        s.bundle(&name, v)
    });
    match updated {
        Ok(b) => Json(b).into_response(),
        Err(r) => *r,
    }
}

async fn delete_key(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let Some(versions) = s.keys.lock().unwrap().remove(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("A key with (name/id) {name} was not found in this key vault."),
        );
    };
    let deleted = DeletedKey {
        versions,
        deleted: now(),
    };
    let bundle = s.deleted_bundle(&name, &deleted);
    s.deleted.lock().unwrap().insert(name, deleted);
    Json(bundle).into_response()
}

fn deleted_not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        format!("Deleted Key not found: {name}"),
    )
}

async fn get_deleted(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    match s.deleted.lock().unwrap().get(&name) {
        Some(d) => Json(s.deleted_bundle(&name, d)).into_response(),
        None => deleted_not_found(&name),
    }
}

async fn purge_deleted(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    if s.purge_protection.load(Ordering::SeqCst) {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
        );
    }
    match s.deleted.lock().unwrap().remove(&name) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => deleted_not_found(&name),
    }
}

async fn recover_deleted(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let Some(d) = s.deleted.lock().unwrap().remove(&name) else {
        return deleted_not_found(&name);
    };
    let bundle = s.bundle(&name, d.versions.last().expect("a key has a version"));
    s.keys.lock().unwrap().insert(name, d.versions);
    Json(bundle).into_response()
}

fn aes_gcm(material: &[u8]) -> Option<LessSafeKey> {
    let algorithm = match material.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        _ => return None,
    };
    Some(LessSafeKey::new(UnboundKey::new(algorithm, material).ok()?))
}

/// `encrypt` or `decrypt` with one version, as the service would.
fn crypt(v: &Version, encrypt: bool, body: &Value) -> Result<Value, Refusal> {
    let op = if encrypt { "encrypt" } else { "decrypt" };
    let bad = |m: &str| refusal(StatusCode::BAD_REQUEST, "BadParameter", m.to_owned());
    if !v.enabled {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {op} is not allowed on a disabled key."),
        ));
    }
    if !v.key_ops.iter().any(|o| o == op) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {op} is not allowed on this key."),
        ));
    }
    let decode = |field: &str| body[field].as_str().and_then(|x| B64URL.decode(x).ok());
    let value = decode("value").ok_or_else(|| bad("value must be base64url"))?;
    let aad = decode("aad").unwrap_or_default();
    let alg = body["alg"].as_str().unwrap_or_default();
    match (&v.material, alg) {
        (Material::Oct(m), "A128GCM" | "A192GCM" | "A256GCM") => {
            let key = aes_gcm(m).ok_or_else(|| bad("unusable AES key"))?;
            if encrypt {
                let mut iv = [0u8; 12];
                aws_lc_rs::rand::fill(&mut iv).expect("random");
                let mut buf = value;
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&aad[..]),
                    &mut buf,
                )
                .map_err(|_| bad("encryption failed"))?;
                let tag = buf.split_off(buf.len() - 16);
                Ok(
                    json!({"value": B64URL.encode(&buf), "iv": B64URL.encode(iv),
                          "tag": B64URL.encode(tag), "aad": B64URL.encode(&aad)}),
                )
            } else {
                let iv = decode("iv").ok_or_else(|| bad("iv is required"))?;
                let tag = decode("tag").ok_or_else(|| bad("tag is required"))?;
                let nonce = Nonce::try_assume_unique_for_key(&iv).map_err(|_| bad("bad iv"))?;
                let mut buf = value;
                buf.extend_from_slice(&tag);
                let plain = key
                    .open_in_place(nonce, Aad::from(&aad[..]), &mut buf)
                    .map_err(|_| bad("the ciphertext does not open under this key"))?;
                Ok(json!({"value": B64URL.encode(plain)}))
            }
        }
        (Material::Rsa { pkcs8, .. }, "RSA-OAEP-256") => {
            let private =
                PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|_| bad("unusable RSA key"))?;
            if encrypt {
                let public = OaepPublicEncryptingKey::new(private.public_key())
                    .map_err(|_| bad("unusable RSA key"))?;
                let mut out = vec![0u8; public.ciphertext_size()];
                let sealed = public
                    .encrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut out, None)
                    .map_err(|_| bad("encryption failed"))?;
                Ok(json!({"value": B64URL.encode(sealed)}))
            } else {
                let oaep =
                    OaepPrivateDecryptingKey::new(private).map_err(|_| bad("unusable RSA key"))?;
                let mut out = vec![0u8; oaep.min_output_size()];
                let plain = oaep
                    .decrypt(&OAEP_SHA256_MGF1SHA256, &value, &mut out, None)
                    .map_err(|_| bad("the ciphertext does not open under this key"))?;
                Ok(json!({"value": B64URL.encode(plain)}))
            }
        }
        _ => Err(bad("the algorithm does not fit this key")),
    }
}

/// `sign` with an EC version: the digest in `value`, the signature `r ‖ s` as JWS has it.
fn sign_with(v: &Version, body: &Value) -> Result<Value, Refusal> {
    let bad = |m: &str| refusal(StatusCode::BAD_REQUEST, "BadParameter", m.to_owned());
    if !v.enabled {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation sign is not allowed on a disabled key.",
        ));
    }
    let Material::Ec { pkcs8, curve, .. } = &v.material else {
        return Err(bad("this fake signs with EC keys only"));
    };
    let (alg, digest_alg) = curve.jws();
    if body["alg"] != alg {
        return Err(bad("the algorithm does not fit this key"));
    }
    let digest = body["value"]
        .as_str()
        .and_then(|x| B64URL.decode(x).ok())
        .ok_or_else(|| bad("value must be base64url"))?;
    let digest = aws_lc_rs::digest::Digest::import_less_safe(&digest, digest_alg)
        .map_err(|_| bad("value is not a digest of the algorithm's length"))?;
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8)
        .map_err(|_| bad("unusable EC key"))?;
    let signature = pair
        .sign_digest(&digest)
        .map_err(|_| bad("signing failed"))?;
    Ok(json!({"value": B64URL.encode(signature.as_ref())}))
}

async fn sign(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path((name, version)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let kid = s.kid(&name, &version);
    match s.with_version(&name, &version, |v| sign_with(v, &body)) {
        Ok(Ok(mut answer)) => {
            answer["kid"] = json!(kid);
            Json(answer).into_response()
        }
        Ok(Err(r)) | Err(r) => *r,
    }
}

async fn encrypt(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path((name, version)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    operate(s, headers, q, name, version, body, true)
}

async fn decrypt(
    State(s): Shared,
    headers: HeaderMap,
    Query(q): Q,
    Path((name, version)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    operate(s, headers, q, name, version, body, false)
}

fn operate(
    s: Arc<Inner>,
    headers: HeaderMap,
    q: HashMap<String, String>,
    name: String,
    version: String,
    body: Value,
    encrypting: bool,
) -> Response {
    if let Some(r) = s.refuse(&headers, &q) {
        return r;
    }
    let kid = s.kid(&name, &version);
    match s.with_version(&name, &version, |v| crypt(v, encrypting, &body)) {
        Ok(Ok(mut answer)) => {
            answer["kid"] = json!(kid);
            Json(answer).into_response()
        }
        Ok(Err(r)) | Err(r) => *r,
    }
}

impl AzureKeyVault {
    /// Starts a fake of `kind` on a free local port.
    pub async fn start(kind: AzureKind) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            kind,
            url: base.clone(),
            login_url: base.clone(),
            tenant: uuid::Uuid::new_v4().to_string(),
            client_id: uuid::Uuid::new_v4().to_string(),
            client_secret: format!("secret~{}", uuid::Uuid::new_v4().simple()),
            secret_expired: AtomicBool::new(false),
            permissions_denied: AtomicBool::new(false),
            purge_protection: AtomicBool::new(false),
            throttle_next: AtomicUsize::new(0),
            page_size: AtomicUsize::new(25),
            challenge_resource: Mutex::default(),
            tokens: Mutex::default(),
            keys: Mutex::default(),
            deleted: Mutex::default(),
            hsm_writes: Mutex::default(),
            requests: AtomicUsize::new(0),
            enablings: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/keys", get(list_keys))
            .route(
                "/keys/{name}",
                get(get_key)
                    .put(import_key)
                    .patch(update_key)
                    .delete(delete_key),
            )
            .route("/keys/{name}/create", post(create_key))
            .route("/keys/{name}/versions", get(list_versions))
            .route(
                "/keys/{name}/{version}",
                get(get_version).patch(update_version),
            )
            .route("/keys/{name}/{version}/encrypt", post(encrypt))
            .route("/keys/{name}/{version}/decrypt", post(decrypt))
            .route("/keys/{name}/{version}/sign", post(sign))
            .route(
                "/deletedkeys/{name}",
                get(get_deleted).delete(purge_deleted),
            )
            .route("/deletedkeys/{name}/recover", post(recover_deleted))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: base.clone(),
            login_url: base,
            tenant: inner.tenant.clone(),
            client_id: inner.client_id.clone(),
            client_secret: inner.client_secret.clone(),
            inner,
            task,
        })
    }

    /// The client secret has expired (Entra ID refuses it as such).
    pub fn expire_secret(&self) {
        self.inner.secret_expired.store(true, Ordering::SeqCst);
    }

    /// The application loses (or regains) its key permissions on the vault.
    pub fn deny_permissions(&self, denied: bool) {
        self.inner
            .permissions_denied
            .store(denied, Ordering::SeqCst);
    }

    /// Purge protection: deleted keys cannot be purged.
    pub fn protect_from_purge(&self, on: bool) {
        self.inner.purge_protection.store(on, Ordering::SeqCst);
    }

    /// The bearer challenge names `resource` instead of the vault's own (as a look-alike
    /// endpoint fishing for another resource's token would).
    pub fn challenge_for(&self, resource: &str) {
        *self.inner.challenge_resource.lock().unwrap() = Some(resource.to_owned());
    }

    /// Lists of versions come in pages of at most `size`.
    pub fn page_versions_by(&self, size: usize) {
        self.inner.page_size.store(size.max(1), Ordering::SeqCst);
    }

    /// The next `n` key requests are answered 429.
    pub fn throttle_next(&self, n: usize) {
        self.inner.throttle_next.store(n, Ordering::SeqCst);
    }

    /// An AES key under `name` that no keyplane made (no tags), as another tool would leave.
    pub fn create_foreign_aes_key(&self, name: &str) {
        let mut material = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut material).expect("random");
        let version = Version::new(
            "oct-HSM".into(),
            vec!["encrypt".into(), "decrypt".into()],
            Material::Oct(material),
            &Value::Null,
        );
        self.inner.add_version(name, version);
    }

    /// How many times an update turned a disabled version enabled, even for a moment.
    pub fn enablings(&self) -> usize {
        self.inner.enablings.load(Ordering::SeqCst)
    }

    /// Key requests answered so far (tokens not counted).
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Names of the keys present (not deleted).
    pub fn key_names(&self) -> Vec<String> {
        self.inner.keys.lock().unwrap().keys().cloned().collect()
    }

    /// Whether `name` is soft deleted (recoverable, not purged).
    pub fn is_soft_deleted(&self, name: &str) -> bool {
        self.inner.deleted.lock().unwrap().contains_key(name)
    }

    /// `(enabled, tags)` of each version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Vec<(bool, Map<String, Value>)> {
        self.inner
            .keys
            .lock()
            .unwrap()
            .get(name)
            .map(|vs| vs.iter().map(|v| (v.enabled, v.tags.clone())).collect())
            .unwrap_or_default()
    }

    /// Deletes `name` (soft: recoverable) behind the back of whoever manages it.
    pub fn soft_delete(&self, name: &str) {
        if let Some(versions) = self.inner.keys.lock().unwrap().remove(name) {
            self.inner.deleted.lock().unwrap().insert(
                name.to_owned(),
                DeletedKey {
                    versions,
                    deleted: now(),
                },
            );
        }
    }

    /// Recovers the deleted `name`, as its owner would.
    pub fn recover(&self, name: &str) {
        if let Some(d) = self.inner.deleted.lock().unwrap().remove(name) {
            self.inner
                .keys
                .lock()
                .unwrap()
                .insert(name.to_owned(), d.versions);
        }
    }

    /// Enables or disables every version of `name` behind the back of whoever manages it.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        if let Some(versions) = self.inner.keys.lock().unwrap().get_mut(name) {
            for v in versions {
                v.enabled = enabled;
                v.updated = now();
            }
        }
    }

    /// The `key_ops` of the newest version of `name`.
    pub fn key_ops(&self, name: &str) -> Vec<String> {
        self.inner
            .with_version(name, "", |v| v.key_ops.clone())
            .unwrap_or_default()
    }

    /// Encrypts with the newest version of `name` as the service's encrypt would (AES-GCM:
    /// `iv ‖ ciphertext ‖ tag`; RSA: OAEP SHA-256); the service's refusal as an error.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        self.crypt(name, plaintext, true)
    }

    /// Decrypts with the newest version of `name` (the same layout as [`Self::encrypt`]).
    pub fn decrypt(&self, name: &str, ciphertext: &[u8]) -> Result<Vec<u8>, String> {
        self.crypt(name, ciphertext, false)
    }

    /// Signs `message` with the newest version of `name` (an EC key) as the service's sign
    /// would: the message's digest sent, `r ‖ s` returned.
    pub fn sign(&self, name: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        self.inner
            .with_version(name, "", |v| {
                let Material::Ec { curve, .. } = &v.material else {
                    return Err("not an EC key".to_owned());
                };
                let (alg, digest_alg) = curve.jws();
                let digest = aws_lc_rs::digest::digest(digest_alg, message);
                let body = json!({"alg": alg, "value": B64URL.encode(digest.as_ref())});
                let answer =
                    sign_with(v, &body).map_err(|r| format!("refused with {}", r.status()))?;
                Ok(answer["value"]
                    .as_str()
                    .and_then(|x| B64URL.decode(x).ok())
                    .unwrap_or_default())
            })
            .map_err(|r| format!("refused with {}", r.status()))?
    }

    fn crypt(&self, name: &str, data: &[u8], encrypting: bool) -> Result<Vec<u8>, String> {
        let refused = |r: Refusal| format!("refused with {}", r.status());
        self.inner
            .with_version(name, "", |v| {
                let aes = matches!(v.material, Material::Oct(_));
                let alg = match &v.material {
                    Material::Oct(m) => format!("A{}GCM", m.len() * 8),
                    Material::Rsa { .. } => "RSA-OAEP-256".into(),
                    Material::Ec { .. } => return Err("EC keys do not encrypt".to_owned()),
                };
                let mut body = json!({"alg": alg});
                if aes && !encrypting {
                    if data.len() < 28 {
                        return Err("too short".to_owned());
                    }
                    let (iv, rest) = data.split_at(12);
                    let (ct, tag) = rest.split_at(rest.len() - 16);
                    body["iv"] = json!(B64URL.encode(iv));
                    body["tag"] = json!(B64URL.encode(tag));
                    body["value"] = json!(B64URL.encode(ct));
                } else {
                    body["value"] = json!(B64URL.encode(data));
                }
                let answer = crypt(v, encrypting, &body).map_err(refused)?;
                let field = |f: &str| {
                    answer[f]
                        .as_str()
                        .and_then(|x| B64URL.decode(x).ok())
                        .unwrap_or_default()
                };
                Ok(if aes && encrypting {
                    [field("iv"), field("value"), field("tag")].concat()
                } else {
                    field("value")
                })
            })
            .map_err(refused)?
    }
}

impl Drop for AzureKeyVault {
    fn drop(&mut self) {
        self.task.abort();
    }
}
