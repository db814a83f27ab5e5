//! Backup and restore. A backup is one SQLite file: an online snapshot taken in a single read
//! transaction while the servers serve (every write committed before it began is in it), of a
//! SQLite deployment or of a PostgreSQL one (its rows copied into the file as the SQLite engine
//! stores them), holding what the database holds — material and keystore secrets sealed
//! under the master key, the seal's own records, the audit chain with its hashes. Restoring
//! copies it into an empty data directory and checks the copy: row counts per table, the
//! database's integrity, and the audit chain.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use keyplane_core::error::{Error, Result};
use keyplane_core::ports::AuditChainReport;

use crate::postgres::db_err;
use crate::transfer::{TABLES, sqlite_columns};

/// The database file in a data directory.
pub const DATABASE_FILE: &str = "keyplane.sqlite";

/// What a backup or a restore holds, read back from the file it wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// Rows per table.
    pub rows: Vec<(&'static str, i64)>,
    /// The audit chain as verified in the file.
    pub audit: AuditChainReport,
}

fn sqlite_err(e: rusqlite::Error) -> Error {
    Error::internal(format!("SQLite: {e}"))
}

/// Reads what a database file holds and verifies it: integrity, rows per table, the chain.
fn inspect(path: &Path) -> Result<BackupReport> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite_err)?;
    // Nothing in the file runs: its schema is checked against Keyplane's own first.
    conn.pragma_update(None, "trusted_schema", "OFF")
        .map_err(sqlite_err)?;
    let version: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(|_| {
            Error::invalid_field(
                "from",
                format!("{} is not a Keyplane database", path.display()),
            )
        })?;
    let expected = crate::sqlite::schema_at(version)?.ok_or_else(|| {
        Error::invalid_field(
            "from",
            format!(
                "{} is at schema version {version}, which this keyplane does not know: restore it with a release that does",
                path.display()
            ),
        )
    })?;
    if crate::sqlite::schema_of(&conn)? != expected {
        return Err(Error::invalid_field(
            "from",
            format!(
                "{} holds tables, indexes or triggers Keyplane's schema does not: it is not a backup Keyplane wrote",
                path.display()
            ),
        ));
    }
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sqlite_err)?;
    if integrity != "ok" {
        return Err(Error::internal(format!(
            "{} fails its integrity check: {integrity}",
            path.display()
        )));
    }
    let rows = TABLES
        .iter()
        .map(|table| {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map(|n: i64| (*table, n))
                .map_err(sqlite_err)
        })
        .collect::<Result<Vec<_>>>()?;
    let audit = crate::sqlite::verify_audit_chain_of(&conn)?;
    if let Some(seq) = audit.first_broken {
        return Err(Error::internal(format!(
            "the audit chain in {} is broken at event {seq}: {}",
            path.display(),
            audit.reason.as_deref().unwrap_or("it does not verify")
        )));
    }
    Ok(BackupReport { rows, audit })
}

/// A directory of this process's own beside `near`, readable by its owner only, removed when
/// dropped: a file made there cannot be swapped or read by anyone else before it is linked to
/// its name.
struct PrivateDir(std::path::PathBuf);

impl PrivateDir {
    fn beside(near: &Path) -> Result<Self> {
        let parent = near
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = parent.join(format!(".keyplane-{}", uuid::Uuid::new_v4().simple()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Gives the finished file in a private directory its name `to`, which must not exist (a
/// link never replaces a file or follows a link planted there), readable by its owner only.
fn publish(made: &Path, to: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(made, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::internal(format!("restricting {}: {e}", made.display())))?;
    }
    std::fs::hard_link(made, to).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::invalid_field(what, format!("{} already exists", to.display()))
        } else {
            Error::internal(format!("creating {}: {e}", to.display()))
        }
    })
}

/// Takes an online backup of the SQLite database `database` into the new file `to`, while the
/// server may be writing, and checks it.
pub fn backup_sqlite(database: &Path, to: &Path) -> Result<BackupReport> {
    if !database.is_file() {
        return Err(Error::invalid_field(
            "data_dir",
            format!("no Keyplane database at {}", database.display()),
        ));
    }
    if to.symlink_metadata().is_ok() {
        return Err(Error::invalid_field(
            "to",
            format!("{} already exists", to.display()),
        ));
    }
    let private = PrivateDir::beside(to)?;
    let made = private.0.join("backup.sqlite");
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sqlite_err)?;
    let target = made
        .to_str()
        .ok_or_else(|| Error::invalid_field("to", "the backup path must be UTF-8"))?;
    // One read transaction: a consistent snapshot, taken without stopping the writer.
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(sqlite_err)?;
    drop(conn);
    let report = inspect(&made)?;
    publish(&made, to, "to")?;
    Ok(report)
}

