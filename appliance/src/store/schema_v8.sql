-- Issue 12 (key custody).
--
-- 1. Domain, key and host ids are never reused: a new domain must not
--    inherit a deleted one's audit trail (audit rows keep the domain's id).
--    SQLite's table rebuild (create, copy, drop, rename); the migration runs
--    with foreign keys off (see `migrate`), so dropping the old table
--    cascades nothing, and `PRAGMA foreign_key_check` runs before commit.
--    The sequences start above every id in use and every domain id the
--    audit log still names.
--
-- 2. A custodian's share leaves the appliance once: after the custodian
--    confirms they stored it, its sealed copy is deleted (`share_sealed`
--    NULL, `collected_at` set) and only the record that they hold it stays.

CREATE TABLE new_domains (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('global', 'restricted')),
    organization TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    help_desk_information TEXT NOT NULL,
    created_at TEXT NOT NULL
);
INSERT INTO new_domains(id, name, kind, organization, description, help_desk_information, created_at)
    SELECT id, name, kind, organization, description, help_desk_information, created_at FROM domains;
DROP TABLE domains;
ALTER TABLE new_domains RENAME TO domains;

CREATE TABLE new_agent_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    template TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_type TEXT NOT NULL,
    unique_to_host INTEGER NOT NULL,
    creation_method TEXT NOT NULL,
    refresh_period INTEGER,
    automatic_rotation INTEGER NOT NULL,
    life_span_days INTEGER,
    expiration_date TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (domain_id, name)
);
INSERT INTO new_agent_keys(id, domain_id, name, description, template, algorithm, key_type, unique_to_host,
        creation_method, refresh_period, automatic_rotation, life_span_days, expiration_date, created_at)
    SELECT id, domain_id, name, description, template, algorithm, key_type, unique_to_host,
        creation_method, refresh_period, automatic_rotation, life_span_days, expiration_date, created_at
    FROM agent_keys;
DROP TABLE agent_keys;
ALTER TABLE new_agent_keys RENAME TO agent_keys;

CREATE TABLE new_hosts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    host_name TEXT NOT NULL,
    registration_allowed INTEGER NOT NULL DEFAULT 1,
    certificate TEXT,
    cert_fingerprint TEXT UNIQUE,
    registered_at TEXT,
    last_contact TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (domain_id, host_name)
);
INSERT INTO new_hosts(id, domain_id, host_name, registration_allowed, certificate, cert_fingerprint,
        registered_at, last_contact, created_at)
    SELECT id, domain_id, host_name, registration_allowed, certificate, cert_fingerprint,
        registered_at, last_contact, created_at
    FROM hosts;
DROP TABLE hosts;
ALTER TABLE new_hosts RENAME TO hosts;

DELETE FROM sqlite_sequence WHERE name IN ('domains', 'agent_keys', 'hosts');
INSERT INTO sqlite_sequence(name, seq)
    SELECT 'domains', MAX(COALESCE((SELECT MAX(id) FROM domains), 0),
                          COALESCE((SELECT MAX(domain_id) FROM audit), 0));
INSERT INTO sqlite_sequence(name, seq) SELECT 'agent_keys', COALESCE(MAX(id), 0) FROM agent_keys;
INSERT INTO sqlite_sequence(name, seq) SELECT 'hosts', COALESCE(MAX(id), 0) FROM hosts;

CREATE TABLE new_wrapper_shares (
    login TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    -- NULL once the custodian confirmed they stored it.
    share_sealed BLOB,
    created_at TEXT NOT NULL,
    -- First time its custodian displayed it: they may confirm only after.
    shown_at TEXT,
    collected_at TEXT,
    CHECK ((share_sealed IS NULL) = (collected_at IS NOT NULL))
);
INSERT INTO new_wrapper_shares(login, number, share_sealed, created_at)
    SELECT login, number, share_sealed, created_at FROM wrapper_shares;
DROP TABLE wrapper_shares;
ALTER TABLE new_wrapper_shares RENAME TO wrapper_shares;
