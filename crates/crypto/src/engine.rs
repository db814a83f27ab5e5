//! `keyplane_core::ports::MaterialEngine` over the key hierarchy: material is generated here and
//! leaves only sealed, under its vault's key.

use keyplane_core::error::{Error, Result};
use keyplane_core::model::{Algorithm, SealedMaterial, VerificationPattern};
use keyplane_core::ports::{
    ImportKeyPair, ImportedMaterial, MasterKeyRotation, MaterialBinding, MaterialEngine, PooledKey,
    SealStatus, UnsealSecret,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::hierarchy::KeyHierarchy;
use crate::material::{self, EcCurve, KeyKind};
use crate::transfer;
use keyplane_core::connector::TransferWrapping;

fn pool_aad(id: Uuid) -> Vec<u8> {
    format!("keyplane-key-pool:v1:{id}").into_bytes()
}

fn kind(algorithm: Algorithm, size: u32) -> Result<KeyKind> {
    Ok(match algorithm {
        Algorithm::Aes => KeyKind::Aes { bits: size },
        Algorithm::Hmac => KeyKind::Hmac { bits: size },
        Algorithm::Rsa => KeyKind::Rsa { bits: size },
        Algorithm::Ec => KeyKind::Ec(match size {
            256 => EcCurve::P256,
            384 => EcCurve::P384,
            521 => EcCurve::P521,
            _ => {
                return Err(Error::invalid_field(
                    "key.size",
                    format!("no EC curve of size {size}"),
                ));
            }
        }),
        Algorithm::Des | Algorithm::Dilithium => {
            return Err(Error::invalid_field(
                "key.algorithm",
                format!("algorithm {algorithm} is not supported"),
            ));
        }
    })
}

/// Crypto failures never carry key bytes; the message is for the server log.
fn crypto_err(e: CryptoError) -> Error {
    Error::internal(format!("crypto: {e}"))
}

fn patterns(list: Vec<material::VerificationPattern>) -> Vec<VerificationPattern> {
    list.into_iter()
        .map(|p| VerificationPattern {
            method: p.method,
            value: p.value,
        })
        .collect()
}

fn import_key_aad(keystore_id: Uuid) -> Vec<u8> {
    format!("keyplane-import-key:v1:{keystore_id}").into_bytes()
}

fn secrets_aad(keystore_id: Uuid) -> Vec<u8> {
    format!("keyplane-keystore-secrets:v1:{keystore_id}").into_bytes()
}

#[async_trait::async_trait]
impl MaterialEngine for KeyHierarchy {
    fn wrap_for_transfer(
        &self,
        binding: &MaterialBinding,
        m: &SealedMaterial,
        wrapping: &TransferWrapping,
    ) -> Result<Vec<u8>> {
        let plain = self
            .opened_vault_key(binding.vault_id)?
            .open(&m.sealed, &binding.aad())
            .map_err(crypto_err)?;
        let wrapped = match wrapping {
            TransferWrapping::RsaAesKeyWrapSha256 { public_key_der } => {
                transfer::rsa_aes_key_wrap_sha256(public_key_der, plain.expose())
            }
            TransferWrapping::RsaAesKeyWrapSha1 { public_key_der } => {
                transfer::rsa_aes_key_wrap(public_key_der, transfer::OaepHash::Sha1, plain.expose())
            }
            TransferWrapping::RsaOaepSha256 { public_key_der } => {
                transfer::rsa_oaep_sha256(public_key_der, plain.expose())
            }
            TransferWrapping::ClearOverMutualTls => Ok(plain.expose().to_vec()),
        };
        wrapped.map_err(|e| {
            Error::KeystoreUnavailable(format!(
                "wrapping key material for the keystore failed: {e}"
            ))
        })
    }

    fn public_key_of(
        &self,
        binding: &MaterialBinding,
        m: &SealedMaterial,
    ) -> Result<Option<Vec<u8>>> {
        let plain = self
            .opened_vault_key(binding.vault_id)?
            .open(&m.sealed, &binding.aad())
            .map_err(crypto_err)?;
        Ok(crate::material::public_key_der(plain.expose()))
    }

    fn seal_status(&self) -> SealStatus {
        self.status()
    }

    fn is_sealed(&self) -> bool {
        self.sealed()
    }

    fn forget_material(&self, key_id: Uuid) {
        KeyHierarchy::forget_material(self, key_id);
    }

    async fn unseal(&self, secret: UnsealSecret) -> Result<SealStatus> {
        self.unseal_with(secret).await
    }

    fn seal(&self) {
        self.seal_now();
    }

    async fn rotate_master_key(&self) -> Result<MasterKeyRotation> {
        self.rotate().await
    }

    async fn open_vault(&self, vault_id: Uuid) -> Result<()> {
        self.open_vault_key(vault_id).await
    }

    fn generate(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
    ) -> Result<SealedMaterial> {
        let vault_key = self.opened_vault_key(binding.vault_id)?;
        let generated = material::generate_key(kind(algorithm, size)?).map_err(crypto_err)?;
        let sealed = vault_key
            .seal(generated.material.expose(), &binding.aad())
            .map_err(crypto_err)?;
        Ok(SealedMaterial {
            version: binding.version,
            sealed,
            verification_patterns: patterns(generated.verification_patterns),
        })
    }

    fn verify(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
        m: &SealedMaterial,
    ) -> Result<Vec<VerificationPattern>> {
        let plain = self
            .opened_vault_key(binding.vault_id)?
            .open(&m.sealed, &binding.aad())
            .map_err(crypto_err)?;
        material::verification_patterns(kind(algorithm, size)?, plain.expose())
            .map(patterns)
            .map_err(crypto_err)
    }

    fn seal_secrets(&self, vault_id: Uuid, keystore_id: Uuid, secrets: &[u8]) -> Result<Vec<u8>> {
        self.opened_vault_key(vault_id)?
            .seal(secrets, &secrets_aad(keystore_id))
            .map_err(crypto_err)
    }

    fn open_secrets(
        &self,
        vault_id: Uuid,
        keystore_id: Uuid,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let plain = self
            .opened_vault_key(vault_id)?
            .open(sealed, &secrets_aad(keystore_id))
            .map_err(crypto_err)?;
        Ok(Zeroizing::new(plain.expose().to_vec()))
    }

    fn encrypt_with(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        plaintexts: &[&[u8]],
        aad: &[u8],
    ) -> Result<Vec<Vec<u8>>> {
        let cipher = self.material_cipher(binding, material)?;
        plaintexts
            .iter()
            .map(|p| cipher.seal(p, aad).map_err(crypto_err))
            .collect()
    }

    fn decrypt_with(
        &self,
        binding: &MaterialBinding,
        material: &SealedMaterial,
        ciphertexts: &[&[u8]],
        aad: &[u8],
    ) -> Result<Vec<Option<Zeroizing<Vec<u8>>>>> {
        let cipher = self.material_cipher(binding, material)?;
        Ok(ciphertexts
            .iter()
            .map(|c| {
                cipher
                    .open(c, aad)
                    .ok()
                    .map(|p| Zeroizing::new(p.expose().to_vec()))
            })
            .collect())
    }

    fn generate_pooled(&self, algorithm: Algorithm, size: u32) -> Result<PooledKey> {
        let pool_key = self.opened_vault_key(Uuid::nil())?;
        let generated = material::generate_key(kind(algorithm, size)?).map_err(crypto_err)?;
        let id = Uuid::now_v7();
        Ok(PooledKey {
            id,
            algorithm,
            size,
            sealed: pool_key
                .seal(generated.material.expose(), &pool_aad(id))
                .map_err(crypto_err)?,
            created_at: chrono::Utc::now(),
        })
    }

    fn adopt_pooled(
        &self,
        pooled: &PooledKey,
        binding: &MaterialBinding,
    ) -> Result<SealedMaterial> {
        let plain = self
            .opened_vault_key(Uuid::nil())?
            .open(&pooled.sealed, &pool_aad(pooled.id))
            .map_err(crypto_err)?;
        let found =
            material::verification_patterns(kind(pooled.algorithm, pooled.size)?, plain.expose())
                .map_err(crypto_err)?;
        Ok(SealedMaterial {
            version: binding.version,
            sealed: self
                .opened_vault_key(binding.vault_id)?
                .seal(plain.expose(), &binding.aad())
                .map_err(crypto_err)?,
            verification_patterns: patterns(found),
        })
    }

    fn new_import_key_pair(&self, vault_id: Uuid, keystore_id: Uuid) -> Result<ImportKeyPair> {
        let vault_key = self.opened_vault_key(vault_id)?;
        let pair = transfer::new_import_key_pair().map_err(crypto_err)?;
        Ok(ImportKeyPair {
            sealed_private_key: vault_key
                .seal(&pair.private_pkcs8, &import_key_aad(keystore_id))
                .map_err(crypto_err)?,
            public_key_der: pair.public_der,
        })
    }

    fn import_material(
        &self,
        algorithm: Algorithm,
        size: u32,
        binding: &MaterialBinding,
        imported: &ImportedMaterial<'_>,
    ) -> Result<SealedMaterial> {
        let refused = || {
            Error::invalid_field(
                "payload",
                "the key material could not be imported: it is not a key of the expected size, \
                 or it was not encrypted under this keystore's current import token",
            )
        };
        if algorithm != Algorithm::Aes {
            return Err(Error::invalid_field(
                "payload",
                format!("importing {algorithm} key material is not supported; only AES keys"),
            ));
        }
        let vault_key = self.opened_vault_key(binding.vault_id)?;
        let opened;
        let plain: &[u8] = match imported {
            ImportedMaterial::Plain(bytes) => bytes,
            ImportedMaterial::Encrypted {
                keystore_id,
                sealed_private_key,
                oaep_sha256,
                payload,
                nonce_proof,
            } => {
                let private = vault_key
                    .open(sealed_private_key, &import_key_aad(*keystore_id))
                    .map_err(crypto_err)?;
                let proof =
                    nonce_proof.map(
                        |(iv, encrypted_nonce, expected_nonce)| transfer::NonceProof {
                            iv,
                            encrypted_nonce,
                            expected_nonce,
                        },
                    );
                let hash = if *oaep_sha256 {
                    transfer::OaepHash::Sha256
                } else {
                    transfer::OaepHash::Sha1
                };
                opened = transfer::open_import(private.expose(), hash, payload, proof.as_ref())
                    .map_err(|_| refused())?;
                &opened
            }
        };
        if plain.len() * 8 != size as usize {
            return Err(refused());
        }
        let found = material::verification_patterns(kind(algorithm, size)?, plain)
            .map_err(|_| refused())?;
        Ok(SealedMaterial {
            version: binding.version,
            sealed: vault_key.seal(plain, &binding.aad()).map_err(crypto_err)?,
            verification_patterns: patterns(found),
        })
    }

    fn random_data_key(&self) -> Result<Zeroizing<Vec<u8>>> {
        let mut key = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut_slice())
            .map_err(|_| Error::internal("no randomness for a data key"))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::SealMode;

    #[tokio::test]
    async fn sealed_material_is_bound_and_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn keyplane_core::ports::Store> = std::sync::Arc::new(
            keyplane_store::SqliteStore::open(
                &dir.path().join("db.sqlite"),
                keyplane_store::Durability::Normal,
            )
            .await
            .unwrap(),
        );
        let engine = KeyHierarchy::start(store, SealMode::Ephemeral)
            .await
            .unwrap();
        let binding = MaterialBinding {
            vault_id: Uuid::new_v4(),
            key_id: Uuid::new_v4(),
            version: 1,
        };
        assert!(
            engine.generate(Algorithm::Aes, 256, &binding).is_err(),
            "vault key not open"
        );
        engine.open_vault(binding.vault_id).await.unwrap();
        let m = engine.generate(Algorithm::Aes, 256, &binding).unwrap();
        assert_eq!(
            engine.verify(Algorithm::Aes, 256, &binding, &m).unwrap(),
            m.verification_patterns
        );
        let other = MaterialBinding {
            version: 2,
            ..binding
        };
        assert!(engine.verify(Algorithm::Aes, 256, &other, &m).is_err());
        assert!(engine.generate(Algorithm::Des, 168, &binding).is_err());
        engine.seal();
        assert_eq!(
            engine.generate(Algorithm::Aes, 256, &binding).err(),
            Some(Error::Sealed)
        );
    }
}
