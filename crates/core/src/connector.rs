//! The port to external keystores (decisions.md §3): one trait every connector implements, the
//! failures it reports, and how key material crosses to it without leaving the material engine
//! in the clear.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::Error;
use crate::model::{Algorithm, Keystore, KeystoreKeyProperties};

/// Why a remote call failed, as far as the caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer: DNS, refused connection, TLS failure, timeout.
    Unreachable,
    /// The credentials were refused.
    BadCredentials,
    /// The credentials are valid but lack a permission the operation needs.
    MissingPermission,
    /// The target asked to slow down.
    Throttled,
    /// The target failed on its side (5xx); worth retrying.
    Transient,
    /// The target refused the request itself; retrying the same request will not help.
    Rejected,
}

impl FailureKind {
    /// Worth another attempt later with the same request.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unreachable | Self::Throttled | Self::Transient)
    }

    /// The keystore's health this failure shows.
    pub fn health(self) -> crate::model::HealthStatus {
        use crate::model::HealthStatus;
        match self {
            Self::Unreachable | Self::Transient | Self::Throttled => HealthStatus::NotResponding,
            Self::BadCredentials | Self::MissingPermission | Self::Rejected => {
                HealthStatus::ConfigurationError
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::BadCredentials => "bad credentials",
            Self::MissingPermission => "missing permission",
            Self::Throttled => "throttled",
            Self::Transient => "remote error",
            Self::Rejected => "rejected",
        }
    }
}

/// A failed remote call. The message names what failed and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl RemoteFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl RemoteFailure {
    /// The API error for a keystore that failed while being connected or edited: bad
    /// credentials and missing permissions are the caller's to fix (400); the rest is the
    /// target's (424).
    pub fn into_connection_error(self, keystore_name: &str) -> Error {
        let message = format!(
            "keystore '{keystore_name}' failed the connection test ({}): {}; nothing was saved",
            self.kind.as_str(),
            self.message
        );
        match self.kind {
            FailureKind::BadCredentials
            | FailureKind::MissingPermission
            | FailureKind::Rejected => Error::Invalid {
                code: crate::error::ErrorCode::KeystoreRejected,
                message,
                target: None,
            },
            _ => Error::KeystoreUnavailable(message),
        }
    }
}

pub type RemoteResult<T> = std::result::Result<T, RemoteFailure>;

/// A key as a remote keystore holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteKey {
    /// The keystore's own id for the key (`key_id_in_keystore`).
    pub remote_id: String,
    /// Whether the key is usable for new operations there.
    pub enabled: bool,
    /// Its newest version there (1 for a key with one version).
    pub version: u32,
}

/// How a target wants key material wrapped for import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferWrapping {
    /// RSA-OAEP (SHA-256) of a fresh AES-256 key ‖ that key's RFC 5649 wrap of the material
    /// (CKM_RSA_AES_KEY_WRAP; Vault/OpenBao transit import, AWS RSA_AES_KEY_WRAP_SHA_256).
    RsaAesKeyWrapSha256 { public_key_der: Vec<u8> },
    /// The same with RSA-OAEP SHA-1 (MGF1 SHA-1), as Azure Key Vault's BYOK transfer blob
    /// (`CKM_RSA_AES_KEY_WRAP`) defines it.
    RsaAesKeyWrapSha1 { public_key_der: Vec<u8> },
    /// RSA-OAEP (SHA-256) of the material itself (AWS RSAES_OAEP_SHA_256).
    RsaOaepSha256 { public_key_der: Vec<u8> },
    /// The material as is, for a target that takes keys only over its own mutually
    /// authenticated channel (KMIP Register over mutual TLS). The receiver zeroizes it.
    ClearOverMutualTls,
}

/// Opens one key version's material and wraps it as the target asks; the clear material never
/// leaves the material engine.
#[async_trait]
pub trait MaterialExport: Send + Sync {
    async fn wrapped_for(&self, wrapping: &TransferWrapping) -> crate::error::Result<Vec<u8>>;

    /// Whether a probe ciphertext opens to `expected` under this material: proof that a remote
    /// key is this one.
    async fn opens_probe(&self, probe: &ProbeCiphertext, expected: &[u8]) -> bool;

    /// Encrypts `nonce` (an import token's) under this material with AES-256-GCM, no AAD, and
    /// returns `(iv, ciphertext ‖ tag)`: proof for the target that the sender holds the material.
    async fn encrypt_nonce(&self, nonce: &[u8]) -> crate::error::Result<(Vec<u8>, Vec<u8>)>;

    /// The public key (SPKI DER) of an RSA or EC key pair; `None` for a symmetric key. Proof
    /// for a target that shows a copy's public key.
    async fn public_key_der(&self) -> crate::error::Result<Option<Vec<u8>>>;
}

/// What a remote key made of a probe: AES-256-GCM `nonce ‖ ciphertext ‖ tag` under `aad`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCiphertext {
    pub sealed: Vec<u8>,
    pub aad: Vec<u8>,
}

