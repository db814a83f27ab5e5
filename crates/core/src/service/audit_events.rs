//! Reading and recording the audit trail.

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::audit::denials::{DenialSource, Verdict};
use crate::audit::{self, AuditEvent, AuditScope, PendingEvent, Target};
use crate::authz::{Caller, Permission};
use crate::error::{Error, Result};
use crate::model::Page;
use crate::operation::Operation;
use crate::ports::{AuditChainReport, AuditQuery};

use super::Keyplane;

/// Who asks for a call made beside the HTTP API (a console user's), and what it asked.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The caller's name, as the trail records initiators.
    pub initiator: String,
    pub correlation_id: String,
    pub source: Option<IpAddr>,
    /// The resource the call names, when it names one (a store write names what it changed).
    pub target: Option<Target>,
    /// What was asked; secrets are redacted and the size bounded before it is recorded.
    pub request: serde_json::Value,
    /// How long the call may take; past it the call stops and is recorded as timed out.
    pub deadline: Option<Duration>,
}

impl Keyplane {
    /// Runs `call`, one `operation` for a caller reached beside the HTTP API, in its own audit
    /// scope, and records it as the API records the same operation: a change with its write
    /// (or as a success that wrote nothing), a failure with its status, a denial within the
    /// caller's bound. While sealed only the seal's own operations run.
    pub async fn recorded<T>(
        &self,
        operation: &Operation,
        success_status: u16,
        origin: Origin,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let changes = operation.changes_state();
        let request = if operation.withholds_body {
            serde_json::Value::Null
        } else {
            audit::bounded_body(audit::redact(&origin.request))
        };
        let scope = AuditScope::new(PendingEvent {
            action: operation.action,
            severity: operation.severity,
            initiator: origin.initiator.clone(),
            target: origin.target,
            vault_id: None,
            correlation_id: origin.correlation_id,
            source: origin.source,
            request,
            success_status,
        });
        let result = if self.is_sealed() && !operation.while_sealed {
            Err(Error::Sealed)
        } else {
            let call = audit::in_scope(scope.clone(), call);
            match origin.deadline {
                Some(deadline) => tokio::time::timeout(deadline, call)
                    .await
                    .unwrap_or(Err(Error::TimedOut)),
                None => call.await,
            }
        };
        // What the call answers on success: a request awaiting approval answers 202, a dry run
        // 200, whatever the operation's usual status.
        let success_status = scope.pending().map_or(success_status, |p| p.success_status);
        let (outcome, status) = match &result {
            Err(e) if matches!(e, Error::Forbidden | Error::Unauthorized(_)) => {
                ("denied", e.status())
            }
            Err(e) => ("failure", e.status()),
            Ok(_) if changes && !scope.written() => ("success", success_status),
            Ok(_) if scope.noteworthy() => ("success", success_status),
            Ok(_) => return result,
        };
        if let Some(pending) = scope.pending() {
            if outcome == "denied" {
                // Unauthenticated refusals are bounded per address, as anyone can make them.
                let source = if status == 401 {
                    DenialSource::Address(origin.source)
                } else {
                    DenialSource::Caller(pending.initiator.clone())
                };
                self.record_denial(source, pending, status).await;
            } else {
                self.append_or_log(pending.finish(outcome, status)).await;
            }
        }
        result
    }

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
