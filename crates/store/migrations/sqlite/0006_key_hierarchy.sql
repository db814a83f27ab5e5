-- Master keys (sealed under the seal key, or only named when they live in a PKCS#11 token).
CREATE TABLE root_keys (
    id         TEXT PRIMARY KEY,
    sealed     BLOB,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

-- One data-encryption key per vault, wrapped under a master key. The nil vault id holds the
-- key that seals the pre-generated key pool.
CREATE TABLE vault_keys (
    vault_id TEXT PRIMARY KEY,
    root_id  TEXT NOT NULL REFERENCES root_keys(id),
    wrapped  BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX vault_keys_root ON vault_keys (root_id);

-- Pre-generated key pairs (RSA), sealed under the pool key, waiting to become a key's material.
CREATE TABLE key_pool (
    id         TEXT PRIMARY KEY,
    algorithm  TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sealed     BLOB NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX key_pool_kind ON key_pool (algorithm, size);
