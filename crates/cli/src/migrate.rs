//! `keyplane migrate from-uko`: reads a UKO v4 estate (vaults, templates, keystores, managed
//! keys) from its server and recreates it in Keyplane. Keys whose copies live in external
//! keystores are adopted by reference (each copy proven there by the target server); keys whose
//! material stays in the source's internal keystores cannot move. Every step is an ordinary API
//! call on the target, so each is authorised and audited there; what was done is kept in a
//! state file, so a second run changes nothing and an interrupted one resumes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keyplane_client::{Client, ClientError, Credential, Settings};
use keyplane_core::connector::Connectors;
use keyplane_core::keystore_types;
use keyplane_core::model::{IbmVariant, Keystore, KeystoreType, Stamps, VaultRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::remote::{self, ConnectArgs, Output};

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Bring a UKO estate across: vaults, templates, keystores, and keys adopted by reference.
    FromUko(Box<FromUko>),
}

/// The target is the Keyplane server of `--url` (with `--token` or `--api-key`, as for every
/// client verb); the source is `--source-url`.
#[derive(Args)]
pub struct FromUko {
    #[command(flatten)]
    target: ConnectArgs,
    /// The source UKO v4 endpoint (UKO_URL, as UKO's own CLI reads it).
    #[arg(long, env = "UKO_URL")]
    source_url: String,
    /// Where the source's API key is exchanged for a token: `{iam-url}/identity/token`.
    #[arg(
        long,
        env = "IBMCLOUD_IAM_URL",
        default_value = "https://iam.cloud.ibm.com"
    )]
    iam_url: String,
    /// A file holding the source's IAM API key; otherwise it is read from the environment
    /// variable IBMCLOUD_API_KEY. Never given on the command line.
    #[arg(long)]
    source_api_key_file: Option<PathBuf>,
    /// PEM CA certificates the source is trusted with instead of the system's.
    #[arg(long)]
    source_ca_cert: Option<PathBuf>,
    /// The mapping file (TOML): per source keystore, where its secrets come from.
    #[arg(long)]
    mapping: Option<PathBuf>,
    /// What was done so far, kept between runs: a rerun skips it, an interrupted run resumes.
    #[arg(long, default_value = "keyplane-migration.json")]
    state: PathBuf,
    /// Print the plan (as a table, or JSON with --output json) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the final verification report, as JSON, to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Requests per second to the source, at most.
    #[arg(long, default_value_t = 10)]
    source_rate: u32,
    /// For keys that cannot move, create a successor key in Keyplane from this template (by
    /// name, in the migrated vault); repeat per template, or give `all`.
    #[arg(long = "create-successors", value_name = "TEMPLATE")]
    successors_for: Vec<String>,
}

pub async fn run(command: MigrateCommand) -> anyhow::Result<()> {
    match command {
        MigrateCommand::FromUko(args) => from_uko(*args).await,
    }
}

// ---------------------------------------------------------------------------------------------
// The mapping file.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    /// By source keystore name or id.
    #[serde(default)]
    keystores: BTreeMap<String, KeystoreMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeystoreMapping {
    /// Secret connection fields, each from an environment variable or a file.
    #[serde(default)]
    secrets: BTreeMap<String, SecretSource>,
    /// Non-secret connection fields that differ at the target (an endpoint reached otherwise).
    #[serde(default)]
    set: Map<String, Value>,
    /// Leave this keystore (and the copies it holds) out.
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSource {
    env: Option<String>,
    file: Option<PathBuf>,
}

impl SecretSource {
    fn read(&self, field: &str) -> anyhow::Result<Zeroizing<String>> {
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
    fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the mapping file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("the mapping file {}", path.display()))
    }

    fn of(&self, keystore: &Value) -> Option<&KeystoreMapping> {
        self.keystores
            .get(text(keystore, "/id"))
            .or_else(|| self.keystores.get(text(keystore, "/name")))
    }
}

// ---------------------------------------------------------------------------------------------
// The state kept between runs.

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    source: String,
    /// Source id → target id, per kind.
    #[serde(default)]
    vaults: BTreeMap<String, String>,
    #[serde(default)]
    keystores: BTreeMap<String, String>,
    #[serde(default)]
    templates: BTreeMap<String, String>,
    #[serde(default)]
    keys: BTreeMap<String, String>,
    /// Source key id → the successor key made for it.
    #[serde(default)]
    successors: BTreeMap<String, String>,
}

