//! Wire enumerations of UKO v4 (spec §5), each with one spelling on the wire.

/// Declares a closed enumeration with its wire spelling, parsing and serde.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every wire spelling, in declaration order.
            pub const WIRE: &'static [&'static str] = &[$($wire),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the wire spelling; `None` for anything else.
            pub fn parse(value: &str) -> Option<Self> {
                match value { $($wire => Some($name::$variant),)+ _ => None }
            }

            /// The accepted spellings, for error messages.
            pub fn allowed() -> String {
                Self::WIRE.join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "'{raw}' is not one of: {}", Self::allowed()
                    ))
                })
            }
        }
    };
}

wire_enum!(
    /// Keystore types: UKO's five and keyplane's three extensions.
    KeystoreType {
        AwsKms => "aws_kms",
        AzureKeyVault => "azure_key_vault",
        Cca => "cca",
        GoogleKms => "google_kms",
        IbmCloudKms => "ibm_cloud_kms",
        HashicorpVault => "hashicorp_vault",
        Kmip => "kmip",
        Pkcs11 => "pkcs11",
    }
);

wire_enum!(IbmVariant { Internal => "internal", Hpcs => "hpcs", KeyProtect => "key_protect" });

wire_enum!(
    Algorithm {
        Aes => "aes",
        Des => "des",
        Dilithium => "dilithium",
        Ec => "ec",
        Hmac => "hmac",
        Rsa => "rsa",
    }
);

wire_enum!(
    KeyState {
        PreActivation => "pre_activation",
        Active => "active",
        Deactivated => "deactivated",
        Destroyed => "destroyed",
        Compromised => "compromised",
        DestroyedCompromised => "destroyed_compromised",
    }
);

wire_enum!(InitialKeyState { PreActivation => "pre_activation", Active => "active" });

wire_enum!(TemplateType { UserDefined => "user_defined", Shadow => "shadow", System => "system" });

wire_enum!(TemplateState { Archived => "archived", Unarchived => "unarchived" });

wire_enum!(ManagingSystem { Web => "web", Workstation => "workstation" });

wire_enum!(
    InstanceType {
        SecretKey => "secret_key",
        PrivateKey => "private_key",
        PublicKey => "public_key",
        KeyPair => "key_pair",
    }
);

wire_enum!(
    KeystoreDeleteMode {
        Restrict => "restrict",
        Disconnect => "disconnect",
        Deactivate => "deactivate",
        Destroy => "destroy",
    }
);

wire_enum!(
    HealthStatus {
        Ok => "ok",
        NotResponding => "not_responding",
        ConfigurationError => "configuration_error",
    }
);

wire_enum!(
    KeystoreKeyStatus {
        NotPresent => "not_present",
        Active => "active",
        NotActive => "not_active",
        WrongKey => "wrong_key",
        Error => "error",
    }
);

wire_enum!(SyncFlag { Ok => "ok", OutOfSync => "out_of_sync", Error => "error" });

wire_enum!(
    SyncFlagDetail {
        PreActiveKeyIsNotPresentInKeystore => "pre_active_key_is_not_present_in_keystore",
        PreActiveKeyIsPresentInKeystore => "pre_active_key_is_present_in_keystore",
        ActiveKeyIsActiveInKeystore => "active_key_is_active_in_keystore",
        ActiveKeyIsNotActiveInKeystore => "active_key_is_not_active_in_keystore",
        DeactivatedKeyIsDeactivatedInKeystore => "deactivated_key_is_deactivated_in_keystore",
        DeactivatedKeyIsNotDeactivatedInKeystore => "deactivated_key_is_not_deactivated_in_keystore",
        DestroyedKeyIsNotPresentInKeystore => "destroyed_key_is_not_present_in_keystore",
        DestroyedKeyIsPresentInKeystore => "destroyed_key_is_present_in_keystore",
        ConnectionError => "connection_error",
        TargetKeystoreRemovedByUser => "target_keystore_removed_by_user",
        TargetKeystoreRemovedByUserContainsAnActiveKey => "target_keystore_removed_by_user_contains_an_active_key",
    }
);

wire_enum!(ProtectionLevel { Hsm => "hsm", Software => "software" });

wire_enum!(
    AzureKeyOperation {
        Encrypt => "encrypt",
        Decrypt => "decrypt",
        Sign => "sign",
        Verify => "verify",
        WrapKey => "wrap_key",
        UnwrapKey => "unwrap_key",
    }
);

