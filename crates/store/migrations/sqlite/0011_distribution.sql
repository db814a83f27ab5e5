-- Distribution to external keystores: the outbox of convergence tasks, written in the same
-- transaction as the key change that needs them, and the copies external keystores hold.
CREATE TABLE keystore_tasks (
    id TEXT PRIMARY KEY,
    keystore_id TEXT NOT NULL,
    managed_key_id TEXT NOT NULL,
    -- pending | running | done | failed
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- At most one waiting task per key and keystore: later changes fold into it (a task converges
-- to the state current when it runs).
CREATE UNIQUE INDEX keystore_tasks_waiting ON keystore_tasks (keystore_id, managed_key_id) WHERE state = 'pending';
CREATE INDEX keystore_tasks_due ON keystore_tasks (state, next_attempt_at);
CREATE INDEX keystore_tasks_by_keystore ON keystore_tasks (keystore_id, state);

CREATE TABLE external_copies (
    keystore_id TEXT NOT NULL,
    managed_key_id TEXT NOT NULL,
    -- The keystore's id for the copy; NULL while an install is under way.
    remote_id TEXT,
    label TEXT NOT NULL,
    installed_version INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    PRIMARY KEY (keystore_id, managed_key_id)
) WITHOUT ROWID;
