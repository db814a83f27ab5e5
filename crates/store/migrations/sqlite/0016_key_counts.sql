-- Keys per vault, state and template, with the algorithm and size they were made with (neither
-- changes after creation), kept by triggers: list totals filtered on any of those, and vault
-- counts, add up these rows instead of counting keys. Replaces key_state_counts.
DROP TRIGGER managed_keys_count_insert;
DROP TRIGGER managed_keys_count_delete;
DROP TRIGGER managed_keys_count_update;
DROP TABLE key_state_counts;

CREATE TABLE key_counts (
    vault_id    TEXT NOT NULL,
    state       TEXT NOT NULL,
    template_id TEXT NOT NULL,
    algorithm   TEXT NOT NULL,
    size        INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (vault_id, state, template_id, algorithm, size)
) WITHOUT ROWID;

INSERT INTO key_counts (vault_id, state, template_id, algorithm, size, n)
SELECT vault_id, state, template_id, algorithm, size, COUNT(*) FROM managed_keys
GROUP BY vault_id, state, template_id, algorithm, size;

CREATE TRIGGER managed_keys_count_insert AFTER INSERT ON managed_keys BEGIN
    INSERT INTO key_counts (vault_id, state, template_id, algorithm, size, n)
        VALUES (NEW.vault_id, NEW.state, NEW.template_id, NEW.algorithm, NEW.size, 1)
        ON CONFLICT (vault_id, state, template_id, algorithm, size) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER managed_keys_count_delete AFTER DELETE ON managed_keys BEGIN
    UPDATE key_counts SET n = n - 1
     WHERE vault_id = OLD.vault_id AND state = OLD.state AND template_id = OLD.template_id
       AND algorithm = OLD.algorithm AND size = OLD.size;
END;

CREATE TRIGGER managed_keys_count_update
AFTER UPDATE OF vault_id, state, template_id, algorithm, size ON managed_keys
WHEN OLD.vault_id <> NEW.vault_id OR OLD.state <> NEW.state OR OLD.template_id <> NEW.template_id
  OR OLD.algorithm <> NEW.algorithm OR OLD.size <> NEW.size
BEGIN
    UPDATE key_counts SET n = n - 1
     WHERE vault_id = OLD.vault_id AND state = OLD.state AND template_id = OLD.template_id
       AND algorithm = OLD.algorithm AND size = OLD.size;
    INSERT INTO key_counts (vault_id, state, template_id, algorithm, size, n)
        VALUES (NEW.vault_id, NEW.state, NEW.template_id, NEW.algorithm, NEW.size, 1)
        ON CONFLICT (vault_id, state, template_id, algorithm, size) DO UPDATE SET n = n + 1;
END;

-- A key found by its label alone, and keys in the order of their label, creation or planned
-- dates.
CREATE INDEX managed_keys_label ON managed_keys (label, id);
CREATE INDEX managed_keys_created ON managed_keys (created_at, id);
CREATE INDEX managed_keys_activation ON managed_keys (activation_date, id);
CREATE INDEX managed_keys_expiration ON managed_keys (expiration_date, id);
