-- The audit trail: append-only, each event's hash covering the one before.
CREATE TABLE audit_events (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    at             TEXT NOT NULL,
    action         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    status         INTEGER NOT NULL,
    severity       TEXT NOT NULL,
    initiator      TEXT NOT NULL,
    target         TEXT,
    vault_id       TEXT,
    correlation_id TEXT NOT NULL,
    source         TEXT,
    request        TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_vault ON audit_events (vault_id, seq);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
