-- Custos store, schema version 7: the automatic backup of §12.
--
-- One row of settings: the schedule (times are 24-hour "HH:MM" in UTC, the
-- weekday an English day name, so nothing depends on a browser's language),
-- the SCP target, the target's host key pinned on first contact, and a
-- pending "Backup Now". The appliance's own SSH key for pushing (the private
-- half sealed under the master key, bound to its row). The history of
-- pushes. None of it belongs to a system backup: it describes this
-- appliance's own backups.

CREATE TABLE backup_automatic (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    frequency TEXT CHECK (frequency IN ('daily', 'weekly')),
    time_utc TEXT CHECK (time_utc GLOB '[0-2][0-9]:[0-5][0-9]'),
    weekday TEXT CHECK (weekday IN ('monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday')),
    target_host TEXT,
    target_port INTEGER CHECK (target_port BETWEEN 1 AND 65535),
    target_directory TEXT,
    target_user TEXT,
    host_key_fingerprint TEXT,
    host_key_pinned_at TEXT,
    now_requested_at TEXT,
    now_requested_by TEXT,
    updated_at TEXT,
    CHECK ((frequency IS NULL) = (time_utc IS NULL)),
    CHECK ((frequency = 'weekly') = (weekday IS NOT NULL)),
    CHECK ((target_host IS NULL) = (target_directory IS NULL)
       AND (target_host IS NULL) = (target_user IS NULL)
       AND (target_host IS NULL) = (target_port IS NULL))
);
INSERT INTO backup_automatic(id) VALUES (1);

CREATE TABLE backup_ssh_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    public_key TEXT NOT NULL,
    private_key_sealed BLOB NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE backup_history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('scheduled', 'now')),
    attempt INTEGER NOT NULL,
    target TEXT NOT NULL,
    file_name TEXT,
    bytes INTEGER,
    result TEXT NOT NULL CHECK (result IN ('success', 'failed')),
    error TEXT,
    retry_in_secs INTEGER
);
