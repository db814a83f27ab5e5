//! Generation of managed key material and the non-secret verification
//! patterns (key check values) that identify it.

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, Algorithm as CipherAlgorithm, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{self, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair,
};
use aws_lc_rs::{digest, hmac, rand};
use zeroize::Zeroizing;

use crate::{CryptoError, SecretBytes};

/// AES key check value: first 3 bytes of AES-ECB(key, zero block).
pub const METHOD_ENC_ZERO: &str = "ENC-ZERO";
/// HMAC key check value: first 3 bytes of HMAC(key, 16 zero bytes).
pub const METHOD_MAC_ZERO: &str = "MAC-ZERO";
/// Asymmetric keys: SHA-256 of the X.509 SubjectPublicKeyInfo DER.
pub const METHOD_PUB_HASH_SHA256: &str = "PUB-HASH-SHA-256";

const KCV_LEN: usize = 3;
const AES_BLOCK_LEN: usize = 16;
const ZERO_BLOCK: [u8; 16] = [0u8; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    P256,
    P384,
    P521,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    Aes { bits: u32 },
    Hmac { bits: u32 },
    Rsa { bits: u32 },
    Ec(EcCurve),
}

/// A non-secret value that lets a holder of the key confirm they have the
/// same key. `value` is upper-case hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationPattern {
    pub method: String,
    pub value: String,
}

impl VerificationPattern {
    fn new(method: &str, value: &[u8]) -> Self {
        Self {
            method: method.to_owned(),
            value: hex::encode_upper(value),
        }
    }
}

/// Freshly generated key material. Symmetric keys are raw bytes; RSA and EC
/// keys are PKCS#8 v1 DER. No `Debug` or `Clone`: it holds the secret.
pub struct GeneratedKey {
    pub material: SecretBytes,
    pub verification_patterns: Vec<VerificationPattern>,
}

/// Generates a new key of the given kind.
pub fn generate_key(kind: KeyKind) -> Result<GeneratedKey, CryptoError> {
    match kind {
        KeyKind::Aes { bits } => {
            let alg = aes_algorithm(bits)?;
            let material = random_secret(bits as usize / 8)?;
            let patterns = vec![aes_pattern(alg, material.expose())?];
            Ok(GeneratedKey {
                material,
                verification_patterns: patterns,
            })
        }
        KeyKind::Hmac { bits } => {
            let alg = hmac_algorithm(bits)?;
            let material = random_secret(bits as usize / 8)?;
            let patterns = vec![hmac_pattern(alg, material.expose())];
            Ok(GeneratedKey {
                material,
                verification_patterns: patterns,
            })
        }
        KeyKind::Rsa { bits } => {
            let size = rsa_key_size(bits)?;
            let pair = rsa::KeyPair::generate(size)
                .map_err(|_| CryptoError::Generate(format!("RSA-{bits} key generation failed")))?;
            let der: Pkcs8V1Der<'static> = pair
                .as_der()
                .map_err(|_| CryptoError::Generate("RSA private key encoding failed".into()))?;
            let patterns = vec![pub_hash_pattern(pair.public_key())?];
            Ok(GeneratedKey {
                material: SecretBytes::new(der.as_ref().to_vec()),
                verification_patterns: patterns,
            })
        }
        KeyKind::Ec(curve) => {
            let pair = EcdsaKeyPair::generate(ec_algorithm(curve)).map_err(|_| {
                CryptoError::Generate(format!("EC {curve:?} key generation failed"))
            })?;
            let doc = pair
                .to_pkcs8v1()
                .map_err(|_| CryptoError::Generate("EC private key encoding failed".into()))?;
            let patterns = vec![pub_hash_pattern(pair.public_key())?];
            Ok(GeneratedKey {
                material: SecretBytes::new(doc.as_ref().to_vec()),
                verification_patterns: patterns,
            })
        }
    }
}

