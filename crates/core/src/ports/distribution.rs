//! The outbox of convergence tasks for external keystores and the copies they hold.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::model::*;

/// A copy of a key in an external keystore, as keyplane recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCopy {
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    /// The keystore's id for it; `None` while an install is under way (a retry adopts what it finds).
    pub remote_id: Option<String>,
    pub label: String,
    /// The key version last transferred.
    pub installed_version: u32,
    pub enabled: bool,
}

/// One queued convergence of a key in an external keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreTask {
    pub id: Uuid,
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    /// Attempts made before this one.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    Done,
    /// Try again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// Given up (not retryable, or the retry budget is spent); a sync queues it again.
    Failed {
        error: String,
    },
}

/// What a finished attempt records, in one transaction.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub outcome: TaskOutcome,
    /// `Some(Some(copy))` records the copy, `Some(None)` forgets it.
    pub copy: Option<Option<ExternalCopy>>,
    /// The key's observed status in that keystore.
    pub status: Option<KeyStatusInKeystore>,
}

/// A task's state as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskView {
    pub id: Uuid,
    pub keystore_id: Uuid,
    pub managed_key_id: Uuid,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The outbox of convergence tasks for external keystores and the copies they hold.
#[async_trait]
pub trait TaskRecords: Send + Sync + 'static {
    /// Marks up to `limit` due tasks running and returns them; a key and keystore with a task
    /// already running are skipped.
    async fn claim_tasks(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<KeystoreTask>>;

    /// Records an attempt's outcome, the copy and the key's observed status together.
    async fn finish_task(&self, task: &KeystoreTask, result: TaskResult) -> Result<()>;

    /// Tasks left running by a stopped process become pending again.
    async fn requeue_interrupted_tasks(&self) -> Result<u64>;

    /// The most recent tasks of a keystore, newest first.
    async fn keystore_tasks(&self, keystore_id: Uuid, limit: u32) -> Result<Vec<TaskView>>;

    async fn external_copy(&self, keystore_id: Uuid, key_id: Uuid) -> Result<Option<ExternalCopy>>;

    /// Every external copy of a key, in the keystores it targets and in any it left.
    async fn external_copies_of_key(&self, key_id: Uuid) -> Result<Vec<ExternalCopy>>;

    /// Records what a keystore was seen to hold for a key (not managed state: no revision change).
    async fn record_observed_status(
        &self,
        key_id: Uuid,
        status: &KeyStatusInKeystore,
    ) -> Result<()>;

    /// Records a copy before the remote work that creates it, so a retry recognises it.
    async fn save_external_copy(&self, copy: &ExternalCopy) -> Result<()>;
}
