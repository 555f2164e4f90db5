-- Custos store, schema version 5: email notifications (§14). The SMTP
-- server (one row, its password sealed under the master key), the
-- notification groups, the outbox of notices custos-notifyd delivers, and
-- how far custos-notifyd has read the audit log.

CREATE TABLE email_smtp (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    host TEXT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    security TEXT NOT NULL CHECK (security IN ('none', 'starttls', 'tls')),
    username TEXT,
    password_sealed BLOB,
    sender TEXT NOT NULL,
    -- An extra root certificate (PEM) trusted for this server, besides the
    -- system's; for a relay with a private CA.
    ca_certificate TEXT,
    updated_at TEXT NOT NULL
);

-- AUTOINCREMENT: a group's id is never reused, so the outbox of a deleted
-- group can never be taken for a new one's.
CREATE TABLE email_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    -- NULL: system-wide.
    domain_id INTEGER REFERENCES domains(id) ON DELETE CASCADE,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL CHECK (kind IN ('generic', 'key_expiration', 'certificate_expiration')),
    threshold TEXT NOT NULL CHECK (threshold IN ('ERROR', 'FATAL')),
    message_contains TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);

-- One row per notice and group, unique by the notice's key ("audit:<id>",
-- "key:<key id>:<version>:<created>:<milestone>",
-- "cert:<fingerprint>:<milestone>"): a notice is queued once, whatever
-- restarts happen, and stays here once sent, as the record that it was.
CREATE TABLE email_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id INTEGER NOT NULL REFERENCES email_groups(id) ON DELETE CASCADE,
    notice TEXT NOT NULL,
    summary TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    sent_at TEXT,
    abandoned_at TEXT,
    UNIQUE (group_id, notice)
);
CREATE INDEX email_outbox_pending ON email_outbox(next_attempt_at)
    WHERE sent_at IS NULL AND abandoned_at IS NULL;

-- custos-notifyd's progress: 'audit_cursor' (the last audit entry it has
-- read) and 'expiry_scan' (when it last looked for expiring keys and
-- certificates, by its clock).
CREATE TABLE email_progress (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
