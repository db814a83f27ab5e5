//! A contract fake of Google Cloud KMS with Google's OAuth 2.0 token endpoint for service
//! accounts, for tests: no emulator of Cloud KMS exists, and Google cannot be reached from here.
//!
//! It follows Google's published `google/cloud/kms/v1` resources and service as the REST API
//! exposes them: key rings (get, create), crypto keys (create with
//! `skipInitialVersionCreation`, get, `updatePrimaryVersion`, `encrypt`, `decrypt`), crypto key
//! versions (list with paging, get, patch of `state`, `destroy`, `restore`, `import`,
//! `publicKey`), import jobs (create, get; `PENDING_GENERATION` until first read, then
//! `ACTIVE` until they expire) and `testIamPermissions`; `{"error":{"code","message","status"}}`
//! bodies with Google's status names. The token endpoint takes the JWT-bearer grant, checks the
//! assertion's RS256 signature against the account's key, its audience and lifetime.
//!
//! It **really unwraps** imports (`RSA_OAEP_3072_SHA256_AES_256`: RSA-OAEP SHA-256 of an AES
//! key under the job's private key, then RFC 5649) and keeps the material; `encrypt` and
//! `decrypt` use it (AES-256-GCM under this fake's own ciphertext layout, as Google's is its
//! own), and `publicKey` derives from it, so a test proves the remote key is the managed key.
//!
//! State rules kept: only enabled versions encrypt, decrypt or become primary; destroy
//! schedules destruction (material kept until the scheduled time, which a test brings forward),
//! restore returns a scheduled version disabled; an import job's protection level must match
//! the key's, and an expired job refuses imports; a key's name is never freed. Writes are
//! limited per minute as Google publishes it (429 `RESOURCE_EXHAUSTED`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize, PrivateDecryptingKey};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use keyplane_crypto::transfer::{self, OaepHash};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// Every permission `testIamPermissions` can report here.
pub const ALL_PERMISSIONS: &[&str] = &[
    "cloudkms.cryptoKeys.create",
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.destroy",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.restore",
    "cloudkms.cryptoKeyVersions.update",
    "cloudkms.cryptoKeyVersions.useToEncrypt",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
    "cloudkms.cryptoKeyVersions.viewPublicKey",
    "cloudkms.importJobs.create",
    "cloudkms.importJobs.get",
    "cloudkms.importJobs.useToImport",
    "cloudkms.keyRings.create",
    "cloudkms.keyRings.get",
];

/// Write requests a minute (Google's published default per project).
const WRITES_PER_MINUTE: usize = 60;
const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";

enum Material {
    Symmetric(Zeroizing<Vec<u8>>),
    /// An RSA or EC private key (PKCS#8).
    Private(Zeroizing<Vec<u8>>),
}

struct Version {
    id: u32,
    state: &'static str,
    algorithm: String,
    protection_level: String,
    material: Option<Material>,
    import_job: Option<String>,
    /// Reads until an import completes (`PENDING_IMPORT` meanwhile).
    pending_reads: usize,
    destroy_time: Option<String>,
    create_time: String,
}

struct CryptoKey {
    purpose: String,
    algorithm: String,
    protection_level: String,
    labels: Map<String, Value>,
    primary: Option<u32>,
    versions: Vec<Version>,
    create_time: String,
}

struct ImportJob {
    protection_level: String,
    /// Reads until its key is generated.
    pending_reads: usize,
    /// `PENDING_GENERATION` until first read, then `ACTIVE` until expired.
    state: &'static str,
    private_pkcs8: Zeroizing<Vec<u8>>,
    public_pem: String,
    expire_time: String,
}

#[derive(Default)]
struct Ring {
    keys: BTreeMap<String, CryptoKey>,
    jobs: BTreeMap<String, ImportJob>,
}

struct Inner {
    project: String,
    client_email: String,
    private_key_id: String,
    account_public_key: Vec<u8>,
    key_expired: AtomicBool,
    granted: Mutex<HashSet<String>>,
    throttle_next: AtomicUsize,
    page_size: AtomicUsize,
    /// Reads an import job's key generation and an import take.
    pending_reads: AtomicUsize,
    /// The organisation policy `constraints/cloudkms.disableBeforeDestroy`.
    disable_before_destroy: AtomicBool,
    tokens: Mutex<HashMap<String, Instant>>,
    rings: Mutex<BTreeMap<String, Ring>>,
    writes: Mutex<Vec<Instant>>,
    requests: AtomicUsize,
}

/// A running fake; dropped, it stops.
pub struct GoogleKms {
    /// `google_kms_endpoint`.
    pub endpoint: String,
    /// `google_token_url`.
    pub token_url: String,
    /// The service-account JSON (`google_credentials`, before base64).
    pub credentials: String,
    pub project: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn now() -> String {
    timestamp(chrono::Utc::now())
}

fn error(status: StatusCode, google_status: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"code": status.as_u16(), "message": message.into(),
                                     "status": google_status}}),
        ),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn precondition(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "FAILED_PRECONDITION", message)
}

fn not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("{name} not found."),
    )
}

fn ok(value: Value) -> Response {
    axum::Json(value).into_response()
}

fn new_service_account_key() -> (Zeroizing<Vec<u8>>, Vec<u8>) {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("an RSA key");
    let pkcs8 = Zeroizing::new(pair.as_der().expect("PKCS#8").as_ref().to_vec());
    let public = pair.public_key().as_ref().to_vec();
    (pkcs8, public)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = B64.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// What an algorithm needs: its purpose and what material fits it.
fn purpose_of(algorithm: &str) -> Option<&'static str> {
    Some(match algorithm {
        "GOOGLE_SYMMETRIC_ENCRYPTION" => "ENCRYPT_DECRYPT",
        "HMAC_SHA256" => "MAC",
        a if a.starts_with("RSA_DECRYPT_OAEP_") => "ASYMMETRIC_DECRYPT",
        a if a.starts_with("RSA_SIGN_") || a.starts_with("EC_SIGN_") => "ASYMMETRIC_SIGN",
        _ => return None,
    })
}

