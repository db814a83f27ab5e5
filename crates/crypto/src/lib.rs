//! Cryptographic primitives for Keyplane: the master key that seals stored
//! key material, and generation/verification of managed keys.

mod error;
pub mod engine;
pub mod master;
pub mod material;

pub use engine::MasterKeyEngine;
pub use error::CryptoError;
pub use master::{DevSealOutcome, MasterKey, load_or_create_dev_master_key};
pub use material::{
    EcCurve, GeneratedKey, KeyKind, VerificationPattern, generate_key, verification_patterns,
};

use zeroize::Zeroizing;

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
