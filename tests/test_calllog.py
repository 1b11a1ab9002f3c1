"""The call log store, on real SQLite files: round trips, idempotence, group commit, crashes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import structlog

from pbxlink.calllog import CallLogStore, SchemaError, query
from pbxlink.calls.record import CallRecord
from pbxlink.db import MIGRATIONS, migrate

from conftest import ROOT, logged, make_record

T0 = 1_760_000_000.123456


def make(i: int, **fields: Any) -> CallRecord:
    """The i-th call of a test, one second after the previous one (make_record's call)."""
    return make_record(**{"call_id": f"1760000000.{i}", "started_at": T0 + i, **fields})


async def written(store: CallLogStore, n: int, timeout: float = 10.0) -> None:
    """Wait until the writer has committed n records."""
    deadline = time.monotonic() + timeout
    while store.written < n:
        assert time.monotonic() < deadline, f"only {store.written} of {n} written"
        await asyncio.sleep(0.005)


@pytest.fixture
async def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pbxlink.sqlite3"  # the directory does not exist yet


Opener = Callable[..., Awaitable[CallLogStore]]


@pytest.fixture
async def opened(db_path: Path) -> AsyncIterator[Opener]:
    """Opens stores on db_path and closes them all afterwards, even when a test fails (an
    unclosed aiosqlite connection keeps a thread, and so pytest, alive)."""
    stores: list[CallLogStore] = []

    async def open_store(**options: object) -> CallLogStore:
        store = CallLogStore(db_path, **options)  # type: ignore[arg-type]
        stores.append(store)
        await store.open()
        return store

    yield open_store
    for store in stores:
        await store.close()


def raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """SQL on a connection of its own, committed and closed: what another process sees."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        return db.execute(sql, params).fetchall()


# -- what goes in comes out ----------------------------------------------------------------------


@pytest.mark.usefixtures("writer")
async def test_round_trip_of_every_field(store: CallLogStore) -> None:
    full = CallRecord(
        call_id="1760000000.77",
        started_at=T0,
        direction="inbound",
        caller_number="+995599123456",
        caller_name="ნინო ბერიძე",  # Georgian
        called_number="0322100100",
        status="answered",
        answered_at=T0 + 12.000001,
        ended_at=T0 + 300.5,
        extensions_rung=["101", "102", "103"],
        answered_by="102",
        wait_s=12.000001,
        talk_s=288.499999,
        hangup_cause=16,
        queue="support",
        ivr_digits="1*2#",
        transferred_to=["201", "202"],
        recording="q-support-20251009-120000-1760000000.77.wav",
        partial=True,
        estimated=["answered_at", "ended_at"],
    )
    sparse = CallRecord(
        call_id="1760000000.78",
        started_at=T0 + 1,
        direction="outbound",
        caller_number="101",
        caller_name="محمد الأحمد",  # Arabic, right to left
        called_number="+971501234567",
        status="no_answer",
        ended_at=T0 + 31,
    )
    store.submit(full)
    store.submit(sparse)
    await written(store, 2)
    assert await store.get(full.call_id) == full
    assert await store.get(sparse.call_id) == sparse
    assert await store.get("no such call") is None
    assert await store.count() == 2
    assert await logged(store) == [sparse, full]
    assert await logged(store, extension="102") == [full]  # rang and answered: listed once
    assert await logged(store, extension="101") == [sparse, full]  # the caller of the outbound
    assert await logged(store, extension="202") == [full]  # transferred to
    roles = raw(
        store.path,
        "SELECT extension, role FROM call_extensions WHERE call_id = ? ORDER BY 1, 2",
        (full.call_id,),
    )
    assert roles == [
        ("101", "rang"),
        ("102", "answered"),
        ("102", "rang"),
        ("103", "rang"),
        ("201", "transferred"),
        ("202", "transferred"),
    ]
    # the lists are JSON, readable as stored (not \\u-escaped)
    assert raw(store.path, "SELECT caller_name, extensions_rung FROM calls WHERE partial = 1") == [
        ("ნინო ბერიძე", '["101","102","103"]')
    ]
    assert raw(store.path, "SELECT call_id, estimated FROM calls ORDER BY call_id") == [
        (full.call_id, '["answered_at","ended_at"]'),
        (sparse.call_id, "[]"),  # the default of a complete record: an empty list, never NULL
    ]


async def test_same_call_id_twice_is_one_row_also_across_reopen(
    db_path: Path, opened: Opener
) -> None:
    store = await opened()
    store.submit(make(1))
    store.submit(make(1, caller_name="changed"))  # same batch
    await store.flush()
    store.submit(make(1, caller_name="changed again"))  # a later batch
    await store.close()
    assert (store.written, store.duplicates) == (3, 2)

    again = await opened()
    again.submit(make(1, status="busy"))  # after a restart: a replayed or resynced call
    await again.close()
    assert again.duplicates == 1
    assert raw(db_path, "SELECT call_id, caller_name, status FROM calls") == [
        ("1760000000.1", "", "answered")
    ]
    assert raw(db_path, "SELECT count(*) FROM call_extensions") == [(3,)]


@pytest.mark.usefixtures("writer")
async def test_a_complete_record_replaces_a_partial_one_never_the_reverse(
    store: CallLogStore,
) -> None:
    partial = make(1, partial=True, status="failed", extensions_rung=["105"], answered_by=None)
    complete = make(1)
    store.submit(partial)
    await written(store, 1)
    raw(store.path, "UPDATE calls SET client_id = 42")  # what the client directory will do
    store.submit(complete)
    store.submit(make(1, partial=True))  # a partial one after: ignored
    store.submit(make(1, caller_name="second complete"))  # first complete one wins
    await written(store, 4)
    assert await store.get(complete.call_id) == complete
    assert await logged(store, extension="105") == []  # the partial's extensions went with it
    assert await logged(store, extension="101") == [complete]
    assert raw(store.path, "SELECT client_id FROM calls") == [(42,)]  # columns not ours: kept
    assert store.duplicates == 2


# -- group commit and the writer ------------------------------------------------------------------


@pytest.mark.usefixtures("writer")
async def test_a_burst_is_written_in_few_transactions(store: CallLogStore) -> None:
    for i in range(1000):
        store.submit(make(i))
    assert store.queue_depth == 1000
    await written(store, 1000)
    assert store.batches <= 5  # max_batch=500: 2 when the burst is queued before the writer runs
    assert store.queue_depth == 0
    assert await store.count() == 1000


@pytest.mark.usefixtures("writer")
async def test_a_lone_call_is_committed_and_calls_ending_meanwhile_join_a_batch(
    store: CallLogStore,
) -> None:
    """No batch to fill: a call alone is committed. How soon (no delay either): the call log
    rows of benchmarks/latencies.py."""
    store.submit(make(1))
    await written(store, 1)
    assert store.batches == 1
    for i in range(2, 302):  # calls ending while a commit runs join the next batch
        store.submit(make(i))
        await asyncio.sleep(0)
    await written(store, 301)
    assert store.batches < 301


async def test_submit_is_plain_and_returns_at_once_while_a_batch_is_slow(
    db_path: Path, opened: Opener
) -> None:
    assert not inspect.iscoroutinefunction(CallLogStore.submit)
    store = await opened(busy_timeout_s=30)
    task = asyncio.create_task(store.run())
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the batch must wait
    store.submit(make(0))
    await asyncio.sleep(0.2)  # the writer is now inside its transaction, waiting for the lock
    assert store.written == 0

    with structlog.testing.capture_logs() as logs:
        for i in range(1, 101):  # plain calls on the loop's thread, as the AMI reader makes them
            assert store.submit(make(i)) is None
        asyncio.get_running_loop().call_soon(store.submit, make(101))
        await asyncio.sleep(0.01)  # the loop runs other work while the batch waits...
        assert store.queue_depth == 102 and store.written == 0
    # ...in SQLite's thread: a loop held in its busy wait would have seen the batch fail
    assert "calllog.write_failed" not in [e["event"] for e in logs]
    blocker.rollback()
    blocker.close()
    await written(store, 102)
    await store.close()
    await task


async def test_a_database_locked_too_long_keeps_the_records_and_retries(
    db_path: Path, opened: Opener
) -> None:
    store = await opened(busy_timeout_s=0.05)
    task = asyncio.create_task(store.run())
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with structlog.testing.capture_logs() as logs:
        for i in range(10):
            store.submit(make(i))
        await asyncio.sleep(0.4)
        assert store.written == 0 and store.queue_depth == 10
        blocker.rollback()
        await written(store, 10)
    blocker.close()
    assert "calllog.write_failed" in [e["event"] for e in logs]
    assert store.rejected == 0
    await store.close()
    await task
    assert raw(db_path, "SELECT count(*) FROM calls") == [(10,)]


async def test_close_writes_what_is_queued(db_path: Path, opened: Opener) -> None:
    store = await opened()
    for i in range(30):  # no writer task running at all
        store.submit(make(i))
    await store.close()
    await store.close()  # twice is fine
    with structlog.testing.capture_logs() as logs:
        store.submit(make(99))  # after close: logged with the record, not raised
    assert logs[0]["event"] == "calllog.submit_after_close"
    assert logs[0]["record"]["call_id"] == "1760000000.99"
    assert raw(db_path, "SELECT count(*) FROM calls") == [(30,)]


async def test_shutdown_cancels_the_writer_mid_stream_and_close_writes_the_rest(
    db_path: Path, opened: Opener
) -> None:
    store = await opened(max_batch=50)
    task = asyncio.create_task(store.run())
    for i in range(2000):
        store.submit(make(i))
    await asyncio.sleep(0.01)  # some batches are in, one is probably in flight
    task.cancel()  # what the daemon's TaskGroup does on SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.close()
    assert store.written == 2000 and store.duplicates == 0
    assert raw(db_path, "SELECT count(*) FROM calls") == [(2000,)]


# -- bad records ----------------------------------------------------------------------------------


async def test_a_bad_record_is_skipped_and_logged_the_rest_of_its_batch_is_kept(
    db_path: Path, opened: Opener
) -> None:
    store = await opened()
    store.submit(make(1))
    store.submit(make(2, status="lost", partial=True, estimated=["ended_at"]))  # the CHECK
    store.submit(make(3))
    store.submit(make(4, ended_at=None))  # a call still running: violates NOT NULL
    store.submit(make(5, caller_name=["not", "a", "string"]))  # refused before SQL
    store.submit(make(6))
    store.submit(make(7, partial=True, estimated="ended_at"))  # not a list: refused before SQL
    with structlog.testing.capture_logs() as logs:
        await store.flush()
    bad = [e for e in logs if e["event"] == "calllog.bad_record"]
    assert sorted(e["call_id"] for e in bad) == [
        "1760000000.2", "1760000000.4", "1760000000.5", "1760000000.7"
    ]  # fmt: skip
    assert all(e["record"]["call_id"] == e["call_id"] for e in bad)  # the journal keeps them
    journal = {e["call_id"]: e["record"] for e in bad}
    assert journal["1760000000.2"]["estimated"] == ["ended_at"]  # with what it had to guess
    assert (store.written, store.rejected, store.batches) == (3, 4, 1)
    assert await store.count() == 3
    await store.close()
    ids = [r[0] for r in raw(db_path, "SELECT DISTINCT call_id FROM call_extensions ORDER BY 1")]
    assert ids == ["1760000000.1", "1760000000.3", "1760000000.6"]  # no half-written call


# -- schema and migrations ------------------------------------------------------------------------


async def test_migrations_run_once_and_a_newer_database_is_refused(
    db_path: Path, opened: Opener
) -> None:
    store = await opened()
    await store.close()
    first = raw(db_path, "SELECT version, applied_at FROM schema_version")
    assert [v for v, _ in first] == list(range(1, len(MIGRATIONS) + 1))
    await store.open()  # reopening applies nothing
    await store.close()
    assert raw(db_path, "SELECT version, applied_at FROM schema_version") == first

    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("INSERT INTO schema_version VALUES (99, '2099-01-01T00:00:00+00:00')")
    with pytest.raises(SchemaError, match="version 99") as info:
        await opened()
    assert str(db_path) in str(info.value)


async def test_a_failing_migration_leaves_the_previous_version(
    db_path: Path, opened: Opener
) -> None:
    await (await opened()).close()
    broken = (*MIGRATIONS, "CREATE TABLE half_done (a TEXT); CREATE TABLE calls (a TEXT);")
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            await migrate(db, db_path, broken)
    assert raw(db_path, "SELECT max(version) FROM schema_version") == [(len(MIGRATIONS),)]
    assert raw(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


async def test_a_file_that_is_no_database_is_a_clear_error(db_path: Path, opened: Opener) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(SchemaError) as info:
        await opened()
    assert str(db_path) in str(info.value)


async def test_wal_and_the_pragmas_are_on(store: CallLogStore) -> None:
    assert raw(store.path, "PRAGMA journal_mode") == [("wal",)]  # persistent: any connection
    writer = store._writer
    assert writer is not None
    assert list(await writer.execute_fetchall("PRAGMA synchronous")) == [(1,)]  # NORMAL
    assert list(await writer.execute_fetchall("PRAGMA foreign_keys")) == [(1,)]
    assert list(await writer.execute_fetchall("PRAGMA busy_timeout")) == [(5000,)]


async def test_the_indexes_exist_and_the_log_queries_use_them(store: CallLogStore) -> None:
    names = {r[0] for r in raw(store.path, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert {
        "calls_started",
        "calls_caller",
        "calls_called",
        "calls_status",
        "calls_direction",
        "calls_client",
        "calls_queue",
        "call_extensions_extension",
    } <= names

    def plan(sql: str, *params: object) -> list[str]:
        return [str(r[3]) for r in raw(store.path, "EXPLAIN QUERY PLAN " + sql, params)]

    def no_full_scan(details: list[str]) -> None:
        scans = [d for d in details if d.startswith("SCAN") and "INDEX" not in d]
        assert scans in ([], ["SCAN e"]), details  # "e": the few rows the subquery kept

    # calls of extension X in a time range
    ext = plan(
        "SELECT c.* FROM calls AS c WHERE c.call_id IN (SELECT call_id FROM call_extensions "
        "WHERE extension = ? AND started_at >= ? AND started_at < ?) ORDER BY c.started_at",
        "101",
        T0,
        T0 + 86400,
    )
    assert any("call_extensions_extension (extension=? AND started_at>?" in d for d in ext), ext
    no_full_scan(ext)
    # calls from number N (in a time range, too)
    caller = plan(
        "SELECT * FROM calls WHERE caller_number = ? AND started_at >= ? ORDER BY started_at DESC",
        "+995599123456",
        T0,
    )
    assert any("calls_caller (caller_number=? AND started_at>?)" in d for d in caller), caller
    no_full_scan(caller)
    # the call log API's first page, everyone's and an operator's (calllog/query.py)
    for scope, index in ((None, "calls_started"), (("101",), "call_extensions_extension")):
        details = await query.explain(store.reader, query.CallFilter(), scope=scope)
        assert any(index in d for d in details), (scope, details)
        no_full_scan(details)
    for sql, params, index in [
        ("SELECT * FROM calls WHERE called_number = ?", ("0322100100",), "calls_called"),
        ("SELECT * FROM calls WHERE status = ? AND started_at > ?", ("busy", T0), "calls_status"),
        ("SELECT * FROM calls WHERE direction = ?", ("outbound",), "calls_direction"),
        ("SELECT * FROM calls WHERE client_id = ?", (42,), "calls_client"),
        ("SELECT * FROM calls WHERE queue = ?", ("support",), "calls_queue"),
    ]:
        details = plan(sql, *params)
        assert any(index in d for d in details), (sql, details)
        no_full_scan(details)


# -- kill -9 --------------------------------------------------------------------------------------

CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path.insert(0, "tests")  # conftest's make_record; the child runs in the repository
from conftest import make_record
from pbxlink.calllog import CallLogStore

def make(i):
    return make_record(call_id=f"c{i}", started_at=1.76e9 + i, caller_name="ნინო")

async def main(path, n):
    store = CallLogStore(Path(path), max_batch=64)
    await store.open()
    writer = asyncio.create_task(store.run())
    i = 0
    while store.written < n:  # keep calls coming so batches are in flight at the kill
        for _ in range(16):
            store.submit(make(i))
            i += 1
        await asyncio.sleep(0.001)  # a busy loop would starve aiosqlite's thread of the GIL
    print(store.written, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    await writer

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_kill_9_loses_nothing_committed_and_leaves_no_half_call(
    db_path: Path, opened: Opener
) -> None:
    n = 3000
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(db_path), str(n)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    committed = int(child.stdout.split()[-1])
    assert committed >= n
    assert raw(db_path, "PRAGMA integrity_check") == [("ok",)]
    assert raw(db_path, "PRAGMA foreign_key_check") == []
    rows = int(raw(db_path, "SELECT count(*) FROM calls")[0][0])  # type: ignore[arg-type]
    assert rows >= committed
    ids = {r[0] for r in raw(db_path, "SELECT call_id FROM calls")}
    assert ids == {f"c{i}" for i in range(rows)}  # batches commit in order: no gap
    half = raw(
        db_path,
        "SELECT call_id FROM calls AS c WHERE (SELECT count(*) FROM call_extensions AS e "
        "WHERE e.call_id = c.call_id) != 3",  # 101 rang, 102 rang, 101 answered
    )
    assert half == []
    store = await opened()  # and the daemon starts on it again
    assert await store.count() == rows
    assert await store.get("c0") is not None


async def test_open_calls_survive_a_restart_until_their_final_record(
    db_path: Path, opened: Opener
) -> None:
    """A call seen in progress is remembered across a restart; its final record forgets it."""
    store = await opened()
    first = make(1, call_id="1.1", partial=True, estimated=["answered_at"])  # JSON lists kept
    second = make(2, call_id="2.2")
    store.note_open(first, 100.0)
    store.note_open(second, 101.0)
    store.note_open(dataclasses.replace(second, answered_by="102"), 102.0)  # latest wins
    await store.flush()
    await store.close()
    store = await opened()
    found = {r.call_id: (r, at) for r, at in await store.open_calls()}
    assert set(found) == {"1.1", "2.2"}
    assert found["2.2"][0].answered_by == "102" and found["2.2"][1] == 102.0
    assert found["1.1"][0] == first
    store.submit(first)
    await store.flush()
    assert [r.call_id for r, _ in await store.open_calls()] == ["2.2"]
    assert await store.get("1.1") == first


async def test_client_id_given_at_submit_is_stored(db_path: Path, opened: Opener) -> None:
    store = await opened()
    store.submit(make(1), client_id=42)
    store.submit(make(2))
    store.submit(make(3))
    store.set_client(make(3).call_id, 7)  # the directory answered after the call ended
    await store.flush()
    store.set_client(make(2).call_id, 8)  # ... or after the row was written
    store.set_client(make(1).call_id, 9)  # never overrides a client already linked
    await store.flush()
    rows = raw(db_path, "SELECT call_id, client_id FROM calls ORDER BY call_id")
    assert rows == [(make(1).call_id, 42), (make(2).call_id, 8), (make(3).call_id, 7)]
