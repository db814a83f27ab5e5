//! `keyplane keystore …`

use std::io::Write;

use clap::{Subcommand, ValueEnum};
use keyplane_client::ClientError;
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    ConnectArgs, confirm, done, list, patch, print_list, print_one, with_fields, with_query,
};

const COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("TYPE", "/type"),
    ("VARIANT", "/ibm_variant"),
    ("GROUPS", "/groups"),
    ("VAULT", "/vault/name"),
];

const FIELDS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("name", "/name"),
    ("type", "/type"),
    ("variant", "/ibm_variant"),
    ("groups", "/groups"),
    ("vault", "/vault/name"),
    ("description", "/description"),
    ("location", "/location"),
    ("created", "/created_at"),
    ("created by", "/created_by"),
];

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Refused while keys targeting it are active or deactivated (the default).
    Restrict,
    /// Unlink only: the keystore's keys stay as they are.
    Disconnect,
    /// Deactivate every copy there, then unlink.
    Deactivate,
    /// Destroy every copy there, then unlink.
    Destroy,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Restrict => "restrict",
            Self::Disconnect => "disconnect",
            Self::Deactivate => "deactivate",
            Self::Destroy => "destroy",
        }
    }
}

/// The kinds of keystore `connect` knows, by their short names.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// An internal keystore of this keyplane (`ibm_cloud_kms`, variant `internal`).
    Internal,
    /// IBM Key Protect (`ibm_cloud_kms`, variant `key_protect`).
    KeyProtect,
    /// IBM Hyper Protect Crypto Services (`ibm_cloud_kms`, variant `hpcs`).
    Hpcs,
    /// AWS KMS (`aws_kms`).
    Aws,
    /// HashiCorp Vault or OpenBao transit (`hashicorp_vault`).
    Vault,
    /// Azure Key Vault (`azure_key_vault`).
    Azure,
    /// Google Cloud KMS (`google_kms`).
    Google,
    /// A KMIP server (`kmip`).
    Kmip,
    /// A PKCS#11 token: an HSM (`pkcs11`).
    Pkcs11,
}

impl Kind {
    /// `(type, ibm_variant)` on the wire.
    fn wire(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Internal => ("ibm_cloud_kms", Some("internal")),
            Self::KeyProtect => ("ibm_cloud_kms", Some("key_protect")),
            Self::Hpcs => ("ibm_cloud_kms", Some("hpcs")),
            Self::Aws => ("aws_kms", None),
            Self::Vault => ("hashicorp_vault", None),
            Self::Azure => ("azure_key_vault", None),
            Self::Google => ("google_kms", None),
            Self::Kmip => ("kmip", None),
            Self::Pkcs11 => ("pkcs11", None),
        }
    }
}

/// `name=value` from the command line.
fn field(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{raw}' is not name=value"))
}

