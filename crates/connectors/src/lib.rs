//! Connectors to external keystores, built from stored keystore connections.

pub mod aws_kms;
pub mod azure_key_vault;
pub mod google_kms;
pub mod hashicorp_vault;
mod http;
pub mod ibm_key_protect;
pub mod kmip;
mod pace;
pub mod pkcs11;

use std::sync::Arc;

use keyplane_core::connector::{Connector, Connectors};
use keyplane_core::error::Error;
use keyplane_core::model::{AzureEnvironment, Keystore, KeystoreType};
use serde_json::{Map, Value};

/// The connectors this build has.
#[derive(Default)]
pub struct BuiltIn {
    /// The PKCS#11 modules `pkcs11` keystores may load: the operator's choice, never the API
    /// caller's (a module is code the server runs).
    pub pkcs11_modules: Vec<std::path::PathBuf>,
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

fn vault(keystore: &Keystore, secrets: &Map<String, Value>) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    let address = text(clear, "hashicorp_address")
        .ok_or_else(|| Error::missing_field("hashicorp_address"))?;
    let credentials = match (
        text(secrets, "hashicorp_token"),
        text(clear, "hashicorp_approle_role_id"),
        text(secrets, "hashicorp_approle_secret_id"),
    ) {
        (Some(token), _, _) => hashicorp_vault::Credentials::Token(token),
        (None, Some(role_id), Some(secret_id)) => {
            hashicorp_vault::Credentials::AppRole { role_id, secret_id }
        }
        _ => return Err(Error::missing_field("hashicorp_token")),
    };
    let connector = hashicorp_vault::HashicorpVault::new(hashicorp_vault::Settings {
        address,
        credentials,
        mount: text(clear, "hashicorp_transit_mount").unwrap_or_else(|| "transit".into()),
        namespace: text(clear, "hashicorp_namespace"),
        ca_cert: text(clear, "hashicorp_ca_cert"),
    })
    .map_err(|e| Error::invalid_field("hashicorp_ca_cert", e))?;
    Ok(Arc::new(connector))
}

fn aws(keystore: &Keystore, secrets: &Map<String, Value>) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    Ok(Arc::new(aws_kms::AwsKms::new(aws_kms::Settings {
        region: text(clear, "aws_region").ok_or_else(|| Error::missing_field("aws_region"))?,
        access_key_id: text(secrets, "aws_access_key_id")
            .ok_or_else(|| Error::missing_field("aws_access_key_id"))?,
        secret_access_key: text(secrets, "aws_secret_access_key")
            .ok_or_else(|| Error::missing_field("aws_secret_access_key"))?,
        endpoint: text(clear, "aws_endpoint"),
    })))
}

fn azure(keystore: &Keystore, secrets: &Map<String, Value>) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    let required = |name: &str| text(clear, name).ok_or_else(|| Error::missing_field(name));
    let environment = required("azure_environment")?;
    for field in ["azure_vault_url", "azure_login_url"] {
        if let Some(url) = text(clear, field) {
            http::check_endpoint(&url).map_err(|e| Error::invalid_field(field, e))?;
        }
    }
    let service_name = required("azure_service_name")?;
    if text(clear, "azure_vault_url").is_none() && !azure_key_vault::is_vault_name(&service_name) {
        return Err(Error::invalid_field(
            "azure_service_name",
            "names the vault in its URL: 3 to 24 letters, digits and hyphens",
        ));
    }
    let connector = azure_key_vault::AzureKeyVault::new(azure_key_vault::Settings {
        tenant: required("azure_tenant")?,
        client_id: required("azure_service_principal_client_id")?,
        client_secret: text(secrets, "azure_service_principal_password")
            .ok_or_else(|| Error::missing_field("azure_service_principal_password"))?,
        environment: AzureEnvironment::parse(&environment).ok_or_else(|| {
            Error::invalid_field(
                "azure_environment",
                format!("must be one of {}", AzureEnvironment::allowed()),
            )
        })?,
        login_url: text(clear, "azure_login_url"),
        vault_url: text(clear, "azure_vault_url"),
        service_name,
    })
    .map_err(Error::internal)?;
    Ok(Arc::new(connector))
}

fn google(keystore: &Keystore, secrets: &Map<String, Value>) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    let required = |name: &str| text(clear, name).ok_or_else(|| Error::missing_field(name));
    for field in ["google_kms_endpoint", "google_token_url"] {
        if let Some(url) = text(clear, field) {
            http::check_endpoint(&url).map_err(|e| Error::invalid_field(field, e))?;
        }
    }
    let connector = google_kms::GoogleKms::new(google_kms::Settings {
        credentials: text(secrets, "google_credentials")
            .ok_or_else(|| Error::missing_field("google_credentials"))?,
        project_id: text(clear, "google_project_id"),
        private_key_id: text(clear, "google_private_key_id"),
        location: required("google_location")?,
        key_ring: required("google_key_ring")?,
        endpoint: text(clear, "google_kms_endpoint"),
        token_url: text(clear, "google_token_url"),
    })
    .map_err(|(field, why)| Error::invalid_field(field, why))?;
    Ok(Arc::new(connector))
}

fn pkcs11(
    keystore: &Keystore,
    secrets: &Map<String, Value>,
    allowed: &[std::path::PathBuf],
) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    let required = |name: &str| text(clear, name).ok_or_else(|| Error::missing_field(name));
    let module = std::path::PathBuf::from(required("pkcs11_module")?);
    if !allowed.contains(&module) {
        return Err(Error::invalid_field(
            "pkcs11_module",
            format!(
                "{} is not a PKCS#11 module this server may load (the operator lists them in KEYPLANE_PKCS11_KEYSTORE_MODULES)",
                module.display()
            ),
        ));
    }
    Ok(Arc::new(pkcs11::Pkcs11Keystore::new(pkcs11::Settings {
        module,
        token_label: required("pkcs11_token_label")?,
        pin: zeroize::Zeroizing::new(
            text(secrets, "pkcs11_pin").ok_or_else(|| Error::missing_field("pkcs11_pin"))?,
        ),
        kek_label: text(clear, "pkcs11_kek_label")
            .unwrap_or_else(|| pkcs11::DEFAULT_KEK_LABEL.to_owned()),
    })))
}

fn kmip(keystore: &Keystore, secrets: &Map<String, Value>) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    let host = text(clear, "kmip_host").ok_or_else(|| Error::missing_field("kmip_host"))?;
    let port = match clear.get("kmip_port") {
        None | Some(Value::Null) => 5696,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::invalid_field("kmip_port", "must be a port number"))?,
    };
    let version = match text(clear, "kmip_version") {
        None => None,
        Some(v) => Some(kmip::protocol::Version::parse(&v).ok_or_else(|| {
            Error::invalid_field(
                "kmip_version",
                format!("keyplane speaks KMIP 1.2, 1.3, 1.4, 2.0 and 2.1, not {v}"),
            )
        })?),
    };
    let credential = match (text(clear, "kmip_username"), text(secrets, "kmip_password")) {
        (Some(username), Some(password)) => Some(kmip::protocol::Credential {
            username,
            password: zeroize::Zeroizing::new(password),
        }),
        (None, None) => None,
        (Some(_), None) => return Err(Error::missing_field("kmip_password")),
        (None, Some(_)) => return Err(Error::missing_field("kmip_username")),
    };
    let (ca_cert, client_cert) = (text(clear, "kmip_ca_cert"), text(clear, "kmip_client_cert"));
    let client_key = text(secrets, "kmip_client_key").map(zeroize::Zeroizing::new);
    let connector = kmip::Kmip::new(kmip::Settings {
        host,
        port,
        tls: kmip::TlsSettings {
            ca_cert: ca_cert.as_deref(),
            client_cert: client_cert.as_deref(),
            client_key: client_key.as_deref().map(String::as_str),
        },
        version,
        credential,
    })
    .map_err(|(field, why)| Error::invalid_field(field, why))?;
    Ok(Arc::new(connector))
}

/// Key Protect and HPCS instances (not the internal variant, which is this keyplane itself).
fn key_protect(
    keystore: &Keystore,
    secrets: &Map<String, Value>,
) -> Result<Arc<dyn Connector>, Error> {
    let clear = &keystore.connection;
    let required = |name: &str| text(clear, name).ok_or_else(|| Error::missing_field(name));
    let connector = ibm_key_protect::KeyProtect::new(ibm_key_protect::Settings {
        api_endpoint: required("ibm_api_endpoint")?,
        iam_endpoint: required("ibm_iam_endpoint")?,
        api_key: text(secrets, "ibm_api_key").ok_or_else(|| Error::missing_field("ibm_api_key"))?,
        instance_id: required("ibm_instance_id")?,
        key_ring: text(clear, "ibm_key_ring"),
    })
    .map_err(Error::internal)?;
    Ok(Arc::new(connector))
}

impl Connectors for BuiltIn {
    fn supports(&self, keystore_type: KeystoreType) -> bool {
        matches!(
            keystore_type,
            KeystoreType::HashicorpVault
                | KeystoreType::AwsKms
                | KeystoreType::IbmCloudKms
                | KeystoreType::AzureKeyVault
                | KeystoreType::GoogleKms
                | KeystoreType::Pkcs11
                | KeystoreType::Kmip
        )
    }

    fn connect(
        &self,
        keystore: &Keystore,
        secrets: &Map<String, Value>,
    ) -> Option<Result<Arc<dyn Connector>, Error>> {
        match keystore.keystore_type {
            KeystoreType::HashicorpVault => Some(vault(keystore, secrets)),
            KeystoreType::AwsKms => Some(aws(keystore, secrets)),
            KeystoreType::AzureKeyVault => Some(azure(keystore, secrets)),
            KeystoreType::GoogleKms => Some(google(keystore, secrets)),
            KeystoreType::Pkcs11 => Some(pkcs11(keystore, secrets, &self.pkcs11_modules)),
            KeystoreType::Kmip => Some(kmip(keystore, secrets)),
            KeystoreType::IbmCloudKms if !keystore.is_internal() => {
                Some(key_protect(keystore, secrets))
            }
            _ => None,
        }
    }
}
