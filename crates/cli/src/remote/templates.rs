//! `keyplane template …`

use clap::Subcommand;

use super::{ConnectArgs, list, print_list, print_one, with_query};

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
    }
    Ok(())
}
