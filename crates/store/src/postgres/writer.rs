//! This node's writers: each takes the writes queued at the moment and commits them as one
//! transaction, each write in its own savepoint (a failing write is rolled back alone).
//!
//! The audit events of a group are appended last, under a transaction-scoped advisory lock held
//! until the commit: whatever node writes, sequence numbers and hashes are assigned one group at
//! a time, each over the chain's end as committed. Key counts are kept by a trigger deferred to
//! the commit, so the rows every write touches are locked only while a group commits, and one
//! writer runs its group while another commits.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use futures::future::BoxFuture;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use keyplane_core::audit::AuditEvent;
use keyplane_core::error::{Error, Result};

use super::changes::Generations;

/// The connection a write runs on, inside the group's transaction.
pub(crate) type Conn = Object;

/// One write: statements on the group's connection.
pub(crate) type Work = Box<dyn for<'c> FnOnce(&'c Conn) -> BoxFuture<'c, Result<()>> + Send>;

/// Most writes committed together; bounds the latency one commit adds to the first of them.
const MAX_GROUP: usize = 256;

/// How long a call waits for a pooled connection before it is told the database is unavailable.
pub(crate) const CONNECTION_WAIT: Duration = Duration::from_secs(5);

/// What a write may change, for the caches kept by configuration (see [`Generations`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touches {
    /// Keys, their material, copies and tasks, or the audit trail only: never a vault, template
    /// or keystore row.
    KeysOnly,
    Anything,
}

struct Job {
    work: Work,
    event: Option<AuditEvent>,
    touches: Touches,
    reply: oneshot::Sender<Result<()>>,
}

pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

/// A database error: unreachable or held up by other writes (503, the detail logged, not
/// answered), a reference to something deleted meanwhile (409), or internal.
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    // No answer from the server: the connection broke, or could not be made.
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    let code = e.code();
    if e.is_closed()
        || io
        || code.is_some_and(|c| {
            c.code().starts_with("08")
                || c.code().starts_with("57P")
                || *c == SqlState::CANNOT_CONNECT_NOW
        })
    {
        tracing::warn!(error = %e, "the database is unavailable");
        return Error::StoreUnavailable(
            "the database is unavailable; nothing was changed; retry shortly".into(),
        );
    }
    if code.is_some_and(|c| {
        [
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(c)
    }) {
        tracing::warn!(error = %e, "a database write was held up");
        return Error::StoreUnavailable(
            "the database could not complete this in time (concurrent writes); nothing was changed; retry".into(),
        );
    }
    if code == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        return Error::conflict(
            keyplane_core::error::ErrorCode::InvalidStateTransition,
            "something this change refers to was removed meanwhile; read it again",
        );
    }
    Error::internal(format!("database: {e}"))
}

/// A unique-constraint failure is a duplicate name of `resource`; anything else as [`db_err`].
pub(crate) fn write_err(e: tokio_postgres::Error, resource: &str, name: &str) -> Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return Error::duplicate_name(resource, name);
    }
    db_err(e)
}

fn pool_err(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => db_err(e),
        other => {
            tracing::warn!(error = %other, "no database connection");
            Error::StoreUnavailable(
                "the database is unavailable; nothing was changed; retry shortly".into(),
            )
        }
    }
}

/// A pooled connection, or 503 when none can be had in time.
pub(crate) async fn connection(pool: &Pool) -> Result<Object> {
    match tokio::time::timeout(CONNECTION_WAIT, pool.get()).await {
        Ok(got) => got.map_err(pool_err),
        Err(_) => Err(Error::StoreUnavailable(
            "the database is unavailable (no connection within 5 seconds); nothing was changed; retry shortly".into(),
        )),
    }
}

impl Writer {
    /// Starts `count` writers taking jobs from one queue.
    pub(crate) fn start(pool: Pool, generations: Generations, count: usize, node_id: Uuid) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(Mutex::new(queue));
        let notices = Arc::new(Notices::of(node_id));
        for _ in 0..count.max(1) {
            let (pool, queue, generations) = (pool.clone(), queue.clone(), generations.clone());
            let notices = notices.clone();
            tokio::spawn(async move { run(pool, queue, generations, notices).await });
        }
        Self { jobs }
    }

    /// Queues `work` (with the audit event recording it) and waits until it is committed.
    pub(crate) async fn submit(
        &self,
        work: Work,
        event: Option<AuditEvent>,
        touches: Touches,
    ) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                work,
                event,
                touches,
                reply,
            })
            .map_err(|_| Error::internal("the database writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("the database writer stopped before answering"))?
    }
}