/// Recomputes the verification patterns of stored key material. Also checks
/// that `material` actually is a key of `kind` (length, curve, modulus size).
pub fn verification_patterns(
    kind: KeyKind,
    material: &[u8],
) -> Result<Vec<VerificationPattern>, CryptoError> {
    match kind {
        KeyKind::Aes { bits } => {
            let alg = aes_algorithm(bits)?;
            if material.len() != bits as usize / 8 {
                return Err(CryptoError::InvalidKeyLength);
            }
            Ok(vec![aes_pattern(alg, material)?])
        }
        KeyKind::Hmac { bits } => {
            let alg = hmac_algorithm(bits)?;
            if material.len() != bits as usize / 8 {
                return Err(CryptoError::InvalidKeyLength);
            }
            Ok(vec![hmac_pattern(alg, material)])
        }
        KeyKind::Rsa { bits } => {
            rsa_key_size(bits)?;
            let pair = rsa::KeyPair::from_pkcs8(material).map_err(|e| {
                CryptoError::InvalidKeyMaterial(format!("not an RSA PKCS#8 private key: {e}"))
            })?;
            if pair.public_modulus_len() * 8 != bits as usize {
                return Err(CryptoError::InvalidKeyMaterial(format!(
                    "RSA key is {} bits, expected {bits}",
                    pair.public_modulus_len() * 8
                )));
            }
            Ok(vec![pub_hash_pattern(pair.public_key())?])
        }
        KeyKind::Ec(curve) => {
            let pair = EcdsaKeyPair::from_pkcs8(ec_algorithm(curve), material).map_err(|e| {
                CryptoError::InvalidKeyMaterial(format!(
                    "not a {curve:?} EC PKCS#8 private key: {e}"
                ))
            })?;
            Ok(vec![pub_hash_pattern(pair.public_key())?])
        }
    }
}

/// The public key (SPKI DER) of an RSA or EC private key (PKCS#8); `None` for other material.
pub fn public_key_der(material: &[u8]) -> Option<Vec<u8>> {
    if let Ok(pair) = rsa::KeyPair::from_pkcs8(material) {
        let spki: PublicKeyX509Der<'static> = pair.public_key().as_der().ok()?;
        return Some(spki.as_ref().to_vec());
    }
    [EcCurve::P256, EcCurve::P384, EcCurve::P521]
        .into_iter()
        .find_map(|curve| EcdsaKeyPair::from_pkcs8(ec_algorithm(curve), material).ok())
        .and_then(|pair| {
            let spki: PublicKeyX509Der<'static> = pair.public_key().as_der().ok()?;
            Some(spki.as_ref().to_vec())
        })
}

fn random_secret(len: usize) -> Result<SecretBytes, CryptoError> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    rand::fill(&mut bytes[..])
        .map_err(|_| CryptoError::Generate("random number generator failed".into()))?;
    Ok(SecretBytes::from(bytes))
}

fn aes_algorithm(bits: u32) -> Result<&'static CipherAlgorithm, CryptoError> {
    match bits {
        128 => Ok(&AES_128),
        192 => Ok(&AES_192),
        256 => Ok(&AES_256),
        _ => Err(CryptoError::Unsupported(format!(
            "AES key size {bits} bits (supported: 128, 192, 256)"
        ))),
    }
}

fn hmac_algorithm(bits: u32) -> Result<hmac::Algorithm, CryptoError> {
    match bits {
        256 => Ok(hmac::HMAC_SHA256),
        384 => Ok(hmac::HMAC_SHA384),
        512 => Ok(hmac::HMAC_SHA512),
        _ => Err(CryptoError::Unsupported(format!(
            "HMAC key size {bits} bits (supported: 256, 384, 512)"
        ))),
    }
}

fn rsa_key_size(bits: u32) -> Result<KeySize, CryptoError> {
    match bits {
        2048 => Ok(KeySize::Rsa2048),
        3072 => Ok(KeySize::Rsa3072),
        4096 => Ok(KeySize::Rsa4096),
        _ => Err(CryptoError::Unsupported(format!(
            "RSA key size {bits} bits (supported: 2048, 3072, 4096)"
        ))),
    }
}