wire_enum!(
    GoogleKeyPurpose {
        EncryptDecrypt => "encrypt_decrypt",
        AsymmetricSign => "asymmetric_sign",
        AsymmetricDecrypt => "asymmetric_decrypt",
        Mac => "mac",
    }
);

wire_enum!(
    GoogleKmsAlgorithm {
        GoogleSymmetricEncryption => "google_symmetric_encryption",
        HmacSha256 => "hmac_sha256",
        EcSignP256Sha256 => "ec_sign_p256_sha256",
        EcSignP384Sha384 => "ec_sign_p384_sha384",
        EcSignSecp256k1Sha256 => "ec_sign_secp256k1_sha256",
        RsaDecryptOaep2048Sha1 => "rsa_decrypt_oaep_2048_sha1",
        RsaDecryptOaep3072Sha1 => "rsa_decrypt_oaep_3072_sha1",
        RsaDecryptOaep4096Sha1 => "rsa_decrypt_oaep_4096_sha1",
        RsaDecryptOaep2048Sha256 => "rsa_decrypt_oaep_2048_sha256",
        RsaDecryptOaep3072Sha256 => "rsa_decrypt_oaep_3072_sha256",
        RsaDecryptOaep4096Sha256 => "rsa_decrypt_oaep_4096_sha256",
        RsaDecryptOaep4096Sha512 => "rsa_decrypt_oaep_4096_sha512",
        RsaSignPkcs12048Sha256 => "rsa_sign_pkcs1_2048_sha256",
        RsaSignPkcs13072Sha256 => "rsa_sign_pkcs1_3072_sha256",
        RsaSignPkcs14096Sha256 => "rsa_sign_pkcs1_4096_sha256",
        RsaSignPkcs14096Sha512 => "rsa_sign_pkcs1_4096_sha512",
        RsaSignPss2048Sha256 => "rsa_sign_pss_2048_sha256",
        RsaSignPss3072Sha256 => "rsa_sign_pss_3072_sha256",
        RsaSignPss4096Sha256 => "rsa_sign_pss_4096_sha256",
        RsaSignPss4096Sha512 => "rsa_sign_pss_4096_sha512",
        RsaSignRawPkcs12048 => "rsa_sign_raw_pkcs1_2048",
        RsaSignRawPkcs13072 => "rsa_sign_raw_pkcs1_3072",
        RsaSignRawPkcs14096 => "rsa_sign_raw_pkcs1_4096",
    }
);

wire_enum!(
    CcaUsageControl {
        SignatureOnly => "signature_only",
        KeyManagementOnly => "key_management_only",
        SignatureAndKeyManagement => "signature_and_key_management",
    }
);

wire_enum!(CcaKeyType { Cipher => "cipher", Data => "data", Exporter => "exporter", Importer => "importer" });

wire_enum!(
    AzureEnvironment {
        Azure => "azure",
        AzureChina => "azure_china",
        AzureGermany => "azure_germany",
        AzureUsGovernment => "azure_us_government",
    }
);

impl KeyState {
    /// A key in this state holds material in its target keystores (seed rule: blocks a restricted disconnect).
    pub fn lives_in_keystores(self) -> bool {
        matches!(self, Self::Active | Self::Deactivated | Self::Compromised)
    }
}

impl From<InitialKeyState> for KeyState {
    fn from(value: InitialKeyState) -> Self {
        match value {
            InitialKeyState::PreActivation => Self::PreActivation,
            InitialKeyState::Active => Self::Active,
        }
    }
}

impl Algorithm {
    /// Sizes keyplane can generate for this algorithm (decisions.md §2 "Algorithms").
    pub fn supported_sizes(self) -> &'static [u32] {
        match self {
            Self::Aes => &[128, 192, 256],
            Self::Rsa => &[2048, 3072, 4096],
            Self::Ec => &[256, 384, 521],
            Self::Hmac => &[256, 384, 512],
            Self::Des | Self::Dilithium => &[],
        }
    }

    /// What a key instance of this algorithm is called in a keystore.
    pub fn instance_type(self) -> InstanceType {
        match self {
            Self::Aes | Self::Des | Self::Hmac => InstanceType::SecretKey,
            Self::Rsa | Self::Ec | Self::Dilithium => InstanceType::KeyPair,
        }
    }
}
