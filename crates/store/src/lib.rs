//! Persistence adapters for `keyplane_core::ports::Store`. SQLite is the embedded engine.

mod sqlite;

pub use sqlite::{Durability, SqliteStore};
