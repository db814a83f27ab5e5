-- Keyplane schema for PostgreSQL: the same tables, columns and indexes as the SQLite engine's
-- migrations arrive at, in PostgreSQL's types. Ids are uuid (their byte order is the order of
-- their text), times timestamptz kept to the millisecond, counters and numbers bigint,
-- documents JSON text. Text columns sort and compare bytewise (collation "C"), as SQLite's do,
-- so both engines order and page alike whatever the database's locale.

CREATE TABLE settings (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);

CREATE TABLE api_tokens (
    id         UUID PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL,
    token_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE vaults (
    id                 UUID PRIMARY KEY,
    name               TEXT COLLATE "C" NOT NULL UNIQUE,
    description        TEXT COLLATE "C" NOT NULL,
    recovery_key_label TEXT COLLATE "C",
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    created_by         TEXT COLLATE "C" NOT NULL,
    updated_by         TEXT COLLATE "C" NOT NULL,
    revision           BIGINT NOT NULL
);

CREATE TABLE templates (
    id               UUID PRIMARY KEY,
    vault_id         UUID NOT NULL REFERENCES vaults(id),
    name             TEXT COLLATE "C" NOT NULL,
    state            TEXT COLLATE "C" NOT NULL,
    types            TEXT COLLATE "C" NOT NULL,
    version          BIGINT NOT NULL,
    naming_scheme    TEXT COLLATE "C",
    algorithm        TEXT COLLATE "C" NOT NULL,
    size             BIGINT NOT NULL,
    keystore_type    TEXT COLLATE "C" NOT NULL,
    keystore_group   TEXT COLLATE "C" NOT NULL,
    managing_systems TEXT COLLATE "C" NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    created_by       TEXT COLLATE "C" NOT NULL,
    updated_by       TEXT COLLATE "C" NOT NULL,
    revision         BIGINT NOT NULL,
    doc              TEXT COLLATE "C" NOT NULL,
    UNIQUE (vault_id, name)
);

CREATE TABLE keystores (
    id             UUID PRIMARY KEY,
    vault_id       UUID NOT NULL REFERENCES vaults(id),
    name           TEXT COLLATE "C" NOT NULL,
    type           TEXT COLLATE "C" NOT NULL,
    ibm_variant    TEXT COLLATE "C",
    description    TEXT COLLATE "C" NOT NULL,
    location       TEXT COLLATE "C" NOT NULL,
    groups         TEXT COLLATE "C" NOT NULL,
    tls_proxy      TEXT COLLATE "C" NOT NULL,
    connection     TEXT COLLATE "C" NOT NULL,
    secret_fields  TEXT COLLATE "C" NOT NULL,
    sealed_secrets BYTEA,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    created_by     TEXT COLLATE "C" NOT NULL,
    updated_by     TEXT COLLATE "C" NOT NULL,
    revision       BIGINT NOT NULL,
    UNIQUE (vault_id, name)
);
CREATE INDEX keystores_vault ON keystores (vault_id);
CREATE INDEX templates_vault ON templates (vault_id);

CREATE TABLE managed_keys (
    id                     UUID PRIMARY KEY,
    vault_id               UUID NOT NULL REFERENCES vaults(id),
    template_id            UUID NOT NULL REFERENCES templates(id),
    label                  TEXT COLLATE "C" NOT NULL,
    state                  TEXT COLLATE "C" NOT NULL,
    algorithm              TEXT COLLATE "C" NOT NULL,
    size                   BIGINT NOT NULL,
    version                BIGINT NOT NULL,
    activation_date        DATE,
    expiration_date        DATE,
    rotated_at             TIMESTAMPTZ,
    instance_keystore_type TEXT COLLATE "C" NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    created_by             TEXT COLLATE "C" NOT NULL,
    updated_by             TEXT COLLATE "C" NOT NULL,
    revision               BIGINT NOT NULL,
    doc                    TEXT COLLATE "C" NOT NULL,
    UNIQUE (vault_id, label)
);
CREATE INDEX managed_keys_state_updated ON managed_keys (state, updated_at, id);
CREATE INDEX managed_keys_template ON managed_keys (template_id);
CREATE INDEX managed_keys_updated ON managed_keys (updated_at, id);
CREATE INDEX managed_keys_vault_state_updated ON managed_keys (vault_id, state, updated_at, id);
CREATE INDEX managed_keys_label ON managed_keys (label, id);
CREATE INDEX managed_keys_created ON managed_keys (created_at, id);
CREATE INDEX managed_keys_activation ON managed_keys (activation_date NULLS FIRST, id);
CREATE INDEX managed_keys_expiration ON managed_keys (expiration_date NULLS FIRST, id);
CREATE INDEX managed_keys_state_id ON managed_keys (state, id);
CREATE INDEX managed_keys_size ON managed_keys (size, id);
CREATE INDEX managed_keys_version ON managed_keys (version, id);
CREATE INDEX managed_keys_algorithm ON managed_keys (algorithm, id);
CREATE INDEX managed_keys_vault_id ON managed_keys (vault_id, id);

-- One row per key and keystore it targets (or targeted, while `removed`).
CREATE TABLE key_targets (
    key_id        UUID NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    keystore_id   UUID NOT NULL,
    keystore_name TEXT COLLATE "C" NOT NULL,
    keystore_type TEXT COLLATE "C" NOT NULL,
    removed       BOOLEAN NOT NULL,
    position      BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (key_id, keystore_id)
);
CREATE INDEX key_targets_keystore ON key_targets (keystore_id);

-- Key material per version, sealed under the master key; `sealed` is NULL once destroyed.
CREATE TABLE key_material (
    key_id                UUID NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    version               BIGINT NOT NULL,
    state                 TEXT COLLATE "C" NOT NULL,
    sealed                BYTEA,
    verification_patterns TEXT COLLATE "C" NOT NULL,
    created_at            TIMESTAMPTZ NOT NULL,
    imported              BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (key_id, version)
);

-- What each internal keystore holds.
CREATE TABLE internal_copies (
    keystore_id        UUID NOT NULL REFERENCES keystores(id),
    managed_key_id     UUID NOT NULL REFERENCES managed_keys(id) ON DELETE CASCADE,
    key_id_in_keystore UUID NOT NULL UNIQUE,
    label              TEXT COLLATE "C" NOT NULL,
    enabled            BOOLEAN NOT NULL,
    version            BIGINT NOT NULL,
    key_ring           TEXT COLLATE "C" NOT NULL DEFAULT 'default',
    PRIMARY KEY (keystore_id, managed_key_id)
);
CREATE INDEX internal_copies_key ON internal_copies (managed_key_id);
CREATE INDEX internal_copies_label ON internal_copies (keystore_id, label);
CREATE INDEX internal_copies_ring ON internal_copies (keystore_id, key_ring);

-- Keys per vault, state and template, with the algorithm and size they were made with, kept by
-- a trigger: list totals and vault counts add these rows up instead of counting keys.
CREATE TABLE key_counts (
    vault_id    UUID NOT NULL,
    state       TEXT COLLATE "C" NOT NULL,
    template_id UUID NOT NULL,
    algorithm   TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (vault_id, state, template_id, algorithm, size)
);

CREATE FUNCTION managed_keys_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE key_counts SET n = n - 1
         WHERE vault_id = OLD.vault_id AND state = OLD.state AND template_id = OLD.template_id
           AND algorithm = OLD.algorithm AND size = OLD.size;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO key_counts (vault_id, state, template_id, algorithm, size, n)
            VALUES (NEW.vault_id, NEW.state, NEW.template_id, NEW.algorithm, NEW.size, 1)
            ON CONFLICT (vault_id, state, template_id, algorithm, size) DO UPDATE SET n = key_counts.n + 1;
    END IF;
    RETURN NULL;
END $$;

-- Deferred to the commit: the counter rows every key write touches stay locked only while its
-- transaction commits, not while the rest of it runs.
CREATE CONSTRAINT TRIGGER managed_keys_count_insert AFTER INSERT OR DELETE ON managed_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION managed_keys_count();
CREATE CONSTRAINT TRIGGER managed_keys_count_update
    AFTER UPDATE OF vault_id, state, template_id, algorithm, size ON managed_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.vault_id <> NEW.vault_id OR OLD.state <> NEW.state OR OLD.template_id <> NEW.template_id
          OR OLD.algorithm <> NEW.algorithm OR OLD.size <> NEW.size)
    EXECUTE FUNCTION managed_keys_count();

