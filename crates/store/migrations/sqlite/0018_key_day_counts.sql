-- Keys per vault, state and UTC day of each date the key lists filter on (created, last updated,
-- activation, expiration, rotated), kept by triggers: a list filtered on one of those dates
-- (filters are whole days) totals these rows instead of counting every matching key.
CREATE TABLE key_day_counts (
    field    TEXT NOT NULL,
    day      TEXT NOT NULL,
    vault_id TEXT NOT NULL,
    state    TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (field, day, vault_id, state)
) WITHOUT ROWID;

INSERT INTO key_day_counts (field, day, vault_id, state, n)
SELECT field, day, vault_id, state, COUNT(*) FROM (
    SELECT 'created_at' AS field, substr(created_at, 1, 10) AS day, vault_id, state FROM managed_keys
    UNION ALL SELECT 'updated_at', substr(updated_at, 1, 10), vault_id, state FROM managed_keys
    UNION ALL SELECT 'activation_date', substr(activation_date, 1, 10), vault_id, state FROM managed_keys
    UNION ALL SELECT 'expiration_date', substr(expiration_date, 1, 10), vault_id, state FROM managed_keys
    UNION ALL SELECT 'rotated_at', substr(rotated_at, 1, 10), vault_id, state FROM managed_keys
) WHERE day IS NOT NULL
GROUP BY field, day, vault_id, state;

CREATE TRIGGER managed_keys_day_count_insert AFTER INSERT ON managed_keys BEGIN
    INSERT INTO key_day_counts (field, day, vault_id, state, n)
    SELECT column1, column2, NEW.vault_id, NEW.state, 1 FROM (VALUES
        ('created_at', substr(NEW.created_at, 1, 10)),
        ('updated_at', substr(NEW.updated_at, 1, 10)),
        ('activation_date', substr(NEW.activation_date, 1, 10)),
        ('expiration_date', substr(NEW.expiration_date, 1, 10)),
        ('rotated_at', substr(NEW.rotated_at, 1, 10)))
    WHERE column2 IS NOT NULL
    ON CONFLICT (field, day, vault_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER managed_keys_day_count_delete AFTER DELETE ON managed_keys BEGIN
    UPDATE key_day_counts SET n = n - 1
     WHERE vault_id = OLD.vault_id AND state = OLD.state AND (field, day) IN (VALUES
        ('created_at', substr(OLD.created_at, 1, 10)),
        ('updated_at', substr(OLD.updated_at, 1, 10)),
        ('activation_date', substr(OLD.activation_date, 1, 10)),
        ('expiration_date', substr(OLD.expiration_date, 1, 10)),
        ('rotated_at', substr(OLD.rotated_at, 1, 10)));
END;

-- An update moves a key between day rows only for the dates whose day changed, or for all of
-- them when the key changes state (or vault): most other updates touch none.
CREATE TRIGGER managed_keys_day_count_update
AFTER UPDATE OF vault_id, state, created_at, updated_at, activation_date, expiration_date, rotated_at
ON managed_keys
WHEN OLD.vault_id <> NEW.vault_id OR OLD.state <> NEW.state
  OR substr(OLD.created_at, 1, 10) IS NOT substr(NEW.created_at, 1, 10)
  OR substr(OLD.updated_at, 1, 10) IS NOT substr(NEW.updated_at, 1, 10)
  OR substr(OLD.activation_date, 1, 10) IS NOT substr(NEW.activation_date, 1, 10)
  OR substr(OLD.expiration_date, 1, 10) IS NOT substr(NEW.expiration_date, 1, 10)
  OR substr(OLD.rotated_at, 1, 10) IS NOT substr(NEW.rotated_at, 1, 10)
BEGIN
    UPDATE key_day_counts SET n = n - 1
     WHERE vault_id = OLD.vault_id AND state = OLD.state AND (field, day) IN (
        SELECT column1, column2 FROM (VALUES
            ('created_at', substr(OLD.created_at, 1, 10), substr(NEW.created_at, 1, 10)),
            ('updated_at', substr(OLD.updated_at, 1, 10), substr(NEW.updated_at, 1, 10)),
            ('activation_date', substr(OLD.activation_date, 1, 10), substr(NEW.activation_date, 1, 10)),
            ('expiration_date', substr(OLD.expiration_date, 1, 10), substr(NEW.expiration_date, 1, 10)),
            ('rotated_at', substr(OLD.rotated_at, 1, 10), substr(NEW.rotated_at, 1, 10)))
        WHERE OLD.vault_id <> NEW.vault_id OR OLD.state <> NEW.state OR column2 IS NOT column3);
    INSERT INTO key_day_counts (field, day, vault_id, state, n)
    SELECT column1, column3, NEW.vault_id, NEW.state, 1 FROM (VALUES
        ('created_at', substr(OLD.created_at, 1, 10), substr(NEW.created_at, 1, 10)),
        ('updated_at', substr(OLD.updated_at, 1, 10), substr(NEW.updated_at, 1, 10)),
        ('activation_date', substr(OLD.activation_date, 1, 10), substr(NEW.activation_date, 1, 10)),
        ('expiration_date', substr(OLD.expiration_date, 1, 10), substr(NEW.expiration_date, 1, 10)),
        ('rotated_at', substr(OLD.rotated_at, 1, 10), substr(NEW.rotated_at, 1, 10)))
    WHERE column3 IS NOT NULL AND (OLD.vault_id <> NEW.vault_id OR OLD.state <> NEW.state OR column2 IS NOT column3)
    ON CONFLICT (field, day, vault_id, state) DO UPDATE SET n = n + 1;
END;

-- Keys by rotation time, for a page of keys rotated in a range (few keys have rotated at all).
CREATE INDEX managed_keys_rotated ON managed_keys (rotated_at, id) WHERE rotated_at IS NOT NULL;
