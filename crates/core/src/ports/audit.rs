//! The hash-chained audit trail.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;

/// Which audit events to list (oldest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub paging: crate::query::Paging,
    /// Only events after this position in the chain.
    pub after_seq: i64,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub initiator: Option<String>,
    pub vault_id: Option<Uuid>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl AuditQuery {
    /// The next events of the chain after position `seq`, as many as a page holds.
    pub fn after(seq: i64) -> Self {
        Self {
            paging: crate::query::Paging {
                limit: crate::query::MAX_LIMIT,
                offset: 0,
            },
            after_seq: seq,
            ..Self::default()
        }
    }
}

/// The result of walking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditChainReport {
    /// Events verified (before the first broken link, if any).
    pub events: u64,
    /// Position of the first event that does not verify.
    pub first_broken: Option<i64>,
    pub reason: Option<String>,
    /// Hash of the last verified event.
    pub head: String,
}

impl AuditChainReport {
    pub fn broken(events: u64, seq: i64, reason: &str) -> Self {
        Self {
            events,
            first_broken: Some(seq),
            reason: Some(reason.to_owned()),
            head: String::new(),
        }
    }
}

/// The hash-chained audit trail.
#[async_trait]
pub trait AuditRecords: Send + Sync + 'static {
    /// Appends an event to the audit chain on its own (the failures, denials and reads the
    /// writes did not record).
    async fn append_audit_event(&self, event: crate::audit::AuditEvent) -> Result<()>;

    async fn list_audit_events(&self, query: &AuditQuery)
    -> Result<Page<crate::audit::AuditEvent>>;

    async fn verify_audit_chain(&self) -> Result<AuditChainReport>;
}