/// Whether `material` (as imported) is a key of `algorithm`.
fn material_fits(algorithm: &str, material: &[u8]) -> bool {
    match algorithm {
        "GOOGLE_SYMMETRIC_ENCRYPTION" | "HMAC_SHA256" => material.len() == 32,
        a if a.starts_with("RSA_") => KeyPair::from_pkcs8(material).is_ok_and(|k| {
            let bits = (k.public_modulus_len() * 8).to_string();
            a.split('_').any(|part| part == bits)
        }),
        "EC_SIGN_P256_SHA256" => signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            material,
        )
        .is_ok(),
        "EC_SIGN_P384_SHA384" => signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            material,
        )
        .is_ok(),
        _ => false,
    }
}

/// The SPKI public key of a private key (PKCS#8), RSA or EC.
fn public_key_der(pkcs8: &[u8]) -> Option<Vec<u8>> {
    if let Ok(rsa) = KeyPair::from_pkcs8(pkcs8) {
        let der: PublicKeyX509Der<'static> = rsa.public_key().as_der().ok()?;
        return Some(der.as_ref().to_vec());
    }
    for alg in [
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
    ] {
        if let Ok(ec) = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8) {
            let der: PublicKeyX509Der<'static> = ec.public_key().as_der().ok()?;
            return Some(der.as_ref().to_vec());
        }
    }
    None
}

fn aes(material: &[u8]) -> Option<LessSafeKey> {
    Some(LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, material).ok()?,
    ))
}

/// AES-256-GCM `iv ‖ ciphertext ‖ tag` under `material`.
fn seal(material: &[u8], plaintext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let key = aes(material)?;
    let mut iv = [0u8; 12];
    aws_lc_rs::rand::fill(&mut iv).ok()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf)
        .ok()?;
    Some([iv.to_vec(), buf].concat())
}

fn open(material: &[u8], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let key = aes(material)?;
    if sealed.len() < 28 {
        return None;
    }
    let (iv, rest) = sealed.split_at(12);
    let mut buf = rest.to_vec();
    let opened = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(iv).ok()?,
            Aad::from(aad),
            &mut buf,
        )
        .ok()?;
    Some(opened.to_vec())
}

impl CryptoKey {
    fn json(&self, name: &str) -> Value {
        let mut key = json!({
            "name": name,
            "purpose": self.purpose,
            "createTime": self.create_time,
            "importOnly": true,
            "versionTemplate": {"algorithm": self.algorithm, "protectionLevel": self.protection_level},
            "labels": self.labels,
            "destroyScheduledDuration": "2592000s",
        });
        if let Some(primary) = self
            .primary
            .and_then(|p| self.versions.iter().find(|v| v.id == p))
        {
            key["primary"] = primary.json(name);
        }
        key
    }
}

impl Version {
    fn json(&self, key_name: &str) -> Value {
        let mut v = json!({
            "name": format!("{key_name}/cryptoKeyVersions/{}", self.id),
            "state": self.state,
            "algorithm": self.algorithm,
            "protectionLevel": self.protection_level,
            "createTime": self.create_time,
        });
        if let Some(job) = &self.import_job {
            v["importJob"] = json!(job);
            v["importTime"] = json!(self.create_time);
        }
        if let Some(t) = &self.destroy_time {
            v["destroyTime"] = json!(t);
        }
        v
    }

    fn symmetric(&self) -> Option<&[u8]> {
        match &self.material {
            Some(Material::Symmetric(m)) if self.state == "ENABLED" => Some(m),
            _ => None,
        }
    }
}

/// A parsed request path under `/v1/`.
enum Call {
    GetRing(String),
    CreateRing { parent: String },
    TestPermissions(String),
    CreateKey { ring: String },
    GetKey { ring: String, key: String },
    UpdatePrimary { ring: String, key: String },
    Encrypt { ring: String, key: String },
    Decrypt { ring: String, key: String },
    ListVersions { ring: String, key: String },
    Import { ring: String, key: String },
    GetVersion { ring: String, key: String, id: u32 },
    PatchVersion { ring: String, key: String, id: u32 },
    Destroy { ring: String, key: String, id: u32 },
    Restore { ring: String, key: String, id: u32 },
    PublicKey { ring: String, key: String, id: u32 },
    CreateJob { ring: String },
    GetJob { ring: String, job: String },
}

