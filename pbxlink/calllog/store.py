"""The call log: every ended call, one row per call_id, in SQLite.

Writes are group commits. `submit` (on the AMI read path) only appends to a queue and wakes
the writer task; the writer takes everything queued so far (up to `max_batch`) and commits it
in one transaction, then looks again. So a record is on disk about one commit after it ended,
with no fixed delay, and a burst costs a few transactions, not one per call. WAL with
synchronous=NORMAL: a committed transaction survives kill -9 of the daemon (not necessarily a
power cut, which may lose the last commits but never corrupts the file).

Reads use their own connection: in WAL mode they see committed data only and never wait for,
or hold up, the writer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import sqlite3
import time
from pathlib import Path
from typing import cast

import aiosqlite
import structlog

from pbxlink.calllog.rows import (
    COLUMNS,
    PLACEHOLDERS,
    BadRecord,
    Row,
    extension_rows,
    from_row,
    to_row,
)
from pbxlink.calls.record import RECORD_FIELDS, CallRecord, iso_utc
from pbxlink.calls.toolong import TooLongRule, is_too_long
from pbxlink.db import SchemaError, connect, migrate

log = structlog.get_logger("pbxlink.calllog")

RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0

# rows.py's row, then the too_long flag the store derives from the thresholds
_INSERT = (
    f"INSERT INTO calls ({COLUMNS}, too_long) VALUES ({PLACEHOLDERS}, ?) "
    "ON CONFLICT(call_id) DO NOTHING"
)
_UPGRADE = (
    f"UPDATE calls SET ({COLUMNS}, too_long) = ({PLACEHOLDERS}, ?) "
    "WHERE call_id = ? AND partial = 1"
)
_INSERT_EXT = "INSERT OR IGNORE INTO call_extensions VALUES (?, ?, ?, ?)"
_DELETE_EXT = "DELETE FROM call_extensions WHERE call_id = ?"
_SELECT = f"SELECT {COLUMNS} FROM calls"
_UPSERT_OPEN = (
    "INSERT INTO open_calls VALUES (?, ?, ?) ON CONFLICT(call_id) DO UPDATE "
    "SET record = excluded.record, updated_at = excluded.updated_at"
)
_DELETE_OPEN = "DELETE FROM open_calls WHERE call_id = ?"
_SET_CLIENT = "UPDATE calls SET client_id = ? WHERE call_id = ? AND client_id IS NULL"
# only for a call still in the log: retention may have deleted it since (a foreign key error
# would make the whole batch fail again and again)
_INSERT_ACCESS = (
    "INSERT INTO recording_access (call_id, operator, action, at) "
    "SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM calls WHERE call_id = ?1)"
)
_SELECT_ACCESS = (
    "SELECT operator, action, at FROM recording_access WHERE call_id = ? ORDER BY at, rowid"
)
# a player fetches a file in many Range requests: one row per (call, operator, action) a minute
ACCESS_EVERY_S = 60.0


@dataclasses.dataclass(slots=True)
class Purged:
    """What one retention batch deleted."""

    calls: int
    extensions: int  # call_extensions rows
    accesses: int  # recording_access rows
    recordings: list[str]  # the deleted calls' recording names, as Asterisk gave them


class CallLogStore:
    """The call log. Call `open()`, run `run()` as a task, `submit()` records, `close()`."""

    def __init__(
        self,
        path: Path,
        *,
        too_long: TooLongRule | None = None,
        max_batch: int = 500,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.too_long = too_long  # None: no call is flagged too long
        self.max_batch = max_batch
        self.busy_timeout_s = busy_timeout_s
        self.written = 0  # records committed (new, upgraded or already there)
        self.batches = 0  # transactions committed
        self.duplicates = 0  # records whose call_id was already stored (nothing changed)
        self.rejected = 0  # records refused as invalid (logged as calllog.bad_record)
        self._queue: collections.deque[CallRecord] = collections.deque()
        self._open: dict[str, tuple[CallRecord, float]] = {}  # latest snapshot per open call
        self._client_ids: dict[str, int] = {}  # call_id -> the client the directory found
        self._late_clients: list[tuple[int, str]] = []  # found after the call was submitted
        self._accesses: list[tuple[str, str, str, float]] = []  # recording_access rows to write
        self._access_noted: dict[tuple[str, str, str], float] = {}  # last noted, for dedup
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one transaction at a time on the writer connection
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._closed = False
        self._inflight: asyncio.Future[bool] | None = None  # the batch run() is writing

    @property
    def queue_depth(self) -> int:
        """Records submitted and not yet committed (includes the batch being written)."""
        return len(self._queue)

    @property
    def _pending(self) -> bool:
        return bool(self._queue or self._open or self._late_clients or self._accesses)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate. Errors name the file: a daemon that cannot log must not start."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._closed = False
        try:
            self._writer = await self._connect()
            rows = await self._writer.execute_fetchall("PRAGMA journal_mode=WAL")
            mode = str(next(iter(rows))[0])
            version = await migrate(self._writer, self.path)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only=ON")
        except BaseException as exc:
            for db in (self._writer, self._reader):
                if db is not None:
                    await db.close()
            self._writer = self._reader = None
            if isinstance(exc, sqlite3.DatabaseError):  # not a database, unreadable, locked
                raise SchemaError(f"{self.path}: cannot open the call log: {exc}") from exc
            raise
        if mode != "wal":  # e.g. a network file system: still correct, slower, less safe
            log.warning("calllog.no_wal", path=str(self.path), journal_mode=mode)
        log.info("calllog.opened", path=str(self.path), version=version, journal_mode=mode)

    async def _connect(self) -> aiosqlite.Connection:
        return await connect(self.path, self.busy_timeout_s)

    async def close(self) -> None:
        """Commit everything still queued, then close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # lets a still-running run() return
        if self._writer is not None:
            inflight = self._inflight
            if inflight is not None and not inflight.done():
                # run()'s batch took the open-call snapshots out of _open: only once it has
                # landed (or put them back) does _pending say whether anything is left
                await asyncio.wait([inflight])
            while self._pending:
                if not await self._write_batch():
                    break
            await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
        self._writer = self._reader = None
        for record in self._queue:  # the database failed: the journal is all that is left
            log.error("calllog.unwritten", call_id=record.call_id, record=_dump(record))
        log.info("calllog.closed", written=self.written, batches=self.batches)

    # -- writing ---------------------------------------------------------------------------------

    def submit(self, record: CallRecord, client_id: int | None = None) -> None:
        """Queue an ended call for writing. Never blocks; call it on the event loop's thread.

        `client_id`: the directory's client for the call, when exactly one was found."""
        if self._closed:
            # raising would only break the caller's read path; the journal keeps the record
            log.error("calllog.submit_after_close", call_id=record.call_id, record=_dump(record))
            return
        self._open.pop(record.call_id, None)
        if client_id is not None:
            self._client_ids[record.call_id] = client_id
        self._queue.append(record)
        self._wake.set()

    def set_client(self, call_id: str, client_id: int) -> None:
        """The directory answered after the call ended (a short call): link its row now."""
        if not self._closed:
            self._late_clients.append((client_id, call_id))
            self._wake.set()

    def note_open(self, record: CallRecord, at: float) -> None:
        """Remember a call in progress (its latest snapshot wins). Never blocks."""
        if not self._closed:
            self._open[record.call_id] = (record, at)
            self._wake.set()

    def note_recording_access(self, call_id: str, operator: str, action: str, at: float) -> bool:
        """Remember who listened to or downloaded a call's recording. Never blocks.

        The same (call, operator, action) again within ACCESS_EVERY_S is the same listening
        (a player seeking, a download resumed): it is not written again. True: a new row."""
        if action not in ("listened", "downloaded"):
            raise ValueError(f"action: expected 'listened' or 'downloaded', got {action!r}")
        if self._closed:
            return False
        key = (call_id, operator, action)
        last = self._access_noted.get(key)
        if last is not None and 0 <= at - last < ACCESS_EVERY_S:
            return False
        if len(self._access_noted) > 1024:  # forget what can no longer suppress anything
            self._access_noted = {
                k: t for k, t in self._access_noted.items() if at - t < ACCESS_EVERY_S
            }
        self._access_noted[key] = at
        self._accesses.append((call_id, operator, action, at))
        self._wake.set()
        return True

    async def open_calls(self) -> list[tuple[CallRecord, float]]:
        """Calls a previous run saw in progress and never ended, with when it last saw them."""
        rows = await self._fetch("SELECT record, updated_at FROM open_calls ORDER BY updated_at")
        return [(CallRecord(**json.loads(str(text))), float(at)) for text, at in rows]

    async def run(self) -> None:
        """The writer task. Returns after `close()`; cancelling it never cuts a batch in half."""
        if self._writer is None:
            raise RuntimeError(f"{self.path}: open() the call log before running its writer")
        retry = RETRY_MIN_S
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._closed:
                # shielded: a cancel (daemon shutdown) lets the batch finish, close() then
                # waits for it on the lock and writes what is left
                self._inflight = asyncio.ensure_future(self._write_batch())
                if await asyncio.shield(self._inflight):
                    retry = RETRY_MIN_S
                else:
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX_S)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or found unwritable)."""
        while self._pending and not self._closed:
            if not await self._write_batch():
                raise RuntimeError(f"{self.path}: the call log cannot be written (see the log)")

    async def _write_batch(self) -> bool:
        """Commit the oldest queued records in one transaction; False if it must be retried."""
        async with self._lock:
            if self._writer is None:
                raise RuntimeError(f"{self.path}: the call log is not open")
            batch = list(itertools.islice(self._queue, self.max_batch))
            opened, self._open = self._open, {}
            late, self._late_clients = self._late_clients, []
            accesses, self._accesses = self._accesses, []
            if not batch and not opened and not late and not accesses:
                return True
            started = time.perf_counter()
            rows: list[tuple[CallRecord, Row]] = []
            bad: list[tuple[CallRecord, Exception]] = []
            for record in batch:
                try:
                    rows.append((record, to_row(record)))
                except BadRecord as exc:
                    bad.append((record, exc))
            snapshots = [
                (cid, json.dumps(dataclasses.asdict(rec), ensure_ascii=False), at)
                for cid, (rec, at) in opened.items()
            ]
            try:
                try:
                    handled = await self._transaction(
                        rows, snapshots, late, accesses, one_by_one=False
                    )
                except sqlite3.IntegrityError:
                    # one bad record must not cost the others: again, each under a savepoint
                    handled = await self._transaction(
                        rows, snapshots, late, accesses, one_by_one=True, bad=bad
                    )
            except BaseException as exc:  # locked too long, disk full, I/O; or cancelled
                ended = {record.call_id for record in self._queue}  # since: no longer open
                for cid, snapshot in opened.items():  # keep them, unless a newer one came
                    if cid not in ended:
                        self._open.setdefault(cid, snapshot)
                self._late_clients[:0] = late
                self._accesses[:0] = accesses
                if not isinstance(exc, sqlite3.Error):
                    raise
                log.error(
                    "calllog.write_failed", path=str(self.path), error=str(exc), queued=len(batch)
                )
                return False  # the records stay queued: retried
            for _ in batch:
                self._client_ids.pop(self._queue.popleft().call_id, None)
            self.batches += 1
            self.written += handled[0]
            self.duplicates += handled[1]
            for record, exc in bad:
                self.rejected += 1
                log.error(
                    "calllog.bad_record",
                    call_id=str(record.call_id),
                    error=str(exc),
                    record=_dump(record),
                )
            ms = round((time.perf_counter() - started) * 1000, 2)
            log.debug("calllog.flushed", records=len(batch), ms=ms, queued=len(self._queue))
            return True

    async def _transaction(
        self,
        rows: list[tuple[CallRecord, Row]],
        snapshots: list[tuple[str, str, float]],
        late: list[tuple[int, str]],
        accesses: list[tuple[str, str, str, float]],
        *,
        one_by_one: bool,
        bad: list[tuple[CallRecord, Exception]] | None = None,
    ) -> tuple[int, int]:
        """One transaction; returns (records written, of which duplicates).

        one_by_one: each record under its own savepoint, and those the database refuses
        (a CHECK, NOT NULL) are rolled back alone and appended to `bad`.
        """
        assert self._writer is not None
        db = self._writer
        try:
            await db.execute("BEGIN IMMEDIATE")  # in the try: a cancelled BEGIN is rolled back
            await db.executemany(_UPSERT_OPEN, snapshots)
            await db.executemany(_DELETE_OPEN, [(record.call_id,) for record, _ in rows])
            clients = [
                (self._client_ids[r.call_id], r.call_id)
                for r, _ in rows
                if r.call_id in self._client_ids
            ]
            if not one_by_one:
                handled = await self._write(db, rows)
            else:
                handled = (0, 0)
                for record, row in rows:
                    await db.execute("SAVEPOINT record")
                    try:
                        one = await self._write(db, [(record, row)])
                    except sqlite3.IntegrityError as exc:
                        await db.execute("ROLLBACK TO record")
                        if bad is not None:
                            bad.append((record, exc))
                        one = (0, 0)
                    await db.execute("RELEASE record")
                    handled = (handled[0] + one[0], handled[1] + one[1])
            await db.executemany(_SET_CLIENT, clients + late)
            await db.executemany(_INSERT_ACCESS, accesses)
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                await db.execute("ROLLBACK")
            raise
        return handled

    async def _write(
        self, db: aiosqlite.Connection, rows: list[tuple[CallRecord, Row]]
    ) -> tuple[int, int]:
        """Write inside the open transaction; returns (records handled, duplicates).

        A call_id already stored is left alone, except that a complete record replaces a
        partial one: pbxlink saw the whole call the second time, so it knows better.
        """
        if not rows:
            return 0, 0
        marks = ", ".join("?" for _ in rows)
        found = await db.execute_fetchall(
            f"SELECT call_id, partial FROM calls WHERE call_id IN ({marks})",
            [record.call_id for record, _ in rows],
        )
        stored: dict[str, bool] = {str(cid): bool(partial) for cid, partial in found}
        inserts: list[tuple[CallRecord, Row]] = []
        upgrades: list[tuple[CallRecord, Row]] = []
        for record, row in rows:
            was_partial = stored.get(record.call_id)
            if was_partial is None:
                inserts.append((record, row))
            elif was_partial and not record.partial:
                upgrades.append((record, row))
            else:
                continue
            stored[record.call_id] = record.partial
        await db.executemany(_INSERT, [(*row, self._too_long(r)) for r, row in inserts])
        await db.executemany(_INSERT_EXT, [e for r, _ in inserts for e in extension_rows(r)])
        await db.executemany(
            _UPGRADE, [(*row, self._too_long(r), r.call_id) for r, row in upgrades]
        )
        await db.executemany(_DELETE_EXT, [(r.call_id,) for r, _ in upgrades])
        await db.executemany(_INSERT_EXT, [e for r, _ in upgrades for e in extension_rows(r)])
        for record, _ in upgrades:
            log.info("calllog.partial_replaced", call_id=record.call_id)
        return len(rows), len(rows) - len(inserts) - len(upgrades)

    async def delete_older(self, cutoff: float, limit: int) -> Purged:
        """Retention: the oldest `limit` calls started before `cutoff`, with their extension
        and recording access rows, in one transaction on the writer's connection.

        The writer's lock makes it one more transaction between group commits: the writer
        waits for one small batch at most, and never meets a locked database."""
        oldest = "SELECT call_id FROM calls WHERE started_at < ? ORDER BY started_at, call_id"
        where = f"WHERE call_id IN ({oldest} LIMIT ?)"
        params = (cutoff, limit)
        async with self._lock:
            if self._writer is None:
                raise RuntimeError(f"{self.path}: the call log is not open")
            db = self._writer
            try:
                await db.execute("BEGIN IMMEDIATE")
                found = await db.execute_fetchall(
                    f"SELECT recording FROM calls {where} AND recording IS NOT NULL", params
                )
                counts = []
                for table in ("recording_access", "call_extensions", "calls"):
                    async with db.execute(f"DELETE FROM {table} {where}", params) as cursor:
                        counts.append(cursor.rowcount)
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
        return Purged(counts[2], counts[1], counts[0], [str(r) for (r,) in found])

    def _too_long(self, record: CallRecord) -> int:
        return int(self.too_long is not None and is_too_long(self.too_long, record))

    # -- reading ---------------------------------------------------------------------------------

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read-only connection, for the queries of the call log API (calllog/query.py)."""
        if self._reader is None:
            raise RuntimeError(f"{self.path}: the call log is not open")
        return self._reader

    async def _fetch(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        return [tuple(row) for row in await self.reader.execute_fetchall(sql, params)]

    async def get(self, call_id: str) -> CallRecord | None:
        rows = await self._fetch(f"{_SELECT} WHERE call_id = ?", (call_id,))
        return from_row(rows[0]) if rows else None

    async def recording_accesses(self, call_id: str) -> list[dict[str, str | None]]:
        """Who listened to or downloaded the call's recording, and when, oldest first."""
        rows = await self._fetch(_SELECT_ACCESS, (call_id,))
        return [
            {"operator": str(op), "action": str(action), "at": iso_utc(cast(float, at))}
            for op, action, at in rows
        ]

    async def count(self) -> int:
        return int((await self._fetch("SELECT count(*) FROM calls"))[0][0])


def _dump(record: CallRecord) -> dict[str, object]:
    """The record for the journal, so a call refused by the database is not lost for good."""
    try:
        return record.to_dict()
    except Exception:  # a record broken enough to be refused may not even serialise
        return {name: repr(getattr(record, name, None)) for name in RECORD_FIELDS}