impl State {
    fn load(path: &Path, source: &str) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let state: Self = serde_json::from_str(&text)
                    .with_context(|| format!("the state file {}", path.display()))?;
                if state.source != source {
                    bail!(
                        "the state file {} is of a migration from {}, not {source}; give another --state",
                        path.display(),
                        state.source
                    );
                }
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                source: source.to_owned(),
                ..Self::default()
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written whole to a new file, then renamed over the old: a kill leaves one or the other.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

// ---------------------------------------------------------------------------------------------
// The source, read at a bounded rate.

struct Source {
    client: Client,
    every: Duration,
    last: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Page size of source reads.
const PAGE: u32 = 100;
/// Attempts per source read that is throttled or fails on the server's side.
const SOURCE_ATTEMPTS: u32 = 6;

impl Source {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=SOURCE_ATTEMPTS {
            {
                let mut last = self.last.lock().await;
                if let Some(at) = *last {
                    tokio::time::sleep_until(at + self.every).await;
                }
                *last = Some(tokio::time::Instant::now());
            }
            match self.client.get(path).await {
                Ok(reply) => return Ok(reply.body),
                Err(e)
                    if attempt < SOURCE_ATTEMPTS
                        && (matches!(e.status(), Some(429 | 500..=599))
                            || matches!(e, ClientError::Unreachable { .. })) =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!("reading {path} from the source: {e}"));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Every item of a source list, page by page.
    async fn list(&self, path: &str, collection: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        loop {
            let page = self
                .get(&format!(
                    "{path}{separator}limit={PAGE}&offset={}",
                    items.len()
                ))
                .await?;
            let batch = page[collection].as_array().cloned().unwrap_or_default();
            let done = batch.len() < PAGE as usize;
            items.extend(batch);
            let total = page["total_count"].as_u64().unwrap_or(0) as usize;
            if done || items.len() >= total {
                return Ok(items);
            }
        }
    }
}

/// Everything the source shows.
struct Estate {
    vaults: Vec<Value>,
    templates: Vec<Value>,
    keystores: Vec<Value>,
    keys: Vec<Value>,
    /// Earlier versions' states of rotated keys, by key id.
    versions: BTreeMap<String, Vec<Value>>,
}

const EVERY_STATE: &str =
    "pre_activation,active,deactivated,compromised,destroyed,destroyed_compromised";

async fn read_estate(source: &Source) -> anyhow::Result<Estate> {
    let vaults = source.list("/api/v4/vaults", "vaults").await?;
    let templates = source.list("/api/v4/templates", "templates").await?;
    let keystores = source.list("/api/v4/keystores", "keystores").await?;
    let keys = source
        .list(
            &format!("/api/v4/managed_keys?state={EVERY_STATE}"),
            "managed_keys",
        )
        .await?;
    let mut versions = BTreeMap::new();
    for key in &keys {
        if key["version"].as_u64().unwrap_or(1) > 1 {
            let id = text(key, "/id");
            let list = source
                .list(
                    &format!("/api/v4/managed_keys/{id}/versions"),
                    "managed_keys",
                )
                .await?;
            versions.insert(id.to_owned(), list);
        }
    }
    Ok(Estate {
        vaults,
        templates,
        keystores,
        keys,
        versions,
    })
}

// ---------------------------------------------------------------------------------------------
// The plan.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Create,
    Adopt,
    /// Already in Keyplane (done by an earlier run, or there before).
    Exists,
    Skip,
    CannotMove,
}

#[derive(Debug, Clone, Serialize)]
struct Step {
    kind: &'static str,
    source_id: String,
    name: String,
    action: Action,
    /// Why, for anything but a plain create or adopt.
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_id: Option<String>,
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn is_internal(keystore: &Value) -> bool {
    text(keystore, "/type") == "ibm_cloud_kms" && text(keystore, "/ibm_variant") == "internal"
}

/// What Keyplane holds already, read once from the target.
struct Present {
    vaults: Vec<Value>,
    templates: Vec<Value>,
    keystores: Vec<Value>,
}

async fn read_present(target: &Client) -> anyhow::Result<Present> {
    Ok(Present {
        vaults: target
            .list_all("/api/v4/vaults?limit=1000", "vaults")
            .await?,
        templates: target
            .list_all("/api/v4/templates?limit=1000", "templates")
            .await?,
        keystores: target
            .list_all("/api/v4/keystores?limit=1000", "keystores")
            .await?,
    })
}

struct Planner<'a> {
    estate: &'a Estate,
    mapping: &'a Mapping,
    state: &'a State,
    present: &'a Present,
}

impl Planner<'_> {
    fn vault_target(&self, source_id: &str) -> Option<String> {
        if let Some(id) = self.state.vaults.get(source_id) {
            return Some(id.clone());
        }
        let name = self
            .estate
            .vaults
            .iter()
            .find(|v| text(v, "/id") == source_id)
            .map(|v| text(v, "/name"))?;
        self.present
            .vaults
            .iter()
            .find(|v| text(v, "/name") == name)
            .map(|v| text(v, "/id").to_owned())
    }

