//! Moving a deployment from SQLite to PostgreSQL: every row copied as it is stored (material and
//! secrets stay sealed; the audit chain keeps its hashes), into an empty database, in one
//! transaction, then checked table by table and the chain verified.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use keyplane_core::error::{Error, Result};
use keyplane_core::ports::AuditRecords;

use crate::postgres::{PostgresOptions, PostgresStore, db_err};

/// Tables in the order their references allow. `key_counts` and `key_day_counts` are rebuilt by
/// their triggers as keys arrive; the leader lease and schema versions belong to the target.
pub(crate) const TABLES: &[&str] = &[
    "settings",
    "api_tokens",
    "vaults",
    "templates",
    "keystores",
    "managed_keys",
    "key_targets",
    "key_material",
    "internal_copies",
    "root_keys",
    "vault_keys",
    "key_pool",
    "audit_events",
    "principals",
    "api_keys",
    "policies",
    "dual_control_vaults",
    "approvals",
    "keystore_tasks",
    "external_copies",
    "import_tokens",
    "key_aliases",
    "key_rings",
    "removed_copies",
];

/// What was copied, and the chain as verified in the target.
#[derive(Debug)]
pub struct TransferReport {
    /// Rows per table, the same in both databases.
    pub rows: Vec<(&'static str, i64)>,
    pub audit_events: u64,
    pub audit_head: String,
}

fn sqlite_err(e: rusqlite::Error) -> Error {
    Error::internal(format!("reading the SQLite database: {e}"))
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_field("from", message)
}

/// The columns of a SQLite table, in order.
pub(crate) fn sqlite_columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .map_err(sqlite_err)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sqlite_err)?;
    names.collect::<rusqlite::Result<_>>().map_err(sqlite_err)
}

/// One column of the target, as the copy converts it.
struct Column {
    name: String,
    ty: Type,
}

/// A SQLite value in the PostgreSQL type of its column.
fn convert(
    table: &str,
    column: &Column,
    value: rusqlite::types::ValueRef<'_>,
) -> Result<Box<dyn ToSql + Sync + Send>> {
    use rusqlite::types::ValueRef as V;
    let bad = || {
        Error::internal(format!(
            "{table}.{} holds a value that is not a {}",
            column.name, column.ty
        ))
    };
    let text = |v: V<'_>| match v {
        V::Text(t) => std::str::from_utf8(t).map(str::to_owned).map_err(|_| bad()),
        _ => Err(bad()),
    };
    if matches!(value, V::Null) {
        return Ok(match column.ty {
            Type::UUID => Box::new(None::<uuid::Uuid>),
            Type::TIMESTAMPTZ => Box::new(None::<chrono::DateTime<chrono::Utc>>),
            Type::DATE => Box::new(None::<chrono::NaiveDate>),
            Type::INT8 => Box::new(None::<i64>),
            Type::BOOL => Box::new(None::<bool>),
            Type::BYTEA => Box::new(None::<Vec<u8>>),
            _ => Box::new(None::<String>),
        });
    }
    Ok(match column.ty {
        Type::UUID => Box::new(uuid::Uuid::parse_str(&text(value)?).map_err(|_| bad())?),
        Type::TIMESTAMPTZ => Box::new(
            chrono::DateTime::parse_from_rfc3339(&text(value)?)
                .map_err(|_| bad())?
                .with_timezone(&chrono::Utc),
        ),
        Type::DATE => Box::new(
            chrono::NaiveDate::parse_from_str(&text(value)?, "%Y-%m-%d").map_err(|_| bad())?,
        ),
        Type::INT8 => match value {
            V::Integer(i) => Box::new(i),
            _ => return Err(bad()),
        },
        Type::BOOL => match value {
            V::Integer(i) => Box::new(i != 0),
            _ => return Err(bad()),
        },
        Type::BYTEA => match value {
            V::Blob(b) => Box::new(b.to_vec()),
            _ => return Err(bad()),
        },
        _ => Box::new(text(value)?),
    })
}

