//! The outbox of convergence tasks for external keystores, and the copies they hold.
//!
//! Several nodes share the queue: a node claims a task with a lease (its id and an expiry, on
//! the database's clock), renewed while the node keeps claiming, and only the holder of the
//! lease records the task's outcome. A task whose lease expired (its node stopped) is claimed
//! again, by any node.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::model::KeyStatusInKeystore;
use keyplane_core::ports::TaskRecords;
use keyplane_core::ports::{ExternalCopy, KeystoreTask, TaskOutcome, TaskResult, TaskView};

use super::rows::*;
use super::{PostgresStore, all, db_err, exec, one};

/// The advisory lock key claims run under ("keytasks" in ASCII, as an integer): one node claims
/// at a time, so a key and keystore never have two tasks running.
const TASK_CLAIM_LOCK: i64 = 0x6b65_7974_6173_6b73;

/// Whether a running task's lease is over (on the database's clock).
const LEASE_EXPIRED: &str = "(lease_until IS NULL OR lease_until < clock_timestamp())";

/// Queues a convergence of `key_id` in each keystore; a task already waiting absorbs it.
pub(crate) async fn enqueue(
    c: &impl GenericClient,
    key_id: Uuid,
    keystores: &[Uuid],
    now: &DateTime<Utc>,
) -> Result<()> {
    if keystores.is_empty() {
        return Ok(());
    }
    let now = ts(now);
    let stmt = c
        .prepare_cached(
            "INSERT INTO keystore_tasks (id, keystore_id, managed_key_id, state, attempts, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4)
             ON CONFLICT (keystore_id, managed_key_id) WHERE state = 'pending'
             DO UPDATE SET next_attempt_at = excluded.next_attempt_at, attempts = 0, updated_at = excluded.updated_at",
        )
        .await
        .map_err(db_err)?;
    let ids: Vec<Uuid> = keystores.iter().map(|_| Uuid::new_v4()).collect();
    let params: Vec<[&(dyn ToSql + Sync); 4]> = keystores
        .iter()
        .zip(&ids)
        .map(|(keystore_id, id)| [id as &(dyn ToSql + Sync), keystore_id, &key_id, &now])
        .collect();
    // Sent together: the connection pipelines them.
    futures::future::try_join_all(params.iter().map(|p| c.execute(&stmt, p)))
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Marks up to `limit` due tasks running under this node's lease, with the tasks whose lease
/// expired; a key and keystore with a task already running are skipped.
///
/// A node claims as long as its worker runs (every half second at least), so claiming also
/// renews the leases of the tasks this node is running (`running_here`): they expire only once
/// it stops, however long they wait for their keystore. A task this node holds in the database
/// but no longer runs (its outcome could not be recorded, or the claim's commit was lost with
/// the connection) is not renewed: its lease ends and it is claimed again.
pub(crate) async fn claim(
    c: &impl GenericClient,
    node: Uuid,
    lease: Duration,
    limit: usize,
    now: &DateTime<Utc>,
    running_here: &[Uuid],
) -> Result<Vec<KeystoreTask>> {
    let lease = lease.as_secs_f64();
    let renew_within = lease / 2.0;
    if !running_here.is_empty() {
        exec(
            c,
            "UPDATE keystore_tasks SET lease_until = clock_timestamp() + make_interval(secs => $2)
              WHERE id IN (SELECT id FROM keystore_tasks
                            WHERE id = ANY($4) AND state = 'running' AND lease_owner = $1
                              AND lease_until < clock_timestamp() + make_interval(secs => $3)
                           FOR UPDATE SKIP LOCKED)",
            &[&node, &lease, &renew_within, &running_here],
        )
        .await?;
    }
    let free = one(
        c,
        "SELECT pg_try_advisory_xact_lock($1) AS free",
        &[&TASK_CLAIM_LOCK],
        |r| col::<bool>(r, "free"),
    )
    .await?
    .unwrap_or(false);
    if !free {
        // Another node is claiming: this one looks again at its next round.
        return Ok(Vec::new());
    }
    // An interrupted task whose key and keystore have another task waiting or running goes:
    // that one covers the key.
    exec(
        c,
        &format!(
            "DELETE FROM keystore_tasks WHERE id IN (
               SELECT t.id FROM keystore_tasks t WHERE t.state = 'running' AND {LEASE_EXPIRED}
                  AND EXISTS (SELECT 1 FROM keystore_tasks o WHERE o.id <> t.id
                               AND o.keystore_id = t.keystore_id AND o.managed_key_id = t.managed_key_id
                               AND (o.state = 'pending' OR (o.state = 'running' AND o.lease_until >= clock_timestamp())))
               FOR UPDATE SKIP LOCKED)"
        ),
        &[],
    )
    .await?;
    let now = ts(now);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    all(
        c,
        &format!(
            "WITH claimed AS (
               UPDATE keystore_tasks SET state = 'running', lease_owner = $1,
                      lease_until = clock_timestamp() + make_interval(secs => $2), updated_at = $3
                WHERE id IN (
                  SELECT t.id FROM keystore_tasks t
                   WHERE ((t.state = 'pending' AND t.next_attempt_at <= $3)
                          OR (t.state = 'running' AND {LEASE_EXPIRED}))
                     AND NOT EXISTS (SELECT 1 FROM keystore_tasks r WHERE r.id <> t.id AND r.state = 'running'
                                      AND r.keystore_id = t.keystore_id AND r.managed_key_id = t.managed_key_id)
                   ORDER BY t.next_attempt_at LIMIT $4
                   FOR UPDATE SKIP LOCKED)
               RETURNING id, keystore_id, managed_key_id, attempts, next_attempt_at)
             SELECT id, keystore_id, managed_key_id, attempts FROM claimed ORDER BY next_attempt_at"
        ),
        &[&node, &lease, &now, &limit],
        |r| {
            Ok(KeystoreTask {
                id: uuid_col(r, "id")?,
                keystore_id: uuid_col(r, "keystore_id")?,
                managed_key_id: uuid_col(r, "managed_key_id")?,
                attempts: u32_col(r, "attempts")?,
            })
        },
    )
    .await
}

