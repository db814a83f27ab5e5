//! Persistence adapters for `keyplane_core::ports::Store`. SQLite is the embedded engine;
//! PostgreSQL serves several nodes sharing one database.

mod backup;
mod common;
mod postgres;
mod read_cache;
mod sqlite;
mod transfer;

pub use backup::{BackupReport, DATABASE_FILE, backup_postgres, backup_sqlite, restore_sqlite};
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{Durability, SqliteStore};
pub use transfer::{TransferReport, copy_sqlite_to_postgres};

use std::sync::Arc;

use keyplane_core::error::{Error, Result};
use keyplane_core::ports::Store;

/// The variable naming the PostgreSQL database test stores are made in; without it they are
/// SQLite databases in memory.
pub const TEST_DATABASE_URL: &str = "KEYPLANE_TEST_DATABASE_URL";

/// A fresh, empty store for a test, on the engine the environment chooses: in PostgreSQL (when
/// [`TEST_DATABASE_URL`] is set) a schema of its own in that database, else SQLite in memory.
/// The same tests thereby run unchanged on both engines.
pub async fn open_scratch_store() -> Result<Arc<dyn Store>> {
    match std::env::var(TEST_DATABASE_URL) {
        Ok(url) if !url.is_empty() => Ok(Arc::new(open_scratch_postgres(&url).await?)),
        _ => Ok(Arc::new(SqliteStore::open_in_memory().await?)),
    }
}

/// A PostgreSQL store in a new schema of the database `url` names.
pub async fn open_scratch_postgres(url: &str) -> Result<PostgresStore> {
    let url = new_postgres_schema(url).await?;
    PostgresStore::open(
        &url,
        PostgresOptions {
            pool_size: 4,
            writers: 1,
            ..PostgresOptions::default()
        },
    )
    .await
    .map_err(|e| Error::internal(format!("opening a test schema: {e}")))
}

/// Makes an empty schema in the database `url` names; the URL of a database whose tables live
/// there (several stores opened on it are several nodes sharing one database).
pub async fn new_postgres_schema(url: &str) -> Result<String> {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    postgres::create_schema(url, &schema).await?;
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!(
        "{url}{separator}options=-c%20search_path%3D{schema}"
    ))
}
