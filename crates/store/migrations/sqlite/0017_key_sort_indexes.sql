-- Keys in the order of every documented sort field: each index holds them in that order, ties
-- broken by id, so a page walks it instead of sorting every key.
CREATE INDEX managed_keys_state_id ON managed_keys (state, id);
CREATE INDEX managed_keys_size ON managed_keys (size, id);
CREATE INDEX managed_keys_version ON managed_keys (version, id);
CREATE INDEX managed_keys_algorithm ON managed_keys (algorithm, id);
CREATE INDEX managed_keys_vault_id ON managed_keys (vault_id, id);
