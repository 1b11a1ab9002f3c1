"""The client directory's tables (pbxlink/clients owns them: nothing else writes them), as
migrations of the shared database; db/calllog_schema.py's rules apply (never edit a shipped one).

No STRICT tables (SQLite 3.34 on RHEL 9), CHECKs guard what SQL can guard, the directory checks
the rest before writing. Names are searched through `clients.search`, the name and company
case-folded in Python: SQLite's NOCASE and lower() fold ASCII only, and the operators' clients
are Georgian, Russian, Arabic... Other parts read a client through the `client_summary` view
(migration 7), not these tables, so the directory may reshape them.
"""

from __future__ import annotations

# name, label, colour: the categories every directory has; admins add their own
BUILTIN_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("regular", "Regular", "#64748b"),
    ("vip", "VIP", "#ca8a04"),
    ("problem", "Problem", "#dc2626"),
    ("potential", "Potential", "#2563eb"),
)

_SEED = ",\n    ".join(f"('{n}', '{lab}', '{col}', 1)" for n, lab, col in BUILTIN_CATEGORIES)

# The directory: categories, clients, their phones and orders. Its trigger `clients_deleted`
# (which wrote the call log's calls) is replaced by the call log's own in migration 8.
MIGRATION_3 = f"""
CREATE TABLE categories (
    name    TEXT NOT NULL PRIMARY KEY CHECK (name <> ''),
    label   TEXT NOT NULL CHECK (label <> ''),
    color   TEXT NOT NULL,                     -- #rrggbb
    builtin INTEGER NOT NULL DEFAULT 0 CHECK (builtin IN (0, 1))
) WITHOUT ROWID;
INSERT INTO categories (name, label, color, builtin) VALUES
    {_SEED};

CREATE TABLE clients (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL DEFAULT '',
    company     TEXT NOT NULL DEFAULT '',
    category    TEXT NOT NULL DEFAULT 'regular' REFERENCES categories (name),
    notes       TEXT NOT NULL DEFAULT '',
    city        TEXT NOT NULL DEFAULT '',
    country     TEXT NOT NULL DEFAULT '',
    photo       TEXT,                          -- file name under <state_dir>/photos
    responsible TEXT NOT NULL DEFAULT '',
    search      TEXT NOT NULL DEFAULT '',      -- casefold(name) LF casefold(company)
    created_at  REAL NOT NULL,                 -- epoch seconds, UTC
    updated_at  REAL NOT NULL
);
CREATE INDEX clients_search ON clients (search);
CREATE INDEX clients_updated ON clients (updated_at);
CREATE INDEX clients_category ON clients (category);

CREATE TABLE client_phones (
    id        INTEGER PRIMARY KEY,
    client_id INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    raw       TEXT NOT NULL,                   -- as the operator typed it or the PBX sent it
    e164      TEXT,                            -- NULL: no rule made a valid number of it
    tail      TEXT NOT NULL CHECK (tail <> ''),  -- last N digits: the fallback key
    label     TEXT NOT NULL DEFAULT '',
    UNIQUE (client_id, tail)
);
CREATE INDEX client_phones_e164 ON client_phones (e164);
CREATE INDEX client_phones_tail ON client_phones (tail);

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    client_id   INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    number      TEXT NOT NULL CHECK (number <> ''),
    stage       TEXT NOT NULL DEFAULT '',
    responsible TEXT NOT NULL DEFAULT '',
    debt        REAL NOT NULL DEFAULT 0,
    open        INTEGER NOT NULL DEFAULT 1 CHECK (open IN (0, 1)),
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX orders_client ON orders (client_id, open);

CREATE TRIGGER clients_deleted AFTER DELETE ON clients BEGIN
    UPDATE calls SET client_id = NULL WHERE client_id = old.id;
END;
"""

# What other parts may read of a client: the call log's items show its name and category and
# filter on the category. A simple view: SQLite flattens it into the reading query, so the
# call log's plans are the ones the table gave (a test compares them).
MIGRATION_7 = """
CREATE VIEW client_summary AS SELECT id, name, category FROM clients;
"""
