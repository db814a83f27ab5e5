//! The outbox of convergence tasks for external keystores, and the copies they hold.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::model::KeyStatusInKeystore;
use keyplane_core::ports::TaskRecords;
use keyplane_core::ports::{ExternalCopy, KeystoreTask, TaskOutcome, TaskResult, TaskView};

use super::SqliteStore;
use super::all;
use super::rows::*;
use super::writer::sql_err;

/// Queues a convergence of `key_id` in each keystore; a task already waiting absorbs it.
pub(crate) fn enqueue(
    conn: &Connection,
    key_id: Uuid,
    keystores: &[Uuid],
    now: &DateTime<Utc>,
) -> Result<()> {
    let now = ts(now);
    for keystore_id in keystores {
        conn.prepare_cached(
            "INSERT INTO keystore_tasks (id, keystore_id, managed_key_id, state, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'pending', 0, ?4, ?4, ?4)
             ON CONFLICT (keystore_id, managed_key_id) WHERE state = 'pending'
             DO UPDATE SET next_attempt_at = excluded.next_attempt_at, attempts = 0, updated_at = excluded.updated_at",
        )
        .and_then(|mut s| {
            s.execute(params![Uuid::new_v4().to_string(), keystore_id.to_string(), key_id.to_string(), now])
        })
        .map_err(sql_err)?;
    }
    Ok(())
}

pub(crate) fn claim(
    conn: &Connection,
    limit: usize,
    now: &DateTime<Utc>,
) -> Result<Vec<KeystoreTask>> {
    let tasks = all(
        conn,
        "SELECT id, keystore_id, managed_key_id, attempts FROM keystore_tasks t
          WHERE state = 'pending' AND next_attempt_at <= ?1
            AND NOT EXISTS (SELECT 1 FROM keystore_tasks r WHERE r.state = 'running'
                             AND r.keystore_id = t.keystore_id AND r.managed_key_id = t.managed_key_id)
          ORDER BY next_attempt_at LIMIT ?2",
        params![ts(now), i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok(KeystoreTask {
                id: uuid_col(r, "id")?,
                keystore_id: uuid_col(r, "keystore_id")?,
                managed_key_id: uuid_col(r, "managed_key_id")?,
                attempts: u32_col(r, "attempts")?,
            })
        },
    )?;
    for t in &tasks {
        conn.prepare_cached(
            "UPDATE keystore_tasks SET state = 'running', updated_at = ? WHERE id = ?",
        )
        .and_then(|mut s| s.execute(params![ts(now), t.id.to_string()]))
        .map_err(sql_err)?;
    }
    Ok(tasks)
}

pub(crate) fn finish(
    conn: &Connection,
    task: &KeystoreTask,
    result: &TaskResult,
    now: &DateTime<Utc>,
) -> Result<()> {
    let (state, next, error) = match &result.outcome {
        TaskOutcome::Done => ("done", *now, None),
        TaskOutcome::Retry { at, error } => ("pending", *at, Some(error.as_str())),
        TaskOutcome::Failed { error } => ("failed", *now, Some(error.as_str())),
    };
    if state == "pending" {
        // A newer change may already wait for this key and keystore: it supersedes the retry.
        let waiting: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM keystore_tasks WHERE state = 'pending' AND keystore_id = ? AND managed_key_id = ?",
                params![task.keystore_id.to_string(), task.managed_key_id.to_string()],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        if waiting > 0 {
            conn.execute(
                "DELETE FROM keystore_tasks WHERE id = ?",
                [task.id.to_string()],
            )
            .map_err(sql_err)?;
        }
    }
    conn.prepare_cached(
        "UPDATE keystore_tasks SET state = ?, attempts = attempts + 1, next_attempt_at = ?, last_error = ?, updated_at = ? WHERE id = ?",
    )
    .and_then(|mut s| s.execute(params![state, ts(&next), error, ts(now), task.id.to_string()]))
    .map_err(sql_err)?;
    // Finished tasks are history: keep the latest few per keystore.
    if state != "pending" {
        conn.prepare_cached(
            "DELETE FROM keystore_tasks WHERE keystore_id = ?1 AND state IN ('done', 'failed') AND id NOT IN
               (SELECT id FROM keystore_tasks WHERE keystore_id = ?1 AND state IN ('done', 'failed') ORDER BY updated_at DESC LIMIT 1000)",
        )
        .and_then(|mut s| s.execute([task.keystore_id.to_string()]))
        .map_err(sql_err)?;
    }
    match &result.copy {
        Some(Some(copy)) => save_copy(conn, copy)?,
        Some(None) => {
            conn.prepare_cached(
                "DELETE FROM external_copies WHERE keystore_id = ? AND managed_key_id = ?",
            )
            .and_then(|mut s| {
                s.execute(params![
                    task.keystore_id.to_string(),
                    task.managed_key_id.to_string()
                ])
            })
            .map_err(sql_err)?;
        }
        None => {}
    }
    if let Some(status) = &result.status {
        record_status(conn, task.managed_key_id, status)?;
    }
    Ok(())
}

