//! `keyplane vault …`

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use super::{
    ConnectArgs, confirm, delete, done, list, patch, print_list, print_one, with_fields, with_query,
};

const COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("KEYS", "/keys_count"),
    ("KEYSTORES", "/keystores_count"),
    ("CREATED", "/created_at"),
];

const FIELDS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("name", "/name"),
    ("description", "/description"),
    ("keys", "/keys_count"),
    ("keystores", "/keystores_count"),
    ("templates", "/key_templates_count"),
    ("created", "/created_at"),
    ("created by", "/created_by"),
    ("updated", "/updated_at"),
];

#[derive(Subcommand)]
pub enum VaultCommand {
    /// List vaults.
    List {
        /// Only vaults whose name starts with this.
        #[arg(long)]
        name: Option<String>,
        /// Every page, not only the first.
        #[arg(long)]
        all_pages: bool,
    },
    /// Show one vault.
    Get { id: String },
    /// Create a vault.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Change a vault's name or description.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Show or set whether destroying keys in the vault needs a second person.
    DualControl {
        id: String,
        /// `on` or `off`; shows the setting when absent.
        #[arg(value_parser = ["on", "off"])]
        set: Option<String>,
    },
    /// Delete an empty vault.
    Delete {
        id: String,
        /// Don't ask.
        #[arg(long)]
        yes: bool,
        /// Act only if the vault still has this ETag.
        #[arg(long)]
        if_match: Option<String>,
    },
}

pub async fn run(args: &ConnectArgs, command: VaultCommand) -> anyhow::Result<()> {
    let client = args.client().await?;
    let out = args.output;
    match command {
        VaultCommand::List { name, all_pages } => {
            let path = with_query("/api/v4/vaults", &[("name", name.as_deref())]);
            let (items, total) = list(&client, &path, "vaults", all_pages).await?;
            print_list(out, &items, COLUMNS, total);
        }
        VaultCommand::Get { id } => {
            let vault = client.get(&format!("/api/v4/vaults/{id}")).await?.body;
            print_one(out, &vault, FIELDS);
        }
        VaultCommand::Create { name, description } => {
            let body = with_fields(json!({ "name": name }), [("description", description)]);
            let vault = client.post("/api/v4/vaults", &body).await?.body;
            done(
                out,
                &format!(
                    "created vault {} ({})",
                    vault["name"].as_str().unwrap_or_default(),
                    vault["id"].as_str().unwrap_or_default()
                ),
                &vault,
            );
        }
        VaultCommand::Update {
            id,
            name,
            description,
            if_match,
        } => {
            let body = with_fields(json!({}), [("name", name), ("description", description)]);
            let vault = patch(
                &client,
                &format!("/api/v4/vaults/{id}"),
                &body,
                if_match.as_deref(),
            )
            .await?;
            done(out, &format!("updated vault {id}"), &vault);
        }
        VaultCommand::DualControl { id, set } => {
            let path = format!("/api/v4/vaults/{id}/dual_control");
            let setting = match set {
                None => client.get(&path).await?.body,
                Some(v) => {
                    client
                        .send(
                            Method::PUT,
                            &path,
                            Some(&json!({"enabled": v == "on"})),
                            None,
                        )
                        .await?
                        .body
                }
            };
            print_one(out, &setting, &[("dual control", "/enabled")]);
        }
        VaultCommand::Delete { id, yes, if_match } => {
            confirm(yes, &format!("Delete vault {id}?"))?;
            delete(
                &client,
                &format!("/api/v4/vaults/{id}"),
                "",
                if_match.as_deref(),
            )
            .await?;
            done(out, &format!("deleted vault {id}"), &json!({ "id": id }));
        }
    }
    Ok(())
}
