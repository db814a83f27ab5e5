//! The single writer: one thread owns the write connection and commits queued writes in groups.
//!
//! Every write runs synchronously on this thread (no thread hop per statement) inside its own
//! savepoint, so a failing write is rolled back alone; the group commits once (one fsync) and
//! only then is each caller answered. A write is acknowledged only after it is durable.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use keyplane_core::error::{Error, Result};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::Durability;
use crate::read_cache::Generation;

/// Most writes committed together; bounds the latency one commit adds to the first of them.
const MAX_GROUP: usize = 256;

/// Under `synchronous=NORMAL` a commit takes no fsync, so writes arriving together would each
/// commit alone and rewrite the same hot pages (index tails, counts, the audit chain's end) into
/// the WAL: 1.7 times the bytes per key, more checkpoints, fewer keys/s than `FULL`. While writes
/// come concurrently (the last group held more than one), a group waits this long for more.
const NORMAL_GATHER: Duration = Duration::from_micros(250);

type Work = Box<dyn FnOnce(&Connection) -> Result<()> + Send>;

struct Job {
    work: Work,
    /// Runs on its own, outside any transaction (checkpoints).
    alone: bool,
    reply: oneshot::Sender<Result<()>>,
}

pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// The checkpoint thread runs while this lives.
    _alive: std::sync::Arc<()>,
}

/// WAL size past which the checkpoint thread copies it back (~32 MiB: hot index pages are
/// copied once per checkpoint instead of many times).
const CHECKPOINT_WAL_BYTES: u64 = 32 << 20;

/// Copies the WAL back into the database from a connection of its own whenever it passes
/// [`CHECKPOINT_WAL_BYTES`]. A passive checkpoint never waits for the writer nor stops it, so
/// no commit carries a checkpoint's copying and syncing (the p99 of creates under both
/// durabilities). Stops once the writer is gone.
fn checkpoints(path: std::path::PathBuf, alive: std::sync::Weak<()>) {
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    let mut conn = None;
    while alive.upgrade().is_some() {
        std::thread::sleep(Duration::from_millis(100));
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < CHECKPOINT_WAL_BYTES {
            continue;
        }
        if conn.is_none() {
            conn = Connection::open(&path)
                .and_then(|c| c.busy_timeout(Duration::from_secs(1)).map(|()| c))
                .map_err(|e| tracing::warn!(error = %e, "opening the checkpoint connection failed"))
                .ok();
        }
        if let Some(c) = &conn
            && let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

pub(crate) fn sql_err(e: rusqlite::Error) -> Error {
    Error::internal(format!("database: {e}"))
}

/// A unique-constraint failure is a duplicate name of `resource`; anything else is internal.
pub(crate) fn write_err(e: rusqlite::Error, resource: &str, name: &str) -> Error {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Error::duplicate_name(resource, name)
        }
        _ => sql_err(e),
    }
}

impl Writer {
    pub(crate) fn start(
        path: &Path,
        durability: Durability,
        generation: Generation,
    ) -> Result<Self> {
        let mut conn = Connection::open(path).map_err(sql_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_err)?;
        conn.pragma_update(
            None,
            "synchronous",
            match durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )
        .map_err(sql_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql_err)?;
        // Savepoint journals stay in memory rather than in temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(sql_err)?;
        // Checkpoints run on their own thread (`checkpoints`), never inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sql_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        super::migrate::run(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("keyplane-sqlite-writer".into())
            .spawn(move || {
                let gather = match durability {
                    Durability::Full => None,
                    Durability::Normal => Some(NORMAL_GATHER),
                };
                run(&conn, &queue, &generation, gather)
            })
            .map_err(|e| Error::internal(format!("starting the database writer: {e}")))?;
        let alive = std::sync::Arc::new(());
        // A database in memory (tests) has no WAL to copy back.
        if !path.to_string_lossy().contains("mode=memory") {
            let (path, weak) = (path.to_owned(), std::sync::Arc::downgrade(&alive));
            std::thread::Builder::new()
                .name("keyplane-sqlite-checkpoints".into())
                .spawn(move || checkpoints(path, weak))
                .map_err(|e| Error::internal(format!("starting the checkpoint thread: {e}")))?;
        }
        Ok(Self {
            jobs,
            _alive: alive,
        })
    }

    /// Runs `work` on the writer thread and waits until it is committed.
    pub(crate) async fn write(
        &self,
        work: impl FnOnce(&Connection) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.submit(Box::new(work), false).await
    }

    /// Like [`Writer::write`], returning what `work` produced once it is committed.
    pub(crate) async fn write_returning<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let out = slot.clone();
        self.write(move |c| {
            let value = work(c)?;
            *out.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            Ok(())
        })
        .await?;
        let value = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        value.ok_or_else(|| Error::internal("the database writer returned nothing"))
    }

    /// Runs `work` on the writer thread between transactions.
    pub(crate) async fn outside_transaction(
        &self,
        work: impl FnOnce(&Connection) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        self.submit(Box::new(work), true).await
    }

    async fn submit(&self, work: Work, alone: bool) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { work, alone, reply })
            .map_err(|_| Error::internal("the database writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("the database writer stopped before answering"))?
    }
}

fn run(
    conn: &Connection,
    queue: &mpsc::Receiver<Job>,
    generation: &Generation,
    gather: Option<Duration>,
) {
    let mut next = None;
    let mut last_group = 0usize;
    loop {
        let Some(first) = next.take().or_else(|| queue.recv().ok()) else {
            return;
        };
        if first.alone {
            let outcome = (first.work)(conn);
            generation.advance();
            let _ = first.reply.send(outcome);
            continue;
        }
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) if job.alone => {
                    next = Some(job);
                    break;
                }
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Some(wait) = gather.filter(|_| last_group > 1 && next.is_none()) {
            let deadline = std::time::Instant::now() + wait;
            while group.len() < MAX_GROUP {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match queue.recv_timeout(left) {
                    Ok(job) if job.alone => {
                        next = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        last_group = group.len();
        commit_group(conn, group, generation);
    }
}

fn commit_group(conn: &Connection, group: Vec<Job>, generation: &Generation) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let message = format!("database: {e}");
        for job in group {
            let _ = job.reply.send(Err(Error::internal(message.clone())));
        }
        return;
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let outcome = conn
            .execute_batch("SAVEPOINT job")
            .map_err(sql_err)
            .and_then(|()| (job.work)(conn));
        let settled = match &outcome {
            Ok(()) => conn.execute_batch("RELEASE job"),
            Err(_) => conn.execute_batch("ROLLBACK TO job; RELEASE job"),
        };
        results.push((job.reply, settled.map_err(sql_err).and(outcome)));
    }
    let committed = conn.execute_batch("COMMIT");
    // Before anyone learns of the commit (see `read_cache`); after a rollback it is harmless.
    generation.advance();
    match committed {
        Ok(()) => {
            for (reply, result) in results {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            let message = format!("database commit: {e}");
            for (reply, _) in results {
                let _ = reply.send(Err(Error::internal(message.clone())));
            }
        }
    }
}