/// The observed status is not part of the managed state: it changes neither the key's revision
/// nor its ETag.
pub(crate) fn record_status(
    conn: &Connection,
    key_id: Uuid,
    status: &KeyStatusInKeystore,
) -> Result<()> {
    let status_json = json(status)?;
    conn.prepare_cached(
        "UPDATE key_targets SET status = ? WHERE key_id = ? AND keystore_id = ? AND removed = 0",
    )
    .and_then(|mut s| {
        s.execute(params![
            status_json,
            key_id.to_string(),
            status.keystore.id.to_string()
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn requeue_running(conn: &Connection) -> Result<u64> {
    // A pending twin already covers the key: the interrupted one goes.
    conn.execute(
        "DELETE FROM keystore_tasks WHERE state = 'running' AND EXISTS (SELECT 1 FROM keystore_tasks p
           WHERE p.state = 'pending' AND p.keystore_id = keystore_tasks.keystore_id AND p.managed_key_id = keystore_tasks.managed_key_id)",
        [],
    )
    .map_err(sql_err)?;
    let n = conn
        .execute(
            "UPDATE keystore_tasks SET state = 'pending' WHERE state = 'running'",
            [],
        )
        .map_err(sql_err)?;
    Ok(n as u64)
}

pub(crate) fn tasks_of(conn: &Connection, keystore_id: Uuid, limit: u32) -> Result<Vec<TaskView>> {
    all(
        conn,
        "SELECT * FROM keystore_tasks WHERE keystore_id = ? ORDER BY updated_at DESC LIMIT ?",
        params![keystore_id.to_string(), i64::from(limit)],
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
}

fn copy_from_row(r: &rusqlite::Row<'_>) -> Result<ExternalCopy> {
    Ok(ExternalCopy {
        keystore_id: uuid_col(r, "keystore_id")?,
        managed_key_id: uuid_col(r, "managed_key_id")?,
        remote_id: col(r, "remote_id")?,
        label: col(r, "label")?,
        installed_version: u32_col(r, "installed_version")?,
        enabled: col(r, "enabled")?,
    })
}

pub(crate) fn copy(
    conn: &Connection,
    keystore_id: Uuid,
    key_id: Uuid,
) -> Result<Option<ExternalCopy>> {
    super::one(
        conn,
        "SELECT * FROM external_copies WHERE keystore_id = ? AND managed_key_id = ?",
        params![keystore_id.to_string(), key_id.to_string()],
        copy_from_row,
    )
}

/// Every external copy of a key, whatever the keystores it targets now.
pub(crate) fn copies_of_key(conn: &Connection, key_id: Uuid) -> Result<Vec<ExternalCopy>> {
    all(
        conn,
        "SELECT * FROM external_copies WHERE managed_key_id = ?",
        [key_id.to_string()],
        copy_from_row,
    )
}

/// Records an adopted copy, refused when another key already records that remote key: one
/// remote key is governed by one managed key.
pub(crate) fn adopt_copy(conn: &Connection, c: &ExternalCopy) -> Result<()> {
    let holder: Option<String> = conn
        .prepare_cached(
            "SELECT managed_key_id FROM external_copies
             WHERE keystore_id = ?1 AND managed_key_id <> ?3 AND (remote_id = ?2 OR label = ?4)",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    c.keystore_id.to_string(),
                    c.remote_id,
                    c.managed_key_id.to_string(),
                    c.label
                ],
                |r| r.get(0),
            )
            .optional()
        })
        .map_err(sql_err)?;
    if let Some(holder) = holder.and_then(|h| Uuid::parse_str(&h).ok()) {
        return Err(keyplane_core::distribution::copy_governed(c, holder));
    }
    save_copy(conn, c)
}

pub(crate) fn save_copy(conn: &Connection, c: &ExternalCopy) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO external_copies (keystore_id, managed_key_id, remote_id, label, installed_version, enabled)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (keystore_id, managed_key_id) DO UPDATE SET remote_id = excluded.remote_id, label = excluded.label,
            installed_version = excluded.installed_version, enabled = excluded.enabled",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.keystore_id.to_string(),
            c.managed_key_id.to_string(),
            c.remote_id,
            c.label,
            i64::from(c.installed_version),
            c.enabled
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// Everything keyplane recorded about a keystore's copies and tasks, when it is deleted.
pub(crate) fn forget_keystore(conn: &Connection, keystore_id: Uuid) -> Result<()> {
    for table in ["keystore_tasks", "external_copies"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE keystore_id = ?"),
            [keystore_id.to_string()],
        )
        .map_err(sql_err)?;
    }
    Ok(())
}

#[async_trait]
impl TaskRecords for SqliteStore {
    async fn claim_tasks(
        &self,
        limit: usize,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<KeystoreTask>> {
        self.writer
            .write_returning(move |c| claim(c, limit, &now))
            .await
    }

    async fn finish_task(&self, task: &KeystoreTask, result: TaskResult) -> Result<()> {
        let task = task.clone();
        let now = chrono::Utc::now();
        self.writer
            .write(move |c| finish(c, &task, &result, &now))
            .await
    }

    async fn requeue_interrupted_tasks(&self) -> Result<u64> {
        self.writer.write_returning(requeue_running).await
    }

    async fn keystore_tasks(&self, keystore_id: Uuid, limit: u32) -> Result<Vec<TaskView>> {
        self.reader.with(|c| tasks_of(c, keystore_id, limit))
    }

    async fn external_copy(&self, keystore_id: Uuid, key_id: Uuid) -> Result<Option<ExternalCopy>> {
        self.reader.with(|c| copy(c, keystore_id, key_id))
    }

    async fn record_observed_status(
        &self,
        key_id: Uuid,
        status: &KeyStatusInKeystore,
    ) -> Result<()> {
        let status = status.clone();
        self.writer
            .write(move |c| record_status(c, key_id, &status))
            .await
    }

    async fn external_copies_of_key(&self, key_id: Uuid) -> Result<Vec<ExternalCopy>> {
        self.reader.with(|c| copies_of_key(c, key_id))
    }

    async fn save_external_copy(&self, copy: &ExternalCopy) -> Result<()> {
        let copy = copy.clone();
        self.writer.write(move |c| save_copy(c, &copy)).await
    }
}
