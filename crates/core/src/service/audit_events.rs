//! Reading and recording the audit trail.

use std::time::{Duration, Instant};

use crate::audit::denials::{DenialSource, Verdict};
use crate::audit::{AuditEvent, PendingEvent};
use crate::authz::{Caller, Permission};
use crate::error::Result;
use crate::model::Page;
use crate::ports::{AuditChainReport, AuditQuery};

use super::Keyplane;

impl Keyplane {
    pub async fn list_audit_events(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Page<AuditEvent>> {
        caller.require(Permission::Administer)?;
        self.store.list_audit_events(query).await
    }

    /// Records an event that no write recorded (failures, denials, calls of note).
    pub async fn record_audit_event(&self, event: AuditEvent) -> Result<()> {
        self.store.append_audit_event(event).await
    }

    /// Records a denied call, unless its source is past its bound of individual events this
    /// window: then it is only counted, and recorded in the window's summary.
    pub async fn record_denial(&self, source: DenialSource, pending: PendingEvent, status: u16) {
        let (verdict, closed) = self.denials.admit(source, &pending, status, Instant::now());
        if let Some(summary) = closed {
            self.append_or_log(summary).await;
        }
        if verdict == Verdict::Record {
            self.append_or_log(pending.finish("denied", status)).await;
        }
    }

    /// Records the summaries of denial windows as they end; runs until the task is dropped.
    pub async fn run_denial_summaries(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for summary in self.denials.close_expired(Instant::now()) {
                self.append_or_log(summary).await;
            }
        }
    }

    /// Records the summaries of every denial window still open (at shutdown, so none is lost).
    pub async fn close_denial_windows(&self) {
        for summary in self.denials.close_all() {
            self.append_or_log(summary).await;
        }
    }

    async fn append_or_log(&self, event: AuditEvent) {
        if let Err(e) = self.store.append_audit_event(event).await {
            tracing::error!(error = %e, "an audit event could not be recorded");
        }
    }

    pub async fn verify_audit_chain(&self, caller: &Caller) -> Result<AuditChainReport> {
        caller.require(Permission::Administer)?;
        self.store.verify_audit_chain().await
    }
}
