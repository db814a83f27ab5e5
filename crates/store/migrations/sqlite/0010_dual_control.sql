-- Vaults where destroying or removing a key needs a second principal's approval.
CREATE TABLE dual_control_vaults (
    vault_id TEXT PRIMARY KEY REFERENCES vaults(id)
) WITHOUT ROWID;

-- Requests waiting for (or decided by) that second principal.
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    vault_id     TEXT NOT NULL,
    action       TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    state        TEXT NOT NULL,
    decided_by   TEXT,
    decided_at   TEXT
) WITHOUT ROWID;
CREATE INDEX approvals_vault ON approvals (vault_id, state);
