//! Read connections: a small pool of read-only connections used inline. Reads of a local
//! SQLite file in WAL mode never wait for the writer and take microseconds (a list page at most
//! a few milliseconds: `limit` is capped), so they run on the calling thread; a hop to a
//! database thread per statement cost more than the read itself.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use keyplane_core::error::Result;
use rusqlite::{Connection, OpenFlags};

use super::writer::sql_err;

const MAX_IDLE: usize = 16;

pub(crate) struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Connections lent out right now, for the metrics.
    in_use: AtomicU64,
}

impl Reader {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            in_use: AtomicU64::new(0),
        }
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(sql_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql_err)?;
        conn.pragma_update(None, "cache_size", "-32768")
            .map_err(sql_err)?;
        // Pages come from the shared page cache by mapping, not one read() per page.
        conn.pragma_update(None, "mmap_size", 1_073_741_824_i64)
            .map_err(sql_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Runs `read` on a pooled connection.
    pub(crate) fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open()?,
        };
        self.in_use.fetch_add(1, Ordering::Relaxed);
        let result = read(&conn);
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        result
    }

    /// Read connections kept open and lent out, and the most kept idle.
    pub(crate) fn connection_use(&self) -> keyplane_core::ports::ConnectionUse {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let in_use = self.in_use.load(Ordering::Relaxed);
        keyplane_core::ports::ConnectionUse {
            open: idle + in_use,
            in_use,
            max: MAX_IDLE as u64,
        }
    }

    pub(crate) fn close(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
