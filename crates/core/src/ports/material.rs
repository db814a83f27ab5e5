//! How key material is generated, sealed and used: the engine behind the seal.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;

use super::*;

/// Whether the engine can use keys, and how far an unseal has come.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SealStatus {
    pub sealed: bool,
    /// The seal mode: `dev`, `passphrase`, `shamir` or `pkcs11`.
    #[serde(rename = "type")]
    pub seal_type: String,
    /// Shares needed (shamir only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u8>,
    /// Shares made at initialisation (shamir only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shares: Option<u8>,
    /// Valid shares submitted so far (shamir only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// The current master key's id, while unsealed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
}

/// What an operator submits to unseal.
pub enum UnsealSecret {
    /// One Shamir share.
    Share(zeroize::Zeroizing<String>),
    Passphrase(zeroize::Zeroizing<String>),
    /// The PKCS#11 user PIN.
    Pin(zeroize::Zeroizing<String>),
    /// Nothing: modes whose secret is on the host (dev).
    Nothing,
}

/// What a master key rotation did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasterKeyRotation {
    pub previous_master_key_id: String,
    pub master_key_id: String,
    pub vault_keys_rewrapped: usize,
}

/// How a key's material is generated and protected, and the seal over all of it. Plaintext never
/// leaves the implementation.
#[async_trait]
pub trait MaterialEngine: Send + Sync + 'static {
    fn seal_status(&self) -> SealStatus;

    fn is_sealed(&self) -> bool;

    /// Forgets anything opened from a key's material (the key was destroyed).
    fn forget_material(&self, key_id: Uuid);

    /// Takes one unseal secret; unseals once enough were given.
    async fn unseal(&self, secret: UnsealSecret) -> Result<SealStatus>;

    /// Forgets every key in memory at once; key operations answer `sealed` until an unseal.
    fn seal(&self);

    /// Makes a new master key and rewraps every vault key under it, online.
    async fn rotate_master_key(&self) -> Result<MasterKeyRotation>;

    /// Loads (or creates) the vault's data-encryption key. Every operation below on that vault's
    /// material needs it first.
    async fn open_vault(&self, vault_id: Uuid) -> Result<()>;

    /// Generates material for `(algorithm, size)` and returns it sealed under the master key,
    /// bound to `(vault, key, version)`.
    fn generate(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
    ) -> Result<SealedMaterial>;

    /// Opens sealed material and recomputes its verification patterns (proves it is intact).
    fn verify(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
        material: &SealedMaterial,
    ) -> Result<Vec<VerificationPattern>>;

    /// Seals connection secrets (JSON) of a keystore under its vault's key, bound to its id.
    fn seal_secrets(&self, vault_id: Uuid, keystore_id: Uuid, secrets: &[u8]) -> Result<Vec<u8>>;

    /// Opens what [`MaterialEngine::seal_secrets`] sealed with the same ids.
    fn open_secrets(
        &self,
        vault_id: Uuid,
        keystore_id: Uuid,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>>;

    /// Encrypts each plaintext (a data key) under an AES-256 key's material: AES-256-GCM with
    /// `aad`. The material is opened once for the whole batch.
    fn encrypt_with(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        plaintexts: &[&[u8]],
        aad: &[u8],
    ) -> Result<Vec<Vec<u8>>>;

    /// Decrypts what `encrypt_with` produced; an item whose ciphertext or `aad` changed is `None`.
    fn decrypt_with(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        ciphertexts: &[&[u8]],
        aad: &[u8],
    ) -> Result<Vec<Option<zeroize::Zeroizing<Vec<u8>>>>>;

    /// Generates material for the pool, sealed under the pool's key (the binding comes later).
    fn generate_pooled(&self, algorithm: Algorithm, size: u32) -> Result<PooledKey>;

    /// Reseals pooled material as `binding`'s material under its vault's key.
    fn adopt_pooled(&self, pooled: &PooledKey, binding: &MaterialBinding)
    -> Result<SealedMaterial>;

    /// A fresh random 256-bit data key.
    fn random_data_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>>;

    /// A new RSA-4096 key pair for a keystore's import token (slow: run it off the async workers).
    fn new_import_key_pair(&self, vault_id: Uuid, keystore_id: Uuid) -> Result<ImportKeyPair>;

    /// Checks material a client sent (its length, its nonce proof) and seals it as `binding`'s
    /// material. Every failure is the same `invalid` error: which check failed is not told.
    fn import_material(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
        material: &ImportedMaterial<'_>,
    ) -> Result<SealedMaterial>;

    /// The public key (SPKI DER) of an RSA or EC key's material; `None` for a symmetric key.
    fn public_key_of(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
    ) -> Result<Option<Vec<u8>>>;

    /// Opens material and wraps it as an external keystore asks for import (symmetric keys as
    /// raw bytes, asymmetric ones as PKCS#8 DER); only the wrapped form leaves.
    fn wrap_for_transfer(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        wrapping: &crate::connector::TransferWrapping,
    ) -> Result<Vec<u8>>;
}

/// An import token's key pair: the private key sealed under the vault's key (bound to the
/// keystore), the public key as SPKI DER.
#[derive(Clone)]
pub struct ImportKeyPair {
    pub sealed_private_key: Vec<u8>,
    pub public_key_der: Vec<u8>,
}

/// Material a client sends for import into a keystore of this keyplane.
pub enum ImportedMaterial<'a> {
    /// The raw bytes (the request itself travelled over TLS).
    Plain(&'a [u8]),
    /// RSA-OAEP encrypted under an import token's public key.
    Encrypted {
        keystore_id: Uuid,
        sealed_private_key: &'a [u8],
        oaep_sha256: bool,
        payload: &'a [u8],
        /// The token's nonce encrypted under the material: `(iv, encrypted nonce, the nonce)`.
        nonce_proof: Option<(&'a [u8], &'a [u8], &'a [u8])>,
    },
}

/// What sealed material is bound to (the AES-GCM associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaterialBinding {
    pub vault_id: Uuid,
    pub key_id: Uuid,
    pub version: u32,
}

impl MaterialBinding {
    pub fn aad(&self) -> Vec<u8> {
        format!(
            "keyplane-material:v1:{}:{}:{}",
            self.vault_id, self.key_id, self.version
        )
        .into_bytes()
    }
}
