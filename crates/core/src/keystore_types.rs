//! Connection fields of each keystore type (spec §4.4, decisions.md §3): which are required,
//! secret (write-only, sealed at rest) or locked once connected (identifying).

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{AzureEnvironment, IbmVariant, KeystoreType};
use crate::validate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text(usize),
    Url,
    Port,
    Bool,
    Hex,
    Pem,
    OneOf(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    pub name: &'static str,
    pub required: bool,
    pub secret: bool,
    /// Identifying: cannot change after the keystore is connected.
    pub locked: bool,
    pub kind: FieldKind,
}

const fn f(
    name: &'static str,
    required: bool,
    secret: bool,
    locked: bool,
    kind: FieldKind,
) -> FieldSpec {
    FieldSpec {
        name,
        required,
        secret,
        locked,
        kind,
    }
}

const AZURE_LOCATIONS: &[&str] = &[
    "asia_east",
    "asia_southeast",
    "australia_central",
    "australia_central_2",
    "australia_east",
    "australia_southeast",
    "brazil_south",
    "canada_central",
    "canada_east",
    "china_east",
    "china_east_2",
    "china_north",
    "china_north_2",
    "europe_north",
    "europe_west",
    "france_central",
    "france_south",
    "germany_central",
    "germany_northeast",
    "india_central",
    "india_south",
    "india_west",
    "japan_east",
    "japan_west",
    "korea_central",
    "korea_south",
    "south_africa_north",
    "south_africa_west",
    "uk_south",
    "uk_west",
    "us_central",
    "us_dod_central",
    "us_dod_east",
    "us_east",
    "us_east_2",
    "us_gov_arizona",
    "us_gov_iowa",
    "us_gov_texas",
    "us_gov_virginia",
    "us_north_central",
    "us_south_central",
    "us_west",
    "us_west_2",
    "us_west_central",
];
const KMIP_VERSIONS: &[&str] = &["1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1"];

use FieldKind::*;

const AWS: &[FieldSpec] = &[
    f("aws_region", true, false, true, Text(64)),
    f("aws_access_key_id", true, true, false, Text(128)),
    f("aws_secret_access_key", true, true, false, Text(256)),
    f("aws_endpoint", false, false, false, Url),
];
const AZURE: &[FieldSpec] = &[
    f("azure_service_name", true, false, true, Text(100)),
    f("azure_resource_group", true, false, true, Text(100)),
    f("azure_location", true, false, false, OneOf(AZURE_LOCATIONS)),
    f(
        "azure_service_principal_client_id",
        true,
        false,
        false,
        Text(100),
    ),
    f(
        "azure_service_principal_password",
        true,
        true,
        false,
        Text(512),
    ),
    f("azure_tenant", true, false, true, Text(100)),
    f("azure_subscription_id", true, false, true, Text(100)),
    // Where the client secret and the tokens go: changing them would send the stored secret
    // somewhere new, so they are locked once connected (reconnect to move).
    f(
        "azure_environment",
        true,
        false,
        true,
        OneOf(AzureEnvironment::WIRE),
    ),
    f("azure_vault_url", false, false, true, Url),
    f("azure_login_url", false, false, true, Url),
];
const GOOGLE: &[FieldSpec] = &[
    f("google_credentials", true, true, false, Text(8192)),
    f("google_location", false, false, true, Text(100)),
    f("google_project_id", false, false, true, Text(100)),
    f("google_private_key_id", false, false, true, Text(100)),
    f("google_key_ring", false, false, true, Text(100)),
    f("google_kms_endpoint", false, false, true, Url),
    f("google_token_url", false, false, true, Url),
];
const IBM_EXTERNAL: &[FieldSpec] = &[
    f("ibm_api_endpoint", true, false, true, Url),
    f("ibm_iam_endpoint", true, false, true, Url),
    f("ibm_api_key", true, true, false, Text(512)),
    f("ibm_instance_id", true, false, true, Text(100)),
    f("ibm_key_ring", false, false, false, Text(100)),
];
const CCA: &[FieldSpec] = &[
    f("cca_host", true, false, true, Text(255)),
    f("cca_port", true, false, true, Port),
    f("cca_public_key_hash", true, false, false, Hex),
    f("cca_use_tls", false, false, false, Bool),
    f("cca_trusted_issuer", false, false, false, Text(16384)),
];
const HASHICORP: &[FieldSpec] = &[
    f("hashicorp_address", true, false, true, Url),
    f("hashicorp_token", false, true, false, Text(1024)),
    f("hashicorp_approle_role_id", false, false, false, Text(256)),
    f("hashicorp_approle_secret_id", false, true, false, Text(256)),
    f("hashicorp_transit_mount", false, false, true, Text(128)),
    f("hashicorp_namespace", false, false, true, Text(128)),
    f("hashicorp_ca_cert", false, false, false, Pem),
];
const KMIP: &[FieldSpec] = &[
    f("kmip_host", true, false, true, Text(255)),
    f("kmip_port", false, false, true, Port),
    f("kmip_ca_cert", false, false, false, Pem),
    f("kmip_client_cert", false, false, false, Pem),
    f("kmip_client_key", false, true, false, Pem),
    f("kmip_version", false, false, false, OneOf(KMIP_VERSIONS)),
    f("kmip_username", false, false, false, Text(256)),
    f("kmip_password", false, true, false, Text(256)),
];
const PKCS11: &[FieldSpec] = &[
    f("pkcs11_module", true, false, true, Text(4096)),
    f("pkcs11_token_label", true, false, true, Text(32)),
    f("pkcs11_pin", true, true, false, Text(256)),
    f("pkcs11_kek_label", false, false, true, Text(128)),
];

