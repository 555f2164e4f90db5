-- Custos store, schema version 10: where the primary reaches each
-- failover's HA control API (§1: 8080), learned when it registered (the
-- address it registered from, and the port it named), for Config
-- Replication.

ALTER TABLE ha_nodes ADD COLUMN control_address TEXT;