impl Call {
    /// The permission it needs and the resource it is checked on.
    fn permission(&self) -> &'static str {
        match self {
            Self::GetRing(_) => "cloudkms.keyRings.get",
            Self::CreateRing { .. } => "cloudkms.keyRings.create",
            Self::TestPermissions(_) => "",
            Self::CreateKey { .. } => "cloudkms.cryptoKeys.create",
            Self::GetKey { .. } => "cloudkms.cryptoKeys.get",
            Self::UpdatePrimary { .. } => "cloudkms.cryptoKeys.update",
            Self::Encrypt { .. } => "cloudkms.cryptoKeyVersions.useToEncrypt",
            Self::Decrypt { .. } => "cloudkms.cryptoKeyVersions.useToDecrypt",
            Self::ListVersions { .. } => "cloudkms.cryptoKeyVersions.list",
            Self::Import { .. } => "cloudkms.cryptoKeyVersions.create",
            Self::GetVersion { .. } => "cloudkms.cryptoKeyVersions.get",
            Self::PatchVersion { .. } => "cloudkms.cryptoKeyVersions.update",
            Self::Destroy { .. } => "cloudkms.cryptoKeyVersions.destroy",
            Self::Restore { .. } => "cloudkms.cryptoKeyVersions.restore",
            Self::PublicKey { .. } => "cloudkms.cryptoKeyVersions.viewPublicKey",
            Self::CreateJob { .. } => "cloudkms.importJobs.create",
            Self::GetJob { .. } => "cloudkms.importJobs.get",
        }
    }

    fn is_write(&self) -> bool {
        matches!(
            self,
            Self::CreateRing { .. }
                | Self::CreateKey { .. }
                | Self::UpdatePrimary { .. }
                | Self::Import { .. }
                | Self::PatchVersion { .. }
                | Self::Destroy { .. }
                | Self::Restore { .. }
                | Self::CreateJob { .. }
        )
    }

    fn parse(method: &Method, path: &str) -> Option<Self> {
        let rest = path.strip_prefix("/v1/")?;
        let (resource, verb) = match rest.rsplit_once(':') {
            Some((r, v)) if !v.contains('/') => (r, Some(v)),
            _ => (rest, None),
        };
        let parts: Vec<&str> = resource.split('/').collect();
        if parts.len() < 4 || parts[0] != "projects" || parts[2] != "locations" {
            return None;
        }
        let parent = parts[..4].join("/");
        let ring = |n: &str| format!("{parent}/keyRings/{n}");
        let get = *method == Method::GET;
        let postm = *method == Method::POST;
        Some(match (&parts[4..], verb) {
            (["keyRings"], None) if postm => Self::CreateRing { parent },
            (["keyRings", r], None) if get => Self::GetRing(ring(r)),
            (["keyRings", r], Some("testIamPermissions")) if postm => {
                Self::TestPermissions(ring(r))
            }
            (["keyRings", r, "cryptoKeys"], None) if postm => Self::CreateKey { ring: ring(r) },
            (["keyRings", r, "importJobs"], None) if postm => Self::CreateJob { ring: ring(r) },
            (["keyRings", r, "importJobs", j], None) if get => Self::GetJob {
                ring: ring(r),
                job: (*j).to_owned(),
            },
            (["keyRings", r, "cryptoKeys", k], v) => {
                let (ring, key) = (ring(r), (*k).to_owned());
                match v {
                    None if get => Self::GetKey { ring, key },
                    Some("updatePrimaryVersion") if postm => Self::UpdatePrimary { ring, key },
                    Some("encrypt") if postm => Self::Encrypt { ring, key },
                    Some("decrypt") if postm => Self::Decrypt { ring, key },
                    _ => return None,
                }
            }
            (["keyRings", r, "cryptoKeys", k, "cryptoKeyVersions"], v) => {
                let (ring, key) = (ring(r), (*k).to_owned());
                match v {
                    None if get => Self::ListVersions { ring, key },
                    Some("import") if postm => Self::Import { ring, key },
                    _ => return None,
                }
            }
            (["keyRings", r, "cryptoKeys", k, "cryptoKeyVersions", id], v) => {
                let (ring, key, id) = (ring(r), (*k).to_owned(), id.parse().ok()?);
                match v {
                    None if get => Self::GetVersion { ring, key, id },
                    None if *method == Method::PATCH => Self::PatchVersion { ring, key, id },
                    Some("destroy") if postm => Self::Destroy { ring, key, id },
                    Some("restore") if postm => Self::Restore { ring, key, id },
                    _ => return None,
                }
            }
            (
                [
                    "keyRings",
                    r,
                    "cryptoKeys",
                    k,
                    "cryptoKeyVersions",
                    id,
                    "publicKey",
                ],
                None,
            ) if get => Self::PublicKey {
                ring: ring(r),
                key: (*k).to_owned(),
                id: id.parse().ok()?,
            },
            _ => return None,
        })
    }
}

type Shared = State<Arc<Inner>>;

