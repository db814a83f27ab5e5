//! Wrapping key material for import into another keystore under the public key it offers, and
//! the receiving side: the RSA key pair of an import token and the opening of what it received.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

use crate::{CryptoError, SecretBytes, key_wrap};

fn oaep_key(public_key_der: &[u8]) -> Result<OaepPublicEncryptingKey, CryptoError> {
    let key = PublicEncryptingKey::from_der(public_key_der).map_err(|e| {
        CryptoError::InvalidKeyMaterial(format!("the target's wrapping key is not RSA: {e}"))
    })?;
    OaepPublicEncryptingKey::new(key)
        .map_err(|_| CryptoError::InvalidKeyMaterial("unusable RSA wrapping key".into()))
}

/// RSA-OAEP (SHA-256, MGF1 SHA-256) of `material` itself.
pub fn rsa_oaep_sha256(public_key_der: &[u8], material: &[u8]) -> Result<Vec<u8>, CryptoError> {
    rsa_oaep(public_key_der, OaepHash::Sha256, material)
}

/// RSA-OAEP (the digest `hash`, MGF1 with the same) of `material` itself.
fn rsa_oaep(
    public_key_der: &[u8],
    hash: OaepHash,
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = oaep_key(public_key_der)?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(hash.algorithm(), material, &mut out, None)
        .map_err(|_| CryptoError::Encrypt)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// CKM_RSA_AES_KEY_WRAP: RSA-OAEP (the digest `hash`) of a fresh AES-256 key, followed by that
/// key's RFC 5649 wrap of `material`. The fresh key is wiped once used.
pub fn rsa_aes_key_wrap(
    public_key_der: &[u8],
    hash: OaepHash,
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    rand::fill(ephemeral.as_mut()).map_err(|_| CryptoError::Generate("random".into()))?;
    let mut out = rsa_oaep(public_key_der, hash, ephemeral.as_ref())?;
    out.extend_from_slice(&key_wrap::wrap_padded(ephemeral.as_ref(), material)?);
    Ok(out)
}

/// [`rsa_aes_key_wrap`] with SHA-256.
pub fn rsa_aes_key_wrap_sha256(
    public_key_der: &[u8],
    material: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    rsa_aes_key_wrap(public_key_der, OaepHash::Sha256, material)
}

/// The receiving side of [`rsa_aes_key_wrap`]: the fresh key opened with the private key, then
/// the material unwrapped with it.
pub fn open_rsa_aes_key_wrap(
    private_pkcs8: &[u8],
    hash: OaepHash,
    wrapped: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let private = PrivateDecryptingKey::from_pkcs8(private_pkcs8)
        .map_err(|_| CryptoError::InvalidKeyMaterial("the wrapping key pair is unusable".into()))?;
    let split = private.key_size_bytes();
    if wrapped.len() <= split {
        return Err(CryptoError::Decrypt);
    }
    let (encrypted_key, wrapped_material) = wrapped.split_at(split);
    let ephemeral = open_import(private_pkcs8, hash, encrypted_key, None)?;
    key_wrap::unwrap_padded(&ephemeral[..], wrapped_material)
}

/// The key pair an import token offers: PKCS#8 private key (wiped on drop) and SPKI public key.
pub struct ImportKeyPair {
    pub private_pkcs8: Zeroizing<Vec<u8>>,
    pub public_der: Vec<u8>,
}

/// A fresh RSA-4096 key pair for an import token (slow: up to seconds).
pub fn new_import_key_pair() -> Result<ImportKeyPair, CryptoError> {
    let private = PrivateDecryptingKey::generate(KeySize::Rsa4096)
        .map_err(|e| CryptoError::Generate(format!("RSA-4096: {e}")))?;
    let pkcs8: Pkcs8V1Der<'static> = private
        .as_der()
        .map_err(|e| CryptoError::Generate(format!("encoding the private key: {e}")))?;
    let public = private
        .public_key()
        .as_der()
        .map_err(|e| CryptoError::Generate(format!("encoding the public key: {e}")))?;
    Ok(ImportKeyPair {
        private_pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
        public_der: public.as_ref().to_vec(),
    })
}

/// The OAEP digest a sender used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            Self::Sha1 => &OAEP_SHA1_MGF1SHA1,
            Self::Sha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }
}

