-- The import token an internal keystore offers to clients importing key material through its
-- Key Protect API: one per keystore, replaced by the next one created.
CREATE TABLE import_tokens (
    keystore_id TEXT PRIMARY KEY,
    -- RSA private key, sealed under the vault's key and bound to the keystore.
    sealed_private_key BLOB NOT NULL,
    public_key_der BLOB NOT NULL,
    nonce BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    max_retrievals INTEGER NOT NULL,
    remaining_retrievals INTEGER NOT NULL
) WITHOUT ROWID;

-- Key Protect clients address a key by its alias: the label of its copy in the keystore.
CREATE INDEX internal_copies_label ON internal_copies (keystore_id, label);

-- A key's copies in external keystores, found when it changes state (copies left behind in
-- keystores it no longer targets follow it to destruction).
CREATE INDEX external_copies_by_key ON external_copies (managed_key_id);