    /// The same name in the same (migrated) vault.
    fn in_vault_target(&self, kind: &str, item: &Value) -> Option<String> {
        let (done, list) = match kind {
            "keystore" => (&self.state.keystores, &self.present.keystores),
            _ => (&self.state.templates, &self.present.templates),
        };
        if let Some(id) = done.get(text(item, "/id")) {
            return Some(id.clone());
        }
        let vault = self.vault_target(text(item, "/vault/id"))?;
        list.iter()
            .find(|t| text(t, "/vault/id") == vault && text(t, "/name") == text(item, "/name"))
            .map(|t| text(t, "/id").to_owned())
    }

    fn keystore_step(&self, keystore: &Value) -> Step {
        let mut step = Step {
            kind: "keystore",
            source_id: text(keystore, "/id").to_owned(),
            name: text(keystore, "/name").to_owned(),
            action: Action::Create,
            reason: String::new(),
            target_id: None,
        };
        if let Some(id) = self.in_vault_target("keystore", keystore) {
            step.action = Action::Exists;
            step.target_id = Some(id);
        } else if self.mapping.of(keystore).is_some_and(|m| m.skip) {
            step.action = Action::Skip;
            step.reason = "skipped by the mapping file".into();
        } else if is_internal(keystore) {
            step.reason =
                "a new, empty internal keystore: the source's keys there cannot move".into();
        } else if let Some(missing) = self.missing_secrets(keystore) {
            step.action = Action::Skip;
            step.reason = format!(
                "the mapping file supplies no {missing} (the source does not show secrets)"
            );
        }
        step
    }

    /// The secret connection fields the source masks, the keystore needs, and the mapping does
    /// not supply.
    fn missing_secrets(&self, keystore: &Value) -> Option<String> {
        let mapped = |name: &str| {
            self.mapping
                .of(keystore)
                .is_some_and(|m| m.secrets.contains_key(name))
        };
        let Some(keystore_type) = KeystoreType::parse(text(keystore, "/type")) else {
            return Some("connection for an unknown keystore type".into());
        };
        let variant = IbmVariant::parse(text(keystore, "/ibm_variant"));
        // Either a token or an AppRole secret opens OpenBao/Vault.
        if keystore_type == KeystoreType::HashicorpVault {
            return (!mapped("hashicorp_token") && !mapped("hashicorp_approle_secret_id"))
                .then(|| "hashicorp_token or hashicorp_approle_secret_id".into());
        }
        let missing: Vec<&str> = keystore_types::connection_fields(keystore_type, variant)
            .iter()
            .filter(|spec| spec.secret && spec.required && !mapped(spec.name))
            .map(|spec| spec.name)
            .collect();
        (!missing.is_empty()).then(|| missing.join(", "))
    }

