//! Reading and recording the audit trail.

use crate::audit::AuditEvent;
use crate::error::Result;
use crate::model::Page;
use crate::ports::{AuditChainReport, AuditQuery};

use super::Keyplane;

impl Keyplane {
    pub async fn list_audit_events(&self, query: &AuditQuery) -> Result<Page<AuditEvent>> {
        self.store.list_audit_events(query).await
    }

    /// Records an event that no write recorded (failures, denials, calls of note).
    pub async fn record_audit_event(&self, event: AuditEvent) -> Result<()> {
        self.store.append_audit_event(event).await
    }

    pub async fn verify_audit_chain(&self) -> Result<AuditChainReport> {
        self.store.verify_audit_chain().await
    }
}