/// Proof that the sender of imported material holds it: the token's nonce, AES-256-GCM encrypted
/// under that material with `iv`.
pub struct NonceProof<'a> {
    pub iv: &'a [u8],
    pub encrypted_nonce: &'a [u8],
    pub expected_nonce: &'a [u8],
}

/// Opens material sent RSA-OAEP encrypted under an import token's public key and, when a nonce
/// proof comes with it, checks that the material encrypts the token's nonce.
pub fn open_import(
    private_pkcs8: &[u8],
    hash: OaepHash,
    encrypted: &[u8],
    proof: Option<&NonceProof<'_>>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let private = PrivateDecryptingKey::from_pkcs8(private_pkcs8)
        .map_err(|_| CryptoError::InvalidKeyMaterial("the import key pair is unusable".into()))?;
    let oaep = OaepPrivateDecryptingKey::new(private)
        .map_err(|_| CryptoError::InvalidKeyMaterial("the import key pair is unusable".into()))?;
    let algorithm = hash.algorithm();
    let mut buf = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let len = oaep
        .decrypt(algorithm, encrypted, &mut buf, None)
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(len);
    if let Some(proof) = proof {
        check_nonce(&buf, proof)?;
    }
    Ok(buf)
}

fn check_nonce(material: &[u8], proof: &NonceProof<'_>) -> Result<(), CryptoError> {
    let key = UnboundKey::new(&AES_256_GCM, material).map_err(|_| CryptoError::InvalidKeyLength)?;
    let nonce = Nonce::try_assume_unique_for_key(proof.iv).map_err(|_| CryptoError::Decrypt)?;
    let mut buf = proof.encrypted_nonce.to_vec();
    let opened = LessSafeKey::new(key)
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| CryptoError::Decrypt)?;
    if opened != proof.expected_nonce {
        return Err(CryptoError::Decrypt);
    }
    Ok(())
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
    fn an_rsa_aes_key_wrap_opens_only_with_the_digest_it_was_made_with() {
        let pair = new_import_key_pair().unwrap();
        let material = [5u8; 48];
        let blob = rsa_aes_key_wrap(&pair.public_der, OaepHash::Sha1, &material).unwrap();
        assert_eq!(
            blob.len(),
            512 + 48 + 8,
            "RSA-4096 block, then the padded wrap"
        );
        let opened = open_rsa_aes_key_wrap(&pair.private_pkcs8, OaepHash::Sha1, &blob).unwrap();
        assert_eq!(opened.expose(), material);
        assert!(open_rsa_aes_key_wrap(&pair.private_pkcs8, OaepHash::Sha256, &blob).is_err());
        assert!(
            open_rsa_aes_key_wrap(&pair.private_pkcs8, OaepHash::Sha1, &blob[..blob.len() - 8])
                .is_err()
        );
    }

    #[test]
    fn imported_material_opens_only_with_its_nonce_proof() {
        let pair = new_import_key_pair().unwrap();
        let material = [9u8; 32];
        let encrypted = rsa_oaep_sha256(&pair.public_der, &material).unwrap();
        let iv = [3u8; 12];
        let token_nonce = [5u8; 12];
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &material).unwrap());
        let mut sealed = token_nonce.to_vec();
        key.seal_in_place_append_tag(
            Nonce::try_assume_unique_for_key(&iv).unwrap(),
            Aad::empty(),
            &mut sealed,
        )
        .unwrap();
        let proof = NonceProof {
            iv: &iv,
            encrypted_nonce: &sealed,
            expected_nonce: &token_nonce,
        };
        let opened = open_import(
            &pair.private_pkcs8,
            OaepHash::Sha256,
            &encrypted,
            Some(&proof),
        )
        .unwrap();
        assert_eq!(opened.as_slice(), material);
        // Another token's nonce, or the wrong digest, is refused.
        let other = NonceProof {
            expected_nonce: &[6u8; 12],
            ..proof
        };
        assert!(
            open_import(
                &pair.private_pkcs8,
                OaepHash::Sha256,
                &encrypted,
                Some(&other)
            )
            .is_err()
        );
        assert!(open_import(&pair.private_pkcs8, OaepHash::Sha1, &encrypted, None).is_err());
    }

    #[test]
    fn a_key_that_is_not_rsa_is_refused() {
        assert!(rsa_oaep_sha256(b"not a key", &[1; 32]).is_err());
    }
}
