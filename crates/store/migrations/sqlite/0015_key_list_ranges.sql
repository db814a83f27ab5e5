-- Key lists page in the order of the last change within each vault and state as well as over
-- all keys: each index holds its keys in that order, ties broken by id, so a page is read from
-- the ranges it needs instead of sorting every key.
DROP INDEX managed_keys_updated;
CREATE INDEX managed_keys_updated ON managed_keys (updated_at, id);
CREATE INDEX managed_keys_vault_state_updated ON managed_keys (vault_id, state, updated_at, id);
