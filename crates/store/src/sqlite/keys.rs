//! Loading managed keys with their distribution status.

use sqlx::SqlitePool;

use keyplane_core::error::Result;
use keyplane_core::model::*;

use super::db_err;
use super::rows::*;

/// Loads keys selected by `sql` (which starts with `KEY_SELECT`).
pub(crate) async fn load(
    pool: &SqlitePool,
    sql: &str,
    binds: &[String],
) -> Result<Vec<ManagedKey>> {
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(pool).await.map_err(db_err)?;
    rows.iter().map(key_from_row).collect()
}
