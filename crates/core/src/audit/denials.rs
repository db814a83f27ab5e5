//! Denied calls stay visible without flooding the trail: each source (a caller, or an address for
//! unauthenticated calls) has a bounded number of individual events a minute; the denials past
//! that are counted and recorded as one summary event once the minute is over.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::{AuditEvent, PendingEvent};

/// Individual denial events per source and window.
pub const EVENTS_PER_WINDOW: u32 = 60;
/// The window over which denials are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once; past that, new sources share one window so nothing goes uncounted.
const MAX_SOURCES: usize = 10_000;

/// Who a denial is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DenialSource {
    /// An authenticated caller refused by its roles.
    Caller(String),
    /// An unauthenticated call, by client address.
    Address(Option<IpAddr>),
    /// Any source arriving while the ledger is full.
    Overflow,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    opened_at: DateTime<Utc>,
    recorded: u32,
    counted: u64,
    /// The last denial counted without an event of its own: the summary is made from it.
    last: Option<(PendingEvent, u16)>,
}

/// What to do with one denial.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Record it as its own event.
    Record,
    /// Counted; the window's summary will carry it.
    Counted,
}

#[derive(Debug, Default)]
pub struct DenialLedger {
    windows: Mutex<HashMap<DenialSource, Window>>,
}

impl DenialLedger {
    /// Counts a denial of `pending` (answered `status`) against `source` at `now`. Returns the
    /// verdict, and the summary of an earlier window of that source that this call closes.
    pub fn admit(
        &self,
        source: DenialSource,
        pending: &PendingEvent,
        status: u16,
        now: Instant,
    ) -> (Verdict, Option<AuditEvent>) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let source = if windows.len() >= MAX_SOURCES && !windows.contains_key(&source) {
            DenialSource::Overflow
        } else {
            source
        };
        let closed = match windows.get(&source) {
            Some(w) if now.duration_since(w.opened) >= WINDOW => {
                windows.remove(&source).and_then(|w| summary(&source, w))
            }
            _ => None,
        };
        let window = windows.entry(source).or_insert_with(|| Window {
            opened: now,
            opened_at: Utc::now(),
            recorded: 0,
            counted: 0,
            last: None,
        });
        let verdict = if window.recorded < EVENTS_PER_WINDOW {
            window.recorded += 1;
            Verdict::Record
        } else {
            window.counted += 1;
            window.last = Some((pending.clone(), status));
            Verdict::Counted
        };
        (verdict, closed)
    }

    /// The summaries of every window over at `now`, which are forgotten.
    pub fn close_expired(&self, now: Instant) -> Vec<AuditEvent> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let expired: Vec<DenialSource> = windows
            .iter()
            .filter(|(_, w)| now.duration_since(w.opened) >= WINDOW)
            .map(|(source, _)| source.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|source| {
                let window = windows.remove(&source)?;
                summary(&source, window)
            })
            .collect()
    }

    /// The summaries of every window, over or not (at shutdown).
    pub fn close_all(&self) -> Vec<AuditEvent> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows
            .drain()
            .filter_map(|(source, window)| summary(&source, window))
            .collect()
    }
}

/// One event for the denials a window counted without recording them; `None` when it counted
/// none.
fn summary(source: &DenialSource, window: Window) -> Option<AuditEvent> {
    let (last, status) = window.last?;
    let request = serde_json::json!({
        "denied_calls": window.counted,
        "first_at": window.opened_at.trunc_subsecs(3),
        "last": last.request,
        "individually_recorded": window.recorded,
    });
    let event = PendingEvent {
        action: "keyplane.audit.denials-summarised",
        severity: crate::operation::Severity::Critical,
        initiator: match source {
            DenialSource::Overflow => "many".into(),
            _ => last.initiator,
        },
        target: None,
        vault_id: None,
        correlation_id: Uuid::new_v4().to_string(),
        source: last.source,
        request,
        success_status: status,
    };
    Some(event.finish("denied", status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(initiator: &str) -> PendingEvent {
        PendingEvent {
            action: "keyplane.vaults.read",
            severity: crate::operation::Severity::Normal,
            initiator: initiator.into(),
            target: None,
            vault_id: None,
            correlation_id: "c".into(),
            source: None,
            request: serde_json::json!({"method": "GET", "path": "/api/v4/vaults"}),
            success_status: 200,
        }
    }

    #[test]
    fn a_flood_is_recorded_up_to_the_bound_then_counted_into_one_summary() {
        let ledger = DenialLedger::default();
        let start = Instant::now();
        let who = DenialSource::Caller("mallory".into());
        for i in 0..EVENTS_PER_WINDOW {
            let (verdict, closed) = ledger.admit(who.clone(), &pending("mallory"), 403, start);
            assert_eq!(verdict, Verdict::Record, "call {i}");
            assert!(closed.is_none());
        }
        for _ in 0..1_000 {
            let (verdict, _) = ledger.admit(who.clone(), &pending("mallory"), 403, start);
            assert_eq!(verdict, Verdict::Counted);
        }
        // Another caller has its own bound.
        let other = DenialSource::Caller("alice".into());
        assert_eq!(
            ledger.admit(other, &pending("alice"), 403, start).0,
            Verdict::Record
        );
        assert!(ledger.close_expired(start + WINDOW / 2).is_empty());
        let summaries = ledger.close_expired(start + WINDOW);
        assert_eq!(summaries.len(), 1, "alice's window counted nothing");
        let s = &summaries[0];
        assert_eq!(s.request["denied_calls"], 1_000);
        assert_eq!(s.initiator, "mallory");
        assert_eq!(s.outcome, "denied");
        assert_eq!(s.status, 403);
        assert_eq!(s.action, "keyplane.audit.denials-summarised");
        // A new window records again.
        let (verdict, closed) = ledger.admit(who, &pending("mallory"), 403, start + WINDOW);
        assert_eq!(verdict, Verdict::Record);
        assert!(closed.is_none(), "the summary was already taken");
    }

    #[test]
    fn the_next_denial_after_a_window_closes_it() {
        let ledger = DenialLedger::default();
        let start = Instant::now();
        let who = DenialSource::Address(None);
        for _ in 0..=EVENTS_PER_WINDOW {
            ledger.admit(who.clone(), &pending("anonymous"), 401, start);
        }
        let (verdict, closed) =
            ledger.admit(who.clone(), &pending("anonymous"), 401, start + WINDOW);
        assert_eq!(verdict, Verdict::Record);
        assert_eq!(closed.expect("summary").request["denied_calls"], 1);
        assert!(ledger.close_all().is_empty());
    }
}
