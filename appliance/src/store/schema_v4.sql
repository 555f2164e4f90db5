-- Custos store, schema version 4: the SNMP agent of §13. One settings row,
-- disabled until an administrator enables it. community_sealed is NULL while
-- the community string is the default ('public'); once changed it is kept
-- sealed under the master key like every other secret.

CREATE TABLE snmp_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    enabled INTEGER NOT NULL DEFAULT 0,
    community_sealed BLOB,
    sys_contact TEXT NOT NULL DEFAULT '',
    sys_location TEXT NOT NULL DEFAULT ''
);
INSERT INTO snmp_settings(id) VALUES (1);

-- The access list: IPv4 addresses whose fourth octet may be '*', in the
-- order they were added. An empty list lets any address ask.
CREATE TABLE snmp_acl (
    id INTEGER PRIMARY KEY,
    entry TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL
);
