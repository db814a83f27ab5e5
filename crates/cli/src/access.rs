//! `keyplane access`: principals and their API keys, through a running server's API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::admin::{ServerArgs, call, print};

#[derive(Subcommand)]
pub enum AccessCommand {
    /// List principals.
    Principals(ServerArgs),
    /// Create a principal (a user or a service).
    PrincipalCreate {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        name: String,
        /// `user` or `service`.
        #[arg(long, default_value = "user")]
        kind: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a principal and all its API keys.
    PrincipalDelete {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        id: String,
    },
    /// A principal's API keys (never the keys themselves).
    ApiKeys {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        principal: String,
    },
    /// Create an API key; the key is printed once.
    ApiKeyCreate {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        principal: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Replace an API key with a new one (printed once); the old one stops working.
    ApiKeyRotate {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        id: String,
    },
    /// Revoke an API key: it and its access tokens stop working at once.
    ApiKeyRevoke {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        id: String,
    },
}

pub async fn run(command: AccessCommand) -> anyhow::Result<()> {
    let (server, method, path, body) = match command {
        AccessCommand::Principals(server) => (
            server,
            Method::GET,
            "/api/v4/access/principals".to_owned(),
            None,
        ),
        AccessCommand::PrincipalCreate {
            server,
            name,
            kind,
            description,
        } => (
            server,
            Method::POST,
            "/api/v4/access/principals".to_owned(),
            Some(json!({ "name": name, "kind": kind, "description": description })),
        ),
        AccessCommand::PrincipalDelete { server, id } => (
            server,
            Method::DELETE,
            format!("/api/v4/access/principals/{id}"),
            None,
        ),
        AccessCommand::ApiKeys { server, principal } => (
            server,
            Method::GET,
            format!("/api/v4/access/principals/{principal}/api_keys"),
            None,
        ),
        AccessCommand::ApiKeyCreate {
            server,
            principal,
            name,
        } => (
            server,
            Method::POST,
            format!("/api/v4/access/principals/{principal}/api_keys"),
            Some(json!({ "name": name })),
        ),
        AccessCommand::ApiKeyRotate { server, id } => (
            server,
            Method::POST,
            format!("/api/v4/access/api_keys/{id}/rotate"),
            Some(json!({})),
        ),
        AccessCommand::ApiKeyRevoke { server, id } => (
            server,
            Method::DELETE,
            format!("/api/v4/access/api_keys/{id}"),
            None,
        ),
    };
    let answer = call(&server, method, &path, body).await?;
    if !answer.is_null() {
        print(&answer);
    }
    Ok(())
}
