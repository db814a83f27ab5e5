-- Tables keyed by their primary key alone (no separate rowid tree), and no index that a
-- longer one already covers: fewer B-trees to update per key written.
DROP INDEX managed_keys_vault; -- covered by UNIQUE (vault_id, label)

CREATE TABLE key_targets_new (
    key_id        TEXT NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    keystore_id   TEXT NOT NULL,
    keystore_name TEXT NOT NULL,
    keystore_type TEXT NOT NULL,
    removed       INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    status        TEXT NOT NULL,
    PRIMARY KEY (key_id, keystore_id)
) WITHOUT ROWID;
INSERT INTO key_targets_new SELECT key_id, keystore_id, keystore_name, keystore_type, removed, position, status FROM key_targets;
DROP TABLE key_targets;
ALTER TABLE key_targets_new RENAME TO key_targets;
CREATE INDEX key_targets_keystore ON key_targets (keystore_id);

CREATE TABLE key_material_new (
    key_id                TEXT NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    version               INTEGER NOT NULL,
    state                 TEXT NOT NULL,
    sealed                BLOB,
    verification_patterns TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
INSERT INTO key_material_new SELECT key_id, version, state, sealed, verification_patterns, created_at FROM key_material;
DROP TABLE key_material;
ALTER TABLE key_material_new RENAME TO key_material;

CREATE TABLE internal_copies_new (
    keystore_id        TEXT NOT NULL REFERENCES keystores(id),
    managed_key_id     TEXT NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    key_id_in_keystore TEXT NOT NULL UNIQUE,
    label              TEXT NOT NULL,
    enabled            INTEGER NOT NULL,
    version            INTEGER NOT NULL,
    PRIMARY KEY (keystore_id, managed_key_id)
) WITHOUT ROWID;
INSERT INTO internal_copies_new SELECT keystore_id, managed_key_id, key_id_in_keystore, label, enabled, version FROM internal_copies;
DROP TABLE internal_copies;
ALTER TABLE internal_copies_new RENAME TO internal_copies;
CREATE INDEX internal_copies_key ON internal_copies (managed_key_id);
