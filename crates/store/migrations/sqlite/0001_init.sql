-- Keyplane schema for SQLite. Timestamps are RFC 3339 UTC text with milliseconds ('…Z'),
-- so text order is time order.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE vaults (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    description        TEXT NOT NULL,
    recovery_key_label TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    updated_by         TEXT NOT NULL,
    revision           INTEGER NOT NULL
);

CREATE TABLE templates (
    id               TEXT PRIMARY KEY,
    vault_id         TEXT NOT NULL REFERENCES vaults(id),
    name             TEXT NOT NULL,
    state            TEXT NOT NULL,
    types            TEXT NOT NULL,
    version          INTEGER NOT NULL,
    naming_scheme    TEXT,
    algorithm        TEXT NOT NULL,
    size             INTEGER NOT NULL,
    keystore_type    TEXT NOT NULL,
    keystore_group   TEXT NOT NULL,
    managing_systems TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    updated_by       TEXT NOT NULL,
    revision         INTEGER NOT NULL,
    doc              TEXT NOT NULL,
    UNIQUE (vault_id, name)
);

CREATE TABLE keystores (
    id             TEXT PRIMARY KEY,
    vault_id       TEXT NOT NULL REFERENCES vaults(id),
    name           TEXT NOT NULL,
    type           TEXT NOT NULL,
    ibm_variant    TEXT,
    description    TEXT NOT NULL,
    location       TEXT NOT NULL,
    groups         TEXT NOT NULL,
    tls_proxy      TEXT NOT NULL,
    connection     TEXT NOT NULL,
    secret_fields  TEXT NOT NULL,
    sealed_secrets BLOB,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    updated_by     TEXT NOT NULL,
    revision       INTEGER NOT NULL,
    UNIQUE (vault_id, name)
);

CREATE TABLE managed_keys (
    id                     TEXT PRIMARY KEY,
    vault_id               TEXT NOT NULL REFERENCES vaults(id),
    template_id            TEXT NOT NULL REFERENCES templates(id),
    label                  TEXT NOT NULL,
    state                  TEXT NOT NULL,
    algorithm              TEXT NOT NULL,
    size                   INTEGER NOT NULL,
    version                INTEGER NOT NULL,
    activation_date        TEXT,
    expiration_date        TEXT,
    rotated_at             TEXT,
    instance_keystore_type TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    created_by             TEXT NOT NULL,
    updated_by             TEXT NOT NULL,
    revision               INTEGER NOT NULL,
    doc                    TEXT NOT NULL,
    UNIQUE (vault_id, label)
);
CREATE INDEX managed_keys_state_updated ON managed_keys (state, updated_at);
CREATE INDEX managed_keys_updated ON managed_keys (updated_at);
CREATE INDEX managed_keys_template ON managed_keys (template_id);

-- One row per key and keystore it targets (or targeted, while `removed`).
CREATE TABLE key_targets (
    key_id        TEXT NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    keystore_id   TEXT NOT NULL,
    keystore_name TEXT NOT NULL,
    keystore_type TEXT NOT NULL,
    removed       INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    status        TEXT NOT NULL,
    PRIMARY KEY (key_id, keystore_id)
);
CREATE INDEX key_targets_keystore ON key_targets (keystore_id);

-- Key material per version, sealed under the master key; `sealed` is NULL once destroyed.
CREATE TABLE key_material (
    key_id                TEXT NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    version               INTEGER NOT NULL,
    state                 TEXT NOT NULL,
    sealed                BLOB,
    verification_patterns TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    PRIMARY KEY (key_id, version)
);

-- What each internal keystore holds.
CREATE TABLE internal_copies (
    keystore_id        TEXT NOT NULL REFERENCES keystores(id),
    managed_key_id     TEXT NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    key_id_in_keystore TEXT NOT NULL UNIQUE,
    label              TEXT NOT NULL,
    enabled            INTEGER NOT NULL,
    version            INTEGER NOT NULL,
    PRIMARY KEY (keystore_id, managed_key_id)
);
CREATE INDEX internal_copies_key ON internal_copies (managed_key_id);
