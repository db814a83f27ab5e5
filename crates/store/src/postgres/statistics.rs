//! The planner's statistics, kept current by Keyplane itself.
//!
//! Key lists walk an index or sort the matches depending on how many rows PostgreSQL believes a
//! filter keeps. Without statistics (a table never analyzed: autovacuum off, or a bulk load
//! since its last pass) it guesses a few, and sorts a million keys to show a hundred. So every
//! half minute one node (whichever takes the lock) analyzes the tables that changed by more than
//! a tenth since they were last analyzed, whatever autovacuum does.

use std::time::Duration;

use deadpool_postgres::Pool;

/// How often the tables are looked at.
const EVERY: Duration = Duration::from_secs(30);
/// The advisory lock one node analyzes under ("keystats" in ASCII, as an integer).
const STATISTICS_LOCK: i64 = 0x6b65_7973_7461_7473;

pub(crate) fn start(pool: Pool) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            if let Err(e) = refresh(&pool).await {
                tracing::debug!(error = %e, "refreshing the planner's statistics failed");
            }
        }
    });
}

/// Analyzes the tables of this schema whose rows changed by more than a tenth (at least 1,000).
pub(crate) async fn refresh(pool: &Pool) -> keyplane_core::Result<()> {
    let c = super::writer::connection(pool).await?;
    let locked: bool = c
        .query_one("SELECT pg_try_advisory_lock($1)", &[&STATISTICS_LOCK])
        .await
        .map_err(super::db_err)?
        .get(0);
    if !locked {
        return Ok(());
    }
    let stale = c
        .query(
            "SELECT relname::text FROM pg_stat_user_tables
              WHERE schemaname = current_schema()
                AND n_mod_since_analyze > GREATEST(1000, n_live_tup / 10)",
            &[],
        )
        .await
        .map_err(super::db_err);
    let outcome = async {
        for row in stale? {
            let table: String = row.get(0);
            c.batch_execute(&format!("ANALYZE \"{}\"", table.replace('"', "\"\"")))
                .await
                .map_err(super::db_err)?;
        }
        Ok(())
    }
    .await;
    if c.execute("SELECT pg_advisory_unlock($1)", &[&STATISTICS_LOCK])
        .await
        .is_err()
    {
        // Still holding the lock: it must not go back to the pool.
        let _ = deadpool_postgres::Object::take(c);
    }
    outcome
}
