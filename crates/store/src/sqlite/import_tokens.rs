//! The import token each internal keystore offers to clients importing key material.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::ports::{ImportKeyPair, ImportToken};

use super::one;
use super::rows::*;
use super::writer::sql_err;

const SELECT: &str = "SELECT * FROM import_tokens WHERE keystore_id = ?";

fn token_from_row(r: &rusqlite::Row<'_>) -> Result<ImportToken> {
    Ok(ImportToken {
        keystore_id: uuid_col(r, "keystore_id")?,
        key_pair: ImportKeyPair {
            sealed_private_key: col(r, "sealed_private_key")?,
            public_key_der: col(r, "public_key_der")?,
        },
        nonce: col(r, "nonce")?,
        created_at: ts_col(r, "created_at")?,
        expires_at: ts_col(r, "expires_at")?,
        max_retrievals: u32_col(r, "max_retrievals")?,
        remaining_retrievals: u32_col(r, "remaining_retrievals")?,
    })
}

pub(crate) fn get(conn: &Connection, keystore_id: Uuid) -> Result<Option<ImportToken>> {
    one(conn, SELECT, [keystore_id.to_string()], token_from_row)
}

/// Replaces the keystore's token.
pub(crate) fn save(conn: &Connection, t: &ImportToken) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO import_tokens (keystore_id, sealed_private_key, public_key_der, nonce, created_at, expires_at, max_retrievals, remaining_retrievals)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (keystore_id) DO UPDATE SET sealed_private_key = excluded.sealed_private_key,
           public_key_der = excluded.public_key_der, nonce = excluded.nonce, created_at = excluded.created_at,
           expires_at = excluded.expires_at, max_retrievals = excluded.max_retrievals,
           remaining_retrievals = excluded.remaining_retrievals",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.keystore_id.to_string(),
            t.key_pair.sealed_private_key,
            t.key_pair.public_key_der,
            t.nonce,
            ts(&t.created_at),
            ts(&t.expires_at),
            t.max_retrievals,
            t.remaining_retrievals,
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// Counts one retrieval of a live token with retrievals left; returns it as it now stands, or
/// `None` when there is no such token.
pub(crate) fn retrieve(
    conn: &Connection,
    keystore_id: Uuid,
    now: &DateTime<Utc>,
) -> Result<Option<ImportToken>> {
    let changed = conn
        .prepare_cached(
            "UPDATE import_tokens SET remaining_retrievals = remaining_retrievals - 1
              WHERE keystore_id = ? AND remaining_retrievals > 0 AND expires_at > ?",
        )
        .and_then(|mut s| s.execute(params![keystore_id.to_string(), ts(now)]))
        .map_err(sql_err)?;
    if changed == 0 {
        return Ok(None);
    }
    get(conn, keystore_id)
}

pub(crate) fn forget(conn: &Connection, keystore_id: Uuid) -> Result<()> {
    conn.execute(
        "DELETE FROM import_tokens WHERE keystore_id = ?",
        [keystore_id.to_string()],
    )
    .map_err(sql_err)?;
    Ok(())
}
