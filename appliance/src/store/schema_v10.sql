-- Custos store, schema version 10: where the primary reaches each
-- failover's HA control API (§1: 8080), learned when it registered (the
-- address it registered from, and the port it named), for Config
-- Replication; and the key ports it serves hosts on (compatible and Suite
-- B), which Notify All Hosts tells the hosts.

ALTER TABLE ha_nodes ADD COLUMN control_address TEXT;
ALTER TABLE ha_nodes ADD COLUMN keys_port INTEGER;
ALTER TABLE ha_nodes ADD COLUMN keys_ec_port INTEGER;