/// The connection fields of a keystore type (internal keystores have none).
pub fn connection_fields(
    keystore_type: KeystoreType,
    variant: Option<IbmVariant>,
) -> &'static [FieldSpec] {
    match keystore_type {
        KeystoreType::AwsKms => AWS,
        KeystoreType::AzureKeyVault => AZURE,
        KeystoreType::GoogleKms => GOOGLE,
        KeystoreType::IbmCloudKms if variant == Some(IbmVariant::Internal) => &[],
        KeystoreType::IbmCloudKms => IBM_EXTERNAL,
        KeystoreType::Cca => CCA,
        KeystoreType::HashicorpVault => HASHICORP,
        KeystoreType::Kmip => KMIP,
        KeystoreType::Pkcs11 => PKCS11,
    }
}

const ALL_TYPES: [&[FieldSpec]; 8] = [
    AWS,
    AZURE,
    GOOGLE,
    IBM_EXTERNAL,
    CCA,
    HASHICORP,
    KMIP,
    PKCS11,
];

/// Every connection field of every type, so a field of another type can be refused by name.
pub fn is_connection_field(name: &str) -> bool {
    ALL_TYPES
        .iter()
        .any(|set| set.iter().any(|s| s.name == name))
}

/// Whether a field of any keystore type holds a secret (redacted wherever it would be shown).
pub fn is_secret_field(name: &str) -> bool {
    ALL_TYPES
        .iter()
        .any(|set| set.iter().any(|s| s.secret && s.name == name))
}

/// Checks one value and returns it in its stored form.
pub fn check_value(spec: &FieldSpec, value: &Value) -> Result<Value> {
    let name = spec.name;
    let text = |v: &Value| -> Result<String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid_field(name, format!("{name} must be a string")))
    };
    match spec.kind {
        Text(max) => {
            let s = text(value)?;
            validate::short_text(name, &s, max)?;
            Ok(Value::String(s))
        }
        Url => {
            let s = text(value)?;
            validate::short_text(name, &s, 2048)?;
            if !(s.starts_with("https://") || s.starts_with("http://"))
                || s.contains(char::is_whitespace)
            {
                return Err(Error::invalid_field(
                    name,
                    format!("{name} must be an http(s) URL"),
                ));
            }
            Ok(Value::String(s))
        }
        Port => {
            let port = match value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse::<u64>().ok(),
                _ => None,
            };
            match port {
                Some(p) if (1..=65535).contains(&p) => Ok(Value::from(p)),
                _ => Err(Error::invalid_field(
                    name,
                    format!("{name} must be a port number 1-65535"),
                )),
            }
        }
        Bool => value
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| Error::invalid_field(name, format!("{name} must be true or false"))),
        Hex => {
            let s = text(value)?;
            validate::short_text(name, &s, 256)?;
            if !s.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::invalid_field(
                    name,
                    format!("{name} must be hexadecimal"),
                ));
            }
            Ok(Value::String(s))
        }
        Pem => {
            let s = text(value)?;
            validate::short_text(name, &s.replace(['\n', '\r'], " "), 65536)?;
            if !s.contains("-----BEGIN ") {
                return Err(Error::invalid_field(
                    name,
                    format!("{name} must be PEM text"),
                ));
            }
            Ok(Value::String(s))
        }
        OneOf(allowed) => {
            let s = text(value)?;
            if !allowed.contains(&s.as_str()) {
                return Err(Error::invalid_field(
                    name,
                    format!("{name} '{s}' is not one of: {}", allowed.join(", ")),
                ));
            }
            Ok(Value::String(s))
        }
    }
}

/// Fills in identifying fields a connection leaves to its credentials, so they are stored and
/// locked like the others: a Google keystore's project comes from its service-account file when
/// `google_project_id` is not given (a later change of the file cannot move the keystore to
/// another project's key ring).
pub fn fill_from_credentials(keystore_type: KeystoreType, connection: &mut CheckedConnection) {
    use base64::Engine as _;
    if keystore_type != KeystoreType::GoogleKms
        || connection
            .clear
            .get("google_project_id")
            .and_then(Value::as_str)
            .is_some_and(|p| !p.is_empty())
    {
        return;
    }
    let Some(text) = connection
        .secrets
        .get("google_credentials")
        .and_then(Value::as_str)
        .map(str::trim)
    else {
        return;
    };
    let bytes = if text.starts_with('{') {
        Some(text.as_bytes().to_vec())
    } else {
        base64::engine::general_purpose::STANDARD.decode(text).ok()
    };
    let project = bytes
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|json| json["project_id"].as_str().map(str::to_owned))
        .filter(|p| !p.is_empty());
    if let Some(project) = project {
        connection
            .clear
            .insert("google_project_id".into(), Value::String(project));
    }
}