async fn token(State(s): Shared, Form(form): Form<HashMap<String, String>>) -> Response {
    let oauth = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": description})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type",
                              "error_description": "Invalid grant_type: "})),
        )
            .into_response();
    }
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = assertion.split('.').collect();
    let decode = |p: &str| -> Value {
        B64URL
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let [header, claims, sig] = parts[..] else {
        return oauth("Invalid JWT: not three parts.");
    };
    let (header, claims) = (decode(header), decode(claims));
    if claims["iss"] != s.client_email.as_str() {
        return oauth("Invalid grant: account not found");
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = header["alg"] == "RS256"
        && header["kid"] == s.private_key_id.as_str()
        && B64URL.decode(sig).is_ok_and(|sig| {
            UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                &s.account_public_key,
            )
            .verify(signed.as_bytes(), &sig)
            .is_ok()
        });
    if !verified || s.key_expired.load(Ordering::SeqCst) {
        return oauth("Invalid JWT Signature.");
    }
    // Google's token endpoint is the audience, whatever URL the assertion was sent to.
    if claims["aud"] != "https://oauth2.googleapis.com/token" {
        return oauth("Invalid JWT: Failed audience check.");
    }
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap_or(0),
        claims["exp"].as_i64().unwrap_or(0),
    );
    let at = chrono::Utc::now().timestamp();
    if exp <= at || exp - iat > 3600 || iat > at + 300 {
        return oauth(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    if !claims["scope"]
        .as_str()
        .is_some_and(|sc| sc.split(' ').any(|x| x == SCOPE))
    {
        return oauth("Invalid OAuth scope or ID token audience provided.");
    }
    let access_token = format!("ya29.{}", uuid::Uuid::new_v4().simple());
    s.tokens.lock().unwrap().insert(
        access_token.clone(),
        Instant::now() + Duration::from_secs(3599),
    );
    ok(json!({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"}))
}

fn throttled(metric: &str) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
        format!(
            "Quota exceeded for quota metric '{metric}' and limit '{metric} per minute' of service 'cloudkms.googleapis.com'."
        ),
    )
}

impl Inner {
    /// Checks token, quota and permission; `Some` is the refusal.
    fn refuse(&self, headers: &HeaderMap, call: &Call, resource: &str) -> Option<Response> {
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
            return Some(error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            ));
        }
        if self
            .throttle_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Some(throttled("Read requests"));
        }
        if call.is_write() {
            let mut writes = self.writes.lock().unwrap();
            let window = Instant::now() - Duration::from_secs(60);
            writes.retain(|t| *t > window);
            if writes.len() >= WRITES_PER_MINUTE {
                return Some(throttled("Write requests"));
            }
            writes.push(Instant::now());
        }
        let permission = call.permission();
        let project_ok = resource.starts_with(&format!("projects/{}/", self.project));
        if !permission.is_empty()
            && (!project_ok || !self.granted.lock().unwrap().contains(permission))
        {
            return Some(error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                format!(
                    "Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
                ),
            ));
        }
        None
    }

    /// Runs `f` on key `key` of ring `ring`, or answers not found.
    fn with_key(
        &self,
        ring: &str,
        key: &str,
        f: impl FnOnce(&mut CryptoKey, &mut BTreeMap<String, ImportJob>, String) -> Response,
    ) -> Response {
        let mut rings = self.rings.lock().unwrap();
        let name = format!("{ring}/cryptoKeys/{key}");
        let Some(r) = rings.get_mut(ring) else {
            return not_found(ring);
        };
        match r.keys.get_mut(key) {
            Some(k) => f(k, &mut r.jobs, name),
            None => not_found(&name),
        }
    }

    fn with_version(
        &self,
        ring: &str,
        key: &str,
        id: u32,
        f: impl FnOnce(&mut Version, &str) -> Response,
    ) -> Response {
        self.with_key(ring, key, |k, _, name| {
            match k.versions.iter_mut().find(|v| v.id == id) {
                Some(v) => f(v, &name),
                None => not_found(&format!("{name}/cryptoKeyVersions/{id}")),
            }
        })
    }
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<HashMap<String, String>>()
        })
        .unwrap_or_default()
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn is_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

