-- Keys per vault, state and UTC day of each date the key lists filter on (created, last updated,
-- activation, expiration, rotated), kept by a trigger: a list filtered on one of those dates
-- (filters are whole days) totals these rows instead of counting every matching key.
CREATE TABLE key_day_counts (
    field    TEXT COLLATE "C" NOT NULL,
    day      DATE NOT NULL,
    vault_id UUID NOT NULL,
    state    TEXT COLLATE "C" NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (field, day, vault_id, state)
);

INSERT INTO key_day_counts (field, day, vault_id, state, n)
SELECT d.field, d.day, k.vault_id, k.state, COUNT(*)
  FROM managed_keys k
 CROSS JOIN LATERAL (VALUES
        ('created_at', (k.created_at AT TIME ZONE 'UTC')::date),
        ('updated_at', (k.updated_at AT TIME ZONE 'UTC')::date),
        ('activation_date', k.activation_date),
        ('expiration_date', k.expiration_date),
        ('rotated_at', (k.rotated_at AT TIME ZONE 'UTC')::date)) AS d(field, day)
 WHERE d.day IS NOT NULL
 GROUP BY d.field, d.day, k.vault_id, k.state;

CREATE FUNCTION managed_keys_day_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    fields CONSTANT TEXT[] := ARRAY['created_at', 'updated_at', 'activation_date', 'expiration_date', 'rotated_at'];
    old_days DATE[];
    new_days DATE[];
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        old_days := ARRAY[(OLD.created_at AT TIME ZONE 'UTC')::date, (OLD.updated_at AT TIME ZONE 'UTC')::date,
                          OLD.activation_date, OLD.expiration_date, (OLD.rotated_at AT TIME ZONE 'UTC')::date];
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_days := ARRAY[(NEW.created_at AT TIME ZONE 'UTC')::date, (NEW.updated_at AT TIME ZONE 'UTC')::date,
                          NEW.activation_date, NEW.expiration_date, (NEW.rotated_at AT TIME ZONE 'UTC')::date];
    END IF;
    -- An update moves a key only for the dates whose day changed, unless it changes state or
    -- vault.
    IF TG_OP = 'UPDATE' AND OLD.vault_id = NEW.vault_id AND OLD.state = NEW.state THEN
        FOR i IN 1 .. 5 LOOP
            IF old_days[i] IS NOT DISTINCT FROM new_days[i] THEN
                old_days[i] := NULL;
                new_days[i] := NULL;
            END IF;
        END LOOP;
    END IF;
    IF old_days IS NOT NULL THEN
        UPDATE key_day_counts c SET n = c.n - 1
          FROM unnest(fields, old_days) AS o(field, day)
         WHERE o.day IS NOT NULL AND c.field = o.field AND c.day = o.day AND c.vault_id = OLD.vault_id
           AND c.state = OLD.state;
    END IF;
    IF new_days IS NOT NULL THEN
        INSERT INTO key_day_counts (field, day, vault_id, state, n)
        SELECT d.field, d.day, NEW.vault_id, NEW.state, 1 FROM unnest(fields, new_days) AS d(field, day)
         WHERE d.day IS NOT NULL
        ON CONFLICT (field, day, vault_id, state) DO UPDATE SET n = key_day_counts.n + 1;
    END IF;
    RETURN NULL;
END $$;

-- Deferred to the commit, as the other counts: the day rows every key write touches stay
-- locked only while its transaction commits.
CREATE CONSTRAINT TRIGGER managed_keys_day_count_insert AFTER INSERT OR DELETE ON managed_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION managed_keys_day_count();
CREATE CONSTRAINT TRIGGER managed_keys_day_count_update
    AFTER UPDATE OF vault_id, state, created_at, updated_at, activation_date, expiration_date, rotated_at
    ON managed_keys
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.vault_id <> NEW.vault_id OR OLD.state <> NEW.state
          OR (OLD.created_at AT TIME ZONE 'UTC')::date <> (NEW.created_at AT TIME ZONE 'UTC')::date
          OR (OLD.updated_at AT TIME ZONE 'UTC')::date <> (NEW.updated_at AT TIME ZONE 'UTC')::date
          OR OLD.activation_date IS DISTINCT FROM NEW.activation_date
          OR OLD.expiration_date IS DISTINCT FROM NEW.expiration_date
          OR (OLD.rotated_at AT TIME ZONE 'UTC')::date IS DISTINCT FROM (NEW.rotated_at AT TIME ZONE 'UTC')::date)
    EXECUTE FUNCTION managed_keys_day_count();

-- Keys by rotation time, for a page of keys rotated in a range (few keys have rotated at all).
CREATE INDEX managed_keys_rotated ON managed_keys (rotated_at, id) WHERE rotated_at IS NOT NULL;
