use keyplane_crypto::{CryptoError, DevSealOutcome, MasterKey, load_or_create_dev_master_key};

#[test]
fn seal_open_round_trip() {
    let key = MasterKey::generate().unwrap();
    for plaintext in [
        &b""[..],
        b"x",
        b"some key material that is longer than a block",
    ] {
        let sealed = key.seal(plaintext, b"key:1").unwrap();
        assert_eq!(sealed[0], 0x01);
        assert_eq!(sealed.len(), 1 + 12 + plaintext.len() + 16);
        let opened = key.open(&sealed, b"key:1").unwrap();
        assert_eq!(opened.expose(), plaintext);
        assert_eq!(opened.len(), plaintext.len());
    }
}

#[test]
fn wrong_aad_fails() {
    let key = MasterKey::generate().unwrap();
    let sealed = key.seal(b"secret", b"key:1").unwrap();
    assert!(matches!(
        key.open(&sealed, b"key:2"),
        Err(CryptoError::Decrypt)
    ));
    assert!(matches!(key.open(&sealed, b""), Err(CryptoError::Decrypt)));
}

#[test]
fn every_flipped_bit_fails() {
    let key = MasterKey::generate().unwrap();
    let sealed = key.seal(b"k!", b"aad").unwrap();
    assert!(key.open(&sealed, b"aad").is_ok());
    for byte in 0..sealed.len() {
        for bit in 0..8 {
            let mut tampered = sealed.clone();
            tampered[byte] ^= 1 << bit;
            assert!(
                matches!(key.open(&tampered, b"aad"), Err(CryptoError::Decrypt)),
                "flip of byte {byte} bit {bit} was accepted"
            );
        }
    }
}

#[test]
fn truncated_extended_and_unknown_version_fail() {
    let key = MasterKey::generate().unwrap();
    let sealed = key.seal(b"secret", b"").unwrap();
    for len in 0..sealed.len() {
        assert!(matches!(
            key.open(&sealed[..len], b""),
            Err(CryptoError::Decrypt)
        ));
    }
    let mut extended = sealed.clone();
    extended.push(0);
    assert!(matches!(
        key.open(&extended, b""),
        Err(CryptoError::Decrypt)
    ));
    let mut v2 = sealed.clone();
    v2[0] = 0x02;
    assert!(matches!(key.open(&v2, b""), Err(CryptoError::Decrypt)));
}

#[test]
fn wrong_master_key_fails() {
    let a = MasterKey::generate().unwrap();
    let b = MasterKey::generate().unwrap();
    let sealed = a.seal(b"secret", b"ctx").unwrap();
    assert!(matches!(b.open(&sealed, b"ctx"), Err(CryptoError::Decrypt)));
    assert_ne!(a.key_check_value(), b.key_check_value());
}

#[test]
fn nonces_differ_between_seals() {
    let key = MasterKey::generate().unwrap();
    let s1 = key.seal(b"same", b"same").unwrap();
    let s2 = key.seal(b"same", b"same").unwrap();
    assert_ne!(s1[1..13], s2[1..13]);
    assert_ne!(s1, s2);
}

#[test]
fn from_bytes_requires_32_bytes() {
    for len in [0, 16, 31, 33, 64] {
        assert!(matches!(
            MasterKey::from_bytes(&vec![7u8; len]),
            Err(CryptoError::InvalidKeyLength)
        ));
    }
    let a = MasterKey::from_bytes(&[7u8; 32]).unwrap();
    let b = MasterKey::from_bytes(&[7u8; 32]).unwrap();
    let sealed = a.seal(b"secret", b"ctx").unwrap();
    assert_eq!(b.open(&sealed, b"ctx").unwrap().expose(), b"secret");
}

