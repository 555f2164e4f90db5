-- Custos store, schema version 3: the licence of §10. At most one row: the
-- file exactly as installed (its signature is verified again whenever it is
-- read), when and by whom.

CREATE TABLE licence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    text TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    installed_by TEXT NOT NULL
);
