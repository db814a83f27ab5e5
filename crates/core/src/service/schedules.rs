//! The scheduler: on the leader, every `SchedulePolicy::every`, it rotates, deactivates and
//! destroys the keys whose schedules are due, each as the same core operation a person would
//! call, audited with initiator `scheduler`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{Decided, Keyplane, Origin};
use crate::audit::Target;
use crate::authz::Caller;
use crate::error::Result;
use crate::model::{Actor, KeySchedule, ManagedKey};
use crate::operation::catalog;
use crate::schedule::{self, Interval, ScheduledAction};

/// The initiator of scheduled actions in the audit trail.
pub const SCHEDULER: &str = "scheduler";

/// Keys looked at per pass; the rest wait for the next one.
const DUE_PER_PASS: u32 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct SchedulePolicy {
    /// How often due schedules are looked for.
    pub every: Duration,
    /// The shortest schedule interval a template or key may set.
    pub min_interval: chrono::Duration,
    /// Scheduled actions running at once in one vault.
    pub per_vault: usize,
}

impl Default for SchedulePolicy {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(30),
            min_interval: chrono::Duration::days(1),
            per_vault: 4,
        }
    }
}

/// Keys whose scheduled action failed, and when to try again (doubling from a minute to an
/// hour), so that a key that cannot be rotated is not retried, and audited, every pass.
#[derive(Debug, Default)]
struct Retries(HashMap<Uuid, (Instant, u32)>);

impl Retries {
    fn waiting(&self, key: Uuid, now: Instant) -> bool {
        self.0.get(&key).is_some_and(|(at, _)| *at > now)
    }

    fn failed(&mut self, key: Uuid, now: Instant) {
        let failures = self.0.get(&key).map_or(0, |(_, n)| *n) + 1;
        let wait = Duration::from_secs(60 << failures.min(6)).min(Duration::from_secs(3600));
        self.0.insert(key, (now + wait, failures));
    }

    fn postpone(&mut self, key: Uuid, now: Instant, wait: Duration) {
        self.0.insert(key, (now + wait, 0));
    }
}

impl Keyplane {
    /// Sets how the scheduler runs and the shortest interval schedules may have.
    #[must_use]
    pub fn with_schedule_policy(mut self, policy: SchedulePolicy) -> Self {
        self.schedules = policy;
        self
    }

    /// Checks a template's or key's schedules: intervals no shorter than the deployment's
    /// minimum (nor, for rotation, the minimum between two rotations), and destruction never
    /// sooner than the destroy grace period allows. `prefix` names the fields as the request
    /// does (`key.` in a template).
    pub(crate) fn check_schedule(&self, s: &KeySchedule, prefix: &str) -> Result<()> {
        if let Some(text) = &s.rotation_interval {
            let minimum = self
                .schedules
                .min_interval
                .max(self.policy.rotation_min_interval);
            Interval::at_least(&format!("{prefix}rotation_interval"), text, minimum)?;
        }
        if let Some(text) = &s.destroy_after_deactivation {
            let minimum = self
                .schedules
                .min_interval
                .max(self.policy.destroy_grace_period);
            Interval::at_least(
                &format!("{prefix}destroy_after_deactivation"),
                text,
                minimum,
            )?;
        }
        Ok(())
    }

    /// Runs due schedules every `SchedulePolicy::every`, on the leader, while unsealed.
    pub async fn run_schedules(self) {
        let mut retries = Retries::default();
        loop {
            tokio::time::sleep(self.schedules.every).await;
            if self.engine.is_sealed() || self.leader_term().await.is_none() {
                continue;
            }
            if let Err(e) = self.run_due_schedules(&mut retries).await {
                tracing::warn!(error = %e, "looking for due schedules failed");
            }
        }
    }

    /// One pass: every key due now, its action run, at most `per_vault` at once per vault.
    async fn run_due_schedules(&self, retries: &mut Retries) -> Result<()> {
        let now = Utc::now();
        let started = Instant::now();
        let mut due = Vec::new();
        for id in self.store.due_scheduled_keys(now, DUE_PER_PASS).await? {
            if retries.waiting(id, started) {
                continue;
            }
            // Read again: the index may lag a change made since, which decides.
            let Ok(key) = self.load_key(id).await else {
                continue;
            };
            if let Some((at, action)) = schedule::next(&key)
                && at <= now
            {
                due.push((key, action));
            }
        }
        let mut vaults: HashMap<Uuid, Arc<Semaphore>> = HashMap::new();
        let mut runs = tokio::task::JoinSet::new();
        for (key, action) in due {
            let slots = vaults
                .entry(key.vault.id)
                .or_insert_with(|| Arc::new(Semaphore::new(self.schedules.per_vault.max(1))))
                .clone();
            let keyplane = self.clone();
            runs.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let outcome = keyplane.run_scheduled(&key, action).await;
                (key.id, action, outcome)
            });
        }
        while let Some(joined) = runs.join_next().await {
            let Ok((id, action, outcome)) = joined else {
                continue;
            };
            match outcome {
                Ok(Ran::Done) => {
                    retries.0.remove(&id);
                }
                // Under dual control the request waits for a second person; asking again
                // every pass would only repeat it.
                Ok(Ran::AwaitsApproval) => retries.postpone(id, started, Duration::from_secs(3600)),
                Err(e) => {
                    tracing::warn!(key = %id, action = action.as_str(), error = %e, "a scheduled action failed");
                    retries.failed(id, started);
                }
            }
        }
        Ok(())
    }

    /// One scheduled action, as the operation a person would call, recorded with initiator
    /// `scheduler`.
    async fn run_scheduled(&self, key: &ManagedKey, action: ScheduledAction) -> Result<Ran> {
        let caller = Caller::administrator(Actor(SCHEDULER.to_owned()));
        let origin = Origin {
            initiator: SCHEDULER.to_owned(),
            correlation_id: Uuid::new_v4().to_string(),
            source: None,
            target: Some(Target {
                resource: "managed_keys",
                id: key.id,
            }),
            request: serde_json::json!({ "schedule": action.as_str() }),
            deadline: Some(Duration::from_secs(60)),
        };
        let id = key.id;
        // The key as read just now: a change made since wins, and this run fails and retries.
        let read = super::key_protect::as_read(key);
        let read = Some(&read);
        match action {
            ScheduledAction::Rotate => self
                .recorded(
                    &catalog::KEY_ROTATE,
                    200,
                    origin,
                    self.rotate_key(&caller, id, read),
                )
                .await
                .map(|_| Ran::Done),
            ScheduledAction::Deactivate => self
                .recorded(
                    &catalog::KEY_DEACTIVATE,
                    200,
                    origin,
                    self.deactivate_key(&caller, id, read),
                )
                .await
                .map(|_| Ran::Done),
            ScheduledAction::Destroy => self
                .recorded(
                    &catalog::KEY_DESTROY,
                    200,
                    origin,
                    self.destroy_key(&caller, id, read),
                )
                .await
                .map(|decided| match decided {
                    Decided::Done(_) => Ran::Done,
                    Decided::Requested(_) => Ran::AwaitsApproval,
                }),
        }
    }
}

enum Ran {
    Done,
    AwaitsApproval,
}
