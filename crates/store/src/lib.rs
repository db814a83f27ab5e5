//! Persistence adapters for `keyplane_core::ports::Store`. SQLite is the embedded engine;
//! PostgreSQL serves several nodes sharing one database.

mod postgres;
mod read_cache;
mod sqlite;

pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::{Durability, SqliteStore};
