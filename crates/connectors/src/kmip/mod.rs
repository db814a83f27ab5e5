//! `kmip` keystores: any KMIP 1.2 – 2.1 server, over mutual TLS in TTLV (decisions.md §3).
//!
//! Each version of a managed key is one symmetric-key object (AES, HMAC), or a private-key
//! object and its public-key object (RSA, EC), named with the key's label (what KMIP clients
//! look up) and marked with Application Specific Information in the `keyplane`
//! namespace, `{key}:{version}`, which says whose and which version it is. The newest version is Active while the managed key is, and is
//! revoked (cessation of operation) when it is deactivated; older versions are revoked as
//! superseded when a new one arrives, so they still decrypt. KMIP has no way back from
//! revoked: a deactivated key that is activated again gets its version registered anew, and
//! the revoked object stays for what clients encrypted under it. Objects under the label that
//! keyplane did not mark, or that another key's marks, are never changed.

pub mod protocol;
pub mod transport;
pub mod ttlv;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use keyplane_core::connector::{
    Connector, FailureKind, KeyToInstall, RemoteFailure, RemoteKey, RemoteResult, TransferWrapping,
};
use keyplane_core::model::Algorithm;
use tokio::sync::OnceCell;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::http::rejected;
use crate::pace::Pace;
use protocol::{
    Attribute, Credential, ObjectKind, Operation, Outcome, Reason, RevocationReason, Version,
    answer, payload, state,
};
use ttlv::Ttlv;

pub use transport::TlsSettings;

/// The most objects one label may hold (every version, and revoked ones kept after a
/// reactivation).
const MAX_OBJECTS_PER_LABEL: i32 = 1000;
/// KMIP Cryptographic Algorithm values.
const ALGORITHM_AES: u32 = 0x03;
const ALGORITHM_RSA: u32 = 0x04;
const ALGORITHM_HMAC_SHA256: u32 = 0x09;
const ALGORITHM_HMAC_SHA384: u32 = 0x0A;
const ALGORITHM_HMAC_SHA512: u32 = 0x0B;
const ALGORITHM_EC: u32 = 0x1A;
/// Cryptographic Usage Mask bits.
const SIGN: i32 = 0x01;
const VERIFY: i32 = 0x02;
const ENCRYPT: i32 = 0x04;
const DECRYPT: i32 = 0x08;
const WRAP_KEY: i32 = 0x10;
const UNWRAP_KEY: i32 = 0x20;
const MAC_GENERATE: i32 = 0x80;
const MAC_VERIFY: i32 = 0x100;

/// One object a key version is made of at the server, and what it may do there.
struct Part {
    kind: ObjectKind,
    algorithm: u32,
    usage: i32,
}

/// The objects a version of a key of this algorithm is: one symmetric key, or a public key and
/// its private key.
fn parts(algorithm: Algorithm, size: u32) -> RemoteResult<Vec<Part>> {
    let part = |kind, algorithm, usage| Part {
        kind,
        algorithm,
        usage,
    };
    Ok(match algorithm {
        Algorithm::Aes => vec![part(
            ObjectKind::SymmetricKey,
            ALGORITHM_AES,
            ENCRYPT | DECRYPT | WRAP_KEY | UNWRAP_KEY,
        )],
        // An HMAC key of n bits is for HMAC-SHA-n.
        Algorithm::Hmac => vec![part(
            ObjectKind::SymmetricKey,
            match size {
                384 => ALGORITHM_HMAC_SHA384,
                512 => ALGORITHM_HMAC_SHA512,
                _ => ALGORITHM_HMAC_SHA256,
            },
            MAC_GENERATE | MAC_VERIFY,
        )],
        // The public key first: a version counts as there once its private key is, so an
        // interrupted install never leaves a private key without its public one.
        Algorithm::Rsa => vec![
            part(
                ObjectKind::PublicKey,
                ALGORITHM_RSA,
                VERIFY | ENCRYPT | WRAP_KEY,
            ),
            part(
                ObjectKind::PrivateKey,
                ALGORITHM_RSA,
                SIGN | DECRYPT | UNWRAP_KEY,
            ),
        ],
        Algorithm::Ec => vec![
            part(ObjectKind::PublicKey, ALGORITHM_EC, VERIFY),
            part(ObjectKind::PrivateKey, ALGORITHM_EC, SIGN),
        ],
        other => {
            return Err(rejected(format!(
                "keyplane distributes AES, HMAC, RSA and EC keys to KMIP servers; this key is {other}"
            )));
        }
    })
}

