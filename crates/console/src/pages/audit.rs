//! The audit trail: a filtered list of events, newest first, and whether the hash chain
//! verifies.

use askama::Template;
use axum::extract::Query;
use serde::Deserialize;
use serde_json::Value;

use super::Paging;
use crate::api::with_query;
use crate::view::Text;
use crate::{Chrome, PageResult, User, render};

const PAGE_SIZE: u64 = 50;

#[derive(Deserialize, Default)]
pub(crate) struct Filters {
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    initiator: String,
    #[serde(default)]
    since: String,
    /// Position in the chain (oldest first); the newest page when absent.
    #[serde(default)]
    offset: Option<u64>,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub(crate) struct AuditPage {
    chrome: Chrome,
    events: Vec<Value>,
    paging: Paging,
    filters: Filters,
    chain: Value,
}

impl AuditPage {
    fn chain_intact(&self) -> bool {
        self.chain["intact"].as_bool().unwrap_or(false)
    }
}

pub(crate) async fn list(user: User, Query(f): Query<Filters>) -> PageResult {
    let filters = [
        ("action", f.action.as_str()),
        ("outcome", f.outcome.as_str()),
        ("initiator", f.initiator.as_str()),
        ("since", f.since.as_str()),
    ];
    let offset = match f.offset {
        Some(offset) => offset,
        None => {
            let probe = with_query("/api/v4/audit_events?limit=1", &filters);
            let total = user.get(&probe).await?.body["total_count"]
                .as_u64()
                .unwrap_or(0);
            total.saturating_sub(PAGE_SIZE)
        }
    };
    let path = with_query(
        &format!("/api/v4/audit_events?limit={PAGE_SIZE}&offset={offset}"),
        &filters,
    );
    let answer = user.get(&path).await?;
    let mut events = answer.body.items("/audit_events");
    // Newest first on the page.
    events.reverse();
    let chain = user.get("/api/v4/audit_events/verification").await?.body;
    let query = with_query("", &filters);
    render(&AuditPage {
        chrome: user.chrome("audit"),
        events,
        paging: Paging::new(
            offset,
            PAGE_SIZE,
            answer.body["total_count"].as_u64().unwrap_or(0),
            query.trim_start_matches('?').to_owned(),
        ),
        filters: f,
        chain,
    })
}
