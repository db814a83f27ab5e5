-- When a key's schedule next acts on it (rotation, deactivation on expiration, destruction after
-- deactivation), kept by each write of the key: the scheduler reads only the keys due.
ALTER TABLE managed_keys ADD COLUMN next_scheduled_at TIMESTAMPTZ;
CREATE INDEX managed_keys_next_scheduled ON managed_keys (next_scheduled_at) WHERE next_scheduled_at IS NOT NULL;
