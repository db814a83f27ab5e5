//! The root of the key hierarchy: the master key, wherever it lives. It wraps and unwraps the
//! per-vault keys and nothing else; material is sealed under vault keys.

use crate::{CryptoError, MasterKey, SecretBytes};

/// A master key. Implementations keep the key where the seal mode puts it: in process memory
/// (dev, passphrase, shamir) or inside a PKCS#11 token that never lets it out.
pub trait RootKey: Send + Sync {
    /// Stable identifier, recorded beside every vault key this root wraps.
    fn id(&self) -> &str;

    /// Wraps a vault key. `context` names what the key belongs to; implementations that can bind
    /// it (AES-GCM) do, the others rely on the material's own binding.
    fn wrap(&self, key: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError>;

    /// Reverses [`RootKey::wrap`]; any alteration, wrong root or wrong context fails.
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<SecretBytes, CryptoError>;
}

/// A master key held in memory, wrapping with AES-256-GCM bound to the context.
pub struct SoftwareRootKey {
    id: String,
    key: MasterKey,
}

impl SoftwareRootKey {
    pub fn new(id: String, key: MasterKey) -> Self {
        Self { id, key }
    }

    pub fn generate(id: String) -> Result<Self, CryptoError> {
        Ok(Self::new(id, MasterKey::generate()?))
    }

    /// The key itself, sealed under a seal key (how software roots are stored).
    pub fn seal_under(&self, seal_key: &MasterKey) -> Result<Vec<u8>, CryptoError> {
        seal_key.seal(self.key.expose_bytes(), &root_aad(&self.id))
    }

    /// Opens a root sealed by [`SoftwareRootKey::seal_under`].
    pub fn open_sealed(
        id: String,
        sealed: &[u8],
        seal_key: &MasterKey,
    ) -> Result<Self, CryptoError> {
        let plain = seal_key.open(sealed, &root_aad(&id))?;
        Ok(Self::new(id, MasterKey::from_bytes(plain.expose())?))
    }
}

fn root_aad(id: &str) -> Vec<u8> {
    format!("keyplane-root-key:v1:{id}").into_bytes()
}

impl RootKey for SoftwareRootKey {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.key.seal(key, context)
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<SecretBytes, CryptoError> {
        self.key.open(wrapped, context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_root_wraps_bound_to_context_and_seals_under_a_seal_key() {
        let root = SoftwareRootKey::generate("r1".into()).unwrap();
        let wrapped = root.wrap(&[7u8; 32], b"vault-a").unwrap();
        assert_eq!(
            root.unwrap(&wrapped, b"vault-a").unwrap().expose(),
            &[7u8; 32]
        );
        assert!(root.unwrap(&wrapped, b"vault-b").is_err());

        let seal_key = MasterKey::generate().unwrap();
        let sealed = root.seal_under(&seal_key).unwrap();
        let reopened = SoftwareRootKey::open_sealed("r1".into(), &sealed, &seal_key).unwrap();
        assert_eq!(
            reopened.unwrap(&wrapped, b"vault-a").unwrap().expose(),
            &[7u8; 32]
        );
        assert!(SoftwareRootKey::open_sealed("r2".into(), &sealed, &seal_key).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(SoftwareRootKey::open_sealed("r1".into(), &sealed, &other).is_err());
    }
}
