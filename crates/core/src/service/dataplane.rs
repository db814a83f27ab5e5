//! The internal keystores' data plane: wrap, unwrap and rewrap of data keys under an installed
//! AES-256 key, addressed as a Key Protect client does (keystore, then the key's id there).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use uuid::Uuid;
use zeroize::Zeroizing;

use super::Keyplane;
use crate::authz::{Caller, Permission};
use crate::connector::ProbeCiphertext;
use crate::error::{Error, ErrorCode, Result};
use crate::model::*;
use crate::ports::MaterialBinding;
use crate::query::Paging;

/// Largest data key accepted for wrapping.
pub const MAX_DATA_KEY_BYTES: usize = 4096;
/// At most this many additional-authenticated-data strings, each at most `MAX_AAD_LEN` long.
pub const MAX_AAD_ITEMS: usize = 255;
pub const MAX_AAD_LEN: usize = 255;
/// Most data keys in one batch request.
pub const MAX_BATCH: usize = 1000;

const MAGIC: [u8; 3] = [b'K', b'P', 1];

/// A key as an internal keystore holds it.
#[derive(Debug, Clone)]
pub struct InstalledKey {
    pub copy: InternalCopy,
    pub key: ManagedKey,
}

/// What wrapping and unwrapping need to know about a key, read in one query.
#[derive(Debug, Clone)]
pub struct UsageContext {
    pub copy: InternalCopy,
    pub key_id: Uuid,
    pub vault_id: Uuid,
    pub state: KeyState,
    pub algorithm: Algorithm,
    pub size: u32,
    pub version: u32,
    /// The newest version's material (absent once erased).
    pub current_material: Option<SealedMaterial>,
}

/// A wrapped data key; `generated` holds the data key when the server made it.
pub struct DataKeyWrap {
    pub ciphertext: Vec<u8>,
    pub key_version: u32,
    pub generated: Option<Zeroizing<Vec<u8>>>,
    /// For a rewrap: the version the ciphertext was wrapped with before.
    pub previous_version: Option<u32>,
}

pub struct DataKeyUnwrap {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub key_version: u32,
    /// The key's newest version (a client rewraps when it differs).
    pub current_version: u32,
    /// The data key wrapped again under the newest version, when it was wrapped under an older
    /// one and the key still wraps (Key Protect answers an unwrap so after a rotation).
    pub rewrapped: Option<Vec<u8>>,
}

/// Ciphertext: magic ‖ key version (big-endian) ‖ AES-256-GCM output.
fn frame(version: u32, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + sealed.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(sealed);
    out
}

fn unframe(ciphertext: &[u8]) -> Result<(u32, &[u8])> {
    let bad = || {
        Error::invalid_field(
            "ciphertext",
            "the ciphertext is not one this keystore produced",
        )
    };
    let rest = ciphertext.strip_prefix(&MAGIC[..]).ok_or_else(bad)?;
    if rest.len() < 4 {
        return Err(bad());
    }
    let (version, sealed) = rest.split_at(4);
    let version = u32::from_be_bytes(version.try_into().map_err(|_| bad())?);
    Ok((version, sealed))
}

/// A wrap ciphertext of a keyplane internal keystore, as a probe of the key that made it: the
/// GCM output and the associated data it is bound to. `None` for anything else (another
/// product's opaque ciphertext, or one made with caller AAD).
pub fn wrapped_probe(key_id_in_keystore: Uuid, ciphertext: &[u8]) -> Option<ProbeCiphertext> {
    let (version, sealed) = unframe(ciphertext).ok()?;
    let (&super::distributor::ENGINE_SEALED_FORMAT, gcm) = sealed.split_first()? else {
        return None;
    };
    Some(ProbeCiphertext {
        sealed: gcm.to_vec(),
        aad: bound_aad(key_id_in_keystore, version, &[]).ok()?,
    })
}

