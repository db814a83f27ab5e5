-- Which key governs a remote key: an adoption refuses a copy another key already records.
CREATE INDEX external_copies_by_remote_id ON external_copies (keystore_id, remote_id) WHERE remote_id IS NOT NULL;
