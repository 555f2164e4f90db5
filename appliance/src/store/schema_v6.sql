-- §12: the wrapper key that encrypts backups (sealed under the master key,
-- never in a backup) and the custodians' shares of it (each sealed; keyed by
-- login so a restore that replaces the administrators keeps them).

CREATE TABLE wrapper_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key_sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('created', 'imported')),
    created_at TEXT NOT NULL,
    minimum_custodians INTEGER,
    total_custodians INTEGER,
    exported_at TEXT
);

CREATE TABLE wrapper_shares (
    login TEXT PRIMARY KEY,
    number INTEGER NOT NULL,
    share_sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);
