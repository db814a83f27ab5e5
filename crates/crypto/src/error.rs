use thiserror::Error;

/// Errors from this crate. Messages never include key bytes or fragments of
/// them (not even a single offending hex character).
#[derive(Debug, Error)]
pub enum CryptoError {
    #[error("invalid key length")]
    InvalidKeyLength,

    /// Kept deliberately vague: distinguishing the cause would help an attacker.
    #[error("authentication failed: wrong key, wrong context or corrupted data")]
    Decrypt,

    #[error("encryption failed")]
    Encrypt,

    #[error("invalid key material: {0}")]
    InvalidKeyMaterial(String),

    #[error("i/o error: {0}")]
    Io(String),

    #[error("key generation failed: {0}")]
    Generate(String),

    #[error("unsupported: {0}")]
    Unsupported(String),
}
