//! `keyplane keystore …`

use std::io::Write;

use clap::{Subcommand, ValueEnum};
use keyplane_client::ClientError;
use reqwest::Method;
use serde_json::{Value, json};

use super::{ConnectArgs, confirm, done, list, print_list, print_one, with_query};

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

#[derive(Subcommand)]
pub enum KeystoreCommand {
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
