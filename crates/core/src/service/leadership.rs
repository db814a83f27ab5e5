//! Which node runs scheduled work. Several nodes on one database elect one through the store's
//! lease ([`crate::ports::Store::lead`]); drift checks, key-pool refills and any later schedule
//! run only on the node that holds it, and stop as soon as it cannot renew it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Keyplane;

/// How long a lease lasts: a dead leader is replaced within this (plus one renewal).
pub const LEADER_LEASE: Duration = Duration::from_secs(5);
/// How often the lease is renewed or sought.
const RENEW_EVERY: Duration = Duration::from_millis(1_500);

/// This node's hold on the lease: the term and until when it counts (measured here from before
/// the renewal was sent, so the node stops leading before the database frees the lease).
#[derive(Default)]
pub(crate) struct Leadership {
    held: Mutex<Option<(i64, Instant)>>,
    /// Whether [`Keyplane::run_leadership`] keeps `held` current.
    renewing: std::sync::atomic::AtomicBool,
}

impl Leadership {
    fn set(&self, held: Option<(i64, Instant)>) {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = held;
    }

    /// The term under which this node leads now, if it does.
    pub(crate) fn term(&self) -> Option<i64> {
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.filter(|(_, until)| Instant::now() < *until)
            .map(|(term, _)| term)
    }
}

impl Keyplane {
    /// Whether this node runs scheduled work now, and under which term. Without the renewing
    /// loop (a node that runs no schedule loop of its own, tests) the store is asked directly.
    pub async fn leader_term(&self) -> Option<i64> {
        if self
            .leadership
            .renewing
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return self.leadership.term();
        }
        self.store.lead(LEADER_LEASE).await.ok().flatten()
    }

    /// Whether this node runs the deployment's scheduled work now, as last renewed (no database
    /// call: for `/health`).
    pub fn is_leader(&self) -> bool {
        self.leadership.term().is_some()
    }

    /// Seeks and renews the lease until the process ends.
    pub async fn run_leadership(self) {
        self.leadership
            .renewing
            .store(true, std::sync::atomic::Ordering::Release);
        let mut was = None;
        loop {
            let asked = Instant::now();
            let held = match self.store.lead(LEADER_LEASE).await {
                Ok(term) => term.map(|t| (t, asked + LEADER_LEASE)),
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease failed");
                    None
                }
            };
            let term = held.map(|(t, _)| t);
            if term != was {
                match term {
                    Some(t) => tracing::info!(term = t, "this node now runs scheduled work"),
                    None => tracing::info!("another node runs scheduled work"),
                }
                was = term;
            }
            self.leadership.set(held);
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }
}