#[derive(Subcommand)]
pub enum KeystoreCommand {
    /// Connect a keystore; the server tests the connection before saving it.
    Connect {
        #[arg(value_enum)]
        kind: Kind,
        /// The vault's id.
        #[arg(long)]
        vault: String,
        #[arg(long)]
        name: String,
        /// A group the keystore joins (repeatable; default: one named after the keystore).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// A connection field, `name=value` (repeatable), e.g. `aws_region=eu_central_1`.
        #[arg(long = "field", value_parser = field)]
        fields: Vec<(String, String)>,
        /// A connection field read from a file, `name=path` (repeatable), e.g.
        /// `--field-file kmip_ca_cert=ca.pem`.
        #[arg(long = "field-file", value_parser = field)]
        field_files: Vec<(String, String)>,
        /// A secret connection field read from standard input, one line per name, in order
        /// (repeatable), e.g. `--secret aws_secret_access_key`; secrets stay off the command line.
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// A secret connection field read from a file, `name=path` (repeatable), e.g.
        /// `--secret-file google_credentials=key.json` (sent base64, as the API takes it).
        #[arg(long = "secret-file", value_parser = field)]
        secret_files: Vec<(String, String)>,
        /// Test the connection only; save nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Change a keystore's name, description, groups or connection; the server re-tests a
    /// changed connection before saving it.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The keystore's groups, replacing the current ones (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long = "field", value_parser = field)]
        fields: Vec<(String, String)>,
        #[arg(long = "field-file", value_parser = field)]
        field_files: Vec<(String, String)>,
        #[arg(long = "secret")]
        secrets: Vec<String>,
        #[arg(long = "secret-file", value_parser = field)]
        secret_files: Vec<(String, String)>,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// The keystore's distribution tasks, newest first.
    Tasks { id: String },
    /// The managed keys that target the keystore.
    Keys {
        id: String,
        #[arg(long)]
        all_pages: bool,
    },
    /// List keystores.
    List {
        #[arg(long = "vault.id")]
        vault_id: Option<String>,
        #[arg(long)]
        all_pages: bool,
    },
    /// Show one keystore.
    Get { id: String },
    /// Health of the connection, checked now.
    Status { id: String },
    /// Disconnect a keystore from Keyplane.
    Disconnect {
        id: String,
        #[arg(long, value_enum, default_value_t = Mode::Restrict)]
        mode: Mode,
        /// Don't ask.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        if_match: Option<String>,
    },
}

/// The connection fields and secrets of `keystore connect` and `keystore update`.
struct Connection {
    groups: Vec<String>,
    fields: Vec<(String, String)>,
    /// Read from files (certificates).
    field_files: Vec<(String, String)>,
    /// Read from standard input, one line each.
    secrets: Vec<String>,
    /// Read from files.
    secret_files: Vec<(String, String)>,
}

/// Secret fields the API takes base64-encoded (a file's bytes, which may span lines).
const BASE64_SECRETS: &[&str] = &["google_credentials"];

/// `body` with the groups, the connection fields and the secrets.
fn with_connection(mut body: Value, connection: Connection) -> anyhow::Result<Value> {
    use base64::Engine as _;
    if !connection.groups.is_empty() {
        body["groups"] = json!(connection.groups);
    }
    for (k, v) in connection.fields {
        body[k] = Value::String(v);
    }
    for (name, path) in connection.field_files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {name} from {path}: {e}"))?;
        body[name] = Value::String(text);
    }
    for secret in &connection.secrets {
        body[secret.as_str()] = Value::String(read_secret_line(secret)?);
    }
    for (name, path) in connection.secret_files {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {name} from {path}: {e}"))?,
        );
        let value = if BASE64_SECRETS.contains(&name.as_str()) {
            base64::engine::general_purpose::STANDARD.encode(&*bytes)
        } else {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| anyhow::anyhow!("{path} is not text"))?
                .trim_end_matches(['\n', '\r'])
                .to_owned()
        };
        body[name] = Value::String(value);
    }
    Ok(body)
}

/// One line of standard input: the value of secret field `name`.
fn read_secret_line(name: &str) -> anyhow::Result<String> {
    use std::io::BufRead;
    eprintln!("{name}:");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let value = line.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        anyhow::bail!("no value for {name} on standard input");
    }
    Ok(value)
}

/// The command that takes a blocking key out of the way: deactivate an active one, destroy a
/// deactivated one.
fn unblocking_command(state: &str, id: &str) -> String {
    match state {
        "active" => format!("keyplane key deactivate {id}"),
        _ => format!("keyplane key destroy {id}"),
    }
}

