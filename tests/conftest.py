"""Shared fixtures. The real Asterisk traces are shipped in tests/traces: a byte-for-byte copy
of the recordings in ../shared/traces, listed with their SHA-256 sums in tests/traces.sha256
(test_trace_copy.py compares the copy with ../shared/traces wherever that exists).

Where outside material is missing (a database server, chromium) tests skip with a message;
CI sets PBXLINK_STRICT=1, which turns that skip into a failure so a broken checkout can never
pass by running less.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pbxlink.calllog import CallLogStore, query
from pbxlink.calllog.rows import COLUMNS, PLACEHOLDERS, extension_rows, to_row
from pbxlink.calls.record import CallRecord
from pbxlink.calls.tracker import CallTracker, TrackerConfig
from pbxlink.web import WebServer, serve

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "traces"  # every test reads the copy in the repository
TRACES_MANIFEST = ROOT / "tests" / "traces.sha256"
SHARED_TRACES = ROOT.parent / "shared" / "traces"  # where the copy came from
STRICT = os.environ.get("PBXLINK_STRICT") == "1"


@dataclass
class FakeStatus:
    """What the daemon shows /healthz and /metrics, for apps built without a daemon."""

    ami_state: str = "up"
    last_event_age_s: float | None = 1.5
    calls_active: int = 0
    store_queue_depth: int = 0
    started_at: float = 0.0


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[WebServer]:
    """The app on a free port of 127.0.0.1, closed after."""
    server = await serve(app, "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def session_to(app: web.Application) -> AsyncIterator[aiohttp.ClientSession]:
    """The app served on 127.0.0.1 and a client session to it; both closed after."""
    async with (
        served(app) as server,
        aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session,
    ):
        yield session


def need(condition: bool, why: str) -> None:
    """Skip (or, under PBXLINK_STRICT=1, fail) when a test's outside material is absent."""
    if not condition:
        if STRICT:
            pytest.fail(f"{why} (PBXLINK_STRICT=1 makes this a failure)")
        pytest.skip(why)


def truth() -> dict[str, list[dict]]:
    """trace path (relative to TRACES) -> expected records, from both truth.json files."""
    out: dict[str, list[dict]] = {}
    for rel in ("truth.json", "freepbx/truth.json"):
        path = TRACES / rel
        if path.exists():
            prefix = str(Path(rel).parent)
            for name, records in json.loads(path.read_text(encoding="utf-8")).items():
                out[name if prefix == "." else f"{prefix}/{name}"] = records
    return out


TRUTH = truth()
TRACE_NAMES = sorted(TRUTH) or ["<no traces found>"]


@pytest.fixture
def traces_dir() -> Path:
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    return TRACES


def lab_tracker() -> CallTracker:
    """A tracker with no config at all, as a new user has it; the lab PBX ran on UTC."""
    return CallTracker(TrackerConfig(pbx_timezone=dt.UTC))


# -- call records and the call log ---------------------------------------------------------------

#: when make_record's calls start by default (2025-10-09 08:53:20 UTC)
T0 = 1_760_000_000.0


def make_record(**fields: Any) -> CallRecord:
    """A finished call as the tracker reports it; pass the fields the test is about.

    By default an inbound call from +995555123456 to 0322100100 that rang 101 and 102 from
    T0; 101 answered after 3 s and talked 57 s. Times not given follow the ones given: the
    answer comes `wait_s` after `started_at`, the end `talk_s` after the answer. A status
    other than answered means no answer time, nobody answering and no talk; `ended_at=None`
    is a call still in progress (no talk yet either)."""
    started = fields.get("started_at", T0)
    answered = fields.get("status", "answered") == "answered"
    running = "ended_at" in fields and fields["ended_at"] is None
    wait = fields.get("wait_s", 3.0)
    talk = fields.get("talk_s", 57.0 if answered and not running else 0.0)
    answered_at = fields.get("answered_at", started + wait if answered else None)
    defaults: dict[str, Any] = dict(
        call_id="1760000000.1",
        started_at=started,
        direction="inbound",
        caller_number="+995555123456",
        caller_name="",
        called_number="0322100100",
        status="answered",
        answered_at=answered_at,
        ended_at=(answered_at if answered_at is not None else started + wait) + talk,
        extensions_rung=["101", "102"],
        answered_by="101" if answered else None,
        wait_s=wait,
        talk_s=talk,
    )
    return CallRecord(**{**defaults, **fields})


def insert_call(path: Path, record: CallRecord, client_id: int | None = None) -> None:
    """The call's row, linked to a client, written at once into the database at `path` as the
    call log writes it (its call_extensions rows too), without a CallLogStore."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            f"INSERT INTO calls ({COLUMNS}, client_id) VALUES ({PLACEHOLDERS}, ?)",
            (*to_row(record), client_id),
        )
        db.executemany(
            "INSERT INTO call_extensions (call_id, extension, role, started_at) "
            "VALUES (?, ?, ?, ?)",
            extension_rows(record),
        )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where `store` keeps the call log (a test module may point it elsewhere)."""
    return tmp_path / "pbxlink.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[CallLogStore]:
    """A call log opened on db_path, closed after the test (what is queued is committed then).
    No writer task: a test submits, then awaits `store.flush()`; one that wants the writer the
    daemon runs asks for `writer` too."""
    s = CallLogStore(db_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def writer(store: CallLogStore) -> AsyncIterator[asyncio.Task[None]]:
    """`store`'s writer task, running as in the daemon; stopped by closing the store."""
    task = asyncio.create_task(store.run())
    try:
        yield task
    finally:
        await store.close()
        await asyncio.wait_for(task, 5)


async def logged(store: CallLogStore, extension: str | None = None) -> list[CallRecord]:
    """Every call committed to the log, newest first, read as production reads it: the call
    log API's pages (calllog/query.py; with `extension`, what an operator of that extension
    is shown), each call then fetched whole by `CallLogStore.get`."""
    scope = None if extension is None else (extension,)
    out: list[CallRecord] = []
    cursor: str | None = None
    while True:
        page = await query.page(
            store.reader, query.CallFilter(), scope=scope, limit=query.MAX_LIMIT, cursor=cursor
        )
        for item in page.items:
            record = await store.get(item["call_id"])
            assert record is not None, f"{item['call_id']} listed but not found"
            out.append(record)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor
