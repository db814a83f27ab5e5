//! The mapping file: per source keystore, where its secrets come from (an environment variable
//! or a file, never the command line) and which non-secret fields differ at the target; and the
//! keystore bodies and connection tests made from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use keyplane_core::connector::Connectors;
use keyplane_core::keystore_types;
use keyplane_core::model::{IbmVariant, Keystore, KeystoreType, Stamps, VaultRef};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::text;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mapping {
    /// By source keystore name or id.
    #[serde(default)]
    pub(super) keystores: BTreeMap<String, KeystoreMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeystoreMapping {
    /// Secret connection fields, each from an environment variable or a file.
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, SecretSource>,
    /// Non-secret connection fields that differ at the target (an endpoint reached otherwise).
    #[serde(default)]
    pub(super) set: Map<String, Value>,
    /// Leave this keystore (and the copies it holds) out.
    #[serde(default)]
    pub(super) skip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SecretSource {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl SecretSource {
    pub(super) fn read(&self, field: &str) -> anyhow::Result<Zeroizing<String>> {
        match (&self.env, &self.file) {
            (Some(var), None) => std::env::var(var).map(Zeroizing::new).map_err(|_| {
                anyhow::anyhow!(
                    "mapping: {field} names environment variable {var}, which is not set"
                )
            }),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Zeroizing::new(s.trim_end_matches(['\r', '\n']).to_owned()))
                .with_context(|| format!("mapping: reading {field} from {}", path.display())),
            _ => bail!("mapping: {field} needs exactly one of env or file"),
        }
    }
}

impl Mapping {
    pub(super) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the mapping file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("the mapping file {}", path.display()))
    }

    pub(super) fn of(&self, keystore: &Value) -> Option<&KeystoreMapping> {
        self.keystores
            .get(text(keystore, "/id"))
            .or_else(|| self.keystores.get(text(keystore, "/name")))
    }
}

/// The connection a keystore is tested with: the source's non-secret fields, the mapping's
/// overrides and its secrets.
pub(super) fn connection_of(
    keystore: &Value,
    mapping: Option<&KeystoreMapping>,
) -> anyhow::Result<Map<String, Value>> {
    let mut supplied = Map::new();
    if let Some(fields) = keystore.as_object() {
        for (name, value) in fields {
            if keystore_types::is_connection_field(name) && !keystore_types::is_secret_field(name) {
                supplied.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(m) = mapping {
        for (name, value) in &m.set {
            if !keystore_types::is_connection_field(name) || keystore_types::is_secret_field(name) {
                bail!("mapping: '{name}' in set is not a non-secret connection field");
            }
            supplied.insert(name.clone(), value.clone());
        }
        for (name, source) in &m.secrets {
            if !keystore_types::is_secret_field(name) {
                bail!("mapping: '{name}' is not a secret connection field");
            }
            supplied.insert(name.clone(), Value::String(source.read(name)?.to_string()));
        }
    }
    Ok(supplied)
}

pub(super) async fn test_connection(
    keystore: &Value,
    mapping: Option<&KeystoreMapping>,
) -> anyhow::Result<()> {
    let keystore_type = KeystoreType::parse(text(keystore, "/type"))
        .with_context(|| format!("keystore type '{}'", text(keystore, "/type")))?;
    let supplied = connection_of(keystore, mapping)?;
    let checked = keystore_types::check_connection(
        keystore_type,
        IbmVariant::parse(text(keystore, "/ibm_variant")),
        &supplied,
    )?;
    let now = chrono::Utc::now();
    let record = Keystore {
        id: uuid::Uuid::nil(),
        vault: VaultRef {
            id: uuid::Uuid::nil(),
            name: String::new(),
        },
        name: text(keystore, "/name").to_owned(),
        keystore_type,
        ibm_variant: IbmVariant::parse(text(keystore, "/ibm_variant")),
        description: String::new(),
        groups: Vec::new(),
        location: String::new(),
        tls_proxy: String::new(),
        connection: checked.clear,
        secret_fields: Vec::new(),
        sealed_secrets: None,
        stamps: Stamps::new(&keyplane_core::model::Actor("migrate".into()), now),
        revision: 1,
    };
    let connectors = keyplane_connectors::BuiltIn::default();
    let Some(connector) = connectors.connect(&record, &checked.secrets) else {
        return Ok(());
    };
    connector?.test().await.map_err(|f| anyhow::anyhow!("{f}"))
}

/// Keystore fields a UKO server returns that are not part of a creation request.
pub(super) const KEYSTORE_READ_ONLY: &[&str] = &[
    "id",
    "vault",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "href",
];

pub(super) fn keystore_body(
    keystore: &Value,
    mapping: Option<&KeystoreMapping>,
    vault: &str,
) -> anyhow::Result<Value> {
    let mut body = Map::new();
    for (name, value) in keystore.as_object().into_iter().flatten() {
        if KEYSTORE_READ_ONLY.contains(&name.as_str()) || keystore_types::is_secret_field(name) {
            continue;
        }
        // Empty optional fields are left to their defaults.
        if value.as_str() == Some("") && keystore_types::is_connection_field(name) {
            continue;
        }
        body.insert(name.clone(), value.clone());
    }
    if let Some(m) = mapping {
        for (name, value) in &m.set {
            body.insert(name.clone(), value.clone());
        }
        for (name, source) in &m.secrets {
            body.insert(name.clone(), Value::String(source.read(name)?.to_string()));
        }
    }
    body.insert("vault".into(), json!({"id": vault}));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keystore_body_leaves_out_what_the_source_made_and_takes_the_mapped_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let source = json!({
            "id": "k1", "href": "https://uko/keystores/k1", "vault": {"id": "v1", "name": "x"},
            "created_at": "t", "updated_at": "t", "created_by": "a", "updated_by": "a",
            "type": "aws_kms", "name": "aws", "groups": ["aws"], "description": "",
            "aws_region": "us_east_1", "aws_access_key_id": "", "aws_secret_access_key": "",
            "aws_endpoint": "",
        });
        let mapping: Mapping = toml::from_str(&format!(
            "[keystores.aws]\nsecrets = {{ aws_access_key_id = {{ file = {path:?} }}, \
             aws_secret_access_key = {{ file = {path:?} }} }}\nset = {{ aws_region = \"eu_west_1\" }}\n",
            path = secret.display().to_string()
        ))
        .unwrap();
        let body = keystore_body(&source, mapping.of(&source), "v2").unwrap();
        assert_eq!(
            body,
            json!({"type": "aws_kms", "name": "aws", "groups": ["aws"], "description": "",
                   "aws_region": "eu_west_1", "aws_access_key_id": "s3cret",
                   "aws_secret_access_key": "s3cret", "vault": {"id": "v2"}})
        );
    }

    #[test]
    fn a_mapping_refuses_what_it_cannot_mean() {
        assert!(toml::from_str::<Mapping>("[keystores.a]\ncolour = 1\n").is_err());
        let both: Mapping = toml::from_str(
            "[keystores.a]\nsecrets = { hashicorp_token = { env = \"X\", file = \"/f\" } }\n",
        )
        .unwrap();
        let err = both.keystores["a"].secrets["hashicorp_token"]
            .read("hashicorp_token")
            .unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let not_secret: Mapping =
            toml::from_str("[keystores.a]\nsecrets = { aws_region = { env = \"X\" } }\n").unwrap();
        let err = connection_of(&json!({"name": "a"}), not_secret.keystores.get("a")).unwrap_err();
        assert!(err.to_string().contains("not a secret"), "{err}");
    }
}
