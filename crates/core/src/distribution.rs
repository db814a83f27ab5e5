//! Where keys go and what keystores hold: target resolution (spec §7.2), per-keystore status
//! (spec §4.3), algorithm support per keystore type, and the seed's disconnect rule.

use crate::error::{Error, ErrorCode, Result};
use crate::model::*;

/// The keystores a template entry distributes to: same vault (the caller passes only the
/// vault's keystores), same type, and the entry's group among the keystore's groups.
pub fn resolve_targets<'a>(
    entry: &TemplateKeystore,
    vault_keystores: &'a [Keystore],
) -> Vec<&'a Keystore> {
    vault_keystores
        .iter()
        .filter(|k| k.keystore_type == entry.keystore_type && k.groups.contains(&entry.group))
        .collect()
}

/// What one keystore was seen to hold for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    NotPresent,
    Enabled,
    Disabled,
}

/// Compares the managed state with what a keystore holds (the pairing table of spec §4.3).
pub fn compare(
    state: KeyState,
    seen: Observation,
) -> (KeystoreKeyStatus, SyncFlag, SyncFlagDetail) {
    use KeyState as K;
    use Observation as O;
    use SyncFlagDetail as D;
    let status = match seen {
        O::NotPresent => KeystoreKeyStatus::NotPresent,
        O::Enabled => KeystoreKeyStatus::Active,
        O::Disabled => KeystoreKeyStatus::NotActive,
    };
    let (ok, detail) = match (state, seen) {
        (K::PreActivation, O::NotPresent) => (true, D::PreActiveKeyIsNotPresentInKeystore),
        (K::PreActivation, _) => (false, D::PreActiveKeyIsPresentInKeystore),
        (K::Active, O::Enabled) => (true, D::ActiveKeyIsActiveInKeystore),
        (K::Active, _) => (false, D::ActiveKeyIsNotActiveInKeystore),
        (K::Deactivated | K::Compromised, O::Enabled) => {
            (false, D::DeactivatedKeyIsNotDeactivatedInKeystore)
        }
        (K::Deactivated | K::Compromised, _) => (true, D::DeactivatedKeyIsDeactivatedInKeystore),
        (K::Destroyed | K::DestroyedCompromised, O::NotPresent) => {
            (true, D::DestroyedKeyIsNotPresentInKeystore)
        }
        (K::Destroyed | K::DestroyedCompromised, _) => (false, D::DestroyedKeyIsPresentInKeystore),
    };
    (
        status,
        if ok {
            SyncFlag::Ok
        } else {
            SyncFlag::OutOfSync
        },
        detail,
    )
}

/// Status of a key in an internal keystore, read from the copy that keystore really holds.
pub fn internal_status(
    key: &ManagedKey,
    keystore: &KeystoreRef,
    copy: Option<&InternalCopy>,
) -> KeyStatusInKeystore {
    let seen = match copy {
        None => Observation::NotPresent,
        Some(c) if c.enabled => Observation::Enabled,
        Some(_) => Observation::Disabled,
    };
    let (status, keystore_sync_flag, keystore_sync_flag_detail) = compare(key.state, seen);
    KeyStatusInKeystore {
        keystore: keystore.clone(),
        status,
        keystore_sync_flag,
        keystore_sync_flag_detail,
        error: None,
        key_id_in_keystore: copy.map(|c| c.key_id_in_keystore.to_string()),
        detail_in_keystore: None,
        removed: false,
    }
}

/// Status of a key in an external keystore that could not be read or changed.
pub fn error_status(
    keystore: &KeystoreRef,
    code: ErrorCode,
    message: String,
) -> KeyStatusInKeystore {
    KeyStatusInKeystore {
        keystore: keystore.clone(),
        status: KeystoreKeyStatus::Error,
        keystore_sync_flag: SyncFlag::Error,
        keystore_sync_flag_detail: SyncFlagDetail::ConnectionError,
        error: Some(StatusError {
            code: code.as_str().to_owned(),
            message,
        }),
        key_id_in_keystore: None,
        detail_in_keystore: None,
        removed: false,
    }
}

/// Status of a key in an external keystore while no connector can reach it: an honest error.
pub fn unreachable_status(keystore: &KeystoreRef) -> KeyStatusInKeystore {
    error_status(
        keystore,
        ErrorCode::KeystoreUnreachable,
        connector_unavailable_message(keystore.keystore_type),
    )
}

