//! What other nodes commit, as this node learns it.
//!
//! Every group a writer commits notifies `keyplane_changes` with its node's id (marked
//! [`KEYS_ONLY`] when the group changed nothing but keys), delivered by PostgreSQL when (and only
//! if) the group commits; queuing distribution tasks notifies `keyplane_tasks` (a trigger). Each
//! node listens on a connection of its own: another node's commit advances this node's commit
//! generation, which empties the read caches here and everything core caches by that generation
//! (API-key identities, admin tokens, opened material, connectors), and unless it changed keys
//! only, the configuration generation too; a queued task wakes the idle distribution worker.
//!
//! While the listening connection is down, notifications may be missed: both generations then
//! advance every [`UNHEARD_EXPIRY`], so nothing is served from a cache older than that, and once
//! more when listening resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::connect::Target;
use super::writer::Touches;
use crate::read_cache::Generation;

pub(crate) const CHANGES_CHANNEL: &str = "keyplane_changes";
/// Follows the node's id in a notice of a group that changed keys only.
pub(crate) const KEYS_ONLY: &str = "keys";
const TASKS_CHANNEL: &str = "keyplane_tasks";

/// How often caches are emptied while this node cannot hear the others.
const UNHEARD_EXPIRY: Duration = Duration::from_millis(100);
/// Wait between attempts to listen again.
const RETRY: Duration = Duration::from_millis(500);

/// This node's two commit counters. `commits` moves with every commit, here or on another
/// node. `configuration` moves with every commit that may have changed a vault, a template or
/// a keystore (every group but those of [`Touches::KeysOnly`] writes), so the rows every key
/// creation reads (the vault, its template, its keystores) stay cached while keys are written.
#[derive(Clone, Default)]
pub(crate) struct Generations {
    pub(crate) commits: Generation,
    pub(crate) configuration: Generation,
}

impl Generations {
    pub(crate) fn advance(&self, touches: Touches) {
        if touches == Touches::Anything {
            self.configuration.advance();
        }
        self.commits.advance();
    }
}

pub(crate) struct Changes {
    pub(crate) tasks_queued: Arc<Notify>,
}

impl Changes {
    /// Starts listening for the other nodes' commits.
    pub(crate) fn start(target: Target, generations: Generations, node_id: Uuid) -> Self {
        let tasks_queued = Arc::new(Notify::new());
        let listening = Arc::new(AtomicBool::new(false));
        {
            let (generations, listening) = (generations.clone(), listening.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UNHEARD_EXPIRY).await;
                    if !listening.load(Ordering::Acquire) {
                        generations.advance(Touches::Anything);
                    }
                }
            });
        }
        let tasks = tasks_queued.clone();
        tokio::spawn(async move {
            listen(target, generations, node_id, tasks, listening).await;
        });
        Self { tasks_queued }
    }
}

async fn listen(
    target: Target,
    generations: Generations,
    node_id: Uuid,
    tasks_queued: Arc<Notify>,
    listening: Arc<AtomicBool>,
) {
    let me = node_id.to_string();
    loop {
        match subscribe(&target).await {
            Ok((client, mut notifications)) => {
                listening.store(true, Ordering::Release);
                // What was committed while this node was not listening.
                generations.advance(Touches::Anything);
                tasks_queued.notify_waiters();
                while let Some(n) = notifications.recv().await {
                    match n.channel() {
                        CHANGES_CHANNEL => {
                            // A notice without the mark (as older releases send) may have
                            // changed anything.
                            let (node, touches) = match n.payload().split_once(' ') {
                                Some((node, KEYS_ONLY)) => (node, Touches::KeysOnly),
                                _ => (n.payload(), Touches::Anything),
                            };
                            if node != me {
                                generations.advance(touches);
                            }
                        }
                        TASKS_CHANNEL => tasks_queued.notify_waiters(),
                        _ => {}
                    }
                }
                listening.store(false, Ordering::Release);
                drop(client);
                tracing::warn!("lost the database connection that hears other nodes' changes");
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for other nodes' changes"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn subscribe(
    target: &Target,
) -> keyplane_core::Result<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
)> {
    let (client, notifications) = target.listening_connection().await?;
    client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}; LISTEN {TASKS_CHANNEL}"))
        .await
        .map_err(super::db_err)?;
    Ok((client, notifications))
}