/// Delivered to the other nodes when a group commits (see `changes`): the node's id, marked
/// when the group changed keys only.
struct Notices {
    anything: String,
    keys_only: String,
}

impl Notices {
    fn of(node_id: Uuid) -> Self {
        let channel = super::changes::CHANGES_CHANNEL;
        let keys_only = super::changes::KEYS_ONLY;
        Self {
            anything: format!("NOTIFY {channel}, '{node_id}'"),
            keys_only: format!("NOTIFY {channel}, '{node_id} {keys_only}'"),
        }
    }
}

async fn run(
    pool: Pool,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    generations: Generations,
    notices: Arc<Notices>,
) {
    loop {
        let group = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group
        };
        commit_group(&pool, group, &generations, &notices).await;
    }
}

/// Answers every job of a group that could not commit with the same error.
fn fail_all(replies: Vec<oneshot::Sender<Result<()>>>, error: &Error) {
    for reply in replies {
        let _ = reply.send(Err(same(error)));
    }
}

fn same(error: &Error) -> Error {
    match error {
        Error::StoreUnavailable(m) => Error::StoreUnavailable(m.clone()),
        other => Error::internal(other.to_string()),
    }
}

async fn commit_group(pool: &Pool, group: Vec<Job>, generations: &Generations, notices: &Notices) {
    let touches = if group.iter().all(|j| j.touches == Touches::KeysOnly) {
        Touches::KeysOnly
    } else {
        Touches::Anything
    };
    let notify = match touches {
        Touches::KeysOnly => &notices.keys_only,
        Touches::Anything => &notices.anything,
    };
    let conn = match connection(pool).await {
        Ok(c) => c,
        Err(e) => return fail_all(group.into_iter().map(|j| j.reply).collect(), &e),
    };
    // Each job runs in a savepoint of its own; releasing one and opening the next is one round
    // trip, as is beginning the group with the first.
    if let Err(e) = conn.batch_execute("BEGIN; SAVEPOINT job").await {
        let e = db_err(e);
        discard(conn);
        return fail_all(group.into_iter().map(|j| j.reply).collect(), &e);
    }
    let mut results = Vec::with_capacity(group.len());
    let mut events = Vec::new();
    let mut broken = None;
    let jobs = group.len();
    for (n, job) in group.into_iter().enumerate() {
        if broken.is_some() {
            results.push((job.reply, Ok(())));
            continue;
        }
        let outcome = (job.work)(&conn).await;
        let next = if n + 1 < jobs { "; SAVEPOINT job" } else { "" };
        let settled = match &outcome {
            Ok(()) => {
                conn.batch_execute(&format!("RELEASE SAVEPOINT job{next}"))
                    .await
            }
            Err(_) => {
                conn.batch_execute(&format!(
                    "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job{next}"
                ))
                .await
            }
        };
        if let Err(e) = settled {
            broken = Some(db_err(e));
        } else if matches!(outcome, Err(Error::StoreUnavailable(_))) {
            broken = outcome.as_ref().err().map(same);
        }
        if outcome.is_ok()
            && let Some(event) = job.event
        {
            events.push(event);
        }
        results.push((job.reply, outcome));
    }
    if broken.is_none()
        && !events.is_empty()
        && let Err(e) = super::audit::append_all(&conn, events).await
    {
        broken = Some(e);
    }
    let replies = |results: Vec<(oneshot::Sender<Result<()>>, Result<()>)>| {
        results.into_iter().map(|(r, _)| r).collect::<Vec<_>>()
    };
    if let Some(e) = broken {
        let _ = conn.batch_execute("ROLLBACK").await;
        discard(conn);
        return fail_all(replies(results), &e);
    }
    let committed = conn.batch_execute(&format!("{notify}; COMMIT")).await;
    // Before anyone learns of the commit (see `read_cache`); after a rollback it is harmless.
    generations.advance(touches);
    match committed {
        Ok(()) => {
            for (reply, result) in results {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            // The commit's answer was lost: the writes may or may not be in the database.
            let e = match db_err(e) {
                Error::StoreUnavailable(_) => Error::StoreUnavailable(
                    "the database stopped answering as the change was committed: whether it was saved is unknown; read it back before retrying".into(),
                ),
                other => other,
            };
            discard(conn);
            fail_all(replies(results), &e);
        }
    }
}

/// Takes a connection out of the pool for good: after a failure its session state is unknown.
fn discard(conn: Object) {
    let _ = Object::take(conn);
}