pub fn connector_unavailable_message(keystore_type: KeystoreType) -> String {
    format!(
        "no connector for keystore type {keystore_type} is available in this keyplane version; \
         the connection is stored but nothing is distributed to or read from it"
    )
}

/// Marks a status entry as belonging to a keystore that was deleted or disconnected.
pub fn mark_removed(entry: &mut KeyStatusInKeystore) {
    let held_active = entry.status == KeystoreKeyStatus::Active;
    entry.removed = true;
    entry.error = None;
    if held_active {
        entry.keystore_sync_flag = SyncFlag::OutOfSync;
        entry.keystore_sync_flag_detail =
            SyncFlagDetail::TargetKeystoreRemovedByUserContainsAnActiveKey;
    } else {
        entry.keystore_sync_flag = SyncFlag::Ok;
        entry.keystore_sync_flag_detail = SyncFlagDetail::TargetKeystoreRemovedByUser;
    }
}

/// The seed's rule for `DELETE /keystores/{id}?mode=restrict`: refused while any key that
/// targets the keystore is active or deactivated. Templates never block.
pub fn check_restricted_disconnect(keystore: &Keystore, targeting: &[ManagedKey]) -> Result<()> {
    let blocking: Vec<&ManagedKey> = targeting
        .iter()
        .filter(|k| k.state.lives_in_keystores())
        .collect();
    if blocking.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let params: Vec<String> = blocking
        .iter()
        .take(SHOWN)
        .map(|k| format!("{} ({}, {})", k.id, k.label, k.state))
        .collect();
    let more = blocking.len().saturating_sub(SHOWN);
    let mut message = format!(
        "keystore '{}' cannot be disconnected: {} managed key(s) targeting it are active or deactivated; \
         only pre-active or destroyed keys may remain. Blocking keys: {}",
        keystore.name,
        blocking.len(),
        params.join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(Error::Conflict {
        code: ErrorCode::KeystoreNotEmpty,
        message,
        params,
    })
}

/// Algorithms and sizes a keystore type accepts (decisions.md §2 "Algorithms").
pub fn supported_sizes(keystore_type: KeystoreType, algorithm: Algorithm) -> &'static [u32] {
    use Algorithm::*;
    use KeystoreType::*;
    match (keystore_type, algorithm) {
        (_, Des | Dilithium) => &[],
        (IbmCloudKms, a) => a.supported_sizes(),
        // What keyplane installs in a token: AES keys (the connector unwraps AES key objects).
        (Pkcs11, Aes) => &[128, 192, 256],
        (AwsKms, Aes) => &[256],
        (AwsKms | AzureKeyVault | HashicorpVault, a) if a != Aes => a.supported_sizes(),
        (AzureKeyVault, Aes) => &[128, 192, 256],
        (HashicorpVault, Aes) => &[128, 256],
        (GoogleKms, Aes) => &[256],
        (GoogleKms, Rsa) => &[2048, 3072, 4096],
        (GoogleKms, Ec) => &[256, 384],
        (GoogleKms, Hmac) => &[256],
        (Kmip, Aes | Hmac | Rsa | Ec) => algorithm.supported_sizes(),
        (Cca, Aes) => &[128, 192, 256],
        _ => &[],
    }
}

/// Whether a URL's host is this machine (`localhost` or a loopback address), where only a local
/// test double of a remote keystore can run.
pub fn is_local_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// Refuses a key that cannot live in `keystore`, as far as its connection tells: AES keys
/// (`oct-HSM`) exist only in an Azure Managed HSM (`https://{name}.managedhsm.…`), never in a
/// key vault (`azure_vault_url` naming one, or none: the vault of `azure_service_name`). A
/// connection to this machine (a local test double) tells nothing; the connector decides then.
pub fn check_placement(keystore: &Keystore, algorithm: Algorithm) -> Result<()> {
    if keystore.keystore_type != KeystoreType::AzureKeyVault || algorithm != Algorithm::Aes {
        return Ok(());
    }
    let url = keystore
        .connection
        .get("azure_vault_url")
        .and_then(serde_json::Value::as_str)
        .and_then(|u| url::Url::parse(u).ok());
    if let Some(host) = url.as_ref().and_then(url::Url::host) {
        if is_local_host(&host) {
            return Ok(());
        }
        if let url::Host::Domain(d) = host
            && d.to_ascii_lowercase().contains(".managedhsm.")
        {
            return Ok(());
        }
    }
    Err(Error::invalid_field(
        "keystores",
        format!(
            "keystore '{}' is an Azure key vault: AES keys exist only in an Azure Managed HSM (an azure_vault_url of https://NAME.managedhsm.…)",
            keystore.name
        ),
    ))
}