async fn kms(
    State(s): Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(call) = Call::parse(&method, uri.path()) else {
        return not_found(uri.path());
    };
    let resource = uri.path().trim_start_matches("/v1/").to_owned();
    if let Some(r) = s.refuse(&headers, &call, &resource) {
        return r;
    }
    let q = query(&uri);
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return bad("Invalid JSON payload received."),
        }
    };
    match call {
        Call::GetRing(name) => match s.rings.lock().unwrap().contains_key(&name) {
            true => ok(json!({"name": name, "createTime": now()})),
            false => not_found(&name),
        },
        Call::CreateRing { parent } => {
            let id = q.get("keyRingId").cloned().unwrap_or_default();
            if !is_id(&id) {
                return bad("Invalid value for keyRingId.");
            }
            let name = format!("{parent}/keyRings/{id}");
            let mut rings = s.rings.lock().unwrap();
            if rings.contains_key(&name) {
                return error(
                    StatusCode::CONFLICT,
                    "ALREADY_EXISTS",
                    format!("KeyRing {name} already exists."),
                );
            }
            rings.insert(name.clone(), Ring::default());
            ok(json!({"name": name, "createTime": now()}))
        }
        Call::TestPermissions(ring) => {
            if !s.rings.lock().unwrap().contains_key(&ring) {
                return not_found(&ring);
            }
            let granted = s.granted.lock().unwrap();
            let asked: Vec<&str> = body["permissions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let held: Vec<&str> = asked.into_iter().filter(|p| granted.contains(*p)).collect();
            ok(json!({ "permissions": held }))
        }
        Call::CreateKey { ring } => create_key(&s, &ring, &q, &body),
        Call::GetKey { ring, key } => s.with_key(&ring, &key, |k, _, name| ok(k.json(&name))),
        Call::UpdatePrimary { ring, key } => s.with_key(&ring, &key, |k, _, name| {
            if k.purpose != "ENCRYPT_DECRYPT" {
                return precondition("Only ENCRYPT_DECRYPT keys have a primary version.");
            }
            let id: Option<u32> = body["cryptoKeyVersionId"]
                .as_str()
                .and_then(|v| v.parse().ok());
            match id.and_then(|id| k.versions.iter().find(|v| v.id == id)) {
                Some(v) if v.state == "ENABLED" => {
                    k.primary = Some(v.id);
                    ok(k.json(&name))
                }
                Some(v) => precondition(format!(
                    "The request cannot be fulfilled: version {} is {}, not ENABLED.",
                    v.id, v.state
                )),
                None => not_found("cryptoKeyVersionId"),
            }
        }),
        Call::Encrypt { ring, key } => s.with_key(&ring, &key, |k, _, name| {
            let Some(plaintext) = body["plaintext"].as_str().and_then(|p| B64.decode(p).ok())
            else {
                return bad("plaintext is required.");
            };
            let aad = body["additionalAuthenticatedData"]
                .as_str()
                .and_then(|a| B64.decode(a).ok())
                .unwrap_or_default();
            let primary = k
                .primary
                .and_then(|p| k.versions.iter().find(|v| v.id == p));
            let Some((id, material)) = primary.and_then(|v| v.symmetric().map(|m| (v.id, m)))
            else {
                return precondition(format!("{name} has no ENABLED primary version."));
            };
            let Some(sealed) = seal(material, &plaintext, &aad) else {
                return bad("encryption failed");
            };
            ok(json!({
                "name": format!("{name}/cryptoKeyVersions/{id}"),
                "ciphertext": B64.encode([id.to_be_bytes().to_vec(), sealed].concat()),
            }))
        }),
        Call::Decrypt { ring, key } => s.with_key(&ring, &key, |k, _, _| {
            let Some(ciphertext) = body["ciphertext"].as_str().and_then(|c| B64.decode(c).ok())
            else {
                return bad("ciphertext is required.");
            };
            let aad = body["additionalAuthenticatedData"]
                .as_str()
                .and_then(|a| B64.decode(a).ok())
                .unwrap_or_default();
            if ciphertext.len() < 4 {
                return bad("Decryption failed: the ciphertext is invalid.");
            }
            let id = u32::from_be_bytes(ciphertext[..4].try_into().expect("4 bytes"));
            let Some(v) = k.versions.iter().find(|v| v.id == id) else {
                return bad("Decryption failed: the ciphertext is invalid.");
            };
            let Some(material) = v.symmetric() else {
                return precondition(format!("Version {id} is {}, not ENABLED.", v.state));
            };
            match open(material, &ciphertext[4..], &aad) {
                Some(p) => {
                    ok(json!({"plaintext": B64.encode(p), "usedPrimary": k.primary == Some(id)}))
                }
                None => bad("Decryption failed: the ciphertext is invalid."),
            }
        }),
        Call::ListVersions { ring, key } => s.with_key(&ring, &key, |k, _, name| {
            let size = q
                .get("pageSize")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(25)
                .clamp(1, 1000)
                .min(s.page_size.load(Ordering::SeqCst));
            let start: usize = q
                .get("pageToken")
                .and_then(|t| t.strip_prefix("after-"))
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            for v in &mut k.versions {
                settle(v);
            }
            let page: Vec<Value> = k
                .versions
                .iter()
                .skip(start)
                .take(size)
                .map(|v| v.json(&name))
                .collect();
            let mut answer = json!({"cryptoKeyVersions": page, "totalSize": k.versions.len()});
            if start + size < k.versions.len() {
                answer["nextPageToken"] = json!(format!("after-{}", start + size));
            }
            ok(answer)
        }),
        Call::Import { ring, key } => import(&s, &ring, &key, &body),
        Call::GetVersion { ring, key, id } => s.with_version(&ring, &key, id, |v, name| {
            settle(v);
            ok(v.json(name))
        }),
        Call::PatchVersion { ring, key, id } => {
            if q.get("updateMask").map(String::as_str) != Some("state") {
                return bad("updateMask must be state.");
            }
            s.with_version(&ring, &key, id, |v, name| {
                let wanted = match body["state"].as_str() {
                    Some("ENABLED") => "ENABLED",
                    Some("DISABLED") => "DISABLED",
                    _ => return bad("state must be ENABLED or DISABLED."),
                };
                if !matches!(v.state, "ENABLED" | "DISABLED") {
                    return precondition(format!(
                        "The request cannot be fulfilled: version {} is {}.",
                        v.id, v.state
                    ));
                }
                v.state = wanted;
                ok(v.json(name))
            })
        }
        Call::Destroy { ring, key, id } => s.with_version(&ring, &key, id, |v, name| {
            if v.state == "ENABLED" && s.disable_before_destroy.load(Ordering::SeqCst) {
                return precondition(
                    "Organization policy constraints/cloudkms.disableBeforeDestroy requires the version to be DISABLED before it is destroyed.",
                );
            }
            if !matches!(v.state, "ENABLED" | "DISABLED") {
                return precondition(format!(
                    "The request cannot be fulfilled: version {} is {}.",
                    v.id, v.state
                ));
            }
            v.state = "DESTROY_SCHEDULED";
            v.destroy_time = Some(timestamp(chrono::Utc::now() + chrono::Duration::days(30)));
            ok(v.json(name))
        }),
        Call::Restore { ring, key, id } => s.with_version(&ring, &key, id, |v, name| {
            if v.state != "DESTROY_SCHEDULED" {
                return precondition(format!(
                    "The request cannot be fulfilled: version {} is {}, not DESTROY_SCHEDULED.",
                    v.id, v.state
                ));
            }
            v.state = "DISABLED";
            v.destroy_time = None;
            ok(v.json(name))
        }),
        Call::PublicKey { ring, key, id } => s.with_version(&ring, &key, id, |v, name| {
            let spki = match &v.material {
                Some(Material::Private(p)) if v.state == "ENABLED" => public_key_der(p),
                _ => None,
            };
            match spki {
                Some(der) => ok(
                    json!({"pem": pem("PUBLIC KEY", &der), "algorithm": v.algorithm,
                                       "name": name}),
                ),
                None => precondition(format!("Version {} has no usable public key.", v.id)),
            }
        }),
        Call::CreateJob { ring } => create_job(&s, &ring, &q, &body),
        Call::GetJob { ring, job } => {
            let mut rings = s.rings.lock().unwrap();
            let name = format!("{ring}/importJobs/{job}");
            match rings.get_mut(&ring).and_then(|r| r.jobs.get_mut(&job)) {
                Some(j) => {
                    if j.state == "PENDING_GENERATION" {
                        if j.pending_reads == 0 {
                            j.state = "ACTIVE";
                        } else {
                            j.pending_reads -= 1;
                        }
                    }
                    ok(job_json(&name, j))
                }
                None => not_found(&name),
            }
        }
    }
}

