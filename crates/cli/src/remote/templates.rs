//! `keyplane template …`

use clap::Subcommand;

use serde_json::json;

use reqwest::Method;

use super::{
    ConnectArgs, confirm, delete, done, list, patch, print_list, print_one, with_fields, with_query,
};

const COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("VAULT", "/vault/name"),
    ("ALGORITHM", "/key/algorithm"),
    ("SIZE", "/key/size"),
    ("STATE", "/state"),
    ("KEYS", "/keys_count"),
];

const FIELDS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("name", "/name"),
    ("vault", "/vault/name"),
    ("state", "/state"),
    ("version", "/version"),
    ("algorithm", "/key/algorithm"),
    ("size", "/key/size"),
    ("initial state", "/key/state"),
    ("naming scheme", "/naming_scheme"),
    ("keystore type", "/keystores/0/type"),
    ("keystore group", "/keystores/0/group"),
    ("keys", "/keys_count"),
    ("created", "/created_at"),
];

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// List templates.
    List {
        #[arg(long = "vault.id")]
        vault_id: Option<String>,
        /// Only templates whose name starts with this.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        all_pages: bool,
    },
    /// Show one template.
    Get { id: String },
    /// Change a template's description or keystore group (keys follow on update-from-template).
    Update {
        id: String,
        #[arg(long)]
        description: Option<String>,
        /// The keystore type and group keys go to, as `type:group`.
        #[arg(long)]
        keystore: Option<String>,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Archive a template: no new keys from it.
    Archive {
        id: String,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Bring an archived template back.
    Unarchive {
        id: String,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Delete a template no key uses.
    Delete {
        id: String,
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Create a template: what keys made from it are, and where they are installed.
    Create {
        /// The vault's id.
        #[arg(long)]
        vault: String,
        #[arg(long)]
        name: String,
        /// aes, rsa, ec, hmac.
        #[arg(long)]
        algorithm: String,
        /// Bits (aes 128/192/256, rsa 2048/3072/4096, ec 256/384/521, hmac 256/384/512).
        #[arg(long)]
        size: String,
        /// The state new keys start in: `active` or `pre_activation`.
        #[arg(long, default_value = "active")]
        state: String,
        /// The keystore type keys go to (ibm_cloud_kms, aws_kms, hashicorp_vault, …).
        #[arg(long)]
        keystore_type: String,
        /// The keystore group keys go to.
        #[arg(long)]
        group: String,
        /// Labels must match it, e.g. `app-<name>`.
        #[arg(long)]
        naming_scheme: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
}

/// Archive or unarchive (`action`), reporting it as `verb`.
async fn set_archived(
    client: &keyplane_client::Client,
    output: super::Output,
    id: &str,
    if_match: Option<&str>,
    (verb, action): (&str, &str),
) -> anyhow::Result<()> {
    let t = client
        .act(
            Method::POST,
            &format!("/api/v4/templates/{id}"),
            action,
            None,
            if_match,
        )
        .await?
        .body;
    done(output, &format!("{verb} template {id}"), &t);
    Ok(())
}

pub async fn run(args: &ConnectArgs, command: TemplateCommand) -> anyhow::Result<()> {
    let client = args.client().await?;
    match command {
        TemplateCommand::List {
            vault_id,
            name,
            all_pages,
        } => {
            let path = with_query(
                "/api/v4/templates",
                &[("vault.id", vault_id.as_deref()), ("name", name.as_deref())],
            );
            let (items, total) = list(&client, &path, "templates", all_pages).await?;
            print_list(args.output, &items, COLUMNS, total);
        }
        TemplateCommand::Get { id } => {
            let t = client.get(&format!("/api/v4/templates/{id}")).await?.body;
            print_one(args.output, &t, FIELDS);
        }
        TemplateCommand::Update {
            id,
            description,
            keystore,
            if_match,
        } => {
            let mut body = with_fields(json!({}), [("description", description)]);
            if let Some(k) = keystore {
                let (kind, group) = k
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--keystore is type:group"))?;
                body["keystores"] = json!([{"type": kind, "group": group}]);
            }
            let t = patch(
                &client,
                &format!("/api/v4/templates/{id}"),
                &body,
                if_match.as_deref(),
            )
            .await?;
            done(args.output, &format!("updated template {id}"), &t);
        }
        TemplateCommand::Archive { id, if_match } => {
            let verb = ("archived", "/archive");
            set_archived(&client, args.output, &id, if_match.as_deref(), verb).await?;
        }
        TemplateCommand::Unarchive { id, if_match } => {
            let verb = ("unarchived", "/unarchive");
            set_archived(&client, args.output, &id, if_match.as_deref(), verb).await?;
        }
        TemplateCommand::Delete { id, yes, if_match } => {
            confirm(yes, &format!("Delete template {id}?"))?;
            delete(
                &client,
                &format!("/api/v4/templates/{id}"),
                "",
                if_match.as_deref(),
            )
            .await?;
            done(
                args.output,
                &format!("deleted template {id}"),
                &json!({"id": id}),
            );
        }
        TemplateCommand::Create {
            vault,
            name,
            algorithm,
            size,
            state,
            keystore_type,
            group,
            naming_scheme,
            description,
        } => {
            let body = with_fields(
                json!({
                    "vault": {"id": vault}, "name": name,
                    "key": {"algorithm": algorithm, "size": size, "state": state},
                    "keystores": [{"type": keystore_type, "group": group}],
                }),
                [
                    ("naming_scheme", naming_scheme),
                    ("description", description),
                ],
            );
            let t = client.post("/api/v4/templates", &body).await?.body;
            done(
                args.output,
                &format!(
                    "created template {} ({})",
                    t["name"].as_str().unwrap_or_default(),
                    t["id"].as_str().unwrap_or_default()
                ),
                &t,
            );
        }
    }
    Ok(())
}
