//! The scheduler: on the leader, every `SchedulePolicy::every`, it rotates, deactivates and
//! destroys the keys whose schedules are due, each as the same core operation a person would
//! call, audited with initiator `scheduler`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{Decided, Keyplane, Origin};
use crate::audit::Target;
use crate::authz::{Caller, Permission};
use crate::error::{Error, ErrorCode, Result};
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

/// Failures per key, for the wait before the next attempt: a minute, doubling to an hour. The
/// wait is written into the key's indexed due time, so a key that cannot be acted on steps out
/// of the way of the others.
#[derive(Debug, Default)]
struct Retries(HashMap<Uuid, u32>);

impl Retries {
    fn failed(&mut self, key: Uuid) -> Duration {
        let failures = self.0.entry(key).or_default();
        *failures += 1;
        Duration::from_secs(60 << (*failures - 1).min(6)).min(Duration::from_secs(3600))
    }
}

impl Keyplane {
    /// Sets how the scheduler runs and the shortest interval schedules may have.
    #[must_use]
    pub fn with_schedule_policy(mut self, policy: SchedulePolicy) -> Self {
        self.schedules = policy;
        self
    }

    /// Checks a change of a template's or key's schedules, from `before` to `after`, in
    /// `vault`. Setting a schedule is ordering its action in advance, so the caller must be
    /// allowed that action there: rotation to set `rotation_interval`, deactivation to set
    /// `deactivate_on_expiration`, destroying deactivated keys to set
    /// `destroy_after_deactivation` — which no one may set in a vault under dual control,
    /// where destruction waits for a second person. Clearing a schedule needs no more than the
    /// edit itself. Intervals are no shorter than the deployment's minimum (nor, for rotation,
    /// the minimum between two rotations), and destruction never comes sooner than the destroy
    /// grace period allows. Only what changes is checked: a setting made under looser limits
    /// stays until someone changes it. `prefix` names the fields as the request does (`key.`
    /// in a template).
    pub(crate) async fn check_schedule_change(
        &self,
        caller: &Caller,
        vault: Uuid,
        before: &KeySchedule,
        after: &KeySchedule,
        prefix: &str,
    ) -> Result<()> {
        let hidden = || Error::not_found("vault", vault);
        if let Some(text) = &after.rotation_interval
            && after.rotation_interval != before.rotation_interval
        {
            caller.require_in(Permission::KeyRotate, vault, hidden)?;
            let minimum = self
                .schedules
                .min_interval
                .max(self.policy.rotation_min_interval);
            Interval::at_least(&format!("{prefix}rotation_interval"), text, minimum)?;
        }
        if after.deactivate_on_expiration && !before.deactivate_on_expiration {
            caller.require_in(Permission::KeyDeactivate, vault, hidden)?;
        }
        if let Some(text) = &after.destroy_after_deactivation
            && after.destroy_after_deactivation != before.destroy_after_deactivation
        {
            caller.require_in(Permission::KeyDestroyDeactivated, vault, hidden)?;
            let field = format!("{prefix}destroy_after_deactivation");
            let minimum = self
                .schedules
                .min_interval
                .max(self.policy.destroy_grace_period);
            Interval::at_least(&field, text, minimum)?;
            if self.store.dual_control(vault).await? {
                return Err(Error::conflict(
                    ErrorCode::InvalidStateTransition,
                    format!(
                        "{field} cannot be set in a vault under dual control: destroying a key there needs a second person's approval"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs due schedules every `SchedulePolicy::every`, on the leader, while unsealed.
    pub async fn run_schedules(self) {
        let mut retries = Retries::default();
        let mut indexed = false;
        loop {
            tokio::time::sleep(self.schedules.every).await;
            if self.engine.is_sealed() || self.leader_term().await.is_none() {
                continue;
            }
            if !indexed {
                match self.index_unindexed_schedules().await {
                    Ok(()) => indexed = true,
                    Err(e) => tracing::warn!(error = %e, "indexing earlier keys' schedules failed"),
                }
            }
            if let Err(e) = self.run_due_schedules(&mut retries).await {
                tracing::warn!(error = %e, "looking for due schedules failed");
            }
        }
    }

    /// Indexes the schedules of keys written before schedules were indexed (a Key Protect
    /// rotation policy set by an earlier release), once per start.
    async fn index_unindexed_schedules(&self) -> Result<()> {
        loop {
            let ids = self.store.unindexed_scheduled_keys(DUE_PER_PASS).await?;
            let mut indexed = 0;
            for id in &ids {
                let Ok(key) = self.load_key(*id).await else {
                    continue;
                };
                if let Some(at) = schedule::next_due(&key) {
                    self.store.set_next_scheduled_at(*id, Some(at)).await?;
                    indexed += 1;
                }
            }
            // What is left names a schedule that no longer parses: nothing to index.
            if indexed == 0 || ids.len() < DUE_PER_PASS as usize {
                return Ok(());
            }
        }
    }

    /// One pass: every key due now, its action run, at most `per_vault` at once per vault.
    async fn run_due_schedules(&self, retries: &mut Retries) -> Result<()> {
        let now = Utc::now();
        let mut due = Vec::new();
        for id in self.store.due_scheduled_keys(now, DUE_PER_PASS).await? {
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
            let wait = match outcome {
                Ok(Ran::Done) => {
                    retries.0.remove(&id);
                    continue;
                }
                Ok(Ran::NeedsAPerson) => {
                    tracing::warn!(key = %id, "a scheduled destruction waits: the key's vault is under dual control, where a person asks and a second approves");
                    Duration::from_secs(3600)
                }
                Err(e) => {
                    tracing::warn!(key = %id, action = action.as_str(), error = %e, "a scheduled action failed");
                    retries.failed(id)
                }
            };
            let at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
            if let Err(e) = self.store.set_next_scheduled_at(id, Some(at)).await {
                tracing::warn!(key = %id, error = %e, "postponing a scheduled action failed");
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
            // Under dual control a person asks and a second approves: never the scheduler, whose
            // request its schedule's author could approve alone.
            ScheduledAction::Destroy if self.store.dual_control(key.vault.id).await? => {
                Ok(Ran::NeedsAPerson)
            }
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
                    // Dual control turned on meanwhile: the request stands for people to decide.
                    Decided::Requested(_) => Ran::NeedsAPerson,
                }),
        }
    }
}

enum Ran {
    Done,
    NeedsAPerson,
}
