"""The call log's schema, as an ordered list of migrations.

Migration N is `MIGRATIONS[N - 1]`; `schema_version` records each one applied (a history,
not a single row). Never edit a migration that has shipped: add the next one. Each migration
runs in one transaction together with its `schema_version` row, so a crash or an error mid-way
leaves the database at the previous version, never in between.

No `STRICT` tables: they need SQLite 3.37, and Python on RHEL/Rocky 9 (where many Asterisk
boxes live) links 3.34, which cannot even open a database that has one. Types are checked by
the store before writing instead, and the CHECKs below guard the enumerations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import structlog

from pbxlink.clients import schema as clients_schema

log = structlog.get_logger("pbxlink.calllog")

STATUSES = ("answered", "no_answer", "busy", "abandoned", "voicemail", "failed")
DIRECTIONS = ("inbound", "outbound", "internal")
ROLES = ("caller", "rang", "answered", "transferred")


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


MIGRATION_1 = f"""
CREATE TABLE calls (
    call_id         TEXT NOT NULL PRIMARY KEY CHECK (call_id <> ''),
    started_at      REAL NOT NULL,             -- epoch seconds, UTC
    answered_at     REAL,
    ended_at        REAL NOT NULL,             -- the log holds ended calls only
    direction       TEXT NOT NULL CHECK (direction IN ({_sql_list(DIRECTIONS)})),
    caller_number   TEXT NOT NULL,
    caller_name     TEXT NOT NULL,
    called_number   TEXT NOT NULL,
    extensions_rung TEXT NOT NULL DEFAULT '[]',  -- JSON list, in ring order
    answered_by     TEXT,
    status          TEXT NOT NULL CHECK (status IN ({_sql_list(STATUSES)})),
    wait_s          REAL NOT NULL,
    talk_s          REAL NOT NULL,
    hangup_cause    INTEGER,
    queue           TEXT,
    ivr_digits      TEXT NOT NULL DEFAULT '',
    transferred_to  TEXT NOT NULL DEFAULT '[]',  -- JSON list
    recording       TEXT,
    partial         INTEGER NOT NULL CHECK (partial IN (0, 1)),
    client_id       INTEGER,                   -- filled by the client directory
    too_long        INTEGER NOT NULL DEFAULT 0 CHECK (too_long IN (0, 1))
);
CREATE INDEX calls_started ON calls (started_at, call_id);  -- call_id: ties, in order
CREATE INDEX calls_caller ON calls (caller_number, started_at);
CREATE INDEX calls_called ON calls (called_number, started_at);
CREATE INDEX calls_status ON calls (status, started_at);
CREATE INDEX calls_direction ON calls (direction, started_at);
CREATE INDEX calls_client ON calls (client_id, started_at);
CREATE INDEX calls_queue ON calls (queue, started_at);

-- every extension a call involved, so "calls of extension X" is one index range;
-- started_at is the call's, copied here so a time range needs no join to filter
CREATE TABLE call_extensions (
    call_id    TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    extension  TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ({_sql_list(ROLES)})),
    started_at REAL NOT NULL,
    PRIMARY KEY (call_id, extension, role)
) WITHOUT ROWID;
CREATE INDEX call_extensions_extension ON call_extensions (extension, started_at);
"""

# Calls in progress, so a call the daemon saw start still gets its one final record after a
# crash or restart (ended as partial if Asterisk no longer has it). Deleted with the final row.
MIGRATION_2 = """
CREATE TABLE open_calls (
    call_id    TEXT NOT NULL PRIMARY KEY,
    record     TEXT NOT NULL,                  -- JSON of the CallRecord, times as epoch
    updated_at REAL NOT NULL
) WITHOUT ROWID;
"""

# The client directory (pbxlink.clients): categories, clients, their phones and orders.
MIGRATION_3 = clients_schema.MIGRATION

# The call log API, service level and recordings (issue 5):
# - offered_at: when the caller started waiting for a person (first ring or queue join),
#   the service level's clock;
# - recording_access: who listened to or downloaded which recording, and when.
MIGRATION_4 = """
ALTER TABLE calls ADD COLUMN offered_at REAL;
CREATE TABLE recording_access (
    call_id  TEXT NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    operator TEXT NOT NULL,
    action   TEXT NOT NULL CHECK (action IN ('listened', 'downloaded')),
    at       REAL NOT NULL
);
CREATE INDEX recording_access_call ON recording_access (call_id, at);
-- service level (calllog/servicelevel.py): a period is one range of this index, which holds
-- everything the sums read, the wait included (the expression must match WAIT_SQL exactly)
CREATE INDEX calls_offered ON calls (direction, offered_at, started_at, status,
    max(coalesce(answered_at, ended_at) - offered_at, 0.0), talk_s, queue);
