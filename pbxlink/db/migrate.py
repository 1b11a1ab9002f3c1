"""Bringing a database file to the newest schema, whichever part opens it first.

The call log and the client directory share one file and one history: `schema_version`
records each migration applied (a history, not a single row), numbered as `MIGRATIONS`
(db/migrations.py) lists them. Each migration runs in one transaction together with its
`schema_version` row, so a crash or an error mid-way leaves the database at the previous
version, never in between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite
import structlog

from pbxlink.db.migrations import MIGRATIONS

log = structlog.get_logger("pbxlink.db")


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
                f"{path}: the database has schema version {current}, newer than this pbxlink "
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
        log.info("db.migrated", path=str(path), old=current, new=len(migrations))
    return len(migrations)
