//! `keyplane admin`: the key ceremony (`init`, offline on the data directory) and the seal
//! controls of a running server (`unseal`, `seal`, `seal-status`, `rotate-master-key`).

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keyplane_crypto::KeyHierarchy;
use serde_json::Value;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Key ceremony for the shamir seal: makes the seal key, prints one share per custodian,
    /// and records only what verifies them. Run once, on the server's data directory, before
    /// the first `serve`.
    Init {
        #[command(flatten)]
        store: crate::serve::StoreArgs,
        /// How many shares to make (one per custodian).
        #[arg(long)]
        shares: u8,
        /// How many shares unseal the server.
        #[arg(long)]
        threshold: u8,
    },
    /// Submit an unseal secret, read from standard input: a share (shamir), the passphrase, or
    /// the PIN (pkcs11); the dev seal needs none.
    Unseal(ServerArgs),
    /// Seal the server now: every key in memory is forgotten; key operations stop until unsealed.
    Seal(ServerArgs),
    /// Show whether the server is sealed, and unseal progress.
    SealStatus(ServerArgs),
    /// Make a new master key and rewrap every vault key under it, while serving.
    RotateMasterKey(ServerArgs),
    /// Take an online backup into a new file while the servers serve: one consistent snapshot
    /// of the database, SQLite or PostgreSQL (material and secrets stay sealed; the seal's
    /// records and the audit chain are in it), written as one SQLite file, then checked. The dev seal's key file is not
    /// included: keep it apart from the backup.
    Backup {
        #[command(flatten)]
        store: crate::serve::StoreArgs,
        /// The backup file to create (refused if it exists).
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Restore a backup into an empty data directory (or, with --database-url, an empty
    /// PostgreSQL database), then check row counts and the audit chain against the backup.
    /// The restored deployment opens with the seal the backup was taken under.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: std::path::PathBuf,
        #[command(flatten)]
        store: crate::serve::StoreArgs,
    },
    /// Move a deployment from SQLite to an empty PostgreSQL database: every row as stored
    /// (material stays sealed, the audit chain keeps its hashes), then counts and the chain are
    /// checked. Stop the server first; start the nodes on PostgreSQL afterwards.
    MigrateStore {
        /// The SQLite database: `sqlite://PATH` (the data directory's `keyplane.sqlite`).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database (`postgres://…`); may be given as KEYPLANE_MIGRATE_TO to keep a
        /// password off the command line.
        #[arg(long, env = "KEYPLANE_MIGRATE_TO", hide_env_values = true)]
        to: String,
    },
}

#[derive(Args)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "KEYPLANE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API token (a bearer token).
    #[arg(long, env = "KEYPLANE_TOKEN", hide_env_values = true)]
    token: String,
}