/// What a Google Cloud KMS key holding a managed key is: its purpose and version algorithm,
/// from the template's `google_key_purpose` and `google_kms_algorithm` where given, else the
/// usual ones for the key (AES-256: symmetric encryption; RSA: OAEP SHA-256 decryption, or PSS
/// signing when the purpose is signing; EC: ECDSA on its curve; HMAC: HMAC-SHA256). `Err` says
/// why the key cannot be such a key; the curve secp256k1 is refused (keyplane's EC keys are on
/// the NIST curves).
pub fn google_key_version(
    algorithm: Algorithm,
    size: u32,
    properties: &KeystoreKeyProperties,
) -> std::result::Result<(GoogleKeyPurpose, GoogleKmsAlgorithm), String> {
    use GoogleKeyPurpose as P;
    let purpose = properties.google_key_purpose;
    let chosen = properties.google_kms_algorithm;
    let default = match (algorithm, size, purpose) {
        (Algorithm::Aes, 256, None | Some(P::EncryptDecrypt)) => {
            Some((P::EncryptDecrypt, "google_symmetric_encryption".to_owned()))
        }
        (Algorithm::Hmac, 256, None | Some(P::Mac)) => Some((P::Mac, "hmac_sha256".to_owned())),
        (Algorithm::Rsa, n, Some(P::AsymmetricSign)) => {
            Some((P::AsymmetricSign, format!("rsa_sign_pss_{n}_sha256")))
        }
        (Algorithm::Rsa, n, None | Some(P::AsymmetricDecrypt)) => {
            Some((P::AsymmetricDecrypt, format!("rsa_decrypt_oaep_{n}_sha256")))
        }
        (Algorithm::Ec, 256, None | Some(P::AsymmetricSign)) => {
            Some((P::AsymmetricSign, "ec_sign_p256_sha256".to_owned()))
        }
        (Algorithm::Ec, 384, None | Some(P::AsymmetricSign)) => {
            Some((P::AsymmetricSign, "ec_sign_p384_sha384".to_owned()))
        }
        _ => None,
    };
    let Some(chosen) = chosen else {
        return default
            .and_then(|(p, a)| GoogleKmsAlgorithm::parse(&a).map(|a| (p, a)))
            .ok_or_else(|| match purpose {
                Some(p) => format!(
                    "a Google Cloud KMS key of purpose {p} cannot hold {algorithm}-{size} material"
                ),
                None => format!("Google Cloud KMS holds no {algorithm}-{size} keys"),
            });
    };
    // The algorithm's name tells its family, its purpose and, for RSA, its modulus size.
    let name = chosen.as_str();
    let fits = match algorithm {
        Algorithm::Aes => size == 256 && name == "google_symmetric_encryption",
        Algorithm::Hmac => size == 256 && name == "hmac_sha256",
        Algorithm::Rsa => {
            name.starts_with("rsa_") && name.split('_').any(|p| p == size.to_string())
        }
        Algorithm::Ec => matches!(
            (size, name),
            (256, "ec_sign_p256_sha256") | (384, "ec_sign_p384_sha384")
        ),
        _ => false,
    };
    if !fits {
        return Err(format!(
            "google_kms_algorithm {name} cannot hold {algorithm}-{size} material"
        ));
    }
    let implied = if name == "google_symmetric_encryption" {
        P::EncryptDecrypt
    } else if name.starts_with("hmac_") {
        P::Mac
    } else if name.starts_with("rsa_decrypt_") {
        P::AsymmetricDecrypt
    } else {
        P::AsymmetricSign
    };
    match purpose {
        Some(p) if p != implied => Err(format!(
            "google_kms_algorithm {name} is for purpose {implied}, not {p}"
        )),
        _ => Ok((implied, chosen)),
    }
}