fn ec_algorithm(curve: EcCurve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        EcCurve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        EcCurve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        EcCurve::P521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
    }
}

/// Encrypts one block with raw AES (ECB on a single block).
fn aes_encrypt_block(
    alg: &'static CipherAlgorithm,
    key: &[u8],
    block: &[u8; AES_BLOCK_LEN],
) -> Result<[u8; AES_BLOCK_LEN], CryptoError> {
    let unbound = UnboundCipherKey::new(alg, key).map_err(|_| CryptoError::InvalidKeyLength)?;
    let enc = EncryptingKey::ecb(unbound)
        .map_err(|_| CryptoError::Unsupported("AES-ECB not available".into()))?;
    let mut out = *block;
    enc.less_safe_encrypt(&mut out, EncryptionContext::None)
        .map_err(|_| CryptoError::Encrypt)?;
    Ok(out)
}

fn aes_pattern(
    alg: &'static CipherAlgorithm,
    key: &[u8],
) -> Result<VerificationPattern, CryptoError> {
    let block = aes_encrypt_block(alg, key, &ZERO_BLOCK)?;
    Ok(VerificationPattern::new(METHOD_ENC_ZERO, &block[..KCV_LEN]))
}

fn hmac_pattern(alg: hmac::Algorithm, key: &[u8]) -> VerificationPattern {
    let tag = hmac::sign(&hmac::Key::new(alg, key), &ZERO_BLOCK);
    VerificationPattern::new(METHOD_MAC_ZERO, &tag.as_ref()[..KCV_LEN])
}

fn pub_hash_pattern<K>(public_key: &K) -> Result<VerificationPattern, CryptoError>
where
    K: AsDer<PublicKeyX509Der<'static>>,
{
    let spki = public_key
        .as_der()
        .map_err(|_| CryptoError::Generate("public key encoding failed".into()))?;
    let hash = digest::digest(&digest::SHA256, spki.as_ref());
    Ok(VerificationPattern::new(
        METHOD_PUB_HASH_SHA256,
        hash.as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn aes128_zero_block_known_answer() {
        let key = unhex("000102030405060708090A0B0C0D0E0F");
        let out = aes_encrypt_block(&AES_128, &key, &ZERO_BLOCK).unwrap();
        assert_eq!(hex::encode_upper(out), "C6A13B37878F5B826F4F8162A1C8D879");
        let kcv = aes_pattern(&AES_128, &key).unwrap();
        assert_eq!(kcv.method, "ENC-ZERO");
        assert_eq!(kcv.value, "C6A13B");
    }

    #[test]
    fn aes_fips197_known_answers() {
        let pt: [u8; 16] = unhex("00112233445566778899AABBCCDDEEFF")
            .try_into()
            .unwrap();
        let cases = [
            (
                &AES_128,
                "000102030405060708090A0B0C0D0E0F",
                "69C4E0D86A7B0430D8CDB78070B4C55A",
            ),
            (
                &AES_192,
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "DDA97CA4864CDFE06EAF70A0EC0D7191",
            ),
            (
                &AES_256,
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "8EA2B7CA516745BFEAFC49904B496089",
            ),
        ];
        for (alg, key, expected) in cases {
            let out = aes_encrypt_block(alg, &unhex(key), &pt).unwrap();
            assert_eq!(hex::encode_upper(out), expected);
        }
    }

    #[test]
    fn hmac_kcv_uses_matching_hash() {
        let key = [0x0bu8; 32];
        let p256 = hmac_pattern(hmac::HMAC_SHA256, &key);
        let p512 = hmac_pattern(hmac::HMAC_SHA512, &key);
        let direct = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &[0u8; 16]);
        assert_eq!(p256.value, hex::encode_upper(&direct.as_ref()[..3]));
        assert_eq!(p256.method, "MAC-ZERO");
        assert_ne!(p256.value, p512.value);
    }
}