pub struct Settings<'a> {
    pub host: String,
    pub port: u16,
    pub tls: TlsSettings<'a>,
    /// Pinned by `kmip_version`; negotiated with Discover Versions when `None`.
    pub version: Option<Version>,
    pub credential: Option<Credential>,
}

pub struct Kmip {
    transport: transport::Transport,
    pinned: Option<Version>,
    negotiated: OnceCell<Version>,
    credential: Option<Credential>,
    pace: Pace,
    /// Checking what a name holds and changing it happen as one step, for every connection
    /// to this server in the process: one lock of these per name.
    writes: Arc<[tokio::sync::Mutex<()>]>,
}

/// Locks per server: names share them by hash, so unrelated keys rarely wait for each other and
/// the locks stay few whatever the number of keys.
const LOCK_STRIPES: usize = 64;

type ServerLocks = HashMap<(String, u16), Arc<[tokio::sync::Mutex<()>]>>;

/// The locks of one KMIP server (host and port) in the process: connectors are rebuilt when a
/// connection changes, and two keystores may name one server.
fn server_locks(host: &str, port: u16) -> Arc<[tokio::sync::Mutex<()>]> {
    static LOCKS: LazyLock<Mutex<ServerLocks>> = LazyLock::new(Mutex::default);
    LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((host.to_owned(), port))
        .or_insert_with(|| {
            (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect()
        })
        .clone()
}

/// One object keyplane registered: whose, which version, and its state.
#[derive(Debug, Clone)]
struct Object {
    id: String,
    /// KMIP Object Type.
    object_type: u32,
    key_id: String,
    version: u32,
    state: u32,
}

/// The Application Specific Information namespace of keyplane's marks.
const MARK_NAMESPACE: &str = "keyplane";

/// The mark of `key_id`'s version `version`.
fn mark(key_id: Uuid, version: u32) -> Attribute {
    Attribute::ApplicationSpecificInformation {
        namespace: MARK_NAMESPACE.into(),
        data: format!("{key_id}:{version}"),
    }
}

/// Whose and which version an object is, by its mark.
fn parse_mark(attributes: &protocol::ObjectAttributes) -> Option<(String, u32)> {
    let (_, data) = attributes
        .application
        .iter()
        .find(|(namespace, _)| namespace == MARK_NAMESPACE)?;
    let (key, version) = data.split_once(':')?;
    let key = Uuid::parse_str(key).ok()?;
    Some((key.to_string(), version.parse().ok()?))
}

fn failed(operation: Operation, reason: Reason, message: Option<String>) -> RemoteFailure {
    let kind = match reason {
        Reason::AuthenticationNotSuccessful => FailureKind::BadCredentials,
        Reason::PermissionDenied => FailureKind::MissingPermission,
        Reason::GeneralFailure => FailureKind::Transient,
        _ => FailureKind::Rejected,
    };
    let mut text = format!(
        "the KMIP server refused {} ({})",
        operation.name(),
        reason.describe()
    );
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        text.push_str(": ");
        text.push_str(&m);
    }
    if matches!(
        reason,
        Reason::OperationNotSupported | Reason::FeatureNotSupported
    ) {
        text.push_str(
            "; keyplane needs Register, Locate, Get Attributes, Activate, Revoke and Destroy",
        );
    }
    RemoteFailure::new(kind, text)
}

