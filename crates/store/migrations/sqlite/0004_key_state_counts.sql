-- Keys per vault and state, kept by triggers, so the usual list filters (state, vault) and
-- vault counts answer `total_count` without counting every row.
CREATE TABLE key_state_counts (
    vault_id TEXT NOT NULL,
    state    TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (vault_id, state)
) WITHOUT ROWID;

INSERT INTO key_state_counts (vault_id, state, n)
SELECT vault_id, state, COUNT(*) FROM managed_keys GROUP BY vault_id, state;

CREATE TRIGGER managed_keys_count_insert AFTER INSERT ON managed_keys BEGIN
    INSERT INTO key_state_counts (vault_id, state, n) VALUES (NEW.vault_id, NEW.state, 1)
        ON CONFLICT (vault_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER managed_keys_count_delete AFTER DELETE ON managed_keys BEGIN
    UPDATE key_state_counts SET n = n - 1 WHERE vault_id = OLD.vault_id AND state = OLD.state;
END;

CREATE TRIGGER managed_keys_count_update AFTER UPDATE OF state ON managed_keys WHEN OLD.state <> NEW.state BEGIN
    UPDATE key_state_counts SET n = n - 1 WHERE vault_id = OLD.vault_id AND state = OLD.state;
    INSERT INTO key_state_counts (vault_id, state, n) VALUES (NEW.vault_id, NEW.state, 1)
        ON CONFLICT (vault_id, state) DO UPDATE SET n = n + 1;
END;