#[test]
fn key_check_value_known_answer() {
    // Upper-case hex of the first 3 bytes of HMAC-SHA-256(key, label).
    let key = MasterKey::from_bytes(&[0u8; 32]).unwrap();
    let kcv = key.key_check_value();
    assert_eq!(kcv.len(), 6);
    assert!(
        kcv.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    let expected = {
        use aws_lc_rs_free::hmac_sha256_prefix;
        hmac_sha256_prefix(&[0u8; 32], b"keyplane master key check")
    };
    assert_eq!(kcv, expected);
}

/// Independent HMAC-SHA-256 (RFC 2104) over the SHA-256 from the digest API,
/// so the check value is not verified with the very code that computes it.
mod aws_lc_rs_free {
    pub fn hmac_sha256_prefix(key: &[u8; 32], msg: &[u8]) -> String {
        let sha = |parts: &[&[u8]]| {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            for p in parts {
                ctx.update(p);
            }
            ctx.finish()
        };
        let mut k = [0u8; 64];
        k[..32].copy_from_slice(key);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = sha(&[&ipad, msg]);
        let outer = sha(&[&opad, inner.as_ref()]);
        hex::encode_upper(&outer.as_ref()[..3])
    }
}

#[cfg(unix)]
mod dev_seal_file {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &std::path::Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_with_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/master.key");

        let (k1, outcome) = load_or_create_dev_master_key(&path).unwrap();
        assert_eq!(outcome, DevSealOutcome::Created);
        assert_eq!(mode(&path), 0o600);

        let content = fs::read_to_string(&path).unwrap();
        assert_eq!(content.len(), 65);
        assert!(content.ends_with('\n'));
        assert!(content[..64].chars().all(|c| c.is_ascii_hexdigit()));

        // No temp files left behind.
        let entries: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);

        let (k2, outcome) = load_or_create_dev_master_key(&path).unwrap();
        assert_eq!(outcome, DevSealOutcome::Loaded);
        assert_eq!(k1.key_check_value(), k2.key_check_value());
        let sealed = k1.seal(b"secret", b"ctx").unwrap();
        assert_eq!(k2.open(&sealed, b"ctx").unwrap().expose(), b"secret");
    }

    #[test]
    fn loads_key_written_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let hex_key = "00".repeat(32);
        for content in [
            hex_key.clone(),
            format!("{hex_key}\n"),
            format!("{hex_key}\r\n"),
        ] {
            fs::write(&path, &content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let (key, outcome) = load_or_create_dev_master_key(&path).unwrap();
            assert_eq!(outcome, DevSealOutcome::Loaded);
            let expected = MasterKey::from_bytes(&[0u8; 32]).unwrap();
            assert_eq!(key.key_check_value(), expected.key_check_value());
        }
    }

    #[test]
    fn group_or_world_accessible_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        load_or_create_dev_master_key(&path).unwrap();
        for bad in [0o644, 0o640, 0o604, 0o660, 0o606] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            match load_or_create_dev_master_key(&path) {
                Err(CryptoError::Io(msg)) => assert!(msg.contains("permissions"), "{msg}"),
                Err(other) => panic!("mode {bad:o}: unexpected error {other}"),
                Ok(_) => panic!("mode {bad:o} was accepted"),
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_or_create_dev_master_key(&path).is_ok());
    }

    #[test]
    fn malformed_content_refused_without_leaking_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let almost = format!("{}g", "ab".repeat(31) + "c");
        let cases = [
            String::new(),
            "\n".to_string(),
            "ab".repeat(31),
            "ab".repeat(33),
            almost.clone(),
            format!("{}\n\n", "ab".repeat(32)),
            format!(" {}", "ab".repeat(32)),
            "ab".repeat(1000),
        ];
        for content in cases {
            fs::write(&path, &content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = match load_or_create_dev_master_key(&path) {
                Err(e) => e,
                Ok(_) => panic!("malformed content {content:?} accepted"),
            };
            let msg = err.to_string();
            assert!(matches!(err, CryptoError::InvalidKeyMaterial(_)), "{msg}");
            assert!(!msg.contains("abab"), "{msg}");
            assert!(!msg.contains("'g'"), "{msg}");
        }
    }

    #[test]
    fn directory_instead_of_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            load_or_create_dev_master_key(&path),
            Err(CryptoError::Io(_))
        ));
    }
}