/// The object to speak of for a version: Active first, then pre-active, then revoked.
fn preference(state: u32) -> u8 {
    match state {
        state::ACTIVE => 0,
        state::PRE_ACTIVE => 1,
        state::DEACTIVATED => 2,
        _ => 3,
    }
}

/// The copy as the newest version's key object (a symmetric or private key) shows it.
fn remote_of(objects: &[Object]) -> Option<RemoteKey> {
    let keys = || {
        objects
            .iter()
            .filter(|o| o.object_type != ObjectKind::PublicKey.code())
    };
    let newest = keys().map(|o| o.version).max()?;
    let object = keys()
        .filter(|o| o.version == newest)
        .min_by_key(|o| preference(o.state))?;
    Some(RemoteKey {
        remote_id: object.id.clone(),
        enabled: object.state == state::ACTIVE,
        version: newest,
    })
}

/// The objects a key has left at the server, by their state: destroyed ones are only records.
fn is_gone(state: u32) -> bool {
    matches!(state, state::DESTROYED | state::DESTROYED_COMPROMISED)
}

fn is_compromised(state: u32) -> bool {
    matches!(state, state::COMPROMISED | state::DESTROYED_COMPROMISED)
}

/// The material a version's objects hold: the key (raw or PKCS#8) and, for a pair, its public
/// key (SPKI).
struct VersionMaterial {
    key: Zeroizing<Vec<u8>>,
    public: Option<Vec<u8>>,
}

impl VersionMaterial {
    async fn of(key: &KeyToInstall<'_>, parts: &[Part]) -> RemoteResult<Self> {
        let keyplane = |e: keyplane_core::error::Error| rejected(e.to_string());
        let public = if parts.iter().any(|p| p.kind == ObjectKind::PublicKey) {
            Some(
                key.material
                    .public_key_der()
                    .await
                    .map_err(keyplane)?
                    .ok_or_else(|| rejected("the key has no public key"))?,
            )
        } else {
            None
        };
        Ok(Self {
            key: Zeroizing::new(
                key.material
                    .wrapped_for(&TransferWrapping::ClearOverMutualTls)
                    .await
                    .map_err(keyplane)?,
            ),
            public,
        })
    }

    fn for_part(&self, kind: ObjectKind) -> &[u8] {
        match kind {
            ObjectKind::PublicKey => self.public.as_deref().unwrap_or_default(),
            _ => &self.key,
        }
    }
}

impl Kmip {
    pub fn new(settings: Settings<'_>) -> Result<Self, transport::SettingsError> {
        Ok(Self {
            transport: transport::Transport::new(&settings.host, settings.port, &settings.tls)?,
            pinned: settings.version,
            negotiated: OnceCell::new(),
            credential: settings.credential,
            // KMIP servers publish no quota: a steady pace that leaves room for their other
            // clients (PyKMIP answers about 200 calls a second), with bursts for a batch of keys.
            pace: Pace::with_burst(200.0, 50),
            writes: server_locks(&settings.host, settings.port),
        })
    }