/// Lists the keys a refused disconnect names (`id (label, state)`), each with its way out.
fn explain_refusal(body: &Value) {
    let mut err = std::io::stderr().lock();
    let blocking = body["errors"][0]["message_params"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if blocking.is_empty() {
        return;
    }
    let _ = writeln!(err, "Blocking keys:");
    for entry in blocking.iter().filter_map(Value::as_str) {
        let (id, rest) = entry.split_once(' ').unwrap_or((entry, ""));
        let inner = rest.trim_start_matches('(').trim_end_matches(')');
        let (label, state) = inner.rsplit_once(", ").unwrap_or((inner, ""));
        let _ = writeln!(
            err,
            "  {id}  {label}  {state}  → {}",
            unblocking_command(state, id)
        );
    }
}

pub async fn run(args: &ConnectArgs, command: KeystoreCommand) -> anyhow::Result<()> {
    let client = args.client().await?;
    let out = args.output;
    match command {
        KeystoreCommand::Connect {
            kind,
            vault,
            name,
            groups,
            description,
            fields,
            field_files,
            secrets,
            secret_files,
            dry_run,
        } => {
            let (keystore_type, variant) = kind.wire();
            let body = with_fields(
                json!({"type": keystore_type, "vault": {"id": vault}, "name": name}),
                [
                    ("ibm_variant", variant.map(str::to_owned)),
                    ("description", description),
                ],
            );
            let body = with_connection(
                body,
                Connection {
                    groups,
                    fields,
                    field_files,
                    secrets,
                    secret_files,
                },
            )?;
            let path = if dry_run {
                "/api/v4/keystores?dry_run=true"
            } else {
                "/api/v4/keystores"
            };
            let ks = client.post(path, &body).await?.body;
            let message = if dry_run {
                format!("the connection to '{name}' works; nothing was saved")
            } else {
                format!(
                    "connected keystore {} ({})",
                    ks["name"].as_str().unwrap_or_default(),
                    ks["id"].as_str().unwrap_or_default()
                )
            };
            done(out, &message, &ks);
        }
        KeystoreCommand::Update {
            id,
            name,
            description,
            groups,
            fields,
            field_files,
            secrets,
            secret_files,
            if_match,
        } => {
            let body = with_fields(json!({}), [("name", name), ("description", description)]);
            let body = with_connection(
                body,
                Connection {
                    groups,
                    fields,
                    field_files,
                    secrets,
                    secret_files,
                },
            )?;
            let ks = patch(
                &client,
                &format!("/api/v4/keystores/{id}"),
                &body,
                if_match.as_deref(),
            )
            .await?;
            done(out, &format!("updated keystore {id}"), &ks);
        }
        KeystoreCommand::Tasks { id } => {
            let body = client
                .get(&format!("/api/v4/keystores/{id}/tasks"))
                .await?
                .body;
            let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
            print_list(
                out,
                &tasks,
                &[
                    ("KEY", "/managed_key_id"),
                    ("STATE", "/state"),
                    ("ATTEMPTS", "/attempts"),
                    ("NEXT", "/next_attempt_at"),
                    ("ERROR", "/last_error"),
                ],
                body["total_count"].as_u64(),
            );
        }
        KeystoreCommand::Keys { id, all_pages } => {
            let path = format!("/api/v4/keystores/{id}/managed_keys");
            let (items, total) = list(&client, &path, "managed_keys", all_pages).await?;
            print_list(
                out,
                &items,
                &[
                    ("ID", "/id"),
                    ("LABEL", "/label"),
                    ("STATE", "/state"),
                    ("VAULT", "/vault/name"),
                ],
                total,
            );
        }
        KeystoreCommand::List {
            vault_id,
            all_pages,
        } => {
            let path = with_query("/api/v4/keystores", &[("vault.id", vault_id.as_deref())]);
            let (items, total) = list(&client, &path, "keystores", all_pages).await?;
            print_list(out, &items, COLUMNS, total);
        }
        KeystoreCommand::Get { id } => {
            let ks = client.get(&format!("/api/v4/keystores/{id}")).await?.body;
            print_one(out, &ks, FIELDS);
        }
        KeystoreCommand::Status { id } => {
            let status = client
                .get(&format!("/api/v4/keystores/{id}/status"))
                .await?
                .body;
            print_one(
                out,
                &status,
                &[
                    ("health", "/health_status"),
                    ("last heartbeat", "/last_heartbeat"),
                    ("message", "/message"),
                ],
            );
        }
        KeystoreCommand::Disconnect {
            id,
            mode,
            yes,
            if_match,
        } => {
            confirm(
                yes,
                &format!("Disconnect keystore {id} (mode {})?", mode.as_str()),
            )?;
            let result = client
                .act(
                    Method::DELETE,
                    &format!("/api/v4/keystores/{id}"),
                    &format!("?mode={}", mode.as_str()),
                    None,
                    if_match.as_deref(),
                )
                .await;
            if let Err(ClientError::Api { code, body, .. }) = &result
                && code == "keystore_not_empty"
            {
                explain_refusal(body);
            }
            result?;
            done(
                out,
                &format!("disconnected keystore {id} (mode {})", mode.as_str()),
                &json!({ "id": id, "mode": mode.as_str() }),
            );
        }
    }
    Ok(())
}