/// Records an attempt's outcome, if this node still holds the task's lease: past it another node
/// may have taken the task, and records its own outcome. Returns whether it was recorded.
pub(crate) async fn finish(
    c: &impl GenericClient,
    node: Uuid,
    task: &KeystoreTask,
    result: &TaskResult,
    now: &DateTime<Utc>,
) -> Result<bool> {
    // Locked until the commit: the lease cannot pass to another node meanwhile.
    let held = one(
        c,
        "SELECT id FROM keystore_tasks WHERE id = $1 AND state = 'running' AND lease_owner = $2 FOR UPDATE",
        &[&task.id, &node],
        |_| Ok(()),
    )
    .await?
    .is_some();
    if !held {
        return Ok(false);
    }
    let (state, next, error) = match &result.outcome {
        TaskOutcome::Done => ("done", *now, None),
        TaskOutcome::Retry { at, error } => ("pending", *at, Some(error.as_str())),
        TaskOutcome::Failed { error } => ("failed", *now, Some(error.as_str())),
    };
    let settle = "UPDATE keystore_tasks SET state = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3,
                updated_at = $4, lease_owner = NULL, lease_until = NULL
          WHERE id = $5 AND lease_owner = $6";
    let params: [&(dyn ToSql + Sync); 6] = [&state, &ts(&next), &error, &ts(now), &task.id, &node];
    if state == "pending" {
        // A newer change may wait for this key and keystore already, or be queued by another
        // node while this runs: either way it supersedes the retry, which then goes away. The
        // waiting task's index decides (a count read first could not see an uncommitted one).
        c.batch_execute("SAVEPOINT task_retry")
            .await
            .map_err(db_err)?;
        let stmt = c.prepare_cached(settle).await.map_err(db_err)?;
        match c.execute(&stmt, &params).await {
            Ok(_) => c.batch_execute("RELEASE SAVEPOINT task_retry").await,
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                c.batch_execute("ROLLBACK TO SAVEPOINT task_retry; RELEASE SAVEPOINT task_retry")
                    .await
                    .map_err(db_err)?;
                exec(c, "DELETE FROM keystore_tasks WHERE id = $1", &[&task.id]).await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
        .map_err(db_err)?;
    } else {
        exec(c, settle, &params).await?;
    }
    // Finished tasks are history: keep the latest few per keystore.
    if state != "pending" {
        exec(
            c,
            "DELETE FROM keystore_tasks WHERE keystore_id = $1 AND state IN ('done', 'failed') AND id NOT IN
               (SELECT id FROM keystore_tasks WHERE keystore_id = $1 AND state IN ('done', 'failed') ORDER BY updated_at DESC LIMIT 1000)",
            &[&task.keystore_id],
        )
        .await?;
    }
    match &result.copy {
        Some(Some(copy)) => save_copy(c, copy).await?,
        Some(None) => {
            exec(
                c,
                "DELETE FROM external_copies WHERE keystore_id = $1 AND managed_key_id = $2",
                &[&task.keystore_id, &task.managed_key_id],
            )
            .await?;
        }
        None => {}
    }
    if let Some(status) = &result.status {
        record_status(c, task.managed_key_id, status).await?;
    }
    Ok(true)
}

/// The observed status is not part of the managed state: it changes neither the key's revision
/// nor its ETag.
pub(crate) async fn record_status(
    c: &impl GenericClient,
    key_id: Uuid,
    status: &KeyStatusInKeystore,
) -> Result<()> {
    let status_json = json(status)?;
    exec(
        c,
        "UPDATE key_targets SET status = $1 WHERE key_id = $2 AND keystore_id = $3 AND removed = FALSE",
        &[&status_json, &key_id, &status.keystore.id],
    )
    .await?;
    Ok(())
}

/// Tasks left running by a stopped node, once their lease expired, become pending again (the
/// leases of live nodes are left alone).
pub(crate) async fn requeue_running(c: &impl GenericClient) -> Result<u64> {
    // A pending twin already covers the key: the interrupted one goes.
    exec(
        c,
        &format!(
            "DELETE FROM keystore_tasks t WHERE t.state = 'running' AND {LEASE_EXPIRED}
               AND EXISTS (SELECT 1 FROM keystore_tasks p WHERE p.state = 'pending'
                            AND p.keystore_id = t.keystore_id AND p.managed_key_id = t.managed_key_id)"
        ),
        &[],
    )
    .await?;
    exec(
        c,
        &format!(
            "UPDATE keystore_tasks SET state = 'pending', lease_owner = NULL, lease_until = NULL
              WHERE state = 'running' AND {LEASE_EXPIRED}"
        ),
        &[],
    )
    .await
}

pub(crate) async fn tasks_of(
    c: &impl GenericClient,
    keystore_id: Uuid,
    limit: u32,
) -> Result<Vec<TaskView>> {
    all(
        c,
        "SELECT * FROM keystore_tasks WHERE keystore_id = $1 ORDER BY updated_at DESC LIMIT $2",
        &[&keystore_id, &i64::from(limit)],
        |r| {
            Ok(TaskView {
                id: uuid_col(r, "id")?,
                keystore_id: uuid_col(r, "keystore_id")?,
                managed_key_id: uuid_col(r, "managed_key_id")?,
                state: col(r, "state")?,
                attempts: u32_col(r, "attempts")?,
                next_attempt_at: ts_col(r, "next_attempt_at")?,
                last_error: col(r, "last_error")?,
                updated_at: ts_col(r, "updated_at")?,
            })
        },
    )
    .await
}

fn copy_from_row(r: &Row) -> Result<ExternalCopy> {
    Ok(ExternalCopy {
        keystore_id: uuid_col(r, "keystore_id")?,
        managed_key_id: uuid_col(r, "managed_key_id")?,
        remote_id: col(r, "remote_id")?,
        label: col(r, "label")?,
        installed_version: u32_col(r, "installed_version")?,
        enabled: col(r, "enabled")?,
    })
}

pub(crate) async fn copy(
    c: &impl GenericClient,
    keystore_id: Uuid,
    key_id: Uuid,
) -> Result<Option<ExternalCopy>> {
    one(
        c,
        "SELECT * FROM external_copies WHERE keystore_id = $1 AND managed_key_id = $2",
        &[&keystore_id, &key_id],
        copy_from_row,
    )
    .await
}

/// Every external copy of a key, whatever the keystores it targets now.
pub(crate) async fn copies_of_key(
    c: &impl GenericClient,
    key_id: Uuid,
) -> Result<Vec<ExternalCopy>> {
    all(
        c,
        "SELECT * FROM external_copies WHERE managed_key_id = $1",
        &[&key_id],
        copy_from_row,
    )
    .await
}

/// Records an adopted copy, refused when another key already records that remote key: one
/// remote key is governed by one managed key. The lock orders concurrent adoptions of it.
pub(crate) async fn adopt_copy(c: &impl GenericClient, copy: &ExternalCopy) -> Result<()> {
    let remote = copy.remote_id.as_deref().unwrap_or_default();
    let lock = format!("adopt/{}/{remote}", copy.keystore_id);
    exec(
        c,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&lock],
    )
    .await?;
    let holder = one(
        c,
        "SELECT managed_key_id FROM external_copies
         WHERE keystore_id = $1 AND managed_key_id <> $3 AND (remote_id = $2 OR label = $4)",
        &[
            &copy.keystore_id,
            &remote,
            &copy.managed_key_id,
            &copy.label,
        ],
        |r| col::<Uuid>(r, "managed_key_id"),
    )
    .await?;
    if let Some(holder) = holder {
        return Err(keyplane_core::distribution::copy_governed(copy, holder));
    }
    save_copy(c, copy).await
}

