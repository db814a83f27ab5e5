//! `keyplane approval …`: requests under dual control, decided by a second person.

use clap::Subcommand;
use reqwest::Method;

use super::{ConnectArgs, done, print_list, print_one};

const FIELDS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("action", "/action"),
    ("key", "/key_id"),
    ("state", "/state"),
    ("requested by", "/requested_by"),
    ("requested", "/requested_at"),
    ("expires", "/expires_at"),
    ("decided by", "/decided_by"),
];

#[derive(Subcommand)]
pub enum ApprovalCommand {
    /// Requests in the vaults you may see.
    List,
    /// One request.
    Get { id: String },
    /// Approve a request made by someone else: the action is carried out now.
    Approve { id: String },
    /// Reject a request.
    Reject { id: String },
}

pub async fn run(args: &ConnectArgs, command: ApprovalCommand) -> anyhow::Result<()> {
    let client = args.client().await?;
    let out = args.output;
    match command {
        ApprovalCommand::List => {
            let body = client.get("/api/v4/approvals").await?.body;
            let items = body["approvals"]
                .as_array()
                .or_else(|| body.as_array())
                .cloned()
                .unwrap_or_default();
            print_list(
                out,
                &items,
                &[
                    ("ID", "/id"),
                    ("ACTION", "/action"),
                    ("KEY", "/key_id"),
                    ("STATE", "/state"),
                    ("REQUESTED BY", "/requested_by"),
                ],
                None,
            );
        }
        ApprovalCommand::Get { id } => {
            let a = client.get(&format!("/api/v4/approvals/{id}")).await?.body;
            print_one(out, &a, FIELDS);
        }
        ApprovalCommand::Approve { id } => decide(&client, out, &id, "approve").await?,
        ApprovalCommand::Reject { id } => decide(&client, out, &id, "reject").await?,
    }
    Ok(())
}

async fn decide(
    client: &keyplane_client::Client,
    output: super::Output,
    id: &str,
    decision: &str,
) -> anyhow::Result<()> {
    let reply = client
        .send(
            Method::POST,
            &format!("/api/v4/approvals/{id}/{decision}"),
            None,
            None,
        )
        .await?;
    done(output, &format!("{decision}d request {id}"), &reply.body);
    Ok(())
}
