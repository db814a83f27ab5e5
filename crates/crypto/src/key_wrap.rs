//! AES key wrap (RFC 3394) and key wrap with padding (RFC 5649), over aws-lc-rs. The
//! keystores that import keys (Azure, Google Cloud, PKCS#11 tokens) take them in these forms.
//!
//! Key-encryption keys are 16 or 32 bytes. Unwrapped keys come back as [`SecretBytes`], so the
//! plaintext is wiped when dropped.

use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrap, KeyWrapPadded};
use zeroize::Zeroizing;

use crate::{CryptoError, SecretBytes};

/// A key-encryption key of 128 or 256 bits (the sizes the keystores use). aws-lc-rs offers key
/// wrap with no other AES key size, so a 192-bit KEK is refused rather than wrapped by hand.
fn kek(key: &[u8]) -> Result<AesKek, CryptoError> {
    let cipher = match key.len() {
        16 => &AES_128,
        32 => &AES_256,
        24 => {
            return Err(CryptoError::Unsupported(
                "AES key wrap with a 192-bit key-encryption key".into(),
            ));
        }
        _ => return Err(CryptoError::InvalidKeyLength),
    };
    AesKek::new(cipher, key).map_err(|_| CryptoError::InvalidKeyLength)
}

/// RFC 3394: `key` is a multiple of 8 bytes, at least 16.
pub fn wrap(kek_bytes: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if key.len() < 16 || !key.len().is_multiple_of(8) {
        return Err(CryptoError::InvalidKeyLength);
    }
    let mut out = vec![0u8; key.len() + 8];
    let len = kek(kek_bytes)?
        .wrap(key, &mut out)
        .map_err(|_| CryptoError::Encrypt)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// Reverses [`wrap`]; any alteration or wrong key fails.
pub fn unwrap(kek_bytes: &[u8], wrapped: &[u8]) -> Result<SecretBytes, CryptoError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(CryptoError::Decrypt);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = kek(kek_bytes)?
        .unwrap(wrapped, &mut out)
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    out.truncate(len);
    Ok(SecretBytes::from(out))
}

/// RFC 5649: any key of 1 byte or more.
pub fn wrap_padded(kek_bytes: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if key.is_empty() {
        return Err(CryptoError::InvalidKeyLength);
    }
    let mut out = vec![0u8; key.len().div_ceil(8) * 8 + 8];
    let len = kek(kek_bytes)?
        .wrap_with_padding(key, &mut out)
        .map_err(|_| CryptoError::Encrypt)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// Reverses [`wrap_padded`]; any alteration or wrong key fails.
pub fn unwrap_padded(kek_bytes: &[u8], wrapped: &[u8]) -> Result<SecretBytes, CryptoError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(CryptoError::Decrypt);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = kek(kek_bytes)?
        .unwrap_with_padding(wrapped, &mut out)
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    out.truncate(len);
    Ok(SecretBytes::from(out))
}
