//! `keyplane key …`

use std::io::Write;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

mod bulk;

use super::{
    ConnectArgs, Output, confirm, delete, done, list, patch, print_list, print_one, with_fields,
    with_query,
};

const COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("LABEL", "/label"),
    ("STATE", "/state"),
    ("ALGORITHM", "/algorithm"),
    ("SIZE", "/size"),
    ("VERSION", "/version"),
    ("VAULT", "/vault/name"),
    ("TEMPLATE", "/template/name"),
];

const FIELDS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("label", "/label"),
    ("state", "/state"),
    ("algorithm", "/algorithm"),
    ("size", "/size"),
    ("version", "/version"),
    ("vault", "/vault/name"),
    ("template", "/template/name"),
    ("description", "/description"),
    ("activation date", "/activation_date"),
    ("expiration date", "/expiration_date"),
    ("created", "/created_at"),
    ("created by", "/created_by"),
    ("rotated", "/rotated_at"),
];

const STATUS_COLUMNS: &[(&str, &str)] = &[
    ("KEYSTORE", "/keystore/name"),
    ("TYPE", "/keystore/type"),
    ("STATUS", "/status"),
    ("SYNC", "/keystore_sync_flag"),
    ("DETAIL", "/keystore_sync_flag_detail"),
    ("ID IN KEYSTORE", "/key_id_in_keystore"),
];

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List managed keys; filters are the API's query parameters.
    List {
        #[arg(long = "vault.id")]
        vault_id: Option<String>,
        /// pre_activation, active, deactivated, destroyed, … (comma-separated).
        #[arg(long)]
        state: Option<String>,
        /// Only keys whose label starts with this.
        #[arg(long)]
        label: Option<String>,
        #[arg(long = "template.name")]
        template_name: Option<String>,
        #[arg(long)]
        all_pages: bool,
    },
    /// Show one key.
    Get { id: String },
    /// Create a key from a template.
    Create {
        /// The template's name.
        #[arg(long)]
        template: String,
        /// The vault's id.
        #[arg(long)]
        vault: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Activate a key (pre-active or deactivated).
    Activate(Act),
    /// Deactivate a key: it no longer encrypts, existing data still decrypts.
    Deactivate(Act),
    /// Destroy a key's material everywhere (pre-active or deactivated keys).
    Destroy(Act),
    /// Give a key a new version.
    Rotate(Act),
    /// Push the managed state to every keystore and read back what they hold.
    Sync(Act),
    /// Create many keys from a CSV file with a header row: `label`, and optionally `template`
    /// and `description` columns; shows progress and reports each failure.
    CreateBulk {
        /// The CSV file.
        #[arg(long)]
        file: std::path::PathBuf,
        /// The vault's id.
        #[arg(long)]
        vault: String,
        /// The template for rows without a `template` column.
        #[arg(long)]
        template: Option<String>,
        /// Keys created at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Sync every key of a vault or of a keystore, with progress.
    SyncAll {
        #[arg(
            long = "vault.id",
            conflicts_with = "keystore",
            required_unless_present = "keystore"
        )]
        vault_id: Option<String>,
        /// A keystore's id: the keys that target it.
        #[arg(long)]
        keystore: Option<String>,
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Every version of a key, newest first.
    Versions { id: String },
    /// Change a key's label, description or dates.
    Update {
        id: String,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// YYYY-MM-DD.
        #[arg(long)]
        activation_date: Option<String>,
        /// YYYY-MM-DD.
        #[arg(long)]
        expiration_date: Option<String>,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Mark a key compromised: every copy is deactivated.
    Compromise(Act),
    /// Realign a key with its template: install where its group now reaches, deactivate where it
    /// left.
    UpdateFromTemplate {
        id: String,
        /// Show the outcome without changing anything.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Remove a destroyed key from its vault.
    Delete {
        id: String,
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// What each keystore holds for a key, read now.
    Status { id: String },
}

#[derive(clap::Args)]
pub struct Act {
    pub id: String,
    /// Act only if the key still has this ETag (otherwise the current one is read first).
    #[arg(long)]
    pub if_match: Option<String>,
    /// Don't ask (destroy).
    #[arg(long)]
    pub yes: bool,
    /// Wait until every keystore reports the key's new state.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, e.g. `90s`, `5m`.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub wait_timeout: std::time::Duration,
}

/// What a keystore reports once it holds a key in `state` as managed.
fn settled_status(state: &str) -> &'static str {
    match state {
        "active" => "active",
        "deactivated" | "compromised" => "not_active",
        _ => "not_present",
    }
}

/// Polls the key until every keystore it targets reports its state; progress on standard error.
async fn wait_for_keystores(
    client: &keyplane_client::Client,
    id: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_report = String::new();
    loop {
        let key = client
            .get(&format!("/api/v4/managed_keys/{id}"))
            .await?
            .body;
        let want = settled_status(key["state"].as_str().unwrap_or_default());
        let statuses = statuses_of(&key);
        let pending: Vec<String> = statuses
            .iter()
            .filter(|s| s["status"] != want)
            .map(|s| {
                let name = s["keystore"]["name"].as_str().unwrap_or("?");
                match s["error"]["errors"][0]["message"].as_str() {
                    Some(e) => format!("{name} ({e})"),
                    None => format!("{name} ({})", s["status"].as_str().unwrap_or("?")),
                }
            })
            .collect();
        let report = format!(
            "{}/{} keystores report {want}{}",
            statuses.len() - pending.len(),
            statuses.len(),
            if pending.is_empty() {
                String::new()
            } else {
                format!("; waiting for {}", pending.join(", "))
            }
        );
        if report != last_report {
            eprintln!("{report}");
            last_report = report;
        }
        if pending.is_empty() {
            return Ok(key);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitTimedOut(last_report).into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `--wait` ran out of time; the key's state did change.
#[derive(Debug, thiserror::Error)]
#[error("gave up waiting: {0}")]
pub struct WaitTimedOut(String);

async fn act(args: &ConnectArgs, verb: &str, action: &str, a: Act) -> anyhow::Result<()> {
    let client = args.client().await?;
    let reply = client
        .act(
            Method::POST,
            &format!("/api/v4/managed_keys/{}", a.id),
            &format!("/{action}"),
            None,
            a.if_match.as_deref(),
        )
        .await?;
    // 202: the vault is under dual control and a second person must approve.
    if reply.status == 202 {
        let message = format!(
            "{verb} of key {} awaits approval {} by a second person (dual control)",
            a.id,
            reply.body["id"].as_str().unwrap_or_default()
        );
        done(args.output, &message, &reply.body);
        return Ok(());
    }
    let body = if a.wait {
        wait_for_keystores(&client, &a.id, a.wait_timeout).await?
    } else {
        reply.body
    };
    if action == "sync_status_in_keystores" {
        print_list(args.output, &statuses_of(&body), STATUS_COLUMNS, None);
        return Ok(());
    }
    let message = format!(
        "{verb} key {} ({}): now {}",
        a.id,
        body["label"].as_str().unwrap_or_default(),
        body["state"].as_str().unwrap_or_default()
    );
    done(args.output, &message, &body);
    Ok(())
}

pub async fn run(args: &ConnectArgs, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Activate(a) => act(args, "activated", "activate", a).await,
        KeyCommand::Deactivate(a) => act(args, "deactivated", "deactivate", a).await,
        KeyCommand::Rotate(a) => act(args, "rotated", "rotate", a).await,
        KeyCommand::Sync(a) => act(args, "synced", "sync_status_in_keystores", a).await,
        KeyCommand::Compromise(a) => {
            confirm(
                a.yes,
                &format!("Mark key {} compromised? Every copy is deactivated.", a.id),
            )?;
            act(args, "marked compromised", "compromise", a).await
        }
        KeyCommand::Destroy(a) => {
            confirm(
                a.yes,
                &format!(
                    "Destroy key {}? Its material is erased here and in every keystore.",
                    a.id
                ),
            )?;
            act(args, "destroyed", "destroy", a).await
        }
        other => read(args, other).await,
    }
}

async fn read(args: &ConnectArgs, command: KeyCommand) -> anyhow::Result<()> {
    let client = args.client().await?;
    let out: Output = args.output;
    match command {
        KeyCommand::List {
            vault_id,
            state,
            label,
            template_name,
            all_pages,
        } => {
            let path = with_query(
                "/api/v4/managed_keys",
                &[
                    ("vault.id", vault_id.as_deref()),
                    ("state", state.as_deref()),
                    ("label", label.as_deref()),
                    ("template.name", template_name.as_deref()),
                ],
            );
            let (items, total) = list(&client, &path, "managed_keys", all_pages).await?;
            print_list(out, &items, COLUMNS, total);
        }
        KeyCommand::Get { id } => {
            let key = client
                .get(&format!("/api/v4/managed_keys/{id}"))
                .await?
                .body;
            print_one(out, &key, FIELDS);
            if out == Output::Table {
                let statuses = key["status_in_keystores"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !statuses.is_empty() {
                    let _ = writeln!(std::io::stdout().lock());
                    print_list(out, &statuses, STATUS_COLUMNS, None);
                }
            }
        }
        KeyCommand::Create {
            template,
            vault,
            label,
            description,
        } => {
            let body = with_fields(
                json!({"template_name": template, "vault": {"id": vault}}),
                [("label", label), ("description", description)],
            );
            let key = client.post("/api/v4/managed_keys", &body).await?.body;
            done(
                out,
                &format!(
                    "created key {} ({}): {}",
                    key["label"].as_str().unwrap_or_default(),
                    key["id"].as_str().unwrap_or_default(),
                    key["state"].as_str().unwrap_or_default()
                ),
                &key,
            );
        }
        KeyCommand::CreateBulk {
            file,
            vault,
            template,
            parallel,
        } => {
            bulk::create(&client, out, &file, &vault, template.as_deref(), parallel).await?;
        }
        KeyCommand::Update {
            id,
            label,
            description,
            activation_date,
            expiration_date,
            if_match,
        } => {
            let body = with_fields(
                json!({}),
                [
                    ("label", label),
                    ("description", description),
                    ("activation_date", activation_date),
                    ("expiration_date", expiration_date),
                ],
            );
            let key = patch(
                &client,
                &format!("/api/v4/managed_keys/{id}"),
                &body,
                if_match.as_deref(),
            )
            .await?;
            done(out, &format!("updated key {id}"), &key);
        }
        KeyCommand::UpdateFromTemplate {
            id,
            dry_run,
            if_match,
        } => {
            let suffix = if dry_run {
                "/update_from_template?dry_run=true"
            } else {
                "/update_from_template"
            };
            let key = client
                .act(
                    Method::POST,
                    &format!("/api/v4/managed_keys/{id}"),
                    suffix,
                    None,
                    if_match.as_deref(),
                )
                .await?
                .body;
            if out != Output::Table {
                print_one(out, &key, &[]);
            } else {
                let what = if dry_run { "would target" } else { "targets" };
                let _ = writeln!(std::io::stdout().lock(), "key {id} {what}:");
                print_list(out, &statuses_of(&key), STATUS_COLUMNS, None);
            }
        }
        KeyCommand::Delete { id, yes, if_match } => {
            confirm(yes, &format!("Remove destroyed key {id} from its vault?"))?;
            delete(
                &client,
                &format!("/api/v4/managed_keys/{id}"),
                "",
                if_match.as_deref(),
            )
            .await?;
            done(out, &format!("removed key {id}"), &json!({"id": id}));
        }
        KeyCommand::SyncAll {
            vault_id,
            keystore,
            parallel,
        } => {
            let path = match (vault_id, keystore) {
                (_, Some(k)) => format!("/api/v4/keystores/{k}/managed_keys"),
                (Some(v), None) => with_query("/api/v4/managed_keys", &[("vault.id", Some(&v))]),
                (None, None) => anyhow::bail!("give --vault.id or --keystore"),
            };
            bulk::sync_all(&client, out, &path, parallel).await?;
        }
        KeyCommand::Versions { id } => {
            let items = client
                .list_all(
                    &format!("/api/v4/managed_keys/{id}/versions"),
                    "managed_keys",
                )
                .await?;
            print_list(
                out,
                &items,
                &[
                    ("VERSION", "/version"),
                    ("STATE", "/state"),
                    ("CREATED", "/created_at"),
                    ("PATTERN", "/verification_patterns/0/value"),
                ],
                None,
            );
        }
        KeyCommand::Status { id } => {
            let body = client
                .get(&format!("/api/v4/managed_keys/{id}/status_in_keystores"))
                .await?
                .body;
            let statuses = statuses_of(&body);
            print_list(out, &statuses, STATUS_COLUMNS, None);
        }
        _ => unreachable!("lifecycle verbs are handled by run"),
    }
    Ok(())
}

/// The status entries of a `status_in_keystores` answer (an array, or an object holding one).
fn statuses_of(body: &Value) -> Vec<Value> {
    body.as_array()
        .or_else(|| body["status_in_keystores"].as_array())
        .cloned()
        .unwrap_or_default()
}
