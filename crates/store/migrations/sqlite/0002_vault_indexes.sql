-- Vault-scoped lookups and counts (keys_count, delete guards) without scanning whole tables.
CREATE INDEX managed_keys_vault ON managed_keys (vault_id);
CREATE INDEX keystores_vault ON keystores (vault_id);
CREATE INDEX templates_vault ON templates (vault_id);