/// Restores the backup `from` into the data directory `data_dir`, which must be empty or
/// absent (an existing one must be this user's; it is made private), and checks the copy
/// against the backup.
pub fn restore_sqlite(from: &Path, data_dir: &Path) -> Result<BackupReport> {
    let expected = inspect(from)?;
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(data_dir)
            .map_err(|e| Error::internal(format!("reading {}: {e}", data_dir.display())))?;
        if entries.next().is_some() {
            return Err(Error::invalid_field(
                "data_dir",
                format!(
                    "{} is not empty: restore into an empty or new directory",
                    data_dir.display()
                ),
            ));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = std::fs::symlink_metadata(data_dir)
                .map_err(|e| Error::internal(format!("reading {}: {e}", data_dir.display())))?;
            // A directory this process makes has this user as its owner: the target must too.
            let probe = PrivateDir::beside(&data_dir.join(DATABASE_FILE))?;
            let me = std::fs::metadata(&probe.0).map(|m| m.uid()).ok();
            drop(probe);
            if !meta.is_dir() || Some(meta.uid()) != me {
                return Err(Error::invalid_field(
                    "data_dir",
                    format!(
                        "{} is not a directory of the user restoring: restore as the user the server runs as",
                        data_dir.display()
                    ),
                ));
            }
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::internal(format!("restricting {}: {e}", data_dir.display())))?;
        }
    } else {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(data_dir)
            .map_err(|e| Error::internal(format!("creating {}: {e}", data_dir.display())))?;
    }
    let private = PrivateDir::beside(&data_dir.join(DATABASE_FILE))?;
    let made = private.0.join(DATABASE_FILE);
    std::fs::copy(from, &made).map_err(|e| Error::internal(format!("copying the backup: {e}")))?;
    let restored = inspect(&made)?;
    if restored.rows != expected.rows || restored.audit.head != expected.audit.head {
        return Err(Error::internal(
            "the restored database does not hold what the backup holds",
        ));
    }
    publish(&made, &data_dir.join(DATABASE_FILE), "data_dir")?;
    Ok(restored)
}

/// A PostgreSQL value as the SQLite engine stores it.
fn sqlite_value(
    row: &tokio_postgres::Row,
    i: usize,
    table: &str,
) -> Result<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    use tokio_postgres::types::Type;
    let column = &row.columns()[i];
    let bad = |e: tokio_postgres::Error| {
        Error::internal(format!("reading {table}.{}: {e}", column.name()))
    };
    Ok(match *column.type_() {
        Type::UUID => row
            .try_get::<_, Option<uuid::Uuid>>(i)
            .map_err(bad)?
            .map_or(V::Null, |u| V::Text(u.to_string())),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)
            .map_err(bad)?
            .map_or(V::Null, |t| V::Text(crate::sqlite::timestamp_text(&t))),
        Type::DATE => row
            .try_get::<_, Option<chrono::NaiveDate>>(i)
            .map_err(bad)?
            .map_or(V::Null, |d| V::Text(d.to_string())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map_or(V::Null, V::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map_or(V::Null, |n| V::Integer(n.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map_or(V::Null, |b| V::Integer(b.into())),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map_or(V::Null, V::Blob),
        Type::TEXT | Type::VARCHAR => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(V::Null, V::Text),
        ref other => {
            return Err(Error::internal(format!(
                "{table}.{} is of type {other}, which a backup does not carry",
                column.name()
            )));
        }
    })
}

/// Takes an online backup of the PostgreSQL database `url` names into the new SQLite file `to`,
/// while every node may be writing: one repeatable-read snapshot, copied row by row, then the
/// file checked against the snapshot's counts and its audit chain verified.
pub async fn backup_postgres(url: &str, to: &Path) -> Result<BackupReport> {
    if to.symlink_metadata().is_ok() {
        return Err(Error::invalid_field(
            "to",
            format!("{} already exists", to.display()),
        ));
    }
    let private = PrivateDir::beside(to)?;
    let made = private.0.join("backup.sqlite");
    let report = copy_postgres_snapshot(url, &made).await?;
    publish(&made, to, "to")?;
    Ok(report)
}

async fn copy_postgres_snapshot(url: &str, to: &Path) -> Result<BackupReport> {
    // The file gets the SQLite engine's schema from the engine itself.
    let schema = crate::SqliteStore::open(to, crate::Durability::Normal).await?;
    keyplane_core::ports::Store::close(&schema).await;
    drop(schema);
    let mut client = crate::postgres::read_only_connection(url).await?;
    let snapshot = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_err)?;
    let mut target = Connection::open(to).map_err(sqlite_err)?;
    let file = target.transaction().map_err(sqlite_err)?;
    let mut counted = Vec::new();
    for table in TABLES {
        let columns = sqlite_columns(&file, table)?;
        let present: Vec<String> = snapshot
            .query(
                "SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                &[table],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                if present.contains(c) {
                    format!("\"{c}\"")
                } else {
                    "NULL::text".to_owned()
                }
            })
            .collect();
        let placeholders = vec!["?"; columns.len()].join(", ");
        let mut insert = file
            .prepare(&format!(
                "INSERT INTO {table} ({}) VALUES ({placeholders})",
                columns
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .map_err(sqlite_err)?;
        let rows = snapshot
            .query_raw(
                &format!("SELECT {} FROM {table}", select.join(", ")),
                std::iter::empty::<i64>(),
            )
            .await
            .map_err(db_err)?;
        let mut rows = std::pin::pin!(rows);
        let mut copied = 0i64;
        while let Some(row) = futures::StreamExt::next(&mut rows).await {
            let row = row.map_err(db_err)?;
            let values = (0..columns.len())
                .map(|i| sqlite_value(&row, i, table))
                .collect::<Result<Vec<_>>>()?;
            insert
                .execute(rusqlite::params_from_iter(values))
                .map_err(sqlite_err)?;
            copied += 1;
        }
        let there: i64 = snapshot
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(db_err)?
            .get(0);
        if there != copied {
            return Err(Error::internal(format!(
                "table {table}: {there} rows in the snapshot, {copied} copied"
            )));
        }
        counted.push((*table, copied));
    }
    let head: Option<String> = snapshot
        .query_opt(
            "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(db_err)?
        .map(|r| r.get(0));
    file.commit().map_err(sqlite_err)?;
    snapshot.commit().await.map_err(db_err)?;
    drop(client);
    target
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
        .map_err(sqlite_err)?;
    drop(target);
    let report = inspect(to)?;
    if report.rows != counted || head.is_some_and(|h| h != report.audit.head) {
        return Err(Error::internal(
            "the backup does not hold what the snapshot held",
        ));
    }
    Ok(report)
}
