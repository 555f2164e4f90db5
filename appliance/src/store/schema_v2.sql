-- Custos store, schema version 2: the admin CLI's own account (§2, §3, §6)
-- and the appliance's operating-system settings that the CLI manages (§3).
-- Neither belongs to a system backup (§12): they describe this machine, and
-- a restore leaves them as they are.

CREATE TABLE cli_account (
    login TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    agreement_accepted_at TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 1,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    last_login TEXT,
    password_changed_at TEXT,
    created_at TEXT NOT NULL
);

-- One row per section (host_name, eth0, dns, ntp); the value is JSON whose
-- fields are re-validated by the model's parsers when they are read.
CREATE TABLE os_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
