-- Custos store, schema version 10 on PostgreSQL: schema_v10.sql's control
-- address of each failover.

ALTER TABLE ha_nodes ADD COLUMN control_address TEXT;
