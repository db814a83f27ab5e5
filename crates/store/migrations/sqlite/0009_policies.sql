-- Roles granted to principals, on every vault (vault_id NULL) or on one.
CREATE TABLE policies (
    id           TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals(id),
    role         TEXT NOT NULL,
    vault_id     TEXT,
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX policies_grant ON policies (principal_id, role, COALESCE(vault_id, ''));
