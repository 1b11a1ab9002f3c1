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
#: name -> extensions, or None for a supervisor's wallboard
People = dict[str, tuple[str, ...] | None]


def _extensions(updates: list[CallUpdate]) -> tuple[str, ...]:
    found: set[str] = set()
    for u in updates:
        if isinstance(u, (Ringing, RingEnded, Answered, Transferred)) and u.extension:
            found.add(u.extension)
        found.update(u.call.extensions_rung)
    return tuple(sorted(found))


def _token(name: str) -> str:
    return f"tok-{name}-".ljust(40, "x")


def traced_hub(people: People) -> Hub:
    operators = [
        Operator(name, (), "supervisor", hash_token(_token(name)))
        if extensions is None
        else Operator(name, (*extensions, BARRIER_EXT), "operator", hash_token(_token(name)))
        for name, extensions in people.items()
    ]
    config = Config(
        company="ACME", operators=operators, hub=HubConfig(port=0, queue_frames=1_000_000)
    )
    return Hub(config, origins=[ORIGIN])


@contextlib.asynccontextmanager
async def person(hub: Hub, name: str) -> AsyncIterator[Page]:
    """`name`'s page, welcomed."""
    async with connect(f"ws://127.0.0.1:{hub.port}/", origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello", "v": 1, "token": _token(name)}))
        p = Page(ws)
        p.welcome = await p.recv()
        yield p


def updates_of(name: str) -> list[CallUpdate]:
    return list(replay(read_chunks(TRACES / name), lab_tracker()))


async def frames_of(
    name: str, people: People | None = None
) -> tuple[list[CallUpdate], dict[str, list[dict[str, Any]]]]:
    """The tracker's updates for the trace, and what each person's page received from the
    hub. By default: one operator holding every extension the trace rings, one wallboard."""
    updates = updates_of(name)
    if people is None:
        people = {"operators": _extensions(updates), "wallboard": None}
    hub = traced_hub(people)
    async with running(hub), contextlib.AsyncExitStack() as stack:
        pages = {who: await stack.enter_async_context(person(hub, who)) for who in people}
        for update in updates:
            hub.on_update(update)
        barrier(hub, BARRIER_EXT)
        return updates, {who: await p.until_barrier() for who, p in pages.items()}


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


# -- transfers ---------------------------------------------------------------------------------

SALES: People = {"Alice": ("101",), "Bob": ("102",), "Wallboard": None}


def _kinds(frames: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(f["type"], f.get("extension")) for f in frames]


@pytest.mark.parametrize(
    "name",
    [
        "12_blind_transfer_101_to_102.ami",  # the phone's own transfer key
        "control/C02b_blindtransfer_action_to_102.ami",  # AMI BlindTransfer
        "control/C02a_redirect_caller_to_102.ami",  # AMI Redirect: no transfer event at all
    ],
)
async def test_the_transfer_targets_answer_is_pushed(name: str) -> None:
    """101 answers, the caller goes to 102, 102 picks up: 102 and the wallboards get
    `answered` for 102, whose card says 101 answered first and 102 holds the call now."""
    need((TRACES / name).exists(), f"{name} not found in {TRACES}")
    _, pages = await frames_of(name, SALES)
    redirect = "redirect" in name
    bob = _kinds(pages["Bob"])
    expected = [("ringing", "102"), ("answered", "102"), ("ended", None)]
    assert bob == ([] if redirect else [("transferred", "102")]) + expected
    board = _kinds(pages["Wallboard"])
    assert board[:2] == [("ringing", "101"), ("answered", "101")]
    assert board[-3:] == expected
    for frames in pages.values():
        (last,) = [f for f in frames if f["type"] == "answered" and f["extension"] == "102"] or [
            None
        ]
        if last is None:
            continue
        card = last["card"]
        assert (card["answered_by"], card["answered_by_name"]) == ("101", "Alice")
        assert (card["extension"], card["operator_name"]) == ("102", "Bob")
        assert card["status"] == "answered"
    assert ("answered", "102") in _kinds(pages["Alice"])  # 101 was shown the call: told too


@pytest.mark.parametrize(
    "name", ["18_attended_transfer_atxfer.ami", "control/C02c_atxfer_action_101_to_102.ami"]
)
async def test_a_consult_calls_answer_is_not_the_callers(name: str) -> None:
    """In an attended transfer 102 answers 101's consult call, not the caller: no `answered`
    for 102; the `transferred` then hands it the call."""
    need((TRACES / name).exists(), f"{name} not found in {TRACES}")
    _, pages = await frames_of(name, SALES)
    assert _kinds(pages["Bob"]) == [("ringing", "102"), ("transferred", "102"), ("ended", None)]
    assert ("answered", "102") not in _kinds(pages["Wallboard"])


async def test_a_reload_while_the_transfer_target_rings_shows_it_ringing() -> None:
    """A page of 102 opened while the blind transfer rings it gets `ringing` in its welcome,
    then `answered` when 102 picks up."""
    name = "12_blind_transfer_101_to_102.ami"
    need((TRACES / name).exists(), f"{name} not found in {TRACES}")
    updates = updates_of(name)
    rings = [i for i, u in enumerate(updates) if isinstance(u, Ringing) and u.extension == "102"]
    hub = traced_hub(SALES)
    async with running(hub):
        for update in updates[: rings[0] + 1]:
            hub.on_update(update)
        async with person(hub, "Bob") as bob, person(hub, "Wallboard") as board:
            assert _kinds(bob.welcome["calls"]) == [("ringing", "102")]
            assert _kinds(board.welcome["calls"]) == [("ringing", "102")]
            for update in updates[rings[0] + 1 :]:
                hub.on_update(update)
            barrier(hub, BARRIER_EXT)
            assert _kinds(await bob.until_barrier()) == [("answered", "102"), ("ended", None)]
