-- Key lists filter by state and sort by last change, ties broken by id: one index serves both.
DROP INDEX managed_keys_state_updated;
CREATE INDEX managed_keys_state_updated ON managed_keys (state, updated_at, id);
