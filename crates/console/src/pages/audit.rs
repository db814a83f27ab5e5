//! The audit trail: a filtered list of events, newest first, and whether the hash chain
//! verifies.

use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use keyplane_core::audit::AuditEvent;
use keyplane_core::operation::catalog;
use keyplane_core::ports::{AuditChainReport, AuditQuery};
use serde::Deserialize;

use super::{Paging, link_query, window};
use crate::{Chrome, PageError, PageResult, Problem, User, render};

const PAGE_SIZE: u64 = 50;
const OUTCOMES: [&str; 3] = ["success", "failure", "denied"];
/// Longest text filter, as the API bounds it.
const MAX_FILTER: usize = 256;

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

impl Filters {
    /// The filters as the trail's query reads them.
    fn query(&self, limit: u32, offset: u64) -> Result<AuditQuery, PageError> {
        let refuse = |message: &str| {
            PageError::Api(Box::new(Problem::new(StatusCode::BAD_REQUEST, message)))
        };
        let text = |v: &str| -> Result<Option<String>, PageError> {
            let v = v.trim();
            if v.len() > MAX_FILTER {
                return Err(refuse("A filter is too long."));
            }
            Ok((!v.is_empty()).then(|| v.to_owned()))
        };
        let outcome = text(&self.outcome)?;
        if outcome.as_deref().is_some_and(|o| !OUTCOMES.contains(&o)) {
            return Err(refuse("The outcome is one of success, failure or denied."));
        }
        let since = text(&self.since)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| refuse("Since is a time such as 2026-01-01T00:00:00Z."))
            })
            .transpose()?;
        Ok(AuditQuery {
            paging: window(limit, offset)?,
            action: text(&self.action)?,
            outcome,
            initiator: text(&self.initiator)?,
            since,
            ..AuditQuery::default()
        })
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
pub(crate) struct AuditPage {
    chrome: Chrome,
    events: Vec<AuditEvent>,
    paging: Paging,
    filters: Filters,
    chain: AuditChainReport,
}

impl AuditPage {
    fn chain_intact(&self) -> bool {
        self.chain.first_broken.is_none()
    }
}

/// What an event's request was: the API call's method and path, or the console.
pub(crate) fn request_summary(event: &AuditEvent) -> String {
    let r = &event.request;
    match (r["method"].as_str(), r["path"].as_str()) {
        (Some(method), Some(path)) => format!("{method} {path}"),
        _ if r["via"] == "console" => "console".to_owned(),
        _ => String::new(),
    }
}

pub(crate) async fn list(user: User, Query(f): Query<Filters>) -> PageResult {
    let (kp, caller) = (user.keyplane(), user.caller());
    let offset = match f.offset {
        Some(offset) => offset,
        None => {
            let probe = f.query(1, 0)?;
            let total = user
                .read(
                    &catalog::AUDIT_LIST,
                    None,
                    kp.list_audit_events(caller, &probe),
                )
                .await?
                .total_count;
            u64::try_from(total).unwrap_or(0).saturating_sub(PAGE_SIZE)
        }
    };
    let query = f.query(PAGE_SIZE as u32, offset)?;
    let page = user
        .read(
            &catalog::AUDIT_LIST,
            None,
            kp.list_audit_events(caller, &query),
        )
        .await?;
    let mut events = page.items;
    // Newest first on the page.
    events.reverse();
    let chain = user
        .read(&catalog::AUDIT_VERIFY, None, kp.verify_audit_chain(caller))
        .await?;
    let links = link_query(&[
        ("action", &f.action),
        ("outcome", &f.outcome),
        ("initiator", &f.initiator),
        ("since", &f.since),
    ]);
    render(&AuditPage {
        chrome: user.chrome("audit"),
        events,
        paging: Paging::new(offset, PAGE_SIZE, page.total_count, links),
        filters: f,
        chain,
    })
}