-- Master keys (sealed under the seal key, or only named when they live in a PKCS#11 token).
CREATE TABLE root_keys (
    id         TEXT COLLATE "C" PRIMARY KEY,
    sealed     BYTEA,
    created_at TIMESTAMPTZ NOT NULL
);

-- One data-encryption key per vault, wrapped under a master key. The nil vault id holds the
-- key that seals the pre-generated key pool.
CREATE TABLE vault_keys (
    vault_id UUID PRIMARY KEY,
    root_id  TEXT COLLATE "C" NOT NULL REFERENCES root_keys(id),
    wrapped  BYTEA NOT NULL
);
CREATE INDEX vault_keys_root ON vault_keys (root_id);

-- Pre-generated key pairs (RSA), sealed under the pool key, waiting to become a key's material.
CREATE TABLE key_pool (
    id         UUID PRIMARY KEY,
    algorithm  TEXT COLLATE "C" NOT NULL,
    size       BIGINT NOT NULL,
    sealed     BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX key_pool_kind ON key_pool (algorithm, size);

-- The audit trail: append-only, each event's hash covering the one before. Appends are
-- serialized by a transaction-scoped advisory lock (see the engine's audit module).
CREATE TABLE audit_events (
    seq            BIGINT PRIMARY KEY,
    id             UUID NOT NULL UNIQUE,
    at             TIMESTAMPTZ NOT NULL,
    action         TEXT COLLATE "C" NOT NULL,
    outcome        TEXT COLLATE "C" NOT NULL,
    status         BIGINT NOT NULL,
    severity       TEXT COLLATE "C" NOT NULL,
    initiator      TEXT COLLATE "C" NOT NULL,
    target         TEXT COLLATE "C",
    vault_id       UUID,
    correlation_id TEXT COLLATE "C" NOT NULL,
    source         TEXT COLLATE "C",
    request        TEXT COLLATE "C" NOT NULL,
    prev_hash      TEXT COLLATE "C" NOT NULL,
    hash           TEXT COLLATE "C" NOT NULL
);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_vault ON audit_events (vault_id, seq);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- Identities that call the API, and their API keys (only a SHA-256 digest of each key).
CREATE TABLE principals (
    id          UUID PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    kind        TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT COLLATE "C" NOT NULL
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    principal_id UUID NOT NULL REFERENCES principals(id),
    name         TEXT COLLATE "C" NOT NULL,
    key_hash     TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_principal ON api_keys (principal_id);

-- Roles granted to principals, on every vault (vault_id NULL) or on one.
CREATE TABLE policies (
    id           UUID PRIMARY KEY,
    principal_id UUID NOT NULL REFERENCES principals(id),
    role         TEXT COLLATE "C" NOT NULL,
    vault_id     UUID,
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX policies_grant ON policies (principal_id, role, COALESCE(vault_id, '00000000-0000-0000-0000-000000000000'));

-- Vaults where destroying or removing a key needs a second principal's approval.
CREATE TABLE dual_control_vaults (
    vault_id UUID PRIMARY KEY REFERENCES vaults(id)
);

-- Requests waiting for (or decided by) that second principal.
CREATE TABLE approvals (
    id           UUID PRIMARY KEY,
    vault_id     UUID NOT NULL,
    action       TEXT COLLATE "C" NOT NULL,
    key_id       UUID NOT NULL,
    requested_by TEXT COLLATE "C" NOT NULL,
    requested_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,
    decided_by   TEXT COLLATE "C",
    decided_at   TIMESTAMPTZ
);
CREATE INDEX approvals_vault ON approvals (vault_id, state);

-- Distribution to external keystores: the outbox of convergence tasks, written in the same
-- transaction as the key change that needs them, and the copies external keystores hold.
-- A running task is leased to one node until `lease_until`; past it another node takes it.
CREATE TABLE keystore_tasks (
    id              UUID PRIMARY KEY,
    keystore_id     UUID NOT NULL,
    managed_key_id  UUID NOT NULL,
    -- pending | running | done | failed
    state           TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT COLLATE "C",
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    lease_owner     UUID,
    lease_until     TIMESTAMPTZ
);
CREATE UNIQUE INDEX keystore_tasks_waiting ON keystore_tasks (keystore_id, managed_key_id) WHERE state = 'pending';
CREATE INDEX keystore_tasks_due ON keystore_tasks (state, next_attempt_at);
CREATE INDEX keystore_tasks_by_keystore ON keystore_tasks (keystore_id, state);

-- Queued work wakes the idle workers of every node (see the engine's `changes`).
CREATE FUNCTION keystore_tasks_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keyplane_tasks', '');
    RETURN NULL;
END $$;
CREATE TRIGGER keystore_tasks_queued AFTER INSERT OR UPDATE OF state ON keystore_tasks
    FOR EACH ROW WHEN (NEW.state = 'pending') EXECUTE FUNCTION keystore_tasks_queued();

CREATE TABLE external_copies (
    keystore_id       UUID NOT NULL,
    managed_key_id    UUID NOT NULL,
    -- The keystore's id for the copy; NULL while an install is under way.
    remote_id         TEXT COLLATE "C",
    label             TEXT COLLATE "C" NOT NULL,
    installed_version BIGINT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    PRIMARY KEY (keystore_id, managed_key_id)
);
CREATE INDEX external_copies_by_key ON external_copies (managed_key_id);

-- The import token an internal keystore offers to clients importing key material through its
-- Key Protect API: one per keystore, replaced by the next one created.
CREATE TABLE import_tokens (
    keystore_id          UUID PRIMARY KEY,
    sealed_private_key   BYTEA NOT NULL,
    public_key_der       BYTEA NOT NULL,
    nonce                BYTEA NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ NOT NULL,
    max_retrievals       BIGINT NOT NULL,
    remaining_retrievals BIGINT NOT NULL
);

-- Aliases Key Protect clients give the keys of an internal keystore.
CREATE TABLE key_aliases (
    keystore_id        UUID NOT NULL,
    alias              TEXT COLLATE "C" NOT NULL,
    key_id_in_keystore UUID NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    created_by         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (keystore_id, alias)
);
CREATE INDEX key_aliases_by_key ON key_aliases (keystore_id, key_id_in_keystore);

-- Key rings Key Protect clients create in an internal keystore; `default` is implicit.
CREATE TABLE key_rings (
    keystore_id UUID NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (keystore_id, id)
);

-- A copy taken out of an internal keystore is remembered until the managed key is removed.
CREATE TABLE removed_copies (
    keystore_id        UUID NOT NULL,
    key_id_in_keystore UUID NOT NULL,
    managed_key_id     UUID NOT NULL,
    key_ring           TEXT COLLATE "C" NOT NULL,
    removed_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (keystore_id, key_id_in_keystore)
);
CREATE INDEX removed_copies_by_key ON removed_copies (managed_key_id);

-- Scheduled work runs on one node: the holder of this lease, renewed while it lives. `term`
-- grows with every change of holder, so a node that lost the lease is told apart from the one
-- that took it; a node acts only within the lease it last renewed, timed from before it asked.
CREATE TABLE leader_lease (
    name        TEXT COLLATE "C" PRIMARY KEY,
    holder      UUID NOT NULL,
    term        BIGINT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