    /// The version spoken: the pinned one once the server confirms it, else the newest both
    /// sides speak.
    pub async fn version(&self) -> RemoteResult<Version> {
        self.negotiated
            .get_or_try_init(|| async {
                // Discover Versions exists since 1.1: asked in 1.2, which every server keyplane
                // can use answers.
                let offered = self
                    .send(
                        Version::V1_2,
                        Operation::DiscoverVersions,
                        payload::discover_versions(),
                    )
                    .await?;
                let spoken = answer::versions(&offered);
                let spoken_text = || {
                    spoken
                        .iter()
                        .map(Version::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                match self.pinned {
                    Some(pinned) if spoken.contains(&pinned) => Ok(pinned),
                    Some(pinned) => Err(rejected(format!(
                        "the KMIP server does not speak KMIP {pinned} (kmip_version); it offers {}",
                        spoken_text()
                    ))),
                    None => spoken
                        .iter()
                        .copied()
                        .filter(|v| Version::SUPPORTED.contains(v))
                        .max()
                        .ok_or_else(|| {
                            rejected(format!(
                                "the KMIP server speaks none of KMIP 1.2 – 2.1 (it offers {})",
                                spoken_text()
                            ))
                        }),
                }
            })
            .await
            .copied()
    }

    async fn send(
        &self,
        version: Version,
        operation: Operation,
        payload: Vec<Ttlv>,
    ) -> RemoteResult<Ttlv> {
        match self.outcome(version, operation, payload).await? {
            Outcome::Success(payload) => Ok(payload),
            Outcome::Failed { reason, message } => Err(failed(operation, reason, message)),
        }
    }

    async fn outcome(
        &self,
        version: Version,
        operation: Operation,
        payload: Vec<Ttlv>,
    ) -> RemoteResult<Outcome> {
        self.pace.ready().await;
        let batch_id = Uuid::new_v4().as_bytes()[..8].to_vec();
        let message = protocol::request(
            version,
            self.credential.as_ref(),
            operation,
            &batch_id,
            payload,
        );
        // The request may hold key material or the password.
        let bytes = Zeroizing::new(message.encode().map_err(|e| rejected(e.to_string()))?);
        drop(message);
        self.transport
            .exchange(&bytes, operation.is_idempotent(), |answer| {
                let decoded = Ttlv::decode(answer).map_err(|e| {
                    RemoteFailure::new(
                        FailureKind::Transient,
                        format!(
                            "the KMIP server's answer to {} is not TTLV: {e}",
                            operation.name()
                        ),
                    )
                })?;
                protocol::read_response(&decoded, operation, &batch_id)
                    .map_err(|e| RemoteFailure::new(FailureKind::Transient, e.0))
            })
            .await
    }

    async fn call(&self, operation: Operation, payload: Vec<Ttlv>) -> RemoteResult<Ttlv> {
        let version = self.version().await?;
        self.send(version, operation, payload).await
    }

    /// The names, mark and state of one object; `None` when the server has no such object.
    async fn attributes_of(&self, id: &str) -> RemoteResult<Option<protocol::ObjectAttributes>> {
        let version = self.version().await?;
        match self
            .outcome(
                version,
                Operation::GetAttributes,
                payload::get_attributes(id),
            )
            .await?
        {
            Outcome::Success(p) => Ok(Some(answer::attributes(&p))),
            Outcome::Failed {
                reason: Reason::ItemNotFound,
                ..
            } => Ok(None),
            Outcome::Failed { reason, message } => {
                Err(failed(Operation::GetAttributes, reason, message))
            }
        }
    }

    /// What the name holds: keyplane's objects (destroyed ones left out), and how many others.
    async fn objects_labelled(&self, label: &str) -> RemoteResult<(Vec<Object>, usize)> {
        let version = self.version().await?;
        let located = self
            .call(
                Operation::Locate,
                payload::locate_by_name(version, label, MAX_OBJECTS_PER_LABEL),
            )
            .await?;
        let ids = answer::unique_identifiers(&located)
            .map_err(|e| RemoteFailure::new(FailureKind::Transient, e.0))?;
        if ids.len() >= MAX_OBJECTS_PER_LABEL as usize {
            return Err(rejected(format!(
                "the KMIP server holds {MAX_OBJECTS_PER_LABEL} or more objects named '{label}'"
            )));
        }
        let (mut marked, mut others) = (Vec::new(), 0);
        for id in ids {
            // Gone between Locate and now: nothing to count.
            let Some(attributes) = self.attributes_of(&id).await? else {
                continue;
            };
            match parse_mark(&attributes) {
                Some((key_id, version)) => {
                    let state = attributes.state.unwrap_or(0);
                    if !is_gone(state) {
                        marked.push(Object {
                            id,
                            object_type: attributes.object_type.unwrap_or(0),
                            key_id,
                            version,
                            state,
                        });
                    }
                }
                None => others += 1,
            }
        }
        marked.sort_by_key(|o| o.version);
        Ok((marked, others))
    }

    /// The objects marked for one key under the name; marks of several keys are an error.
    /// Objects keyplane did not mark are left out (and never changed).
    async fn key_objects(&self, label: &str) -> RemoteResult<Vec<Object>> {
        let (marked, _) = self.objects_labelled(label).await?;
        if marked.iter().any(|o| o.key_id != marked[0].key_id) {
            return Err(rejected(format!(
                "the KMIP server holds objects named '{label}' marked for several keys; keyplane does not change them"
            )));
        }
        Ok(marked)
    }

    /// The lock of a name's objects.
    fn lock_for(&self, label: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        label.hash(&mut hasher);
        &self.writes[(hasher.finish() % self.writes.len() as u64) as usize]
    }

    /// The name of the copy `remote` is, and the key its object is marked for.
    async fn identity_of(&self, remote: &RemoteKey) -> RemoteResult<(String, String)> {
        let attributes = self
            .attributes_of(&remote.remote_id)
            .await?
            .ok_or_else(|| {
                rejected(format!(
                    "the KMIP server no longer holds object {}",
                    remote.remote_id
                ))
            })?;
        match (attributes.names.first().cloned(), parse_mark(&attributes)) {
            (Some(label), Some((key_id, _))) => Ok((label, key_id)),
            _ => Err(rejected(format!(
                "KMIP object {} is not one keyplane registered",
                remote.remote_id
            ))),
        }
    }

    /// Every object marked for `key_id` under the name, which must include `remote_id`.
    async fn objects_of(
        &self,
        label: &str,
        key_id: &str,
        remote_id: &str,
    ) -> RemoteResult<Vec<Object>> {
        let (marked, _) = self.objects_labelled(label).await?;
        let objects: Vec<Object> = marked.into_iter().filter(|o| o.key_id == key_id).collect();
        if !objects.iter().any(|o| o.id == remote_id) {
            return Err(rejected(format!(
                "KMIP object {remote_id} is not among the objects named '{label}'"
            )));
        }
        Ok(objects)
    }

    /// The copy's objects, read under the lock of its name (held as long as the guard lives).
    async fn locked_group_of(
        &self,
        remote: &RemoteKey,
    ) -> RemoteResult<(tokio::sync::MutexGuard<'_, ()>, Vec<Object>)> {
        let (label, key_id) = self.identity_of(remote).await?;
        let guard = self.lock_for(&label).lock().await;
        let objects = self.objects_of(&label, &key_id, &remote.remote_id).await?;
        Ok((guard, objects))
    }

    async fn revoke(&self, id: &str, reason: RevocationReason) -> RemoteResult<()> {
        self.call(Operation::Revoke, payload::revoke(id, reason))
            .await
            .map(drop)
    }

    async fn activate(&self, id: &str) -> RemoteResult<()> {
        self.call(Operation::Activate, payload::by_id(id))
            .await
            .map(drop)
    }

    /// Whether object `id` holds `expected` (compared in constant time); `None` when the server
    /// will not give the material out.
    async fn holds(
        &self,
        id: &str,
        kind: ObjectKind,
        expected: &[u8],
    ) -> RemoteResult<Option<bool>> {
        let version = self.version().await?;
        let held = match self
            .outcome(version, Operation::Get, payload::get(id, kind))
            .await?
        {
            Outcome::Success(p) => answer::key_material(&p).map(|m| Zeroizing::new(m.to_vec())),
            Outcome::Failed {
                reason:
                    Reason::Sensitive
                    | Reason::NotExtractable
                    | Reason::PermissionDenied
                    | Reason::KeyFormatTypeNotSupported,
                ..
            } => None,
            Outcome::Failed { reason, message } => {
                return Err(failed(Operation::Get, reason, message));
            }
        };
        Ok(held
            .map(|held| aws_lc_rs::constant_time::verify_slices_are_equal(&held, expected).is_ok()))
    }

    /// Puts `key`'s newest version under `label`: its objects registered, and activated when
    /// the key is to be usable. Objects of that version already there (what an interrupted
    /// attempt left) are used once they prove to hold the material.
    async fn put_version(&self, key: &KeyToInstall<'_>, label: &str) -> RemoteResult<RemoteKey> {
        let parts = parts(key.algorithm, key.size)?;
        let material = VersionMaterial::of(key, &parts).await?;
        let _serialised = self.lock_for(label).lock().await;
        let (objects, others) = self.objects_labelled(label).await?;
        if others > 0 || objects.iter().any(|o| o.key_id != key.key_id.to_string()) {
            return Err(rejected(format!(
                "the KMIP server holds objects named '{label}' that are not this key's; keyplane does not change them"
            )));
        }
        if objects.iter().any(|o| is_compromised(o.state)) {
            return Err(rejected(format!(
                "the KMIP server holds a compromised object of this key named '{label}'; keyplane does not register or activate the key there again"
            )));
        }
        let mut key_object = None;
        for part in &parts {
            let expected = material.for_part(part.kind);
            let present = objects
                .iter()
                .filter(|o| o.version == key.version && o.object_type == part.kind.code())
                .min_by_key(|o| preference(o.state))
                .cloned();
            let reusable = match &present {
                Some(o) if o.state == state::ACTIVE || o.state == state::PRE_ACTIVE => true,
                // A revoked object serves a key that is not to be usable; an active key needs
                // a new one.
                Some(o) => o.state == state::DEACTIVATED && !key.enabled,
                None => false,
            };
            let (id, object_state) = match present {
                Some(o) if reusable => {
                    match self.holds(&o.id, part.kind, expected).await? {
                        Some(true) => {}
                        Some(false) => {
                            return Err(rejected(format!(
                                "KMIP object {} carries this key's mark but holds other material; keyplane leaves it",
                                o.id
                            )));
                        }
                        None => {
                            return Err(rejected(format!(
                                "KMIP object {} carries this key's mark, but the server will not show its material to prove it",
                                o.id
                            )));
                        }
                    }
                    (o.id, o.state)
                }
                _ => (
                    self.register(key, label, part, expected).await?,
                    state::PRE_ACTIVE,
                ),
            };
            let object_state = if key.enabled && object_state == state::PRE_ACTIVE {
                self.activate(&id).await?;
                state::ACTIVE
            } else {
                object_state
            };
            if part.kind != ObjectKind::PublicKey {
                key_object = Some((id, object_state));
            }
        }
        let (remote_id, object_state) = key_object.unwrap_or_default();
        Ok(RemoteKey {
            remote_id,
            enabled: object_state == state::ACTIVE,
            version: key.version,
        })
    }

    async fn register(
        &self,
        key: &KeyToInstall<'_>,
        label: &str,
        part: &Part,
        material: &[u8],
    ) -> RemoteResult<String> {
        let version = self.version().await?;
        let length = i32::try_from(key.size).unwrap_or(i32::MAX);
        let registered = self
            .call(
                Operation::Register,
                payload::register_key(
                    version,
                    part.kind,
                    material,
                    part.algorithm,
                    length,
                    &[
                        Attribute::Name(label.to_owned()),
                        mark(key.key_id, key.version),
                        Attribute::CryptographicAlgorithm(part.algorithm),
                        Attribute::CryptographicLength(length),
                        Attribute::CryptographicUsageMask(part.usage),
                    ],
                ),
            )
            .await?;
        answer::unique_identifier(&registered).ok_or_else(|| {
            RemoteFailure::new(
                FailureKind::Transient,
                "the KMIP server's answer to Register names no usable object id",
            )
        })
    }

    async fn destroy_object(&self, id: &str) -> RemoteResult<()> {
        let version = self.version().await?;
        match self
            .outcome(version, Operation::Destroy, payload::by_id(id))
            .await?
        {
            Outcome::Success(_)
            | Outcome::Failed {
                reason: Reason::ItemNotFound,
                ..
            } => Ok(()),
            Outcome::Failed { reason, message } => Err(failed(Operation::Destroy, reason, message)),
        }
    }
}

#[async_trait]
impl Connector for Kmip {
    async fn test(&self) -> RemoteResult<()> {
        // The handshake proves both certificates, Discover Versions the protocol, and a Locate
        // the credentials.
        self.version().await?;
        let probe = format!("keyplane-connection-test-{}", Uuid::new_v4());
        self.objects_labelled(&probe).await.map(drop)
    }

    async fn find(&self, _remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>> {
        // By name: the object speaking for the key changes when it is registered anew.
        Ok(remote_of(&self.key_objects(label).await?))
    }

    async fn find_copy(
        &self,
        _remote_id: Option<&str>,
        label: &str,
        key_id: Uuid,
    ) -> RemoteResult<Option<RemoteKey>> {
        // Only this key's objects: another key's under the name are never acted on for it.
        let (marked, _) = self.objects_labelled(label).await?;
        let key_id = key_id.to_string();
        let own: Vec<Object> = marked.into_iter().filter(|o| o.key_id == key_id).collect();
        Ok(remote_of(&own))
    }

    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        self.put_version(key, key.label).await
    }

    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey> {
        let (_serialised, objects) = self.locked_group_of(remote).await?;
        let Some(current) = remote_of(&objects) else {
            return Err(rejected("the KMIP server holds no object of this key"));
        };
        if enabled {
            if objects.iter().any(|o| is_compromised(o.state)) {
                return Err(rejected(
                    "the KMIP server holds a compromised object of this key; keyplane does not activate it there",
                ));
            }
            for object in objects.iter().filter(|o| o.version == current.version) {
                match object.state {
                    state::PRE_ACTIVE => self.activate(&object.id).await?,
                    state::DEACTIVATED if object.id == current.remote_id => {
                        return Err(rejected(
                            "a revoked KMIP object cannot be activated again; keyplane registers the version anew, which needs the key's material",
                        ));
                    }
                    _ => {}
                }
            }
        } else {
            // Every version: none may stay usable for new data. Pre-active objects are left so:
            // they are not usable, and activating them would make them so for a moment.
            for object in objects.iter().filter(|o| o.state == state::ACTIVE) {
                self.revoke(&object.id, RevocationReason::CessationOfOperation)
                    .await?;
            }
        }
        Ok(RemoteKey { enabled, ..current })
    }

    async fn enable(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let (label, _) = self.identity_of(remote).await?;
        // Active or pre-active objects of this version are used; a revoked one is not touched
        // and the version is registered anew beside it.
        self.put_version(key, &label).await
    }

    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        let (label, _) = self.identity_of(remote).await?;
        let installed = if remote.version < key.version {
            self.put_version(key, &label).await?
        } else {
            remote.clone()
        };
        // Older versions decrypt only: revoked as superseded (again after an interruption).
        let (_serialised, objects) = self.locked_group_of(&installed).await?;
        for object in objects {
            if object.version < key.version && object.state == state::ACTIVE {
                self.revoke(&object.id, RevocationReason::Superseded)
                    .await?;
            }
        }
        Ok(installed)
    }

    async fn mark_compromised(&self, remote: &RemoteKey) -> RemoteResult<RemoteKey> {
        let (_serialised, objects) = self.locked_group_of(remote).await?;
        for object in &objects {
            if !is_compromised(object.state) {
                self.revoke(&object.id, RevocationReason::KeyCompromise)
                    .await?;
            }
        }
        Ok(RemoteKey {
            enabled: false,
            ..remote.clone()
        })
    }

    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()> {
        let (_serialised, objects) = self.locked_group_of(remote).await?;
        for object in objects {
            // Servers refuse to destroy an Active object.
            if object.state == state::ACTIVE {
                self.revoke(&object.id, RevocationReason::CessationOfOperation)
                    .await?;
            }
            self.destroy_object(&object.id).await?;
        }
        Ok(())
    }

    async fn is_labelled_for(
        &self,
        remote: &RemoteKey,
        key_id: Uuid,
    ) -> RemoteResult<Option<bool>> {
        let Some(attributes) = self.attributes_of(&remote.remote_id).await? else {
            return Ok(Some(false));
        };
        let (Some(label), Some((marked_for, _))) =
            (attributes.names.first(), parse_mark(&attributes))
        else {
            return Ok(Some(false));
        };
        if marked_for != key_id.to_string() {
            return Ok(Some(false));
        }
        let (marked, others) = self.objects_labelled(label).await?;
        Ok(Some(
            others == 0 && marked.iter().all(|o| o.key_id == key_id.to_string()),
        ))
    }

    async fn prove_copy(
        &self,
        remote: &RemoteKey,
        key: &KeyToInstall<'_>,
    ) -> RemoteResult<Option<bool>> {
        if self.is_labelled_for(remote, key.key_id).await? == Some(false)
            || remote.version != key.version
        {
            return Ok(Some(false));
        }
        let parts = parts(key.algorithm, key.size)?;
        let kind = parts
            .iter()
            .map(|p| p.kind)
            .find(|k| *k != ObjectKind::PublicKey)
            .unwrap_or(ObjectKind::SymmetricKey);
        let material = VersionMaterial::of(key, &parts).await?;
        self.holds(&remote.remote_id, kind, &material.key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_names_the_managed_key_and_version() {
        let key = Uuid::new_v4();
        let with = |namespace: &str, data: &str| protocol::ObjectAttributes {
            application: vec![(namespace.into(), data.into())],
            ..Default::default()
        };
        let Attribute::ApplicationSpecificInformation { namespace, data } = mark(key, 7) else {
            panic!("a mark is application specific information");
        };
        assert_eq!(
            parse_mark(&with(&namespace, &data)),
            Some((key.to_string(), 7))
        );
        for (namespace, data) in [
            ("other", data.as_str()),
            ("keyplane", "x:1"),
            ("keyplane", ""),
            ("keyplane", &format!("{key}:")),
        ] {
            assert_eq!(
                parse_mark(&with(namespace, data)),
                None,
                "{namespace} {data}"
            );
        }
    }

    #[test]
    fn the_newest_version_speaks_for_the_key_by_its_active_object() {
        let object = |id: &str, version, state| Object {
            id: id.into(),
            object_type: ObjectKind::PrivateKey.code(),
            key_id: "k".into(),
            version,
            state,
        };
        let objects = [
            object("1", 1, state::DEACTIVATED),
            object("2", 2, state::DEACTIVATED),
            object("3", 2, state::ACTIVE),
        ];
        assert_eq!(
            remote_of(&objects),
            Some(RemoteKey {
                remote_id: "3".into(),
                enabled: true,
                version: 2
            })
        );
        assert_eq!(remote_of(&objects[..2]).unwrap().remote_id, "2");
        assert!(!remote_of(&objects[..2]).unwrap().enabled);
        assert_eq!(remote_of(&[]), None);
        // A public key never speaks for the copy.
        let mut public = object("4", 3, state::ACTIVE);
        public.object_type = ObjectKind::PublicKey.code();
        assert_eq!(
            remote_of(&[objects[2].clone(), public]).unwrap().remote_id,
            "3"
        );
    }
}