/// An import completes at the first read after it was asked for.
fn settle(v: &mut Version) {
    if v.state == "PENDING_IMPORT" {
        if v.pending_reads == 0 {
            v.state = "ENABLED";
        } else {
            v.pending_reads -= 1;
        }
    }
}

fn job_json(name: &str, j: &ImportJob) -> Value {
    let mut v = json!({"name": name, "importMethod": "RSA_OAEP_3072_SHA256_AES_256",
                       "protectionLevel": j.protection_level, "state": j.state,
                       "expireTime": j.expire_time});
    if j.state == "ACTIVE" {
        v["publicKey"] = json!({"pem": j.public_pem});
    }
    v
}

fn create_key(s: &Inner, ring: &str, q: &HashMap<String, String>, body: &Value) -> Response {
    let id = q.get("cryptoKeyId").cloned().unwrap_or_default();
    if !is_id(&id) {
        return bad("Invalid value for cryptoKeyId.");
    }
    let algorithm = body["versionTemplate"]["algorithm"]
        .as_str()
        .unwrap_or_default();
    let purpose = body["purpose"].as_str().unwrap_or_default();
    if purpose_of(algorithm) != Some(purpose) {
        return bad(format!(
            "Algorithm {algorithm} is not valid for purpose {purpose}."
        ));
    }
    if body["importOnly"] != true
        || q.get("skipInitialVersionCreation").map(String::as_str) != Some("true")
    {
        return bad("This fake holds import-only keys created with skipInitialVersionCreation.");
    }
    let protection_level = body["versionTemplate"]["protectionLevel"]
        .as_str()
        .unwrap_or("SOFTWARE");
    if !matches!(protection_level, "SOFTWARE" | "HSM") {
        return bad("protectionLevel must be SOFTWARE or HSM.");
    }
    let labels = body["labels"].as_object().cloned().unwrap_or_default();
    let label_ok = |t: &str| {
        t.len() <= 63
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    if !labels
        .iter()
        .all(|(k, v)| !k.is_empty() && label_ok(k) && v.as_str().is_some_and(label_ok))
    {
        return bad("Label keys and values are lowercase letters, digits, _ and -, at most 63.");
    }
    let mut rings = s.rings.lock().unwrap();
    let Some(r) = rings.get_mut(ring) else {
        return not_found(ring);
    };
    let name = format!("{ring}/cryptoKeys/{id}");
    if r.keys.contains_key(&id) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("CryptoKey {name} already exists."),
        );
    }
    let key = CryptoKey {
        purpose: purpose.to_owned(),
        algorithm: algorithm.to_owned(),
        protection_level: protection_level.to_owned(),
        labels,
        primary: None,
        versions: Vec::new(),
        create_time: now(),
    };
    let answer = key.json(&name);
    r.keys.insert(id, key);
    ok(answer)
}

fn create_job(s: &Inner, ring: &str, q: &HashMap<String, String>, body: &Value) -> Response {
    let id = q.get("importJobId").cloned().unwrap_or_default();
    if !is_id(&id) {
        return bad("Invalid value for importJobId.");
    }
    if body["importMethod"] != "RSA_OAEP_3072_SHA256_AES_256" {
        return bad("This fake offers import method RSA_OAEP_3072_SHA256_AES_256 only.");
    }
    let protection_level = body["protectionLevel"].as_str().unwrap_or_default();
    if !matches!(protection_level, "SOFTWARE" | "HSM") {
        return bad("protectionLevel must be SOFTWARE or HSM.");
    }
    let private = PrivateDecryptingKey::generate(KeySize::Rsa3072).expect("an RSA key");
    let private_pkcs8 = Zeroizing::new(private.as_der().expect("PKCS#8").as_ref().to_vec());
    let public: PublicKeyX509Der<'static> = private.public_key().as_der().expect("SPKI");
    let mut rings = s.rings.lock().unwrap();
    let Some(r) = rings.get_mut(ring) else {
        return not_found(ring);
    };
    let name = format!("{ring}/importJobs/{id}");
    if r.jobs.contains_key(&id) {
        return error(
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("ImportJob {name} already exists."),
        );
    }
    let job = ImportJob {
        protection_level: protection_level.to_owned(),
        pending_reads: s.pending_reads.load(Ordering::SeqCst),
        state: "PENDING_GENERATION",
        private_pkcs8,
        public_pem: pem("PUBLIC KEY", public.as_ref()),
        expire_time: timestamp(chrono::Utc::now() + chrono::Duration::days(3)),
    };
    let answer = job_json(&name, &job);
    r.jobs.insert(id, job);
    ok(answer)
}

