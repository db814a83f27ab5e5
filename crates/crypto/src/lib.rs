//! Cryptographic primitives for Keyplane: the master key that seals stored
//! key material, and generation/verification of managed keys.

pub mod engine;
mod error;
pub mod hierarchy;
pub mod key_wrap;
pub mod master;
pub mod material;
pub mod passphrase;
pub mod pkcs11;
pub mod root;
pub mod shamir;
pub mod transfer;

pub use error::CryptoError;
pub use hierarchy::{KeyHierarchy, PASSPHRASE_SEAL_SETTING, SealMode};
pub use master::{DevSealOutcome, MasterKey, load_or_create_dev_master_key};
pub use material::{
    EcCurve, GeneratedKey, KeyKind, VerificationPattern, generate_key, verification_patterns,
};
pub use passphrase::{PassphraseOutcome, open_or_create_passphrase_sealed};
pub use root::{RootKey, SoftwareRootKey};

use zeroize::{Zeroize, Zeroizing};

/// Plaintext secret bytes, wiped from memory on drop.
///
/// Deliberately implements neither `Debug`, `Clone` nor `Serialize`, so secret
/// material cannot leak through logs, accidental copies or API responses.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Takes ownership of `v`; its buffer is zeroized when the value is dropped.
    #[must_use]
    pub fn new(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }

    /// Borrows the plaintext bytes.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretBytes {
    fn from(v: Zeroizing<Vec<u8>>) -> Self {
        Self(v)
    }
}

/// A one-way digest of an API token (SHA-256, hex); tokens are stored only as this.
pub fn token_digest(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Keyed 128-bit fingerprints of bearer tokens (SipHash-1-3 under a random per-process key),
/// for caches of tokens already verified: a cache keyed by them holds no token and no stored
/// digest, and one costs a small part of a SHA-256 digest, on every authenticated call.
pub struct TokenFingerprints {
    key: [u8; 16],
}

impl TokenFingerprints {
    pub fn new() -> Result<Self, CryptoError> {
        let mut key = [0u8; 16];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| CryptoError::Generate("no randomness".into()))?;
        Ok(Self { key })
    }

    pub fn of(&self, token: &str) -> u128 {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let mut hasher = siphasher::sip128::SipHasher13::new_with_key(&self.key);
        hasher.write(token.as_bytes());
        hasher.finish128().as_u128()
    }
}

impl Drop for TokenFingerprints {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// A fresh random API token (256 bits, hex, with a recognisable prefix).
pub fn new_token() -> Result<String, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut())
        .map_err(|_| CryptoError::Generate("no randomness".into()))?;
    Ok(format!("kp_{}", hex::encode(bytes.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_fingerprints_are_keyed_and_tell_tokens_apart() {
        let (one, other) = (
            TokenFingerprints::new().unwrap(),
            TokenFingerprints::new().unwrap(),
        );
        let token = "kp_0123456789abcdef";
        assert_eq!(one.of(token), one.of(token));
        assert_ne!(one.of(token), one.of("kp_0123456789abcdeg"));
        assert_ne!(
            one.of(token),
            other.of(token),
            "each process has its own key"
        );
    }
}