    fn key_step(&self, key: &Value, keystores: &[Step], present_keys: &[String]) -> Step {
        let id = text(key, "/id").to_owned();
        let mut step = Step {
            kind: "managed_key",
            source_id: id.clone(),
            name: text(key, "/label").to_owned(),
            action: Action::Adopt,
            reason: String::new(),
            target_id: None,
        };
        if let Some(done) = self.state.keys.get(&id) {
            step.action = Action::Exists;
            step.target_id = Some(done.clone());
            return step;
        }
        if present_keys.contains(&id) {
            step.action = Action::Exists;
            step.target_id = Some(id);
            return step;
        }
        let state = text(key, "/state");
        let copies = copies_of(self.estate, key, keystores);
        match state {
            "pre_activation" => {
                step.action = Action::CannotMove;
                step.reason = "pre-active: its material exists only in the source".into();
            }
            "destroyed" | "destroyed_compromised" => {
                step.reason = "destroyed: its record is kept, with no copies".into();
            }
            _ if copies.is_empty() => {
                step.action = Action::CannotMove;
                let internal = key["status_in_keystores"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| {
                        self.estate
                            .keystores
                            .iter()
                            .any(|k| text(k, "/id") == text(s, "/keystore/id") && is_internal(k))
                    });
                step.reason = if internal {
                    "its material stays in the source's internal keystore (HSM)".into()
                } else {
                    "no copy in a keystore that is migrated".into()
                };
            }
            _ => {
                step.reason = format!(
                    "{} cop{} proven at adoption: {}",
                    copies.len(),
                    if copies.len() == 1 { "y" } else { "ies" },
                    copies
                        .iter()
                        .map(|(k, s)| format!("{} in {}", text(s, "/key_id_in_keystore"), k.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        step
    }
}

// ---------------------------------------------------------------------------------------------
// Connections, tested from here before anything is written.

fn connection_of(
    keystore: &Value,
    mapping: Option<&KeystoreMapping>,
) -> anyhow::Result<(Map<String, Value>, Zeroizing<String>)> {
    let mut clear = Map::new();
    let mut secrets = Map::new();
    if let Some(fields) = keystore.as_object() {
        for (name, value) in fields {
            if keystore_types::is_connection_field(name) && !keystore_types::is_secret_field(name) {
                clear.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(m) = mapping {
        for (name, value) in &m.set {
            if !keystore_types::is_connection_field(name) || keystore_types::is_secret_field(name) {
                bail!("mapping: '{name}' in set is not a non-secret connection field");
            }
            clear.insert(name.clone(), value.clone());
        }
        for (name, source) in &m.secrets {
            if !keystore_types::is_secret_field(name) {
                bail!("mapping: '{name}' is not a secret connection field");
            }
            secrets.insert(name.clone(), Value::String(source.read(name)?.to_string()));
        }
    }
    // Secrets travel as one JSON text that is zeroized when dropped.
    let sealed = Zeroizing::new(serde_json::to_string(&secrets)?);
    for v in secrets.values_mut() {
        if let Value::String(s) = v {
            zeroize::Zeroize::zeroize(s);
        }
    }
    Ok((clear, sealed))
}

async fn test_connection(
    keystore: &Value,
    mapping: Option<&KeystoreMapping>,
) -> anyhow::Result<()> {
    let keystore_type = KeystoreType::parse(text(keystore, "/type"))
        .with_context(|| format!("keystore type '{}'", text(keystore, "/type")))?;
    let (clear, secrets) = connection_of(keystore, mapping)?;
    let secrets: Map<String, Value> = serde_json::from_str(&secrets)?;
    let mut supplied = clear;
    supplied.extend(secrets);
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

// ---------------------------------------------------------------------------------------------
// The run.

/// What the run did, per object, for the report.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    kind: &'static str,
    source_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_id: Option<String>,
    /// `migrated`, `differs`, `not_migrated`, `cannot_move`, `skipped`.
    result: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

async fn from_uko(args: FromUko) -> anyhow::Result<()> {
    let api_key = match &args.source_api_key_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => Zeroizing::new(std::env::var("IBMCLOUD_API_KEY").map_err(|_| {
            anyhow::anyhow!(
                "no source API key: give --source-api-key-file, or set IBMCLOUD_API_KEY"
            )
        })?),
    };
    let source_ca = args
        .source_ca_cert
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let mapping = Mapping::load(args.mapping.as_deref())?;
    let source_url = args.source_url.trim_end_matches('/').to_owned();
    let mut state = State::load(&args.state, &source_url)?;
    let source = Source {
        client: Client::connect(Settings {
            url: source_url.clone(),
            credential: Credential::ApiKey(api_key.to_string()),
            ca_cert_pem: source_ca,
            iam_url: Some(args.iam_url.clone()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("signing in to the source: {e}"))?,
        every: Duration::from_secs(1) / args.source_rate.max(1),
        last: tokio::sync::Mutex::new(None),
    };
    drop(api_key);
    let target = args
        .target
        .client()
        .await
        .map_err(|e| anyhow::anyhow!("signing in to Keyplane: {e:#}"))?;
    let estate = read_estate(&source).await?;
    let present = read_present(&target).await?;
    let mut present_keys = Vec::new();
    for key in &estate.keys {
        let id = text(key, "/id");
        if state.keys.contains_key(id) {
            continue;
        }
        match target.get(&format!("/api/v4/managed_keys/{id}")).await {
            Ok(_) => present_keys.push(id.to_owned()),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let planner = Planner {
        estate: &estate,
        mapping: &mapping,
        state: &state,
        present: &present,
    };
    let mut plan = Vec::new();
    for vault in &estate.vaults {
        let target_id = planner.vault_target(text(vault, "/id"));
        plan.push(Step {
            kind: "vault",
            source_id: text(vault, "/id").to_owned(),
            name: text(vault, "/name").to_owned(),
            action: if target_id.is_some() {
                Action::Exists
            } else {
                Action::Create
            },
            reason: String::new(),
            target_id,
        });
    }
    let keystore_steps: Vec<Step> = estate
        .keystores
        .iter()
        .map(|k| planner.keystore_step(k))
        .collect();
    plan.extend(keystore_steps.iter().cloned());
    for template in &estate.templates {
        let target_id = planner.in_vault_target("template", template);
        plan.push(Step {
            kind: "template",
            source_id: text(template, "/id").to_owned(),
            name: text(template, "/name").to_owned(),
            action: if target_id.is_some() {
                Action::Exists
            } else {
                Action::Create
            },
            reason: String::new(),
            target_id,
        });
    }
    let key_steps: Vec<Step> = estate
        .keys
        .iter()
        .map(|k| planner.key_step(k, &keystore_steps, &present_keys))
        .collect();
    plan.extend(key_steps.iter().cloned());
    let offers = successor_offers(&estate, &key_steps);

    // Every keystore that will be created or used is reached first, from here.
    let mut unreachable = Vec::new();
    for (step, keystore) in keystore_steps.iter().zip(&estate.keystores) {
        if step.action != Action::Create || is_internal(keystore) {
            continue;
        }
        if let Err(e) = test_connection(keystore, mapping.of(keystore)).await {
            unreachable.push(format!("keystore '{}': {e:#}", step.name));
        }
    }

    if args.dry_run {
        print_plan(args.target.output, &plan, &offers, &unreachable);
        return Ok(());
    }
    if !unreachable.is_empty() {
        print_plan(args.target.output, &plan, &offers, &unreachable);
        bail!(
            "{} keystore connection(s) failed the test; nothing was written",
            unreachable.len()
        );
    }

    let mut failures = Vec::new();
    // Vaults.
    for vault in &estate.vaults {
        let id = text(vault, "/id");
        if let Some(step) = plan.iter().find(|s| s.kind == "vault" && s.source_id == id)
            && let Some(existing) = &step.target_id
        {
            state.vaults.insert(id.to_owned(), existing.clone());
            continue;
        }
        let mut body = json!({
            "name": text(vault, "/name"),
            "description": text(vault, "/description"),
        });
        if !text(vault, "/recovery_key_label").is_empty() {
            body["recovery_key_label"] = vault["recovery_key_label"].clone();
        }
        let created = target.post("/api/v4/vaults", &body).await?;
        state
            .vaults
            .insert(id.to_owned(), text(&created.body, "/id").to_owned());
        state.save(&args.state)?;
    }
    state.save(&args.state)?;
    // Keystores.
    for (step, keystore) in keystore_steps.iter().zip(&estate.keystores) {
        match step.action {
            Action::Exists => {
                if let Some(t) = &step.target_id {
                    state.keystores.insert(step.source_id.clone(), t.clone());
                }
                continue;
            }
            Action::Create => {}
            _ => continue,
        }
        let vault = state
            .vaults
            .get(text(keystore, "/vault/id"))
            .with_context(|| format!("keystore '{}': its vault was not migrated", step.name))?;
        let body = keystore_body(keystore, mapping.of(keystore), vault)?;
        let created = target.post("/api/v4/keystores", &body).await;
        match created {
            Ok(reply) => {
                state
                    .keystores
                    .insert(step.source_id.clone(), text(&reply.body, "/id").to_owned());
                state.save(&args.state)?;
            }
            Err(e) => failures.push(format!("keystore '{}': {e}", step.name)),
        }
    }
    state.save(&args.state)?;
    // Templates.
    for template in &estate.templates {
        let id = text(template, "/id");
        if let Some(step) = plan
            .iter()
            .find(|s| s.kind == "template" && s.source_id == id)
            && let Some(existing) = &step.target_id
        {
            state.templates.insert(id.to_owned(), existing.clone());
            continue;
        }
        let Some(vault) = state.vaults.get(text(template, "/vault/id")) else {
            failures.push(format!(
                "template '{}': its vault was not migrated",
                text(template, "/name")
            ));
            continue;
        };
        match target
            .post("/api/v4/templates", &template_body(template, vault))
            .await
        {
            Ok(reply) => {
                state
                    .templates
                    .insert(id.to_owned(), text(&reply.body, "/id").to_owned());
                state.save(&args.state)?;
            }
            Err(e) => failures.push(format!("template '{}': {e}", text(template, "/name"))),
        }
    }
    state.save(&args.state)?;
    // Keys.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    for (step, key) in key_steps.iter().zip(&estate.keys) {
        match step.action {
            Action::Exists => {
                if let Some(t) = &step.target_id {
                    state.keys.insert(step.source_id.clone(), t.clone());
                }
                continue;
            }
            Action::Adopt => {}
            _ => continue,
        }
        let Some(vault) = state.vaults.get(text(key, "/vault/id")) else {
            refused.insert(step.source_id.clone(), "its vault was not migrated".into());
            continue;
        };
        let copies = adopted_copies(&estate, &state, key, &keystore_steps);
        let body = adoption_body(key, vault, &copies, estate.versions.get(&step.source_id));
        match target.post("/api/v4/managed_keys/adopt", &body).await {
            Ok(reply) => {
                state
                    .keys
                    .insert(step.source_id.clone(), text(&reply.body, "/id").to_owned());
                state.save(&args.state)?;
            }
            Err(e @ ClientError::Api { .. }) => {
                refused.insert(step.source_id.clone(), e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    state.save(&args.state)?;
    // Successors for keys that cannot move, where asked.
    for (step, key) in key_steps.iter().zip(&estate.keys) {
        if step.action != Action::CannotMove || state.successors.contains_key(&step.source_id) {
            continue;
        }
        let template = text(key, "/template/name");
        if !args
            .successors_for
            .iter()
            .any(|t| t == "all" || t == template)
        {
            continue;
        }
        let Some(vault) = state.vaults.get(text(key, "/vault/id")) else {
            continue;
        };
        let body = json!({
            "template_name": template,
            "vault": {"id": vault},
            "label": text(key, "/label"),
            "description": format!("successor of {} ({})", text(key, "/label"), step.source_id),
        });
        match target.post("/api/v4/managed_keys", &body).await {
            Ok(reply) => {
                state
                    .successors
                    .insert(step.source_id.clone(), text(&reply.body, "/id").to_owned());
                state.save(&args.state)?;
            }
            Err(e) => failures.push(format!("successor of key '{}': {e}", step.name)),
        }
    }

    let report = verify(
        &target,
        &estate,
        &state,
        &key_steps,
        &keystore_steps,
        &refused,
    )
    .await?;
    if let Some(path) = &args.report {
        let whole = json!({"report": report, "successor_offers": offers});
        std::fs::write(path, serde_json::to_vec_pretty(&whole)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print_report(args.target.output, &report, &offers);
    for f in &failures {
        eprintln!("error: {f}");
    }
    let unmoved = report
        .iter()
        .filter(|o| matches!(o.result, "differs" | "not_migrated"))
        .count();
    if unmoved > 0 || !failures.is_empty() {
        return Err(MigrationIncomplete(unmoved + failures.len()).into());
    }
    Ok(())
}

/// Some objects were not migrated or differ; the report says which.
#[derive(Debug, thiserror::Error)]
#[error("{0} object(s) were not migrated or differ; see the report")]
pub struct MigrationIncomplete(usize);

/// The copies a key can be adopted through: in migrated external keystores, with an id there.
fn copies_of(estate: &Estate, key: &Value, keystores: &[Step]) -> Vec<(Step, Value)> {
    let mut out = Vec::new();
    for status in key["status_in_keystores"].as_array().into_iter().flatten() {
        let remote = text(status, "/key_id_in_keystore");
        if remote.is_empty() || text(status, "/status") == "not_present" {
            continue;
        }
        let source = text(status, "/keystore/id");
        let Some(keystore) = estate.keystores.iter().find(|k| text(k, "/id") == source) else {
            continue;
        };
        if is_internal(keystore) {
            continue;
        }
        if let Some(step) = keystores
            .iter()
            .find(|s| s.source_id == source && s.action != Action::Skip)
        {
            out.push((step.clone(), status.clone()));
        }
    }
    out
}

/// The adoption body's copies: each in the keystore it was migrated to.
fn adopted_copies(estate: &Estate, state: &State, key: &Value, keystores: &[Step]) -> Vec<Value> {
    // A destroyed key is kept as a record: whatever its keystores still show is not adopted.
    if text(key, "/state").starts_with("destroyed") {
        return Vec::new();
    }
    copies_of(estate, key, keystores)
        .into_iter()
        .filter_map(|(step, status)| {
            let target = state.keystores.get(&step.source_id)?;
            let label = key
                .pointer("/instances/0/label_in_keystore")
                .and_then(Value::as_str);
            let mut copy = json!({
                "keystore": {"id": target},
                "key_id_in_keystore": text(&status, "/key_id_in_keystore"),
            });
            if let Some(l) = label {
                copy["label_in_keystore"] = json!(l);
            }
            Some(copy)
        })
        .collect()
}

/// Keystore fields a UKO server returns that are not part of a creation request.
const KEYSTORE_READ_ONLY: &[&str] = &[
    "id",
    "vault",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "href",
];

fn keystore_body(
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

fn template_body(template: &Value, vault: &str) -> Value {
    let mut body = json!({
        "vault": {"id": vault},
        "name": template["name"],
        "description": template["description"],
        "type": template["type"],
        "key": template["key"],
        "keystores": template["keystores"],
    });
    for field in ["naming_scheme", "managing_systems", "state"] {
        if !template[field].is_null() {
            body[field] = template[field].clone();
        }
    }
    body
}

fn adoption_body(
    key: &Value,
    vault: &str,
    copies: &[Value],
    versions: Option<&Vec<Value>>,
) -> Value {
    let mut body = json!({
        "id": key["id"],
        "vault": {"id": vault},
        "template_name": key.pointer("/template/name"),
        "label": key["label"],
        "description": key["description"],
        "state": key["state"],
        "algorithm": key["algorithm"],
        "size": key["size"],
        "version": key["version"].as_u64().unwrap_or(1),
        "copies": copies,
    });
    for field in [
        "tags",
        "label_tags",
        "verification_patterns",
        "activation_date",
        "expiration_date",
        "created_at",
        "rotated_at",
    ] {
        if !key[field].is_null() {
            body[field] = key[field].clone();
        }
    }
    if let Some(list) = versions {
        let current = key["version"].as_u64().unwrap_or(1);
        body["versions"] = list
            .iter()
            .filter(|v| v["version"].as_u64() != Some(current))
            .map(|v| json!({"version": v["version"], "state": v["state"]}))
            .collect();
    }
    body
}

/// Per template with keys that cannot move: how many, and the offer.
fn successor_offers(estate: &Estate, keys: &[Step]) -> Vec<String> {
    let mut per_template: BTreeMap<String, usize> = BTreeMap::new();
    for (step, key) in keys.iter().zip(&estate.keys) {
        if step.action == Action::CannotMove {
            *per_template
                .entry(text(key, "/template/name").to_owned())
                .or_default() += 1;
        }
    }
    per_template
        .into_iter()
        .map(|(template, n)| {
            format!(
                "template '{template}': {n} key(s) cannot move. --create-successors '{template}' \
                 creates a successor for each in Keyplane; data encrypted under an old key is \
                 re-wrapped by unwrapping it at the source and wrapping it under the successor \
                 (see docs/MIGRATION.md)"
            )
        })
        .collect()
}

fn print_plan(output: Output, plan: &[Step], offers: &[String], unreachable: &[String]) {
    let items: Vec<Value> = plan
        .iter()
        .map(|s| serde_json::to_value(s).unwrap_or_default())
        .collect();
    if output != Output::Table {
        remote::print_data(
            output,
            &json!({"plan": items, "successor_offers": offers, "connection_failures": unreachable}),
        );
        return;
    }
    remote::print_list(
        output,
        &items,
        &[
            ("KIND", "/kind"),
            ("NAME", "/name"),
            ("SOURCE ID", "/source_id"),
            ("ACTION", "/action"),
            ("WHY", "/reason"),
        ],
        None,
    );
    let mut out = std::io::stdout().lock();
    for offer in offers {
        let _ = writeln!(out, "{offer}");
    }
    for failure in unreachable {
        let _ = writeln!(out, "connection failed: {failure}");
    }
}

fn print_report(output: Output, report: &[Outcome], offers: &[String]) {
    let items: Vec<Value> = report
        .iter()
        .map(|o| serde_json::to_value(o).unwrap_or_default())
        .collect();
    if output != Output::Table {
        remote::print_data(
            output,
            &json!({"report": items, "successor_offers": offers}),
        );
        return;
    }
    remote::print_list(
        output,
        &items,
        &[
            ("KIND", "/kind"),
            ("NAME", "/name"),
            ("SOURCE ID", "/source_id"),
            ("TARGET ID", "/target_id"),
            ("RESULT", "/result"),
            ("DETAIL", "/detail"),
        ],
        None,
    );
    let mut out = std::io::stdout().lock();
    for offer in offers {
        let _ = writeln!(out, "{offer}");
    }
}

// ---------------------------------------------------------------------------------------------
// The verification report: each source object against what Keyplane now shows.

fn differences(source: &Value, target: &Value, fields: &[&str]) -> Vec<String> {
    fields
        .iter()
        .filter(|f| {
            let (a, b) = (source.pointer(f), target.pointer(f));
            // Sizes travel as text or number; null and absent are alike.
            let norm = |v: Option<&Value>| match v {
                None | Some(Value::Null) => Value::Null,
                Some(Value::Number(n)) => Value::String(n.to_string()),
                Some(v) => v.clone(),
            };
            norm(a) != norm(b)
        })
        .map(|f| f.trim_start_matches('/').replace('/', "."))
        .collect()
}

async fn verify(
    target: &Client,
    estate: &Estate,
    state: &State,
    keys: &[Step],
    keystores: &[Step],
    refused: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<Outcome>> {
    let mut report = Vec::new();
    for vault in &estate.vaults {
        report.push(
            compare(
                target,
                "vault",
                vault,
                state.vaults.get(text(vault, "/id")),
                "/api/v4/vaults",
                &["/name", "/description"],
            )
            .await?,
        );
    }
    for (step, keystore) in keystores.iter().zip(&estate.keystores) {
        let mut outcome = compare(
            target,
            "keystore",
            keystore,
            state.keystores.get(text(keystore, "/id")),
            "/api/v4/keystores",
            &["/name", "/type", "/groups", "/description"],
        )
        .await?;
        if step.action == Action::Skip {
            outcome.result = "skipped";
            outcome.detail = step.reason.clone();
        }
        report.push(outcome);
    }
    for template in &estate.templates {
        report.push(
            compare(
                target,
                "template",
                template,
                state.templates.get(text(template, "/id")),
                "/api/v4/templates",
                &[
                    "/name",
                    "/naming_scheme",
                    "/type",
                    "/state",
                    "/key/algorithm",
                    "/key/size",
                    "/keystores/0/type",
                    "/keystores/0/group",
                    "/keystores/0/naming_scheme",
                ],
            )
            .await?,
        );
    }
    for (step, key) in keys.iter().zip(&estate.keys) {
        let mut outcome = compare(
            target,
            "managed_key",
            key,
            state.keys.get(text(key, "/id")),
            "/api/v4/managed_keys",
            &[
                "/label",
                "/state",
                "/version",
                "/algorithm",
                "/size",
                "/activation_date",
                "/expiration_date",
                "/template/name",
            ],
        )
        .await?;
        if step.action == Action::CannotMove {
            outcome.result = "cannot_move";
            outcome.detail = step.reason.clone();
            if let Some(successor) = state.successors.get(&step.source_id) {
                outcome.detail = format!("{}; successor key {successor}", step.reason);
            }
        } else if let Some(why) = refused.get(&step.source_id) {
            outcome.detail = why.clone();
        }
        report.push(outcome);
    }
    Ok(report)
}

/// One source object against the Keyplane object it became.
async fn compare(
    target: &Client,
    kind: &'static str,
    source: &Value,
    done: Option<&String>,
    path: &str,
    fields: &[&str],
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome {
        kind,
        source_id: text(source, "/id").to_owned(),
        name: text(
            source,
            if kind == "managed_key" {
                "/label"
            } else {
                "/name"
            },
        )
        .to_owned(),
        target_id: done.cloned(),
        result: "migrated",
        detail: String::new(),
    };
    let Some(id) = done else {
        outcome.result = "not_migrated";
        return Ok(outcome);
    };
    match target.get(&format!("{path}/{id}")).await {
        Ok(reply) => {
            let differs = differences(source, &reply.body, fields);
            if !differs.is_empty() {
                outcome.result = "differs";
                outcome.detail = format!("differs in {}", differs.join(", "));
            }
        }
        Err(e) if e.status() == Some(404) => {
            outcome.result = "not_migrated";
            outcome.detail = "recorded as done, but Keyplane has no such object".into();
        }
        Err(e) => return Err(e.into()),
    }
    Ok(outcome)
}
