"""Every popup frame made from every real Asterisk trace means what docs/popup-protocol.md
says it means at that moment, not only what the JSON Schemas allow.

Each trace is replayed through the tracker into a running hub; one page holds every
extension the trace rings (so it gets every operator's frames, `missed` included) and one is a
supervisor's wallboard. The schemas are checked on every frame as in tests/test_hub.py; here
the checks are about meaning: the card's status, who answered and who holds the call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_hub import ORIGIN, Page, barrier, running
from websockets.asyncio.client import connect

from pbxlink.calls import (
    Answered,
    CallEnded,
    CallRecord,
    CallUpdate,
    RingEnded,
    Ringing,
    Transferred,
)
from pbxlink.config import Config, HubConfig, Operator, hash_token
from pbxlink.hub import Hub
from pbxlink.replay import read_chunks, replay

from conftest import TRACE_NAMES, TRACES, lab_tracker, need

EVERYONE = "tok-all-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
WALLBOARD = "tok-wall-ffffffffffffffffffffffffffffffffffff"
BARRIER_EXT = "999"  # no trace rings it: the barrier's own extension
#: the recordings (raw/ holds the same calls without Timestamp headers)
ALL_TRACES = (
    sorted(
        str(p.relative_to(TRACES))
        for pattern in ("*.ami", "freepbx/*.ami", "control/*.ami")
        for p in TRACES.glob(pattern)
    )
    or TRACE_NAMES
)


def _extensions(updates: list[CallUpdate]) -> list[str]:
    found: set[str] = set()
    for u in updates:
        if isinstance(u, (Ringing, RingEnded, Answered, Transferred)) and u.extension:
            found.add(u.extension)
        found.update(u.call.extensions_rung)
    return sorted(found)


@contextlib.asynccontextmanager
async def _page(hub: Hub, token: str) -> AsyncIterator[Page]:
    async with connect(f"ws://127.0.0.1:{hub.port}/", origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello", "v": 1, "token": token}))
        p = Page(ws)
        p.welcome = await p.recv()
        yield p


async def frames_of(name: str) -> tuple[list[CallUpdate], dict[str, list[dict[str, Any]]]]:
    """The tracker's updates for the trace, and what each page received from the hub."""
    updates = list(replay(read_chunks(TRACES / name), lab_tracker()))
    everyone = (*_extensions(updates), BARRIER_EXT)
    config = Config(
        company="ACME",
        operators=[
            Operator("Everyone", everyone, "operator", hash_token(EVERYONE)),
            Operator("Wallboard", (), "supervisor", hash_token(WALLBOARD)),
        ],
        hub=HubConfig(port=0, queue_frames=1_000_000),
    )
    hub = Hub(config, origins=[ORIGIN])
    async with running(hub), _page(hub, EVERYONE) as ops, _page(hub, WALLBOARD) as board:
        for update in updates:
            hub.on_update(update)
        barrier(hub, BARRIER_EXT)
        return updates, {
            "operators": await ops.until_barrier(),
            "wallboard": await board.until_barrier(),
        }


def _finals(updates: list[CallUpdate]) -> dict[str, CallRecord]:
    return {u.call_id: u.call for u in updates if isinstance(u, CallEnded)}


@pytest.mark.parametrize("name", ALL_TRACES)
async def test_every_cards_status_is_what_the_protocol_promises(name: str) -> None:
    """While the call goes on a card says `answered` once an `answered` was sent, else
    `no_answer`; `ended` and `missed` (after the call) carry the call's final status."""
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    updates, pages = await frames_of(name)
    finals = _finals(updates)
    for who, frames in pages.items():
        answered: set[str] = set()
        for frame in frames:
            call_id, kind = frame["call_id"], frame["type"]
            if kind == "answered":
                answered.add(call_id)
            if kind == "ended":
                assert frame["status"] == finals[call_id].status, (who, frame)
            if "card" not in frame:
                continue
            if kind == "missed":
                promised = finals[call_id].status
            else:
                promised = "answered" if call_id in answered else "no_answer"
            assert frame["card"]["status"] == promised, (who, kind, frame["card"])
    if any(isinstance(u, (Ringing, Answered)) for u in updates):
        assert pages["wallboard"], "a call rang or was answered: the wallboard saw it"


def test_the_trace_list_is_every_trace(traces_dir: Path) -> None:
    """The frames are checked over every recording there is, not only those with a truth."""
    assert len(ALL_TRACES) >= 20
    assert set(TRACE_NAMES) <= set(ALL_TRACES)