/// What a connector needs to know about the key it installs.
pub struct KeyToInstall<'a> {
    pub key_id: Uuid,
    /// Whether the copy is to be usable (the managed key is active). A target that can install
    /// a key disabled does so, so that a key that is not active is never usable there, not
    /// even for a moment.
    pub enabled: bool,
    /// The name it gets there (`label_in_keystore`).
    pub label: &'a str,
    pub algorithm: Algorithm,
    pub size: u32,
    pub version: u32,
    pub material: &'a dyn MaterialExport,
    /// The key's properties for this keystore's type, from its template (Azure's key
    /// operations and protection level, Google's purpose, algorithm and protection level).
    pub properties: &'a KeystoreKeyProperties,
}

/// One external keystore. Every operation is idempotent: a retried call finds what an
/// interrupted one left (by name, tag or remote id) and never creates a duplicate.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Reaches the target and proves the credentials and the permissions it needs.
    async fn test(&self) -> RemoteResult<()>;

    /// The copy of a key the target holds, found by its recorded remote id or its name.
    async fn find(&self, remote_id: Option<&str>, label: &str) -> RemoteResult<Option<RemoteKey>>;

    /// [`Connector::find`] for managed key `key_id`: a target that marks each copy with its
    /// managed key leaves out a copy marked for another key (which a stale record or a reused
    /// name could otherwise point at), so that nothing done to this key reaches it.
    async fn find_copy(
        &self,
        remote_id: Option<&str>,
        label: &str,
        _key_id: Uuid,
    ) -> RemoteResult<Option<RemoteKey>> {
        self.find(remote_id, label).await
    }

    /// Transfers the key (or, when it is already there, returns what is there).
    async fn install(&self, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey>;

    /// Makes the copy usable for new operations, or only for existing ciphertexts.
    async fn set_enabled(&self, remote: &RemoteKey, enabled: bool) -> RemoteResult<RemoteKey>;

    /// Adds `key.version` as the copy's newest version (a no-op when it is already there).
    async fn rotate(&self, remote: &RemoteKey, key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey>;

    /// Makes the copy usable again. A target whose disabled state is final (a revoked KMIP
    /// object) installs the version anew from `key`; the rest set the state.
    async fn enable(&self, remote: &RemoteKey, _key: &KeyToInstall<'_>) -> RemoteResult<RemoteKey> {
        self.set_enabled(remote, true).await
    }

    /// Records at the target that the copy's key is compromised, where the target keeps such a
    /// state (KMIP's Revoke with the reason key compromise); a no-op elsewhere. Called after
    /// the copy is disabled.
    async fn mark_compromised(&self, remote: &RemoteKey) -> RemoteResult<RemoteKey> {
        Ok(remote.clone())
    }

    /// Destroys the copy (the provider's deletion, pending where it has one).
    async fn destroy(&self, remote: &RemoteKey) -> RemoteResult<()>;

    /// What the target still keeps of a copy [`Connector::destroy`] removed, in words for the
    /// key's status (a deletion kept under purge protection, versions scheduled for
    /// destruction); `None` when nothing is kept.
    async fn pending_removal(&self, _remote: &RemoteKey) -> RemoteResult<Option<String>> {
        Ok(None)
    }

    /// Has the copy encrypt `plaintext` under its newest version and returns the AES-256-GCM
    /// result, so keyplane can prove the copy is its key; `None` (the default) when the target
    /// cannot do that for this key: its ciphertexts are opaque, or it proves copies otherwise
    /// ([`Connector::prove_copy`]).
    async fn encrypt_probe(
        &self,
        _remote: &RemoteKey,
        _plaintext: &[u8],
    ) -> RemoteResult<Option<ProbeCiphertext>> {
        Ok(None)
    }

    /// Whether the target's own label or tag on `remote` names managed key `key_id`; `None`
    /// when the target keeps no such mark. Asked where no material is left to prove a copy
    /// with (a destroyed key): a copy marked for another key, or for none, is never touched.
    async fn is_labelled_for(
        &self,
        _remote: &RemoteKey,
        _key_id: Uuid,
    ) -> RemoteResult<Option<bool>> {
        Ok(None)
    }

    /// The managed-key id the target's own mark on `remote` names (a tag or label), when it
    /// keeps such marks and the copy has one; `None` otherwise. Adoption refuses a copy marked
    /// for another key.
    async fn mark(&self, _remote: &RemoteKey) -> RemoteResult<Option<String>> {
        Ok(None)
    }

    /// Why this connector could not govern `remote` as managed key `key_id` (what it would need
    /// of the copy to change its state, rotate or destroy it); `None` when it can. Asked before
    /// a copy is adopted.
    async fn cannot_govern(
        &self,
        _remote: &RemoteKey,
        _key_id: Uuid,
    ) -> RemoteResult<Option<String>> {
        Ok(None)
    }

    /// Proves, the target's own way, whether `remote` holds `key`'s newest version; `None` when
    /// the target has no such way (the encryption probe is used then).
    async fn prove_copy(
        &self,
        _remote: &RemoteKey,
        _key: &KeyToInstall<'_>,
    ) -> RemoteResult<Option<bool>> {
        Ok(None)
    }
}

/// Builds connectors from stored keystore connections.
pub trait Connectors: Send + Sync {
    /// Whether keystores of this type have a connector.
    fn supports(&self, keystore_type: crate::model::KeystoreType) -> bool;

    /// `None` when no connector exists for the keystore's type.
    fn connect(
        &self,
        keystore: &Keystore,
        secrets: &Map<String, Value>,
    ) -> Option<Result<Arc<dyn Connector>, Error>>;
}
