//! The sealing format against published AES-256-GCM vectors and a second implementation
//! (RustCrypto's `aes-gcm`), plus properties: round trips, and any flipped bit or other AAD fails.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use keyplane_crypto::MasterKey;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// Our sealed form: version byte ‖ nonce ‖ ciphertext ‖ tag.
fn sealed_form(nonce: &[u8], ciphertext_and_tag: &[u8]) -> Vec<u8> {
    [&[1u8][..], nonce, ciphertext_and_tag].concat()
}

#[test]
fn opens_the_gcm_spec_test_case_16() {
    // McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256, AAD).
    let key = MasterKey::from_bytes(&hex(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    ))
    .unwrap();
    let nonce = hex("cafebabefacedbaddecaf888");
    let plaintext = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let ciphertext = hex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    );
    let tag = hex("76fc6ece0f4e1768cddf8853bb2d551b");
    let sealed = sealed_form(&nonce, &[ciphertext, tag].concat());
    assert_eq!(
        key.open(&sealed, &aad).unwrap().expose(),
        plaintext.as_slice()
    );
}

#[test]
fn opens_the_gcm_spec_test_case_13_empty_everything() {
    // Test case 13: AES-256, zero key, zero IV, no plaintext, no AAD: only the tag.
    let key = MasterKey::from_bytes(&[0u8; 32]).unwrap();
    let sealed = sealed_form(&[0u8; 12], &hex("530f8afbc74536b9a963b4f1c4cb738b"));
    assert!(key.open(&sealed, b"").unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn agrees_with_a_second_implementation(
        key in proptest::array::uniform32(any::<u8>()),
        plaintext in proptest::collection::vec(any::<u8>(), 0..256),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let ours = MasterKey::from_bytes(&key).unwrap();
        let theirs = Aes256Gcm::new_from_slice(&key).unwrap();
        // Ours sealed, theirs opens.
        let sealed = ours.seal(&plaintext, &aad).unwrap();
        let (nonce, body) = sealed[1..].split_at(12);
        let opened = theirs.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad }).unwrap();
        prop_assert_eq!(&opened, &plaintext);
        // Theirs sealed, ours opens.
        let nonce = [7u8; 12];
        let body = theirs.encrypt(Nonce::from_slice(&nonce), Payload { msg: &plaintext, aad: &aad }).unwrap();
        let reopened = ours.open(&sealed_form(&nonce, &body), &aad).unwrap();
        prop_assert_eq!(reopened.expose(), plaintext.as_slice());
    }

    #[test]
    fn any_flipped_bit_or_other_aad_fails(
        plaintext in proptest::collection::vec(any::<u8>(), 1..64),
        aad in proptest::collection::vec(any::<u8>(), 0..32),
        bit in any::<usize>(),
    ) {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal(&plaintext, &aad).unwrap();
        let opened = key.open(&sealed, &aad).unwrap();
        prop_assert_eq!(opened.expose(), plaintext.as_slice());
        let mut flipped = sealed.clone();
        let bit = bit % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(key.open(&flipped, &aad).is_err());
        let mut other_aad = aad.clone();
        other_aad.push(0);
        prop_assert!(key.open(&sealed, &other_aad).is_err());
    }
}