/// Connection fields split into what is stored in clear and what is sealed.
#[derive(Default)]
pub struct CheckedConnection {
    pub clear: Map<String, Value>,
    pub secrets: Map<String, Value>,
}

/// Names only: secret values never reach a log.
impl std::fmt::Debug for CheckedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedConnection")
            .field("clear", &self.clear.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Checks the connection fields of a create request: required present, each value valid.
pub fn check_connection(
    keystore_type: KeystoreType,
    variant: Option<IbmVariant>,
    supplied: &Map<String, Value>,
) -> Result<CheckedConnection> {
    let specs = connection_fields(keystore_type, variant);
    let mut out = CheckedConnection::default();
    for spec in specs {
        match supplied.get(spec.name).filter(|v| !v.is_null()) {
            None if spec.required => return Err(Error::missing_field(spec.name)),
            None => {}
            Some(v) => {
                let checked = check_value(spec, v)?;
                if spec.secret {
                    out.secrets.insert(spec.name.to_owned(), checked);
                } else {
                    out.clear.insert(spec.name.to_owned(), checked);
                }
            }
        }
    }
    refuse_foreign_fields(specs, supplied)?;
    check_combinations(keystore_type, &out)?;
    Ok(out)
}

/// A connection field of another keystore type is a mistake worth naming.
pub fn refuse_foreign_fields(specs: &[FieldSpec], supplied: &Map<String, Value>) -> Result<()> {
    for name in supplied.keys() {
        if is_connection_field(name) && !specs.iter().any(|s| s.name == name) {
            return Err(Error::invalid_field(
                name,
                format!("{name} does not apply to this keystore type"),
            ));
        }
    }
    Ok(())
}

/// Rules that span fields.
pub fn check_combinations(keystore_type: KeystoreType, c: &CheckedConnection) -> Result<()> {
    if keystore_type == KeystoreType::HashicorpVault {
        let token = c.secrets.contains_key("hashicorp_token");
        let role = c.clear.contains_key("hashicorp_approle_role_id");
        let secret = c.secrets.contains_key("hashicorp_approle_secret_id");
        if !(token || (role && secret)) {
            return Err(Error::missing_field("hashicorp_token"));
        }
        if role != secret {
            return Err(Error::invalid_field(
                "hashicorp_approle_secret_id",
                "AppRole login needs both hashicorp_approle_role_id and hashicorp_approle_secret_id",
            ));
        }
    }
    if keystore_type == KeystoreType::Kmip
        && c.clear.contains_key("kmip_client_cert") != c.secrets.contains_key("kmip_client_key")
    {
        return Err(Error::invalid_field(
            "kmip_client_key",
            "a KMIP client certificate needs its private key (kmip_client_key), and the other way round",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn aws_requires_credentials_and_splits_secrets() {
        let c = check_connection(
            KeystoreType::AwsKms,
            None,
            &map(json!({"aws_region": "eu_central_1", "aws_access_key_id": "AKIA", "aws_secret_access_key": "s"})),
        )
        .unwrap();
        assert!(c.clear.contains_key("aws_region"));
        assert!(c.secrets.contains_key("aws_secret_access_key"));
        assert!(!c.clear.contains_key("aws_secret_access_key"));
        let e = check_connection(KeystoreType::AwsKms, None, &map(json!({"aws_region": "x"})))
            .unwrap_err();
        assert!(e.to_string().contains("aws_access_key_id"));
    }

    #[test]
    fn foreign_and_bad_values_are_refused() {
        let e = check_connection(
            KeystoreType::IbmCloudKms,
            Some(IbmVariant::Internal),
            &map(json!({"aws_region": "x"})),
        )
        .unwrap_err();
        assert!(e.to_string().contains("aws_region"));
        let e = check_connection(
            KeystoreType::Cca,
            None,
            &map(json!({"cca_host": "h", "cca_port": 70000, "cca_public_key_hash": "ab"})),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cca_port"));
        let azure = AZURE
            .iter()
            .find(|f| f.name == "azure_environment")
            .unwrap();
        assert!(check_value(azure, &json!("azure_china")).is_ok());
        let e = check_value(azure, &json!("mars")).unwrap_err();
        assert!(
            e.to_string().contains("azure_us_government"),
            "the allowed values are named: {e}"
        );
    }

    #[test]
    fn vault_needs_a_token_or_approle() {
        let e = check_connection(
            KeystoreType::HashicorpVault,
            None,
            &map(json!({"hashicorp_address": "http://127.0.0.1:8200"})),
        );
        assert!(e.is_err());
        assert!(
            check_connection(
                KeystoreType::HashicorpVault,
                None,
                &map(json!({"hashicorp_address": "http://127.0.0.1:8200", "hashicorp_token": "t"}))
            )
            .is_ok()
        );
    }
}
