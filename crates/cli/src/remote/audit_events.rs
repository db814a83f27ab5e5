//! `keyplane audit events` and `keyplane audit chain`: the audit trail through a running
//! server's API (any store, any node), where `audit verify`/`export` read a data directory.

use clap::Args;

use super::{ConnectArgs, list, print_list, print_one, with_query};

#[derive(Args)]
pub struct EventFilters {
    /// Only this action, e.g. `keyplane.managed-keys.write`.
    #[arg(long)]
    pub action: Option<String>,
    /// success, failure or denied.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only events of this initiator.
    #[arg(long)]
    pub initiator: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Only events after this position in the chain.
    #[arg(long)]
    pub after_seq: Option<i64>,
    /// Every page, not only the first.
    #[arg(long)]
    pub all_pages: bool,
}

pub async fn events(args: &ConnectArgs, f: EventFilters) -> anyhow::Result<()> {
    let client = args.client().await?;
    let after = f.after_seq.map(|s| s.to_string());
    let path = with_query(
        "/api/v4/audit_events",
        &[
            ("action", f.action.as_deref()),
            ("outcome", f.outcome.as_deref()),
            ("initiator", f.initiator.as_deref()),
            ("since", f.since.as_deref()),
            ("until", f.until.as_deref()),
            ("after_seq", after.as_deref()),
        ],
    );
    let (items, total) = list(&client, &path, "audit_events", f.all_pages).await?;
    print_list(
        args.output,
        &items,
        &[
            ("SEQ", "/seq"),
            ("AT", "/at"),
            ("ACTION", "/action"),
            ("OUTCOME", "/outcome"),
            ("STATUS", "/status"),
            ("INITIATOR", "/initiator"),
            ("TARGET", "/target"),
        ],
        total,
    );
    Ok(())
}

/// Asks the server to walk its chain; a broken chain is an error (exit code 1).
pub async fn chain(args: &ConnectArgs) -> anyhow::Result<()> {
    let client = args.client().await?;
    let report = client.get("/api/v4/audit_events/verification").await?.body;
    print_one(
        args.output,
        &report,
        &[
            ("intact", "/intact"),
            ("events", "/events"),
            ("head", "/head"),
            ("first broken", "/first_broken"),
            ("reason", "/reason"),
        ],
    );
    if report["intact"].as_bool() != Some(true) {
        anyhow::bail!(
            "audit chain broken at event {}: {}",
            report["first_broken"],
            report["reason"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