pub(crate) async fn save_copy(c: &impl GenericClient, copy: &ExternalCopy) -> Result<()> {
    exec(
        c,
        "INSERT INTO external_copies (keystore_id, managed_key_id, remote_id, label, installed_version, enabled)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (keystore_id, managed_key_id) DO UPDATE SET remote_id = excluded.remote_id, label = excluded.label,
            installed_version = excluded.installed_version, enabled = excluded.enabled",
        &[
            &copy.keystore_id,
            &copy.managed_key_id,
            &copy.remote_id,
            &copy.label,
            &i64::from(copy.installed_version),
            &copy.enabled,
        ],
    )
    .await?;
    Ok(())
}

/// Everything keyplane recorded about a keystore's copies and tasks, when it is deleted.
pub(crate) async fn forget_keystore(c: &impl GenericClient, keystore_id: Uuid) -> Result<()> {
    exec(
        c,
        "DELETE FROM keystore_tasks WHERE keystore_id = $1",
        &[&keystore_id],
    )
    .await?;
    exec(
        c,
        "DELETE FROM external_copies WHERE keystore_id = $1",
        &[&keystore_id],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    /// The tasks this node claimed and has not finished.
    fn running_here(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Uuid>> {
        self.running_tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl TaskRecords for PostgresStore {
    async fn claim_tasks(&self, limit: usize, now: DateTime<Utc>) -> Result<Vec<KeystoreTask>> {
        let (node, lease) = (self.node_id, self.task_lease);
        let running_here: Vec<Uuid> = self.running_here().iter().copied().collect();
        let claimed = self
            .write_returning(move |c| {
                Box::pin(async move { claim(c, node, lease, limit, &now, &running_here).await })
            })
            .await?;
        self.running_here().extend(claimed.iter().map(|t| t.id));
        Ok(claimed)
    }

    async fn finish_task(&self, task: &KeystoreTask, result: TaskResult) -> Result<()> {
        let task = task.clone();
        let node = self.node_id;
        let now = Utc::now();
        let id = task.id;
        let recorded = self
            .write_returning(move |c| {
                Box::pin(async move { finish(c, node, &task, &result, &now).await })
            })
            .await;
        // Recorded or not, this node has stopped running it: unrecorded, its lease ends and
        // the task is claimed again (converging is idempotent).
        self.running_here().remove(&id);
        let recorded = recorded?;
        if !recorded {
            tracing::warn!(
                task = %id,
                "a distribution task's lease passed to another node before its outcome was recorded; that node records its own"
            );
        }
        Ok(())
    }

    async fn requeue_interrupted_tasks(&self) -> Result<u64> {
        self.write_returning(|c| Box::pin(async move { requeue_running(c).await }))
            .await
    }

    async fn keystore_tasks(&self, keystore_id: Uuid, limit: u32) -> Result<Vec<TaskView>> {
        let c = self.reader().await?;
        tasks_of(&c, keystore_id, limit).await
    }

    async fn external_copy(&self, keystore_id: Uuid, key_id: Uuid) -> Result<Option<ExternalCopy>> {
        let c = self.reader().await?;
        copy(&c, keystore_id, key_id).await
    }

    async fn record_observed_status(
        &self,
        key_id: Uuid,
        status: &KeyStatusInKeystore,
    ) -> Result<()> {
        let status = status.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { record_status(c, key_id, &status).await })
        }))
        .await
    }

    async fn external_copies_of_key(&self, key_id: Uuid) -> Result<Vec<ExternalCopy>> {
        let c = self.reader().await?;
        copies_of_key(&c, key_id).await
    }

    async fn save_external_copy(&self, copy: &ExternalCopy) -> Result<()> {
        let copy = copy.clone();
        self.write(Box::new(move |c| {
            Box::pin(async move { save_copy(c, &copy).await })
        }))
        .await
    }
}
