"""How every part opens pbxlink's database, so they all see it the same way."""

from __future__ import annotations

from pathlib import Path

import aiosqlite


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