/// Copies the SQLite database at `sqlite` into the empty PostgreSQL database `postgres_url`
/// names, and checks the copy. A target holding anything is refused, and a failed copy leaves it
/// as it was.
pub async fn copy_sqlite_to_postgres(sqlite: &Path, postgres_url: &str) -> Result<TransferReport> {
    if !sqlite.is_file() {
        return Err(invalid(format!(
            "no SQLite database at {}",
            sqlite.display()
        )));
    }
    let source = Connection::open_with_flags(sqlite, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_err)?;
    let newest_sqlite = crate::sqlite::newest_schema_version();
    let version: i64 = source
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite_err)?;
    if version != newest_sqlite {
        return Err(invalid(format!(
            "the SQLite database is at schema version {version}, this keyplane writes {newest_sqlite}: start this release's server on it once (it upgrades the schema), stop it, then move it"
        )));
    }
    let target = PostgresStore::open(postgres_url, PostgresOptions::default()).await?;
    let mut client = target.reader().await?;
    for table in TABLES.iter().chain(&["key_counts", "key_day_counts"]) {
        let used: bool = client
            .query_one(
                &format!("SELECT EXISTS (SELECT 1 FROM {table}) AS used"),
                &[],
            )
            .await
            .map_err(db_err)?
            .get("used");
        if used {
            return Err(Error::conflict(
                keyplane_core::error::ErrorCode::DuplicateName,
                format!(
                    "the target database is not empty (table {table} has rows); move into an empty database"
                ),
            ));
        }
    }
    // One snapshot of the source, however long the copy takes.
    source.execute_batch("BEGIN DEFERRED").map_err(sqlite_err)?;
    let tx = client.transaction().await.map_err(db_err)?;
    let mut rows = Vec::new();
    for table in TABLES {
        let columns: Vec<Column> = tx
            .query(
                "SELECT a.attname AS name, a.atttypid AS ty FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[table],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| Column {
                name: r.get("name"),
                ty: Type::from_oid(r.get("ty")).unwrap_or(Type::TEXT),
            })
            .collect();
        let present = sqlite_columns(&source, table)?;
        // Columns only the target has (task leases) start empty.
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                if present.contains(&c.name) {
                    format!("\"{}\"", c.name)
                } else {
                    "NULL".to_owned()
                }
            })
            .collect();
        let names: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
        let sink = tx
            .copy_in(&format!(
                "COPY {table} ({}) FROM STDIN BINARY",
                names.join(", ")
            ))
            .await
            .map_err(db_err)?;
        let types: Vec<Type> = columns.iter().map(|c| c.ty.clone()).collect();
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        let mut stmt = source
            .prepare(&format!("SELECT {} FROM {table}", select.join(", ")))
            .map_err(sqlite_err)?;
        let mut read = stmt.query([]).map_err(sqlite_err)?;
        let mut copied = 0i64;
        while let Some(row) = read.next().map_err(sqlite_err)? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(convert(table, column, row.get_ref(i).map_err(sqlite_err)?)?);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = values
                .iter()
                .map(|v| v.as_ref() as &(dyn ToSql + Sync))
                .collect();
            writer.as_mut().write(&refs).await.map_err(db_err)?;
            copied += 1;
        }
        writer.finish().await.map_err(db_err)?;
        rows.push((*table, copied));
    }
    tx.commit().await.map_err(db_err)?;
    drop(client);

    // Checked: the same rows in every table, and the chain whole with the source's head.
    let client = target.reader().await?;
    for (table, copied) in &rows {
        let there: i64 = client
            .query_one(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
            .await
            .map_err(db_err)?
            .get("n");
        let here: i64 = source
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sqlite_err)?;
        if there != here || *copied != here {
            return Err(Error::internal(format!(
                "table {table}: {here} rows in SQLite, {there} in PostgreSQL after the copy"
            )));
        }
    }
    let source_head: Option<String> = source
        .query_row(
            "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(sqlite_err)?;
    source.execute_batch("COMMIT").map_err(sqlite_err)?;
    let chain = target.verify_audit_chain().await?;
    if let Some(broken) = chain.first_broken {
        return Err(Error::internal(format!(
            "the copied audit chain breaks at event {broken}: {}",
            chain.reason.unwrap_or_default()
        )));
    }
    if let Some(head) = source_head
        && head != chain.head
    {
        return Err(Error::internal(
            "the copied audit chain ends elsewhere than the source's",
        ));
    }
    drop(client);
    target.close().await;
    Ok(TransferReport {
        rows,
        audit_events: chain.events,
        audit_head: chain.head,
    })
}
