//! What `core` needs from the outside: a store and a key-material engine. Adapters implement
//! these; only the binary wires them together.
//!
//! The store is one interface per area (keys, templates, keystores, vaults, distribution tasks,
//! access, audit, key hierarchy), each with its record types beside it; [`Store`] is all of them
//! together, which is what services hold.

mod access;
mod audit;
mod distribution;
mod hierarchy;
mod key_rings;
mod keys;
mod keystores;
mod material;
mod templates;
mod vaults;

pub use access::*;
pub use audit::*;
pub use distribution::*;
pub use hierarchy::*;
pub use key_rings::*;
pub use keys::*;
pub use keystores::*;
pub use material::*;
pub use templates::*;
pub use vaults::*;

use async_trait::async_trait;

use crate::error::Result;

/// What [`Store::operational_counts`] reports.
#[derive(Debug, Clone, Default)]
pub struct OperationalCounts {
    /// Managed keys per state (`pre_active`, `active`…), over every vault.
    pub keys_by_state: Vec<(String, u64)>,
    /// Active keys whose expiration date is within the warning window
    /// (`schedule::EXPIRATION_WARNING_DAYS`) or past.
    pub keys_expiring: u64,
    /// Distribution tasks not yet done, per keystore and state (`pending`, `running`, `failed`).
    pub tasks: Vec<TaskCount>,
    /// Events in the audit trail: the hash chain's length.
    pub audit_events: u64,
    /// Pregenerated keys waiting, per algorithm and size.
    pub key_pool: Vec<(String, u32, u64)>,
    /// The database connection pool: connections open and in use, and the most it opens.
    pub connections: ConnectionUse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCount {
    pub keystore_id: uuid::Uuid,
    pub keystore_name: String,
    pub state: String,
    pub count: u64,
    /// When the oldest of them was queued.
    pub oldest: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionUse {
    pub open: u64,
    pub in_use: u64,
    pub max: u64,
}

/// Persistence of every resource. Implementations enforce uniqueness (409 `duplicate_name`) and
/// optimistic concurrency: an update or delete carrying `revision` fails with `EtagMismatch`
/// unless the stored revision is the one the caller read.
#[async_trait]
pub trait Store:
    KeyRecords
    + KeyRingRecords
    + TemplateRecords
    + KeystoreRecords
    + VaultRecords
    + TaskRecords
    + AccessRecords
    + AuditRecords
    + HierarchyRecords
{
    async fn ping(&self) -> Result<()>;

    /// The schema version the database is at, and the newest this build knows: equal once
    /// this node's migrations are done.
    async fn schema_versions(&self) -> Result<(i64, i64)>;

    /// What an operator watches, counted in the database: keys by state, distribution tasks
    /// waiting or failed per keystore, the audit chain's length, the key pool's depth, and the
    /// connection pool's use.
    async fn operational_counts(&self) -> Result<OperationalCounts>;

    /// A counter that advances with every commit, before the committing caller is answered: what
    /// was read after observing a value is current while the counter still shows that value.
    fn commit_generation(&self) -> u64;

    async fn get_setting(&self, name: &str) -> Result<Option<String>>;

    async fn put_setting(&self, name: &str, value: &str) -> Result<()>;

    /// Stores a setting unless it is already there; the value stored either way.
    async fn insert_setting(&self, name: &str, value: &str) -> Result<String>;

    /// Resolves when another node may have queued distribution tasks. A store only this process
    /// writes never does: its own writes wake the worker directly.
    async fn tasks_queued_elsewhere(&self) {
        std::future::pending::<()>().await
    }

    /// Takes or renews, for `lease`, the lease that makes this node the one running scheduled
    /// work (drift checks, key-pool refills, schedules). `Some(term)` while this node holds it —
    /// the term grows with every change of holder, so work begun under an older term can be
    /// told apart — and `None` while another node does. A store only this process writes always
    /// leads.
    async fn lead(&self, lease: std::time::Duration) -> Result<Option<i64>> {
        let _ = lease;
        Ok(Some(1))
    }

    /// Releases the store's connections before the process exits (SQLite also copies its WAL
    /// back into the database file).
    async fn close(&self) {}
}