pub fn check_algorithm(keystore_type: KeystoreType, algorithm: Algorithm, size: u32) -> Result<()> {
    if matches!(algorithm, Algorithm::Des | Algorithm::Dilithium) {
        return Err(Error::invalid_field(
            "key.algorithm",
            format!("algorithm {algorithm} is not supported by keyplane"),
        ));
    }
    if !algorithm.supported_sizes().contains(&size) {
        return Err(Error::invalid_field(
            "key.size",
            format!(
                "size {size} is not valid for {algorithm}; use one of {:?}",
                algorithm.supported_sizes()
            ),
        ));
    }
    let sizes = supported_sizes(keystore_type, algorithm);
    if !sizes.contains(&size) {
        let hint = if sizes.is_empty() {
            format!("{keystore_type} keystores do not accept {algorithm} keys")
        } else {
            format!("{keystore_type} keystores accept {algorithm} keys of sizes {sizes:?} only")
        };
        return Err(Error::invalid_field(
            "key.size",
            format!("{algorithm} {size}: {hint}"),
        ));
    }
    Ok(())
}

/// The name a key copy gets in a keystore: the key's label, fitted to the target's naming rule (spec §6).
/// The refusal of an adoption naming a remote key another managed key already governs.
pub fn copy_governed(copy: &crate::ports::ExternalCopy, holder: uuid::Uuid) -> crate::Error {
    let remote = copy.remote_id.as_deref().unwrap_or_default();
    crate::Error::Conflict {
        code: crate::error::ErrorCode::CopyNotProven,
        message: format!(
            "the remote key '{remote}' is already governed by managed key '{holder}'; a remote \
             key is adopted by one managed key only, and nothing was recorded"
        ),
        params: vec![holder.to_string(), remote.to_owned()],
    }
}

