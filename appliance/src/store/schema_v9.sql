-- Custos store, schema version 9: the HA group of §11.
--
-- The failovers the primary knows, by the host name each one's `setinfo
-- show` prints (case-sensitive), and what became of them: registered (the
-- node certificate the primary signed for it, by fingerprint), configured
-- (replication set up). The table replicates with the rest of the store,
-- so every node knows the group.

CREATE TABLE ha_nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('primary', 'failover')),
    cert_fingerprint TEXT UNIQUE,
    registered_at TEXT,
    configured_at TEXT,
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL
);
