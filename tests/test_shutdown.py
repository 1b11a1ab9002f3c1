"""SIGTERM while calls pour in: every call the daemon counted as ended is in the call log,
and every call still in progress is kept in open_calls for the next start.

The hazard behind this (issue 10, item 9): at a stop the daemon cancels the caller lookups
still running; one of them could be waiting inside the directory's `BEGIN IMMEDIATE` for the
call log's batch to release SQLite's write lock. The BEGIN then completed on aiosqlite's
thread after nobody was left to end it, the directory's connection held the write lock, and
the call log's last batches failed with "database is locked" and were only journalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import aiosqlite
import pytest

from pbxlink.calllog import CallLogStore
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.sim.scenario import Scenario
from pbxlink.sim.server import AmiSimulator

from conftest import make_record
from test_daemon import SECRET, raw_config, write_config

#: shipped inbound calls whose caller is a 10-digit 06... number, replaced per copy
INBOUND = (
    "04_in_direct_busy",
    "06_ivr_sales_101_noanswer_102_answers",
    "07_ivr_sales_noanswer_voicemail",
    "09_ivr_support_queue_caller_abandons",
    "12_blind_transfer_101_to_102",
)
CALLER = re.compile(rb"\b06\d{8}\b")
CALLS_PER_S = 250
SPEED = 20.0


def new_callers(copies: int) -> list[Scenario]:
    """The shipped inbound calls again and again, each copy from a number nobody has yet: a
    morning of new callers, so every call also writes to the client directory. (Compiling a
    recording takes tens of ms, so the copies share one compiled scenario and differ only in
    the number written into its event templates.)"""
    shipped = files("pbxlink.sim") / "scenarios"
    compiled = [Scenario.load(shipped / f"{name}.ami") for name in INBOUND]
    out = []
    for k in range(copies):
        base = compiled[k % len(compiled)]
        number = b"06%08d" % (90_000_000 + k)
        templates = [CALLER.sub(number, t) for t in base._templates]
        out.append(dataclasses.replace(base, name=f"new-caller-{k}", _templates=templates))
    return out


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def reap_daemons() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def db_ids(db: Path, table: str) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute(f"SELECT call_id FROM {table}")}


async def test_sigterm_at_a_high_call_rate_stores_every_ended_call_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    sim = AmiSimulator(
        [], secret=SECRET, calls_per_s=0, speed=SPEED, timestamps=False, pbx_timezone=dt.UTC
    )
    async with sim:
        cfg = write_config(tmp_path / "p.toml", raw_config(tmp_path, sim.port))
        journal = tmp_path / "daemon.log"  # a pipe nobody reads would stall the daemon when full
        with journal.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pbxlink", "run", "--config", str(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        STARTED.append(proc)
        deadline = time.monotonic() + 20
        while sim.clients != 1:
            assert time.monotonic() < deadline, "the daemon did not log in"
            assert proc.poll() is None, "the daemon stopped at start-up"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # past the login's CoreShowChannels
        sim.play_once(new_callers(3 * CALLS_PER_S), interval_s=1 / CALLS_PER_S)
        while len(sim.finished) < CALLS_PER_S:
            assert time.monotonic() < deadline + 20, f"{len(sim.finished)} calls played"
            await asyncio.sleep(0.05)
        # another writer holds the database for a moment (the client import, a backup; or
        # the call log's own batch): callers' registrations queue up behind it
        async with aiosqlite.connect(tmp_path / "pbxlink.sqlite3", isolation_level=None) as other:
            await other.execute("BEGIN IMMEDIATE")
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)  # calls keep starting and ending meanwhile
            await asyncio.sleep(0.5)
            await other.execute("COMMIT")
        await asyncio.to_thread(proc.wait, 30)
    err = journal.read_text()
    assert proc.returncode == 0, err[-3000:]
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    events = [e["event"] for e in logs]
    assert "calllog.unwritten" not in events and "calllog.write_failed" not in events
    ended = {e["call_id"] for e in logs if e["event"] == "call.ended"}
    (stopping,) = [e for e in logs if e["event"] == "daemon.stopping"]
    db = tmp_path / "pbxlink.sqlite3"
    stored, kept = db_ids(db, "calls"), db_ids(db, "open_calls")
    assert len(ended) >= 50
    assert ended - stored == set()  # counted as ended: in the log, every one
    assert stored - ended == set()
    # in progress at the stop: every one kept for the next start, and only those
    assert stopping["calls_in_progress"] > 0
    assert len(kept) == stopping["calls_in_progress"] and not kept & stored


async def test_a_lookup_cancelled_while_it_waits_for_the_write_lock_leaves_it_free(
    tmp_path: Path,
) -> None:
    """The mechanism alone: a new caller's registration waits in BEGIN IMMEDIATE behind
    another writer and is cancelled (the daemon stopping); the call log must still write."""
    path = tmp_path / "pbxlink.sqlite3"
    store = CallLogStore(path, busy_timeout_s=1.0)
    await store.open()
    directory = Directory(path, PhoneNumbers("GE"), photos_dir=tmp_path / "photos")
    await directory.open()
    try:
        async with aiosqlite.connect(path, isolation_level=None) as other:
            await other.execute("BEGIN IMMEDIATE")  # a long batch of another writer
            register = asyncio.create_task(directory.register_unknown("0690000001"))
            await asyncio.sleep(0.3)  # inside BEGIN IMMEDIATE, waiting for the lock
            assert not register.done()
            register.cancel()
            await other.execute("COMMIT")
            with pytest.raises(asyncio.CancelledError):
                await register
        # aiosqlite runs a connection's statements in order: once this is done, so is the
        # BEGIN the cancelled registration left behind (and whatever ended it)
        assert directory._writer is not None
        await directory._writer.execute("SELECT 1")
        store.submit(
            make_record(
                call_id="1760000000.1", caller_number="0690000001", status="no_answer", wait_s=10.0
            )
        )
        await store.close()
        assert db_ids(path, "calls") == {"1760000000.1"}
        assert await directory.lookup("0690000001") == []  # the registration did not happen
    finally:
        await store.close()
        await directory.close()


async def test_close_keeps_the_snapshots_of_a_batch_still_in_flight(tmp_path: Path) -> None:
    """The writer's batch had taken the open-call snapshots when the stop cancelled run();
    close() used to find nothing pending and close the connection under that batch."""
    path = tmp_path / "pbxlink.sqlite3"
    store = CallLogStore(path, busy_timeout_s=5.0)
    await store.open()
    writer = asyncio.create_task(store.run())
    try:
        async with aiosqlite.connect(path, isolation_level=None) as other:
            await other.execute("BEGIN IMMEDIATE")  # the batch waits for the write lock
            ringing = make_record(call_id="1760000000.7", status="no_answer", ended_at=None)
            store.note_open(ringing, 1_760_000_001.0)
            await asyncio.sleep(0.2)
            assert store.queue_depth == 0 and not writer.done()
            writer.cancel()  # the daemon's TaskGroup, on SIGTERM
            closing = asyncio.create_task(store.close())
            await asyncio.sleep(0.2)
            await other.execute("COMMIT")
        await closing
        assert db_ids(path, "open_calls") == {"1760000000.7"}
    finally:
        await store.close()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
