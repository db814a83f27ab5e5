//! The `passphrase` seal: the master key is stored sealed under a key derived from an operator's
//! passphrase with Argon2id; the derivation parameters are recorded beside the sealed key so a
//! later change of defaults still opens old files.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::master::{
    MasterKey, create_private_dir_all, io_err, parent_dir, publish_new_private_file,
};

const FORMAT: &str = "keyplane-sealed-master-v1";
const AAD: &[u8] = b"keyplane-master:v1";
/// Memory-hard defaults: 64 MiB, 3 passes, 1 lane.
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;
pub const MIN_PASSPHRASE_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassphraseOutcome {
    /// A new master key was made and sealed.
    Created,
    /// The existing sealed master key was opened.
    Opened,
}

struct Sealed {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: Vec<u8>,
    sealed: Vec<u8>,
}

fn derive(
    passphrase: &[u8],
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<MasterKey, CryptoError> {
    let params = Params::new(m, t, p, Some(32))
        .map_err(|e| CryptoError::Generate(format!("argon2 parameters: {e}")))?;
    let mut kek = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut kek[..])
        .map_err(|e| CryptoError::Generate(format!("argon2: {e}")))?;
    MasterKey::from_bytes(&kek[..])
}

fn render(s: &Sealed) -> String {
    format!(
        "format={FORMAT}\nkdf=argon2id\nm_cost_kib={}\nt_cost={}\np_cost={}\nsalt={}\nsealed={}\n",
        s.m_cost_kib,
        s.t_cost,
        s.p_cost,
        hex::encode(&s.salt),
        hex::encode(&s.sealed)
    )
}

fn parse(text: &str, source: &str) -> Result<Sealed, CryptoError> {
    let bad = |what: &str| {
        CryptoError::InvalidKeyMaterial(format!(
            "the sealed master key ({source}) is malformed: {what}"
        ))
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| bad(&format!("no {name}")))
    };
    if field("format")? != FORMAT || field("kdf")? != "argon2id" {
        return Err(bad("unknown format"));
    }
    let number = |name: &str| field(name)?.parse::<u32>().map_err(|_| bad(name));
    Ok(Sealed {
        m_cost_kib: number("m_cost_kib")?,
        t_cost: number("t_cost")?,
        p_cost: number("p_cost")?,
        salt: hex::decode(field("salt")?).map_err(|_| bad("salt"))?,
        sealed: hex::decode(field("sealed")?).map_err(|_| bad("sealed"))?,
    })
}

fn check_length(passphrase: &[u8]) -> Result<(), CryptoError> {
    if passphrase.len() < MIN_PASSPHRASE_LEN {
        return Err(CryptoError::InvalidKeyMaterial(format!(
            "the seal passphrase must be at least {MIN_PASSPHRASE_LEN} characters long"
        )));
    }
    Ok(())
}

/// Opens a sealed master key (as [`seal_new_master_key`] renders it) with `passphrase`; `source`
/// names where it was kept, for errors. A wrong passphrase opens nothing.
pub fn open_sealed_master_key(
    text: &str,
    source: &str,
    passphrase: &[u8],
) -> Result<MasterKey, CryptoError> {
    check_length(passphrase)?;
    let s = parse(text, source)?;
    let kek = derive(passphrase, &s.salt, s.m_cost_kib, s.t_cost, s.p_cost)?;
    let plain = kek.open(&s.sealed, AAD).map_err(|_| {
        CryptoError::InvalidKeyMaterial(format!(
            "the seal passphrase is wrong (or the sealed master key in {source} was altered); nothing was opened"
        ))
    })?;
    MasterKey::from_bytes(plain.expose())
}

/// A new master key, and its rendering sealed under `passphrase` (to be kept where every node
/// finds it).
pub fn seal_new_master_key(passphrase: &[u8]) -> Result<(MasterKey, String), CryptoError> {
    check_length(passphrase)?;
    let master = MasterKey::generate()?;
    let mut salt = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CryptoError::Generate("no randomness".into()))?;
    let kek = derive(passphrase, &salt, M_COST_KIB, T_COST, P_COST)?;
    let sealed = kek.seal(master.expose_bytes(), AAD)?;
    let text = render(&Sealed {
        m_cost_kib: M_COST_KIB,
        t_cost: T_COST,
        p_cost: P_COST,
        salt,
        sealed,
    });
    Ok((master, text))
}

/// Opens the master key sealed at `path` with `passphrase`, or makes and seals a new one when
/// the file does not exist. A wrong passphrase opens nothing.
pub fn open_or_create_passphrase_sealed(
    path: &Path,
    passphrase: &[u8],
) -> Result<(MasterKey, PassphraseOutcome), CryptoError> {
    check_length(passphrase)?;
    let source = format!("file {}", path.display());
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((
            open_sealed_master_key(&text, &source, passphrase)?,
            PassphraseOutcome::Opened,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(path);
            create_private_dir_all(&dir)
                .map_err(|e| io_err("cannot create directory", &dir, &e))?;
            let (master, text) = seal_new_master_key(passphrase)?;
            if !publish_new_private_file(path, &dir, text.as_bytes())? {
                // Another process sealed one first: open that one.
                return open_or_create_passphrase_sealed(path, passphrase);
            }
            Ok((master, PassphraseOutcome::Created))
        }
        Err(e) => Err(io_err("cannot read sealed master key file", path, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_a_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.sealed");
        let (created, outcome) =
            open_or_create_passphrase_sealed(&path, b"correct horse battery").unwrap();
        assert_eq!(outcome, PassphraseOutcome::Created);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("kdf=argon2id") && text.contains("m_cost_kib=65536"),
            "parameters are recorded"
        );
        assert!(
            !text.contains(&hex::encode(created.expose_bytes())),
            "the master key is not stored in clear"
        );
        let (opened, outcome) =
            open_or_create_passphrase_sealed(&path, b"correct horse battery").unwrap();
        assert_eq!(outcome, PassphraseOutcome::Opened);
        assert_eq!(opened.key_check_value(), created.key_check_value());
        let wrong = open_or_create_passphrase_sealed(&path, b"incorrect horse battery")
            .err()
            .unwrap();
        assert!(wrong.to_string().contains("passphrase is wrong"), "{wrong}");
        assert!(open_or_create_passphrase_sealed(&path, b"short").is_err());
        std::fs::write(&path, text.replace("t_cost=3", "t_cost=x")).unwrap();
        assert!(open_or_create_passphrase_sealed(&path, b"correct horse battery").is_err());
    }
}