pub fn label_in_keystore(label: &str, keystore_type: KeystoreType) -> String {
    let (max, allowed): (usize, fn(char) -> bool) = match keystore_type {
        KeystoreType::AwsKms => (250, |c| c.is_ascii_alphanumeric() || "/_-".contains(c)),
        KeystoreType::AzureKeyVault => (127, |c| c.is_ascii_alphanumeric() || c == '-'),
        KeystoreType::GoogleKms => (63, |c| c.is_ascii_alphanumeric() || "_-".contains(c)),
        KeystoreType::IbmCloudKms => (50, |c| c.is_ascii_alphanumeric() || c == ' '),
        _ => (255, |c| c.is_ascii_alphanumeric() || "._ /-".contains(c)),
    };
    let replacement = if allowed('-') { '-' } else { ' ' };
    let mut name: String = label
        .chars()
        .map(|c| if allowed(c) { c } else { replacement })
        .take(max)
        .collect();
    if keystore_type == KeystoreType::AwsKms && name.to_ascii_uppercase().starts_with("AWS/") {
        name.insert_str(0, "k-");
        name.truncate(max);
    }
    if keystore_type == KeystoreType::IbmCloudKms && name.chars().count() < 2 {
        name.push_str("  ");
        name.truncate(2);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn keystore(name: &str, t: KeystoreType, groups: &[&str]) -> Keystore {
        Keystore {
            id: Uuid::new_v4(),
            vault: VaultRef {
                id: Uuid::nil(),
                name: "v".into(),
            },
            name: name.into(),
            keystore_type: t,
            ibm_variant: Some(IbmVariant::Internal),
            description: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            location: String::new(),
            tls_proxy: String::new(),
            connection: Default::default(),
            secret_fields: vec![],
            sealed_secrets: None,
            stamps: Stamps::new(&Actor("t".into()), Utc::now()),
            revision: 1,
        }
    }

    #[test]
    fn targets_match_type_and_group() {
        let all = vec![
            keystore("a", KeystoreType::IbmCloudKms, &["prod", "eu"]),
            keystore("b", KeystoreType::IbmCloudKms, &["dev"]),
            keystore("c", KeystoreType::AwsKms, &["prod"]),
        ];
        let entry = TemplateKeystore {
            keystore_type: KeystoreType::IbmCloudKms,
            group: "prod".into(),
            naming_scheme: None,
            properties: Default::default(),
        };
        let names: Vec<_> = resolve_targets(&entry, &all)
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(names, ["a"]);
    }

    #[test]
    fn pairing_table() {
        use KeyState as K;
        use Observation as O;
        assert_eq!(compare(K::Active, O::Enabled).1, SyncFlag::Ok);
        assert_eq!(
            compare(K::Active, O::Disabled).2,
            SyncFlagDetail::ActiveKeyIsNotActiveInKeystore
        );
        assert_eq!(compare(K::Deactivated, O::NotPresent).1, SyncFlag::Ok);
        assert_eq!(
            compare(K::Destroyed, O::Disabled).2,
            SyncFlagDetail::DestroyedKeyIsPresentInKeystore
        );
        assert_eq!(
            compare(K::PreActivation, O::NotPresent).2,
            SyncFlagDetail::PreActiveKeyIsNotPresentInKeystore
        );
    }

    #[test]
    fn algorithm_matrix() {
        assert!(check_algorithm(KeystoreType::IbmCloudKms, Algorithm::Rsa, 3072).is_ok());
        assert!(check_algorithm(KeystoreType::AwsKms, Algorithm::Aes, 128).is_err());
        assert!(check_algorithm(KeystoreType::IbmCloudKms, Algorithm::Aes, 100).is_err());
        assert!(check_algorithm(KeystoreType::IbmCloudKms, Algorithm::Des, 168).is_err());
        assert!(check_algorithm(KeystoreType::Kmip, Algorithm::Rsa, 2048).is_ok());
        assert!(check_algorithm(KeystoreType::Kmip, Algorithm::Des, 168).is_err());
        assert!(check_algorithm(KeystoreType::Pkcs11, Algorithm::Rsa, 2048).is_err());
    }

    fn key(label: &str, state: KeyState) -> ManagedKey {
        let now = Utc::now();
        ManagedKey {
            id: Uuid::new_v4(),
            vault: VaultRef {
                id: Uuid::nil(),
                name: "v".into(),
            },
            template: TemplateRef {
                id: Uuid::nil(),
                name: "T".into(),
                types: vec![],
                version: 1,
            },
            template_version: 1,
            version: 1,
            label: label.into(),
            description: String::new(),
            state,
            algorithm: Algorithm::Aes,
            size: 256,
            verification_patterns: vec![],
            activation_date: None,
            expiration_date: None,
            label_tags: vec![],
            tags: vec![],
            instances: vec![],
            status_in_keystores: vec![],
            deactivate_on_rotation: false,
            managing_systems: vec![],
            rotated_at: None,
            deactivated_at: None,
            label_from_scheme: false,
            rotation_interval: None,
            deactivate_on_expiration: false,
            destroy_after_deactivation: None,
            adopted_versions: 0,
            stamps: Stamps::new(&Actor("t".into()), now),
            revision: 1,
        }
    }

    #[test]
    fn seed_rule_blocks_only_keys_living_in_the_keystore() {
        let ks = keystore("ks", KeystoreType::AwsKms, &["g"]);
        let harmless = [
            key("pre", KeyState::PreActivation),
            key("gone", KeyState::Destroyed),
        ];
        assert!(check_restricted_disconnect(&ks, &harmless).is_ok());
        assert!(check_restricted_disconnect(&ks, &[]).is_ok());
        for state in [
            KeyState::Active,
            KeyState::Deactivated,
            KeyState::Compromised,
        ] {
            let blocking = key("blocker", state);
            let Err(Error::Conflict {
                code,
                message,
                params,
            }) = check_restricted_disconnect(&ks, &[harmless[0].clone(), blocking.clone()])
            else {
                panic!("a {state} key must block");
            };
            assert_eq!(code, ErrorCode::KeystoreNotEmpty);
            assert_eq!(params.len(), 1);
            assert!(params[0].contains(&blocking.id.to_string()) && params[0].contains("blocker"));
            assert!(message.contains("blocker") && !message.contains("pre ("));
        }
        let many: Vec<ManagedKey> = (0..25)
            .map(|i| key(&format!("k{i}"), KeyState::Active))
            .collect();
        let Err(Error::Conflict {
            message, params, ..
        }) = check_restricted_disconnect(&ks, &many)
        else {
            panic!("must block");
        };
        assert_eq!(params.len(), 20, "at most 20 blocking keys are listed");
        assert!(message.contains("25 managed key(s)") && message.contains("and 5 more"));
    }

    #[test]
    fn removed_keystores_are_flagged_by_what_they_held() {
        let ks = keystore("ks", KeystoreType::IbmCloudKms, &["g"]);
        let active = key("a", KeyState::Active);
        let copy = InternalCopy {
            keystore_id: ks.id,
            managed_key_id: active.id,
            key_id_in_keystore: Uuid::new_v4(),
            label: "a".into(),
            enabled: true,
            version: 1,
            key_ring: "default".into(),
        };
        let mut held = internal_status(&active, &ks.reference(), Some(&copy));
        mark_removed(&mut held);
        assert!(held.removed);
        assert_eq!(
            held.keystore_sync_flag_detail,
            SyncFlagDetail::TargetKeystoreRemovedByUserContainsAnActiveKey
        );
        let mut empty = internal_status(&key("p", KeyState::PreActivation), &ks.reference(), None);
        mark_removed(&mut empty);
        assert_eq!(
            empty.keystore_sync_flag_detail,
            SyncFlagDetail::TargetKeystoreRemovedByUser
        );
        assert_eq!(empty.keystore_sync_flag, SyncFlag::Ok);
    }

    #[test]
    fn labels_fit_the_target() {
        assert_eq!(
            label_in_keystore("a.b c", KeystoreType::AzureKeyVault),
            "a-b-c"
        );
        assert_eq!(label_in_keystore("AWS/x", KeystoreType::AwsKms), "k-AWS/x");
        assert_eq!(label_in_keystore("a_b", KeystoreType::IbmCloudKms), "a b");
    }

    #[test]
    fn a_google_key_version_follows_the_template_or_the_usual_choice() {
        let props = |purpose: Option<&str>, algorithm: Option<&str>| KeystoreKeyProperties {
            google_key_purpose: purpose.and_then(GoogleKeyPurpose::parse),
            google_kms_algorithm: algorithm.and_then(GoogleKmsAlgorithm::parse),
            ..Default::default()
        };
        let chosen = |a, size, p: &KeystoreKeyProperties| {
            google_key_version(a, size, p).map(|(p, a)| (p.as_str(), a.as_str()))
        };
        assert_eq!(
            chosen(Algorithm::Aes, 256, &props(None, None)),
            Ok(("encrypt_decrypt", "google_symmetric_encryption"))
        );
        assert_eq!(
            chosen(Algorithm::Rsa, 4096, &props(None, None)),
            Ok(("asymmetric_decrypt", "rsa_decrypt_oaep_4096_sha256"))
        );
        assert_eq!(
            chosen(Algorithm::Rsa, 2048, &props(Some("asymmetric_sign"), None)),
            Ok(("asymmetric_sign", "rsa_sign_pss_2048_sha256"))
        );
        assert_eq!(
            chosen(
                Algorithm::Rsa,
                3072,
                &props(None, Some("rsa_sign_raw_pkcs1_3072"))
            ),
            Ok(("asymmetric_sign", "rsa_sign_raw_pkcs1_3072"))
        );
        assert_eq!(
            chosen(Algorithm::Ec, 384, &props(None, None)),
            Ok(("asymmetric_sign", "ec_sign_p384_sha384"))
        );
        assert_eq!(
            chosen(Algorithm::Hmac, 256, &props(None, None)),
            Ok(("mac", "hmac_sha256"))
        );
        for (a, size, p) in [
            (Algorithm::Aes, 128, props(None, None)),
            (Algorithm::Aes, 256, props(Some("mac"), None)),
            (
                Algorithm::Rsa,
                2048,
                props(None, Some("rsa_decrypt_oaep_3072_sha256")),
            ),
            (
                Algorithm::Rsa,
                2048,
                props(Some("asymmetric_decrypt"), Some("rsa_sign_pss_2048_sha256")),
            ),
            (
                Algorithm::Ec,
                256,
                props(None, Some("ec_sign_secp256k1_sha256")),
            ),
            (Algorithm::Ec, 521, props(None, None)),
        ] {
            assert!(google_key_version(a, size, &p).is_err(), "{a}-{size} {p:?}");
        }
    }
}
