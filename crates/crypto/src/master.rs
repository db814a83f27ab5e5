//! The master key seals every piece of key material Keyplane stores.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use aws_lc_rs::{hmac, rand};
use zeroize::Zeroizing;

use crate::{CryptoError, SecretBytes};

/// Length of a master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// First byte of every sealed blob, so the format can evolve.
pub const SEALED_FORMAT_VERSION: u8 = 0x01;

const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
const KCV_LABEL: &[u8] = b"keyplane master key check";
const HEX_KEY_LEN: usize = MASTER_KEY_LEN * 2;

/// AES-256-GCM master key.
///
/// No `Debug`, `Clone` or `Serialize` on purpose: the only way to learn
/// anything about the key is [`MasterKey::key_check_value`].
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
    aead: RandomizedNonceKey,
}

impl MasterKey {
    /// Generates a fresh random master key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        rand::fill(&mut bytes[..])
            .map_err(|_| CryptoError::Generate("random number generator failed".into()))?;
        Self::from_array(bytes)
    }

    /// Builds a master key from exactly 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != MASTER_KEY_LEN {
            return Err(CryptoError::InvalidKeyLength);
        }
        let mut arr = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        arr.copy_from_slice(bytes);
        Self::from_array(arr)
    }

    /// The key bytes, for sealing the key itself under a key-encryption key.
    pub(crate) fn expose_bytes(&self) -> &[u8] {
        &self.bytes[..]
    }

    fn from_array(bytes: Zeroizing<[u8; MASTER_KEY_LEN]>) -> Result<Self, CryptoError> {
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &bytes[..])
            .map_err(|_| CryptoError::InvalidKeyLength)?;
        Ok(Self { bytes, aead })
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad`.
    ///
    /// Output: `version(1) ‖ nonce(12) ‖ ciphertext ‖ tag(16)`. A fresh random
    /// nonce is used on every call.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        // Sized up front so the buffer holding plaintext never reallocates and
        // leaves an un-wiped copy behind; wiped in case sealing fails midway.
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buf.extend_from_slice(plaintext);
        let nonce = self
            .aead
            .seal_in_place_append_tag(Aad::from(aad), &mut *buf)
            .map_err(|_| CryptoError::Encrypt)?;

        let mut out = Vec::with_capacity(HEADER_LEN + buf.len());
        out.push(SEALED_FORMAT_VERSION);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Verifies and decrypts a blob produced by [`MasterKey::seal`] with the
    /// same `aad`. Every failure (unknown version, truncation, tampering,
    /// wrong key or AAD) yields [`CryptoError::Decrypt`].
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes, CryptoError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != SEALED_FORMAT_VERSION {
            return Err(CryptoError::Decrypt);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..HEADER_LEN])
            .map_err(|_| CryptoError::Decrypt)?;
        let mut buf = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
        let plain_len = self
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut buf[..])
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        buf.truncate(plain_len);
        Ok(SecretBytes::from(buf))
    }

    /// Non-secret fingerprint used to detect that a different master key is
    /// configured than the one the data was sealed with: the first 6 upper-case
    /// hex characters of HMAC-SHA-256(master, "keyplane master key check").
    #[must_use]
    pub fn key_check_value(&self) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.bytes[..]);
        let tag = hmac::sign(&key, KCV_LABEL);
        hex::encode_upper(&tag.as_ref()[..3])
    }
}

/// Whether [`load_or_create_dev_master_key`] found an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevSealOutcome {
    Created,
    Loaded,
}

/// Loads the development master key from `path`, creating it (mode 0600,
/// written atomically) if it does not exist yet.
///
/// The file holds 64 hex characters, optionally followed by a newline. On
/// unix, a file readable or writable by group or others is refused.
pub fn load_or_create_dev_master_key(
    path: &Path,
) -> Result<(MasterKey, DevSealOutcome), CryptoError> {
    match File::open(path) {
        Ok(file) => Ok((read_dev_key(file, path)?, DevSealOutcome::Loaded)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_dev_key(path),
        Err(e) => Err(io_err("cannot open master key file", path, &e)),
    }
}

pub(crate) fn io_err(what: &str, path: &Path, e: &io::Error) -> CryptoError {
    CryptoError::Io(format!("{what} {}: {e}", path.display()))
}

fn read_dev_key(mut file: File, path: &Path) -> Result<MasterKey, CryptoError> {
    // Checked on the open handle rather than the path, so the file cannot be
    // swapped between the check and the read.
    let meta = file
        .metadata()
        .map_err(|e| io_err("cannot stat master key file", path, &e))?;
    if !meta.is_file() {
        return Err(CryptoError::Io(format!(
            "master key file {} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CryptoError::Io(format!(
                "master key file {} has insecure permissions {:03o}; it must not be accessible \
                 by group or others (run: chmod 600 {})",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
    }

    // Fixed-size buffer: no reallocation can leave copies of the key behind,
    // and one spare byte detects oversized files without reading them whole.
    let mut buf = Zeroizing::new([0u8; HEX_KEY_LEN + 3]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("cannot read master key file", path, &e)),
        }
    }
    let mut content = &buf[..len];
    if let Some(rest) = content.strip_suffix(b"\n") {
        content = rest.strip_suffix(b"\r").unwrap_or(rest);
    }

    let malformed = || {
        CryptoError::InvalidKeyMaterial(format!(
            "master key file {} must contain exactly {HEX_KEY_LEN} hex characters",
            path.display()
        ))
    };
    if content.len() != HEX_KEY_LEN {
        return Err(malformed());
    }
    let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
    // The hex error would name the offending character, which is key data.
    hex::decode_to_slice(content, &mut key[..]).map_err(|_| malformed())?;
    MasterKey::from_array(key)
}

fn create_dev_key(path: &Path) -> Result<(MasterKey, DevSealOutcome), CryptoError> {
    let dir = parent_dir(path);
    create_private_dir_all(&dir)
        .map_err(|e| io_err("cannot create master key directory", &dir, &e))?;

    let key = MasterKey::generate()?;
    let mut encoded = Zeroizing::new([0u8; HEX_KEY_LEN + 1]);
    hex::encode_to_slice(&key.bytes[..], &mut encoded[..HEX_KEY_LEN])
        .map_err(|_| CryptoError::Generate("hex encoding failed".into()))?;
    encoded[HEX_KEY_LEN] = b'\n';

    let published = publish_new_private_file(path, &dir, &encoded[..])?;
    if !published {
        let file = File::open(path).map_err(|e| io_err("cannot open master key file", path, &e))?;
        return Ok((read_dev_key(file, path)?, DevSealOutcome::Loaded));
    }
    Ok((key, DevSealOutcome::Created))
}

/// The directory a file lives in (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `contents` to a new file at `path` (mode 0600) atomically: a temporary file, synced,
/// then linked into place. `false` when another process created `path` first (it is kept).
pub(crate) fn publish_new_private_file(
    path: &Path,
    dir: &Path,
    contents: &[u8],
) -> Result<bool, CryptoError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| CryptoError::Io(format!("path {} has no file name", path.display())))?;
    let mut suffix = [0u8; 8];
    rand::fill(&mut suffix)
        .map_err(|_| CryptoError::Generate("random number generator failed".into()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        hex::encode(suffix)
    ));
    if let Err(e) = write_new_private_file(&tmp, contents) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("cannot write key file", &tmp, &e));
    }
    // A hard link publishes the complete file atomically and, unlike rename,
    // fails if another process created the file meanwhile; then that file wins.
    let published = match std::fs::hard_link(&tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        // Filesystems without hard links: fall back to rename.
        Err(_) => match std::fs::rename(&tmp, path) {
            Ok(()) => true,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err("cannot move key file into place at", path, &e));
            }
        },
    };
    let _ = std::fs::remove_file(&tmp);
    if published {
        sync_dir(dir);
    }
    Ok(published)
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes the new directory entry durable. Best effort: the key file itself
/// is already synced, and not every platform can fsync a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync master key directory");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MasterKey>();
    }

    #[test]
    fn sealed_layout() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal(b"abc", b"ctx").unwrap();
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 3 + TAG_LEN);
        assert_eq!(sealed[0], SEALED_FORMAT_VERSION);
        assert_ne!(&sealed[HEADER_LEN..HEADER_LEN + 3], b"abc");
    }
}
