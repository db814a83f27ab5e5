//! Wrapping key material for import into another keystore under the public key it offers.

use aws_lc_rs::rand;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use zeroize::Zeroizing;

use crate::{CryptoError, key_wrap};

fn oaep_key(public_key_der: &[u8]) -> Result<OaepPublicEncryptingKey, CryptoError> {
    let key = PublicEncryptingKey::from_der(public_key_der).map_err(|e| {
        CryptoError::InvalidKeyMaterial(format!("the target's wrapping key is not RSA: {e}"))
    })?;
    OaepPublicEncryptingKey::new(key)
        .map_err(|_| CryptoError::InvalidKeyMaterial("unusable RSA wrapping key".into()))
}

/// RSA-OAEP (SHA-256, MGF1 SHA-256) of `material` itself.
pub fn rsa_oaep_sha256(public_key_der: &[u8], material: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = oaep_key(public_key_der)?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, material, &mut out, None)
        .map_err(|_| CryptoError::Encrypt)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// CKM_RSA_AES_KEY_WRAP with SHA-256: RSA-OAEP of a fresh AES-256 key, followed by that key's
/// RFC 5649 wrap of `material`. The fresh key is wiped once used.
pub fn rsa_aes_key_wrap_sha256(
    public_key_der: &[u8],
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    rand::fill(ephemeral.as_mut()).map_err(|_| CryptoError::Generate("random".into()))?;
    let mut out = rsa_oaep_sha256(public_key_der, ephemeral.as_ref())?;
    out.extend_from_slice(&key_wrap::wrap_padded(ephemeral.as_ref(), material)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey};

    #[test]
    fn the_holder_of_the_private_key_recovers_the_material() {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let public_der = private.public_key().as_der().unwrap();
        let material = [7u8; 32];
        let blob = rsa_aes_key_wrap_sha256(public_der.as_ref(), &material).unwrap();
        let (wrapped_ephemeral, wrapped_material) = blob.split_at(256);
        let oaep = OaepPrivateDecryptingKey::new(private).unwrap();
        let mut buf = vec![0u8; oaep.min_output_size()];
        let ephemeral = oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped_ephemeral, &mut buf, None)
            .unwrap();
        let opened = key_wrap::unwrap_padded(ephemeral, wrapped_material).unwrap();
        assert_eq!(opened.expose(), material);
    }

    #[test]
    fn a_key_that_is_not_rsa_is_refused() {
        assert!(rsa_oaep_sha256(b"not a key", &[1; 32]).is_err());
    }
}