fn import(s: &Inner, ring: &str, key: &str, body: &Value) -> Response {
    s.with_key(ring, key, |k, jobs, name| {
        let algorithm = body["algorithm"].as_str().unwrap_or_default();
        if algorithm != k.algorithm {
            return bad(format!(
                "Algorithm {algorithm} does not match the key's version template ({}).",
                k.algorithm
            ));
        }
        let job_name = body["importJob"].as_str().unwrap_or_default();
        let job = job_name
            .strip_prefix(&format!("{ring}/importJobs/"))
            .and_then(|id| jobs.get(id));
        let Some(job) = job else {
            return bad(format!(
                "ImportJob {job_name} was not found in this key ring."
            ));
        };
        if job.state != "ACTIVE" {
            return precondition(format!(
                "ImportJob {job_name} is {}, not ACTIVE.",
                job.state
            ));
        }
        if job.protection_level != k.protection_level {
            return precondition(format!(
                "ImportJob protection level {} does not match the key's {}.",
                job.protection_level, k.protection_level
            ));
        }
        let Some(wrapped) = body["wrappedKey"].as_str().and_then(|w| B64.decode(w).ok()) else {
            return bad("wrappedKey must be base64.");
        };
        let Ok(material) =
            transfer::open_rsa_aes_key_wrap(&job.private_pkcs8, OaepHash::Sha256, &wrapped)
        else {
            return bad("The wrapped key could not be unwrapped with the import job's key.");
        };
        if !material_fits(algorithm, material.expose()) {
            return bad(format!(
                "The imported key material is not a {algorithm} key."
            ));
        }
        let material = Zeroizing::new(material.expose().to_vec());
        let id = k.versions.last().map_or(1, |v| v.id + 1);
        let version = Version {
            id,
            state: "PENDING_IMPORT",
            algorithm: algorithm.to_owned(),
            protection_level: k.protection_level.clone(),
            material: Some(
                if algorithm == "GOOGLE_SYMMETRIC_ENCRYPTION" || algorithm == "HMAC_SHA256" {
                    Material::Symmetric(material)
                } else {
                    Material::Private(material)
                },
            ),
            import_job: Some(job_name.to_owned()),
            pending_reads: s.pending_reads.load(Ordering::SeqCst),
            destroy_time: None,
            create_time: now(),
        };
        let answer = version.json(&name);
        k.versions.push(version);
        ok(answer)
    })
}

impl GoogleKms {
    /// Starts a fake on a free local port, with one service account in project `project`.
    pub async fn start(project: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let token_url = format!("{base}/token");
        let (private_pkcs8, public) = new_service_account_key();
        let client_email = format!("keyplane@{project}.iam.gserviceaccount.com");
        let private_key_id = uuid::Uuid::new_v4().simple().to_string();
        let credentials = json!({
            "type": "service_account", "project_id": project,
            "private_key_id": private_key_id,
            "private_key": pem("PRIVATE KEY", &private_pkcs8),
            "client_email": client_email, "client_id": "1234567890",
            "token_uri": token_url,
        })
        .to_string();
        let inner = Arc::new(Inner {
            project: project.to_owned(),
            client_email,
            private_key_id,
            account_public_key: public,
            key_expired: AtomicBool::new(false),
            granted: Mutex::new(ALL_PERMISSIONS.iter().map(|p| (*p).to_owned()).collect()),
            throttle_next: AtomicUsize::new(0),
            page_size: AtomicUsize::new(1000),
            pending_reads: AtomicUsize::new(2),
            disable_before_destroy: AtomicBool::new(false),
            tokens: Mutex::default(),
            rings: Mutex::default(),
            writes: Mutex::default(),
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/token", post(token))
            .fallback(kms)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            endpoint: base,
            token_url,
            credentials,
            project: project.to_owned(),
            inner,
            task,
        })
    }

    /// The credentials of an account that does not exist in the project (another key).
    pub fn unknown_account_credentials(&self) -> String {
        let (pkcs8, _) = new_service_account_key();
        json!({"type": "service_account", "project_id": self.project,
               "private_key_id": "0000", "private_key": pem("PRIVATE KEY", &pkcs8),
               "client_email": format!("nobody@{}.iam.gserviceaccount.com", self.project)})
        .to_string()
    }

    /// The account's key passes its expiry (Google then refuses its signature).
    pub fn expire_key(&self) {
        self.inner.key_expired.store(true, Ordering::SeqCst);
    }

    /// The account loses `permissions` (or, with none, regains every one).
    pub fn deny_permissions(&self, permissions: &[&str]) {
        let mut granted = self.inner.granted.lock().unwrap();
        *granted = ALL_PERMISSIONS.iter().map(|p| (*p).to_owned()).collect();
        for p in permissions {
            granted.remove(*p);
        }
    }

    /// The next `n` Cloud KMS requests are answered 429 `RESOURCE_EXHAUSTED`.
    pub fn throttle_next(&self, n: usize) {
        self.inner.throttle_next.store(n, Ordering::SeqCst);
    }

    /// Lists of versions come in pages of at most `size`.
    pub fn page_versions_by(&self, size: usize) {
        self.inner.page_size.store(size.max(1), Ordering::SeqCst);
    }

    /// Import jobs take `reads` reads to generate their key, and imports as many to complete.
    pub fn take_reads_to_settle(&self, reads: usize) {
        self.inner.pending_reads.store(reads, Ordering::SeqCst);
    }

    /// The organisation policy that refuses to destroy an enabled version.
    pub fn require_disable_before_destroy(&self, on: bool) {
        self.inner
            .disable_before_destroy
            .store(on, Ordering::SeqCst);
    }

    /// Makes version `id` of key `name` primary, as an operator in the console would.
    pub fn set_primary(&self, name: &str, id: u32) {
        let mut rings = self.inner.rings.lock().unwrap();
        if let Some(k) = rings.values_mut().find_map(|r| r.keys.get_mut(name)) {
            k.primary = Some(id);
        }
    }