pub(crate) fn print(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub(crate) async fn call(
    server: &ServerArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let client = keyplane_client::Client::connect(keyplane_client::Settings {
        url: server.url.clone(),
        credential: keyplane_client::Credential::Token(server.token.clone()),
        ca_cert_pem: None,
        iam_url: None,
    })
    .await?;
    match client.send(method, path, body.as_ref(), None).await {
        Ok(reply) => Ok(reply.body),
        Err(keyplane_client::ClientError::Api {
            status, message, ..
        }) => bail!("{message} (HTTP {status})"),
        Err(e) => Err(e.into()),
    }
}

/// One line from standard input, without its line ending.
fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    eprintln!("{prompt}");
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading standard input")?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
    if trimmed.is_empty() {
        bail!("nothing was given on standard input");
    }
    Ok(trimmed)
}

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Init {
            store,
            shares,
            threshold,
        } => {
            let store =
                crate::serve::open_store(&store.data_dir, true, store.database_url.as_deref())
                    .await?;
            let printed = KeyHierarchy::init_shamir(store.as_ref(), threshold, shares)
                .await
                .context("initialising the shamir seal")?;
            store.close().await;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "Shamir seal initialised: {threshold} of these {shares} shares unseal the server.\n\
                 Give each custodian one share; they are shown only now and are not stored anywhere."
            )?;
            for (i, share) in printed.iter().enumerate() {
                writeln!(out, "share {}: {}", i + 1, share.as_str())?;
            }
            Ok(())
        }
        AdminCommand::Unseal(server) => {
            let status = call(
                &server,
                reqwest::Method::GET,
                "/api/v4/system/seal_status",
                None,
            )
            .await?;
            if status["sealed"] == Value::Bool(false) {
                print(&status);
                return Ok(());
            }
            let field = match status["type"].as_str() {
                Some("shamir") => Some(("key", "your unseal share")),
                Some("passphrase") => Some(("passphrase", "the seal passphrase")),
                Some("pkcs11") => Some(("pin", "the token's user PIN")),
                _ => None,
            };
            let body = match field {
                Some((name, what)) => {
                    let secret = read_secret(&format!("Enter {what} on standard input:"))?;
                    serde_json::json!({ name: secret.as_str() })
                }
                None => serde_json::json!({}),
            };
            let answer = call(
                &server,
                reqwest::Method::POST,
                "/api/v4/system/unseal",
                Some(body),
            )
            .await?;
            print(&answer);
            Ok(())
        }
        AdminCommand::MigrateStore { from, to } => migrate_store(&from, &to).await,
        AdminCommand::Backup { store, to } => {
            let report = match store.database_url {
                Some(url) => keyplane_store::backup_postgres(&url, &to).await,
                None => {
                    let database = store.data_dir.join(keyplane_store::DATABASE_FILE);
                    tokio::task::spawn_blocking(move || {
                        keyplane_store::backup_sqlite(&database, &to)
                    })
                    .await?
                }
            }
            .context("taking the backup")?;
            print_report(
                &report.rows,
                report.audit.events,
                &report.audit.head,
                "backed up",
            )
        }
        AdminCommand::Restore { from, store } => match store.database_url {
            Some(url) => {
                let report = keyplane_store::copy_sqlite_to_postgres(&from, &url)
                    .await
                    .context("restoring into PostgreSQL")?;
                print_report(
                    &report.rows,
                    report.audit_events,
                    &report.audit_head,
                    "restored",
                )
            }
            None => {
                let data_dir = store.data_dir.clone();
                let report = tokio::task::spawn_blocking(move || {
                    keyplane_store::restore_sqlite(&from, &data_dir)
                })
                .await?
                .context("restoring the backup")?;
                print_report(
                    &report.rows,
                    report.audit.events,
                    &report.audit.head,
                    "restored",
                )
            }
        },
        AdminCommand::Seal(server) => {
            print(&call(&server, reqwest::Method::POST, "/api/v4/system/seal", None).await?);
            Ok(())
        }
        AdminCommand::SealStatus(server) => {
            print(
                &call(
                    &server,
                    reqwest::Method::GET,
                    "/api/v4/system/seal_status",
                    None,
                )
                .await?,
            );
            Ok(())
        }
        AdminCommand::RotateMasterKey(server) => {
            print(
                &call(
                    &server,
                    reqwest::Method::POST,
                    "/api/v4/system/rotate_master_key",
                    None,
                )
                .await?,
            );
            Ok(())
        }
    }
}

/// Rows per table and the verified chain, then what was done.
fn print_report(rows: &[(&str, i64)], events: u64, head: &str, done: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for (table, n) in rows {
        writeln!(out, "{table:<22} {n:>10} rows")?;
    }
    writeln!(out, "audit chain intact: {events} events, head {head}")?;
    writeln!(out, "{done}")?;
    Ok(())
}

/// `admin migrate-store`: the copy, then what the SQLite deployment kept beside its database.
async fn migrate_store(from: &str, to: &str) -> anyhow::Result<()> {
    let path = std::path::PathBuf::from(
        from.strip_prefix("sqlite://")
            .context("--from must be sqlite://PATH to the data directory's keyplane.sqlite")?,
    );
    let report = keyplane_store::copy_sqlite_to_postgres(&path, to)
        .await
        .context("moving the database")?;
    // A passphrase seal from before the sealed master key moved into the database kept it in a
    // file beside it: every node reads it from the database now.
    let legacy = path.with_file_name("master.sealed");
    if legacy.is_file() {
        let text = std::fs::read_to_string(&legacy)
            .with_context(|| format!("reading {}", legacy.display()))?;
        let store = crate::serve::open_store(&path, true, Some(to)).await?;
        store
            .insert_setting(keyplane_crypto::PASSPHRASE_SEAL_SETTING, &text)
            .await?;
        store.close().await;
    }
    print_report(
        &report.rows,
        report.audit_events,
        &report.audit_head,
        "moved; start every node with KEYPLANE_DATABASE_URL set to the new database",
    )
}
