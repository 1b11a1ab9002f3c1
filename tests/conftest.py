"""Shared fixtures. The real Asterisk traces are shipped in tests/traces: a byte-for-byte copy
of the recordings in ../shared/traces, listed with their SHA-256 sums in tests/traces.sha256
(test_trace_copy.py compares the copy with ../shared/traces wherever that exists).

Where outside material is missing (a database server, chromium) tests skip with a message;
CI sets PBXLINK_STRICT=1, which turns that skip into a failure so a broken checkout can never
pass by running less.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

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