-- the call log API's keyset pages in talk or wait order, and too-long calls (calllog/query.py)
CREATE INDEX calls_talk ON calls (talk_s, call_id);
CREATE INDEX calls_wait ON calls (wait_s, call_id);
CREATE INDEX calls_too_long ON calls (started_at, call_id) WHERE too_long = 1;
"""

# the times a partial record had to estimate (CallRecord.estimated), a JSON list of names
MIGRATION_5 = """
ALTER TABLE calls ADD COLUMN estimated TEXT NOT NULL DEFAULT '[]';
"""

# the service level leaves estimated times out (docs/metrics.md): `calls_offered` gains which of
# a call's wait and talk are estimates, so the sums still read the index alone (the expression
# must match ESTIMATE_SQL of calllog/servicelevel.py exactly): 0 none, 1 the talk, 3 both
MIGRATION_6 = """
DROP INDEX calls_offered;
CREATE INDEX calls_offered ON calls (direction, offered_at, started_at, status,
    max(coalesce(answered_at, ended_at) - offered_at, 0.0),
    CASE WHEN estimated = '[]' THEN 0 WHEN instr(estimated, CASE WHEN answered_at IS NULL
        THEN '"ended_at"' ELSE '"answered_at"' END) THEN 3 ELSE 1 END,
    talk_s, queue);
"""

MIGRATIONS: tuple[str, ...] = (
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
)


async def connect(path: Path, busy_timeout_s: float) -> aiosqlite.Connection:
    """A connection to pbxlink's database as every part opens it.

    isolation_level=None: no implicit transactions, every BEGIN/COMMIT is the caller's;
    synchronous=NORMAL with WAL: a committed transaction survives a kill -9."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        await db.close()
        raise
    return db


class SchemaError(RuntimeError):
    """The database cannot be used by this version of pbxlink; the message names the file."""


def statements(script: str) -> list[str]:
    """Split a script on `;` where SQLite agrees a statement ends (triggers hold `;` inside)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buf.strip()!r}")
    return out


async def migrate(
    db: aiosqlite.Connection, path: Path, migrations: Sequence[str] = MIGRATIONS
) -> int:
    """Bring the database to the newest version; returns it. `db` must be in autocommit mode.

    BEGIN IMMEDIATE takes the write lock before reading the version, so two processes opening
    the same new file cannot both apply migration 1.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
        )
        rows = await db.execute_fetchall("SELECT coalesce(max(version), 0) FROM schema_version")
        current = int(next(iter(rows))[0])
        if current > len(migrations):
            raise SchemaError(
                f"{path}: the call log has schema version {current}, newer than this pbxlink "
                f"knows (up to {len(migrations)}); upgrade pbxlink or point it at another database"
            )
        for version in range(current + 1, len(migrations) + 1):
            for statement in statements(migrations[version - 1]):
                await db.execute(statement)
            applied_at = datetime.now(UTC).isoformat(timespec="seconds")
            await db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, applied_at))
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    if current < len(migrations):
        log.info("calllog.migrated", path=str(path), old=current, new=len(migrations))
    return len(migrations)
