-- Custos store, schema version 10 on PostgreSQL: schema_v10.sql's control
-- address and key ports of each failover.

ALTER TABLE ha_nodes ADD COLUMN control_address TEXT;
ALTER TABLE ha_nodes ADD COLUMN keys_port BIGINT;
ALTER TABLE ha_nodes ADD COLUMN keys_ec_port BIGINT;