    /// Puts another RSA key pair of the same size into version `id` of key `name`, keeping its
    /// import job's name: what someone allowed to import into the key ring could forge.
    pub fn forge_rsa_version(&self, name: &str, id: u32) {
        let mut rings = self.inner.rings.lock().unwrap();
        let Some(v) = rings
            .values_mut()
            .find_map(|r| r.keys.get_mut(name))
            .and_then(|k| k.versions.iter_mut().find(|v| v.id == id))
        else {
            return;
        };
        let bits = match &v.material {
            Some(Material::Private(p)) => {
                KeyPair::from_pkcs8(p).map_or(0, |k| k.public_modulus_len() * 8)
            }
            _ => 0,
        };
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            _ => KeySize::Rsa4096,
        };
        let other = KeyPair::generate(size).expect("an RSA key");
        v.material = Some(Material::Private(Zeroizing::new(
            other.as_der().expect("PKCS#8").as_ref().to_vec(),
        )));
    }

    /// Every import job expires now.
    pub fn expire_import_jobs(&self) {
        for ring in self.inner.rings.lock().unwrap().values_mut() {
            for job in ring.jobs.values_mut() {
                job.state = "EXPIRED";
            }
        }
    }

    /// Every version scheduled for destruction reaches its destroy time: its material is gone.
    pub fn complete_destructions(&self) {
        for ring in self.inner.rings.lock().unwrap().values_mut() {
            for key in ring.keys.values_mut() {
                for v in &mut key.versions {
                    if v.state == "DESTROY_SCHEDULED" {
                        v.state = "DESTROYED";
                        v.material = None;
                    }
                }
            }
        }
    }

    /// Key rings present (full names).
    pub fn key_rings(&self) -> Vec<String> {
        self.inner.rings.lock().unwrap().keys().cloned().collect()
    }

    /// Import jobs of every ring.
    pub fn import_jobs(&self) -> usize {
        self.inner
            .rings
            .lock()
            .unwrap()
            .values()
            .map(|r| r.jobs.len())
            .sum()
    }

    /// Requests answered so far (tokens not counted).
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    fn key<T>(&self, name: &str, f: impl FnOnce(&CryptoKey) -> T) -> Option<T> {
        let rings = self.inner.rings.lock().unwrap();
        rings.values().find_map(|r| r.keys.get(name)).map(f)
    }

    /// Names of the keys in every ring.
    pub fn key_names(&self) -> Vec<String> {
        let rings = self.inner.rings.lock().unwrap();
        rings
            .values()
            .flat_map(|r| r.keys.keys().cloned())
            .collect()
    }

    /// Key `name` as `cryptoKeys.get` shows it (`Null` when absent).
    pub fn crypto_key(&self, name: &str) -> Value {
        self.key(name, |k| k.json(name)).unwrap_or(Value::Null)
    }

    /// The versions of key `name`: id, state and import job.
    pub fn versions(&self, name: &str) -> Vec<(u32, String, String)> {
        self.key(name, |k| {
            k.versions
                .iter()
                .map(|v| {
                    (
                        v.id,
                        v.state.to_owned(),
                        v.import_job.clone().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Sets a version's state as an operator in the console would.
    pub fn set_state(&self, name: &str, id: u32, state: &'static str) {
        let mut rings = self.inner.rings.lock().unwrap();
        if let Some(v) = rings
            .values_mut()
            .find_map(|r| r.keys.get_mut(name))
            .and_then(|k| k.versions.iter_mut().find(|v| v.id == id))
        {
            v.state = state;
        }
    }

    /// Encrypts with key `name`'s primary version as `encrypt` does; the AES-GCM
    /// `iv ‖ ciphertext ‖ tag` without this fake's version header.
    pub fn encrypt(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        self.key(name, |k| {
            let v = k
                .primary
                .and_then(|p| k.versions.iter().find(|v| v.id == p))
                .ok_or("no primary version")?;
            let material = v.symmetric().ok_or(format!("the primary is {}", v.state))?;
            seal(material, plaintext, b"").ok_or_else(|| "encryption failed".to_owned())
        })
        .unwrap_or_else(|| Err(format!("no key {name}")))
    }

    /// Decrypts `iv ‖ ciphertext ‖ tag` with key `name`'s version `id` as `decrypt` does.
    pub fn decrypt(&self, name: &str, id: u32, sealed: &[u8]) -> Result<Vec<u8>, String> {
        self.key(name, |k| {
            let v = k
                .versions
                .iter()
                .find(|v| v.id == id)
                .ok_or("no such version")?;
            let material = v
                .symmetric()
                .ok_or(format!("version {id} is {}", v.state))?;
            open(material, sealed, b"").ok_or_else(|| "decryption failed".to_owned())
        })
        .unwrap_or_else(|| Err(format!("no key {name}")))
    }

    /// The public key (SPKI DER) of version `id` of key `name`, as `publicKey` derives it.
    pub fn public_key(&self, name: &str, id: u32) -> Option<Vec<u8>> {
        self.key(name, |k| {
            k.versions
                .iter()
                .find(|v| v.id == id)
                .and_then(|v| match &v.material {
                    Some(Material::Private(p)) => public_key_der(p),
                    _ => None,
                })
        })
        .flatten()
    }

    /// A key under `name` in ring `ring` that no keyplane made (no label), as another tool
    /// would leave, with one enabled AES version.
    pub fn create_foreign_key(&self, ring: &str, name: &str) {
        let mut material = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut material).expect("random");
        let mut rings = self.inner.rings.lock().unwrap();
        let r = rings.entry(ring.to_owned()).or_default();
        r.keys.insert(
            name.to_owned(),
            CryptoKey {
                purpose: "ENCRYPT_DECRYPT".into(),
                algorithm: "GOOGLE_SYMMETRIC_ENCRYPTION".into(),
                protection_level: "HSM".into(),
                labels: Map::new(),
                primary: Some(1),
                versions: vec![Version {
                    id: 1,
                    state: "ENABLED",
                    algorithm: "GOOGLE_SYMMETRIC_ENCRYPTION".into(),
                    protection_level: "HSM".into(),
                    material: Some(Material::Symmetric(material)),
                    import_job: None,
                    pending_reads: 0,
                    destroy_time: None,
                    create_time: now(),
                }],
                create_time: now(),
            },
        );
    }
}

impl Drop for GoogleKms {
    fn drop(&mut self) {
        self.task.abort();
    }
}