/// The GCM associated data: the key's identity in the keystore, its version and the caller's AAD.
fn bound_aad(key_id_in_keystore: Uuid, version: u32, aad: &[String]) -> Result<Vec<u8>> {
    if aad.len() > MAX_AAD_ITEMS {
        return Err(Error::invalid_field(
            "aad",
            format!("aad holds at most {MAX_AAD_ITEMS} strings"),
        ));
    }
    // Built on every data-plane call: the id is encoded directly, not through the formatter.
    let mut out = String::with_capacity(64);
    out.push_str("keyplane-wrap:v1:");
    out.push_str(
        key_id_in_keystore
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
    );
    // Infallible: writing to a String.
    let _ = write!(out, ":{version}");
    let mut out = out.into_bytes();
    for item in aad {
        if item.len() > MAX_AAD_LEN {
            return Err(Error::invalid_field(
                "aad",
                format!("each aad string is at most {MAX_AAD_LEN} bytes"),
            ));
        }
        out.extend_from_slice(&u32::try_from(item.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(item.as_bytes());
    }
    Ok(out)
}

fn not_active(key: &UsageContext, what: &str) -> Error {
    Error::Conflict {
        code: ErrorCode::KeyNotActive,
        message: format!(
            "key {} is {} in keyplane: it can no longer {what}",
            key.copy.key_id_in_keystore, key.state
        ),
        params: vec![key.copy.key_id_in_keystore.to_string()],
    }
}

/// Only active keys wrap; deactivated keys still unwrap.
fn check_usable(key: &UsageContext, wrapping: bool) -> Result<()> {
    crate::audit::note_target("managed_keys", key.key_id, Some(key.vault_id));
    if key.state != KeyState::Active {
        // Use of a key that is out of service is always recorded.
        crate::audit::mark_noteworthy();
    }
    let ok = match key.state {
        KeyState::Active => key.copy.enabled,
        KeyState::Deactivated => !wrapping,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(not_active(
        key,
        if wrapping {
            "wrap data keys"
        } else {
            "unwrap data keys"
        },
    ))
}

/// The answer for a `bluemix-instance` that names no internal keystore the caller can use: 404,
/// the same whether the keystore does not exist, is external, or sits in a vault hidden from the
/// caller, so nothing of it is revealed.
pub fn unknown_instance(keystore_id: Uuid) -> Error {
    Error::not_found("internal keystore (bluemix-instance)", keystore_id)
}

impl Keyplane {
    /// The internal keystore a `bluemix-instance` header names, where the caller must be allowed
    /// `permission`. One it may not see answers as one that does not exist.
    pub(crate) async fn instance_for(
        &self,
        caller: &Caller,
        permission: Permission,
        keystore_id: Uuid,
    ) -> Result<Keystore> {
        let keystore = self
            .store
            .get_keystore(keystore_id)
            .await?
            .filter(Keystore::is_internal)
            .ok_or_else(|| unknown_instance(keystore_id))?;
        caller.require_in(permission, keystore.vault.id, || {
            unknown_instance(keystore_id)
        })?;
        Ok(keystore)
    }

    /// The key installed in an internal keystore under `key_ref` (its `key_id_in_keystore`).
    pub async fn installed_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
    ) -> Result<InstalledKey> {
        let keystore = self
            .instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        let copy = self.store.internal_copy(keystore.id, key_ref).await?.ok_or_else(|| Error::NotFound {
            resource: "key",
            id: format!("{key_ref} (not installed in keystore '{}': pre-active, destroyed or never there)", keystore.name),
        })?;
        let key = self.load_key(copy.managed_key_id).await?;
        Ok(InstalledKey { copy, key })
    }

    /// The usage context of the key installed under `key_ref`, with the same errors as `installed_key`.
    async fn usage_context(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
    ) -> Result<Arc<UsageContext>> {
        match self.store.usage_context(keystore_id, key_ref).await? {
            Some(ctx) => {
                // The key's vault is its keystore's.
                caller.require_in(Permission::KeyUse, ctx.vault_id, || {
                    unknown_instance(keystore_id)
                })?;
                Ok(ctx)
            }
            // Not there: let the full lookup say why (no such keystore, not internal, no such key).
            // Boxed: its future is large, and inlined it would grow every data-plane call's
            // future, which the front boxes (copies) on every call.
            None => Box::pin(self.installed_key(caller, keystore_id, key_ref))
                .await
                .and_then(|_| {
                    Err(Error::internal(
                        "a key was found by one lookup and not the other",
                    ))
                }),
        }
    }

    pub async fn installed_keys(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ring: Option<&str>,
        paging: Paging,
    ) -> Result<Page<InstalledKey>> {
        self.instance_for(caller, Permission::KeyUse, keystore_id)
            .await?;
        if let Some(ring) = key_ring {
            self.check_key_ring_exists(keystore_id, ring).await?;
        }
        let copies = self
            .store
            .internal_copies_in_keystore(keystore_id, key_ring, paging)
            .await?;
        let mut items = Vec::with_capacity(copies.items.len());
        for copy in copies.items {
            let key = self.load_key(copy.managed_key_id).await?;
            items.push(InstalledKey { copy, key });
        }
        Ok(Page {
            items,
            total_count: copies.total_count,
        })
    }

    /// The binding and sealed material of one version: the newest is in the usage context already.
    async fn material<'k>(
        &self,
        key: &'k UsageContext,
        version: u32,
    ) -> Result<(MaterialBinding, Cow<'k, SealedMaterial>)> {
        if key.algorithm != Algorithm::Aes || key.size != 256 {
            return Err(Error::invalid_field(
                "key",
                format!(
                    "key {} is {} {}: only AES-256 keys wrap data keys",
                    key.copy.key_id_in_keystore, key.algorithm, key.size
                ),
            ));
        }
        self.engine.open_vault(key.vault_id).await?;
        let binding = MaterialBinding {
            vault_id: key.vault_id,
            key_id: key.key_id,
            version,
        };
        let stored = match &key.current_material {
            Some(m) if m.version == version => Some(Cow::Borrowed(m)),
            _ => self
                .store
                .sealed_material(key.key_id, version)
                .await?
                .map(Cow::Owned),
        };
        let material = stored.ok_or_else(|| {
            Error::invalid_field(
                "ciphertext",
                format!("version {version} of this key no longer exists"),
            )
        })?;
        Ok((binding, material))
    }

    /// Wraps every data key under the key's newest version, opening its material once.
    async fn wrap_all(
        &self,
        key: &UsageContext,
        data_keys: &[&[u8]],
        aad: &[String],
    ) -> Result<Vec<Vec<u8>>> {
        let version = key.version;
        let (binding, material) = self.material(key, version).await?;
        let aad = bound_aad(key.copy.key_id_in_keystore, version, aad)?;
        let sealed = self
            .engine
            .encrypt_with(&binding, &material, data_keys, &aad)?;
        Ok(sealed.iter().map(|s| frame(version, s)).collect())
    }

    /// Unwraps every ciphertext (each may name another version); `field` names the input in errors.
    async fn unwrap_all(
        &self,
        key: &UsageContext,
        ciphertexts: &[&[u8]],
        aad: &[String],
        field: &str,
    ) -> Result<Vec<(u32, Zeroizing<Vec<u8>>)>> {
        let framed: Vec<(u32, &[u8])> = ciphertexts
            .iter()
            .enumerate()
            .map(|(i, c)| unframe(c).map_err(|e| e.within_index(field, i, ciphertexts.len())))
            .collect::<Result<_>>()?;
        let mut out: Vec<Option<(u32, Zeroizing<Vec<u8>>)>> =
            (0..framed.len()).map(|_| None).collect();
        let mut versions: Vec<u32> = framed.iter().map(|(v, _)| *v).collect();
        versions.sort_unstable();
        versions.dedup();
        for version in versions {
            let (binding, material) = self.material(key, version).await?;
            let bound = bound_aad(key.copy.key_id_in_keystore, version, aad)?;
            let positions: Vec<usize> = (0..framed.len())
                .filter(|i| framed[*i].0 == version)
                .collect();
            let items: Vec<&[u8]> = positions.iter().map(|i| framed[*i].1).collect();
            let opened = self
                .engine
                .decrypt_with(&binding, &material, &items, &bound)?;
            for (position, plain) in positions.into_iter().zip(opened) {
                let plain = plain.ok_or_else(|| {
                    Error::invalid_field(
                        &crate::error::indexed_field(field, position, framed.len()),
                        "the ciphertext cannot be unwrapped: it was not wrapped by this key, the aad differs, or it was altered",
                    )
                })?;
                out[position] = Some((version, plain));
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Wraps the given data keys, or `generate` fresh 256-bit ones when none are given.
    pub async fn wrap_data_keys(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
        data_keys: Vec<Zeroizing<Vec<u8>>>,
        generate: usize,
        aad: &[String],
    ) -> Result<Vec<DataKeyWrap>> {
        let key = self.usage_context(caller, keystore_id, key_ref).await?;
        check_usable(&key, true)?;
        let count = data_keys.len() + generate;
        if count == 0 || count > MAX_BATCH {
            return Err(Error::invalid_field(
                "plaintexts",
                format!("a batch holds 1 to {MAX_BATCH} data keys"),
            ));
        }
        for (i, p) in data_keys.iter().enumerate() {
            if p.is_empty() || p.len() > MAX_DATA_KEY_BYTES {
                return Err(Error::invalid_field(
                    &crate::error::indexed_field("plaintext", i, data_keys.len()),
                    format!("a data key is 1 to {MAX_DATA_KEY_BYTES} bytes (base64-encoded)"),
                ));
            }
        }
        let generated_keys = (0..generate)
            .map(|_| self.engine.random_data_key())
            .collect::<Result<Vec<_>>>()?;
        let all: Vec<&[u8]> = data_keys
            .iter()
            .chain(&generated_keys)
            .map(|k| k.as_slice())
            .collect();
        let ciphertexts = self.wrap_all(&key, &all, aad).await?;
        let mut generated = generated_keys.into_iter();
        Ok(ciphertexts
            .into_iter()
            .enumerate()
            .map(|(i, ciphertext)| DataKeyWrap {
                ciphertext,
                key_version: key.version,
                generated: if i >= data_keys.len() {
                    generated.next()
                } else {
                    None
                },
                previous_version: None,
            })
            .collect())
    }

    /// Wraps `plaintext`, or a fresh 256-bit data key when none is given.
    pub async fn wrap_data_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
        plaintext: Option<Zeroizing<Vec<u8>>>,
        aad: &[String],
    ) -> Result<DataKeyWrap> {
        let generate = usize::from(plaintext.is_none());
        let mut wrapped = self
            .wrap_data_keys(
                caller,
                keystore_id,
                key_ref,
                plaintext.into_iter().collect(),
                generate,
                aad,
            )
            .await?;
        wrapped
            .pop()
            .ok_or_else(|| Error::internal("a wrap returned nothing"))
    }

    pub async fn unwrap_data_keys(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
        ciphertexts: &[&[u8]],
        aad: &[String],
    ) -> Result<Vec<DataKeyUnwrap>> {
        if ciphertexts.is_empty() || ciphertexts.len() > MAX_BATCH {
            return Err(Error::invalid_field(
                "ciphertexts",
                format!("a batch holds 1 to {MAX_BATCH} ciphertexts"),
            ));
        }
        let key = self.usage_context(caller, keystore_id, key_ref).await?;
        check_usable(&key, false)?;
        let opened = self
            .unwrap_all(&key, ciphertexts, aad, "ciphertext")
            .await?;
        Ok(opened
            .into_iter()
            .map(|(key_version, plaintext)| DataKeyUnwrap {
                plaintext,
                key_version,
                current_version: key.version,
                rewrapped: None,
            })
            .collect())
    }

    pub async fn unwrap_data_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<DataKeyUnwrap> {
        let key = self.usage_context(caller, keystore_id, key_ref).await?;
        check_usable(&key, false)?;
        let (key_version, plaintext) = self
            .unwrap_all(&key, &[ciphertext], aad, "ciphertext")
            .await?
            .pop()
            .ok_or_else(|| Error::internal("an unwrap returned nothing"))?;
        // Wrapped under an older version: also wrapped under the newest, while the key wraps.
        let rewrapped = if key_version != key.version && check_usable(&key, true).is_ok() {
            self.wrap_all(&key, &[plaintext.as_slice()], aad)
                .await?
                .pop()
        } else {
            None
        };
        Ok(DataKeyUnwrap {
            plaintext,
            key_version,
            current_version: key.version,
            rewrapped,
        })
    }

    /// Unwraps and wraps again under the key's newest version.
    pub async fn rewrap_data_key(
        &self,
        caller: &Caller,
        keystore_id: Uuid,
        key_ref: Uuid,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<DataKeyWrap> {
        let key = self.usage_context(caller, keystore_id, key_ref).await?;
        check_usable(&key, true)?;
        let mut opened = self
            .unwrap_all(&key, &[ciphertext], aad, "ciphertext")
            .await?;
        let (previous, plaintext) = opened
            .pop()
            .ok_or_else(|| Error::internal("an unwrap returned nothing"))?;
        let mut wrapped = self.wrap_all(&key, &[plaintext.as_slice()], aad).await?;
        Ok(DataKeyWrap {
            ciphertext: wrapped
                .pop()
                .ok_or_else(|| Error::internal("a wrap returned nothing"))?,
            key_version: key.version,
            generated: None,
            previous_version: Some(previous),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_foreign_input() {
        let framed = frame(7, b"sealed-bytes");
        let (v, rest) = unframe(&framed).unwrap();
        assert_eq!((v, rest), (7, &b"sealed-bytes"[..]));
        assert!(unframe(b"XX\x01\0\0\0\x01abc").is_err());
        assert!(unframe(b"KP\x01\0").is_err());
    }

    #[test]
    fn aad_binds_order_and_boundaries() {
        let id = Uuid::new_v4();
        let a = bound_aad(id, 1, &["ab".into(), "c".into()]).unwrap();
        let b = bound_aad(id, 1, &["a".into(), "bc".into()]).unwrap();
        let c = bound_aad(id, 2, &["ab".into(), "c".into()]).unwrap();
        assert_ne!(a, b, "item boundaries are part of the binding");
        assert_ne!(a, c, "the version is part of the binding");
        assert!(bound_aad(id, 1, &vec!["x".into(); 256]).is_err());
        assert!(bound_aad(id, 1, &["y".repeat(256)]).is_err());
    }
}
