-- Custos store, schema version 1. Times are RFC 3339 UTC text. Columns named
-- *_sealed hold AES-256-GCM ciphertext under the master key.

CREATE TABLE domains (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('global', 'restricted')),
    organization TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    help_desk_information TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE administrators (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    rsa_user_id TEXT,
    user_type TEXT NOT NULL CHECK (user_type IN ('system', 'domain', 'security')),
    read_only INTEGER NOT NULL DEFAULT 0,
    restrict_to_domain INTEGER REFERENCES domains(id) ON DELETE SET NULL,
    password_hash TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 1,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    last_login TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE domain_members (
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    admin_id INTEGER NOT NULL REFERENCES administrators(id) ON DELETE CASCADE,
    roles TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (domain_id, admin_id)
);

CREATE TABLE agent_keys (
    id INTEGER PRIMARY KEY,
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

CREATE TABLE key_versions (
    key_id INTEGER NOT NULL REFERENCES agent_keys(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    material_sealed BLOB NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    PRIMARY KEY (key_id, version)
);

CREATE TABLE registration_secrets (
    domain_id INTEGER PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    secret_sealed BLOB NOT NULL,
    creation_method TEXT NOT NULL,
    valid_until TEXT NOT NULL,
    require_hosts_first_added INTEGER NOT NULL,
    expired INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE hosts (
    id INTEGER PRIMARY KEY,
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

CREATE TABLE preferences (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE system_identities (
    name TEXT PRIMARY KEY,
    cert_pem TEXT NOT NULL,
    key_sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    source TEXT NOT NULL,
    via TEXT NOT NULL,
    severity TEXT NOT NULL CHECK (severity IN ('INFO', 'WARN', 'ERROR', 'FATAL')),
    domain_id INTEGER,
    what TEXT NOT NULL
);
CREATE INDEX audit_domain ON audit(domain_id, id);
