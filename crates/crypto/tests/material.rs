use keyplane_crypto::{
    CryptoError, EcCurve, KeyKind, VerificationPattern, generate_key, verification_patterns,
};

fn assert_pub_hash(patterns: &[VerificationPattern]) {
    assert_eq!(patterns.len(), 1);
    assert_eq!(patterns[0].method, "PUB-HASH-SHA-256");
    assert_eq!(patterns[0].value.len(), 64);
    assert!(
        patterns[0]
            .value
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    );
}

fn check_symmetric(kind: KeyKind, len: usize, method: &str) {
    let a = generate_key(kind).unwrap();
    let b = generate_key(kind).unwrap();
    assert_eq!(a.material.len(), len, "{kind:?}");
    assert_ne!(a.material.expose(), b.material.expose(), "{kind:?}");
    assert_eq!(a.verification_patterns.len(), 1);
    assert_eq!(a.verification_patterns[0].method, method);
    assert_eq!(a.verification_patterns[0].value.len(), 6);
    assert_eq!(
        verification_patterns(kind, a.material.expose()).unwrap(),
        a.verification_patterns
    );
    // A different key gives a different check value (2^-24 chance of a false failure).
    assert_ne!(a.verification_patterns, b.verification_patterns, "{kind:?}");
    // Wrong length for the declared kind is rejected.
    assert!(matches!(
        verification_patterns(kind, &a.material.expose()[1..]),
        Err(CryptoError::InvalidKeyLength)
    ));
}

#[test]
fn aes_keys() {
    for (bits, len) in [(128, 16), (192, 24), (256, 32)] {
        check_symmetric(KeyKind::Aes { bits }, len, "ENC-ZERO");
    }
}

#[test]
fn hmac_keys() {
    for (bits, len) in [(256, 32), (384, 48), (512, 64)] {
        check_symmetric(KeyKind::Hmac { bits }, len, "MAC-ZERO");
    }
}

#[test]
fn hmac_kcv_matches_hash_of_key_size() {
    use aws_lc_rs::hmac;
    let key = [0x5au8; 64];
    for (bits, alg) in [
        (256, hmac::HMAC_SHA256),
        (384, hmac::HMAC_SHA384),
        (512, hmac::HMAC_SHA512),
    ] {
        let key = &key[..bits as usize / 8];
        let tag = hmac::sign(&hmac::Key::new(alg, key), &[0u8; 16]);
        let patterns = verification_patterns(KeyKind::Hmac { bits }, key).unwrap();
        assert_eq!(
            patterns,
            vec![VerificationPattern {
                method: "MAC-ZERO".into(),
                value: hex::encode_upper(&tag.as_ref()[..3]),
            }],
            "HMAC-{bits}"
        );
    }
}

#[test]
fn aes_known_kcv() {
    let key = hex::decode("000102030405060708090A0B0C0D0E0F").unwrap();
    let patterns = verification_patterns(KeyKind::Aes { bits: 128 }, &key).unwrap();
    assert_eq!(
        patterns,
        vec![VerificationPattern {
            method: "ENC-ZERO".into(),
            value: "C6A13B".into()
        }]
    );
}

fn check_asymmetric(kind: KeyKind) {
    let generated = generate_key(kind).unwrap();
    assert_pub_hash(&generated.verification_patterns);
    // Starts with a DER SEQUENCE, and re-parsing yields the same public key.
    assert_eq!(generated.material.expose()[0], 0x30);
    assert_eq!(
        verification_patterns(kind, generated.material.expose()).unwrap(),
        generated.verification_patterns,
        "{kind:?}"
    );
}

#[test]
fn ec_keys() {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    };
    for curve in [EcCurve::P256, EcCurve::P384, EcCurve::P521] {
        check_asymmetric(KeyKind::Ec(curve));
    }

    // The material is a usable PKCS#8 key whose SPKI hash is the pattern.
    let generated = generate_key(KeyKind::Ec(EcCurve::P256)).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, generated.material.expose())
            .unwrap();
    let sig = pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), b"msg")
        .unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref())
        .verify(b"msg", sig.as_ref())
        .unwrap();
    use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
    let spki: PublicKeyX509Der = pair.public_key().as_der().unwrap();
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
    assert_eq!(
        generated.verification_patterns[0].value,
        hex::encode_upper(hash.as_ref())
    );
}

#[test]
fn ec_material_for_wrong_curve_rejected() {
    let p256 = generate_key(KeyKind::Ec(EcCurve::P256)).unwrap();
    assert!(matches!(
        verification_patterns(KeyKind::Ec(EcCurve::P384), p256.material.expose()),
        Err(CryptoError::InvalidKeyMaterial(_))
    ));
    assert!(matches!(
        verification_patterns(KeyKind::Rsa { bits: 2048 }, p256.material.expose()),
        Err(CryptoError::InvalidKeyMaterial(_))
    ));
    assert!(matches!(
        verification_patterns(KeyKind::Ec(EcCurve::P256), b"not a key"),
        Err(CryptoError::InvalidKeyMaterial(_))
    ));
}

#[test]
fn rsa_2048_and_3072() {
    check_asymmetric(KeyKind::Rsa { bits: 2048 });
    check_asymmetric(KeyKind::Rsa { bits: 3072 });

    let generated = generate_key(KeyKind::Rsa { bits: 2048 }).unwrap();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(generated.material.expose()).unwrap();
    assert_eq!(pair.public_modulus_len(), 256);
    // Stored 2048-bit material declared as another size is rejected.
    assert!(matches!(
        verification_patterns(KeyKind::Rsa { bits: 3072 }, generated.material.expose()),
        Err(CryptoError::InvalidKeyMaterial(_))
    ));
}

#[test]
fn rsa_4096() {
    check_asymmetric(KeyKind::Rsa { bits: 4096 });
}

#[test]
fn unsupported_sizes() {
    let kinds = [
        KeyKind::Aes { bits: 512 },
        KeyKind::Aes { bits: 64 },
        KeyKind::Aes { bits: 0 },
        KeyKind::Hmac { bits: 128 },
        KeyKind::Hmac { bits: 257 },
        KeyKind::Rsa { bits: 1024 },
        KeyKind::Rsa { bits: 8192 },
    ];
    for kind in kinds {
        assert!(
            matches!(generate_key(kind), Err(CryptoError::Unsupported(_))),
            "{kind:?}"
        );
        assert!(
            matches!(
                verification_patterns(kind, &[0u8; 64]),
                Err(CryptoError::Unsupported(_))
            ),
            "{kind:?}"
        );
    }
}
