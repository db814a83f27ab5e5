//! The import token each internal keystore offers to clients importing key material.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use keyplane_core::error::Result;
use keyplane_core::ports::{ImportKeyPair, ImportToken};

use super::rows::*;
use super::{exec, one};

const SELECT: &str = "SELECT * FROM import_tokens WHERE keystore_id = $1";

fn token_from_row(r: &Row) -> Result<ImportToken> {
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

pub(crate) async fn get(c: &impl GenericClient, keystore_id: Uuid) -> Result<Option<ImportToken>> {
    one(c, SELECT, &[&keystore_id], token_from_row).await
}

/// Replaces the keystore's token.
pub(crate) async fn save(c: &impl GenericClient, t: &ImportToken) -> Result<()> {
    exec(
        c,
        "INSERT INTO import_tokens (keystore_id, sealed_private_key, public_key_der, nonce, created_at, expires_at, max_retrievals, remaining_retrievals)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (keystore_id) DO UPDATE SET sealed_private_key = excluded.sealed_private_key,
           public_key_der = excluded.public_key_der, nonce = excluded.nonce, created_at = excluded.created_at,
           expires_at = excluded.expires_at, max_retrievals = excluded.max_retrievals,
           remaining_retrievals = excluded.remaining_retrievals",
        &[
            &t.keystore_id,
            &t.key_pair.sealed_private_key,
            &t.key_pair.public_key_der,
            &t.nonce,
            &ts(&t.created_at),
            &ts(&t.expires_at),
            &i64::from(t.max_retrievals),
            &i64::from(t.remaining_retrievals),
        ],
    )
    .await?;
    Ok(())
}

/// Counts one retrieval of a live token with retrievals left; returns it as it now stands, or
/// `None` when there is no such token.
pub(crate) async fn retrieve(
    c: &impl GenericClient,
    keystore_id: Uuid,
    now: &DateTime<Utc>,
) -> Result<Option<ImportToken>> {
    one(
        c,
        "UPDATE import_tokens SET remaining_retrievals = remaining_retrievals - 1
          WHERE keystore_id = $1 AND remaining_retrievals > 0 AND expires_at > $2
          RETURNING *",
        &[&keystore_id, &ts(now)],
        token_from_row,
    )
    .await
}

pub(crate) async fn forget(c: &impl GenericClient, keystore_id: Uuid) -> Result<()> {
    exec(
        c,
        "DELETE FROM import_tokens WHERE keystore_id = $1",
        &[&keystore_id],
    )
    .await?;
    Ok(())
}
