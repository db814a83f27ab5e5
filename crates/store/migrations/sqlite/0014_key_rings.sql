-- Key rings Key Protect clients create in an internal keystore; `default` is implicit and holds
-- every key not moved elsewhere.
CREATE TABLE key_rings (
    keystore_id TEXT NOT NULL,
    id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (keystore_id, id)
) WITHOUT ROWID;

ALTER TABLE internal_copies ADD COLUMN key_ring TEXT NOT NULL DEFAULT 'default';

-- A copy taken out of an internal keystore (its key destroyed, or no longer targeting it) is
-- remembered under its id there until the managed key is removed: Key Protect's purge and
-- restore name deleted keys by that id.
CREATE TABLE removed_copies (
    keystore_id TEXT NOT NULL,
    key_id_in_keystore TEXT NOT NULL,
    managed_key_id TEXT NOT NULL,
    key_ring TEXT NOT NULL,
    removed_at TEXT NOT NULL,
    PRIMARY KEY (keystore_id, key_id_in_keystore)
) WITHOUT ROWID;

CREATE INDEX removed_copies_by_key ON removed_copies (managed_key_id);
CREATE INDEX internal_copies_ring ON internal_copies (keystore_id, key_ring);
