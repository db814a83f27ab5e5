-- Aliases Key Protect clients give the keys of an internal keystore: unique in the keystore, at
-- most five a key (the service checks it), removed with the key's copy.
CREATE TABLE key_aliases (
    keystore_id TEXT NOT NULL,
    alias TEXT NOT NULL,
    key_id_in_keystore TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (keystore_id, alias)
) WITHOUT ROWID;

CREATE INDEX key_aliases_by_key ON key_aliases (keystore_id, key_id_in_keystore);

-- Whether a version's material was imported rather than generated (Key Protect's `imported`).
ALTER TABLE key_material ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
