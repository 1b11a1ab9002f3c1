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
from desk_hub import Popups
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
from pbxlink.config import Config
from pbxlink.hub.settings import HubConfig
from pbxlink.operators import Operator, hash_token
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
        if u.call.direction == "internal" and u.call.caller_number:
            found.add(u.call.caller_number)  # the colleague calling
    return tuple(sorted(found))


def _token(name: str) -> str:
    return f"tok-{name}-".ljust(40, "x")


def traced_hub(people: People) -> Popups:
    operators = [
        Operator(name, (), "supervisor", hash_token(_token(name)))
        if extensions is None
        else Operator(name, (*extensions, BARRIER_EXT), "operator", hash_token(_token(name)))
        for name, extensions in people.items()
    ]
    config = Config(
        company="ACME", operators=operators, hub=HubConfig(port=0, queue_frames=1_000_000)
    )
    return Popups(config, origins=[ORIGIN])


@contextlib.asynccontextmanager
async def person(hub: Popups, name: str) -> AsyncIterator[Page]:
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


# -- nobody to look up -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_TRACES)
async def test_every_card_says_whether_anyone_is_looked_up(name: str) -> None:
    """An internal call's card names the colleague, a withheld number's says so; neither is
    `pending`, since no lookup is ever made for them. (No directory here: the others wait.)"""
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    _, pages = await frames_of(name)
    for frame in (f for frames in pages.values() for f in frames if "card" in f):
        card = frame["card"]
        looked_up = card["number"] if card["direction"] != "internal" else ""
        if card["direction"] == "internal":
            assert card["no_lookup"] == "internal", card
            assert card["colleague"] == {"extension": card["number"], "name": "operators"}
        elif not any(c.isdigit() for c in looked_up):
            assert card["no_lookup"] == "withheld" and card["colleague"] is None, card
        else:
            assert card["no_lookup"] is None and card["colleague"] is None, card
        assert card["pending"] is (card["no_lookup"] is None), card


def _anonymous(data: bytes) -> bytes:
    """Trace 01 as Asterisk sends it for a caller who withholds the number: PJSIP's
    `Anonymous <sip:anonymous@anonymous.invalid>` gives these two caller ID values."""
    return data.replace(b"0612345678", b"anonymous").replace(b"Jane Doe", b"Anonymous")


async def test_internal_and_anonymous_calls_get_their_final_card_at_once(tmp_path: Path) -> None:
    """Through the daemon: the first message of an internal call (101 -> 102, trace 11) and
    of an anonymous one (trace 01, number withheld) carries the final card; no
    `client_updated` follows, and nobody is registered for "anonymous"."""
    from pbxlink.config import parse
    from pbxlink.sim.scenario import Scenario
    from pbxlink.sim.server import AmiSimulator

    from test_daemon import SECRET, raw_config, run_daemon, until

    for needed in ("11_internal_101_to_102.ami", "01_in_direct_answered_caller_hangup.ami"):
        need((TRACES / needed).exists(), f"{needed} not found in {TRACES}")
    internal = Scenario.from_bytes("internal", (TRACES / "11_internal_101_to_102.ami").read_bytes())
    anonymous = Scenario.from_bytes(
        "anonymous", _anonymous((TRACES / "01_in_direct_answered_caller_hangup.ami").read_bytes())
    )
    sim = AmiSimulator(
        [internal, anonymous], secret=SECRET, calls_per_s=0, speed=20.0, timestamps=False
    )
    async with sim:
        raw = raw_config(tmp_path, sim.port)
        raw["operators"] = [
            {"name": name, "extensions": list(ext or ()),
             "role": "operator" if ext else "supervisor", "token_hash": hash_token(_token(name))}
            for name, ext in SALES.items()
        ]  # fmt: skip

        async def body(d: Any) -> None:
            d.hub.origins = frozenset([ORIGIN])
            async with person(d.hub, "Bob") as bob, person(d.hub, "Alice") as alice:
                for scenario, page in (("internal", bob), ("anonymous", alice)):
                    await sim.wait_played(sim.play_once([scenario]))
                    seen = [await page.recv(timeout=15)]
                    while seen[-1]["type"] != "ended":
                        seen.append(await page.recv(timeout=15))
                    assert [m["type"] for m in seen] == ["ringing", "answered", "ended"]
                    card = seen[0]["card"]
                    assert card["pending"] is False and card["client"] is None
                    if scenario == "internal":
                        assert card["no_lookup"] == "internal"
                        assert card["colleague"] == {"extension": "101", "name": "Alice"}
                    else:
                        assert card["no_lookup"] == "withheld" and card["colleague"] is None
                        assert (card["number"], card["caller_name"]) == ("anonymous", "Anonymous")
            await until(lambda: d.tracker.active_calls == 0 and not d.desk_adapter._tasks)
            assert await d.directory.search("", 50) == []  # no client made up for "anonymous"

        await run_daemon(parse(raw), body)
