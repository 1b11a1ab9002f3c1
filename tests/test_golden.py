"""The popups of every real trace are still what tests/golden/ says they were, and two
promises of docs/popup-protocol.md hold whatever order the lookups answer in.

tests/golden.py replays each trace into today's daemon and hub with a scripted directory,
CRM and roster (its docstring says what, and how to make the files again); here its frames
are compared with the trace's golden file, first differing frame named. The property test
runs the same harness with every answer, the directory's and the CRM's, held back and
released at random points between the updates: operator pages only ever see calls that rang,
reached or were transferred to one of their extensions, and every call a page shows is
closed by an `ended`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from typing import Any, ClassVar

import pytest
from golden import (
    BARRIER_EXT,
    GOLDEN,
    ROSTER,
    Frames,
    Gate,
    Parked,
    Script,
    golden_path,
    load,
    popup_frames,
    run_trace,
    traces,
    updates_of,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_popup_traces import _extensions

from pbxlink.calls import Answered, CallUpdate, RingEnded, Ringing, Transferred

from conftest import TRACES, need

TRACE_LIST = traces()
SUPERVISORS = frozenset(name for name, ext in ROSTER if ext is None)
EXTENSIONS = {name: ext for name, ext in ROSTER if ext is not None}
#: with a card: the page shows the call from this frame on
SHOWING = frozenset({"ringing", "answered", "transferred", "client_updated", "too_long"})


# -- the golden files --------------------------------------------------------------------------


def _paths(value: Any, other: Any, at: str = "") -> list[str]:
    """Where two JSON values differ, as paths (`card.client.name`)."""
    if isinstance(value, dict) and isinstance(other, dict):
        out: list[str] = []
        for key in [*value, *(k for k in other if k not in value)]:
            out += _paths(value.get(key), other.get(key), f"{at}.{key}" if at else key)
        return out
    if isinstance(value, list) and isinstance(other, list) and len(value) == len(other):
        pairs = enumerate(zip(value, other, strict=True))
        return [p for i, (a, b) in pairs for p in _paths(a, b, f"{at}[{i}]")]
    return [] if value == other else [at or "(the whole frame)"]


def first_difference(expected: Frames, got: Frames) -> str | None:
    """None when equal; else the first frame that differs, readably."""
    for i, (want, have) in enumerate(zip(expected, got, strict=False)):
        if want != have:
            where = _paths(list(want), list(have))
            return (
                f"frame {i} differs at {', '.join(where[:8])}\n"
                f"  expected: {json.dumps(want, ensure_ascii=False)}\n"
                f"  got:      {json.dumps(have, ensure_ascii=False)}"
            )
    if len(expected) != len(got):
        i = min(len(expected), len(got))
        longer, what = (expected, "missing") if len(expected) > len(got) else (got, "extra")
        return (
            f"{len(got)} frames, {len(expected)} expected; frame {i} is {what}: "
            f"{json.dumps(longer[i], ensure_ascii=False)}"
        )
    return None


@pytest.mark.parametrize("trace", TRACE_LIST)
async def test_the_popups_are_the_golden_ones(trace: str) -> None:
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    assert golden_path(trace).exists(), (
        f"no golden file: run `python tests/golden.py --write {trace}`"
    )
    difference = first_difference(load(trace), await popup_frames(trace))
    assert difference is None, f"{trace}: {difference}"


def test_every_trace_has_its_golden_file_and_no_other() -> None:
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    files = {str(p.relative_to(GOLDEN)).removesuffix(".json") for p in GOLDEN.rglob("*.json")}
    assert files == set(TRACE_LIST)


def test_the_roster_holds_every_extension_the_traces_reach() -> None:
    """One operator per extension any trace rings, reaches or transfers to."""
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    reached = {ext for trace in TRACE_LIST for ext in _extensions(updates_of(trace))}
    assert reached <= set(EXTENSIONS.values())
    assert BARRIER_EXT not in reached


# -- the promises ------------------------------------------------------------------------------


def reached_by(updates: list[CallUpdate]) -> dict[str, set[str]]:
    """call id -> the extensions the call rang, reached (answered, held) or was transferred
    to, from the tracker's updates; an outbound call also reaches the extension that dialled."""
    out: dict[str, set[str]] = defaultdict(set)
    for u in updates:
        call, exts = u.call, out[u.call_id]
        if isinstance(u, Ringing | RingEnded | Answered | Transferred) and u.extension:
            exts.add(u.extension)
        exts.update(call.extensions_rung, call.transferred_to)
        if call.answered_by:
            exts.add(call.answered_by)
        if call.direction == "outbound" and call.caller_number:
            exts.add(call.caller_number)
    return out


def broken_promises(updates: list[CallUpdate], frames: Frames) -> list[str]:
    """What breaks (a) an operator sees only calls of their extensions and (b) every call a
    page shows is closed by `ended`, after which only `missed` may come."""
    reached = reached_by(updates)
    pages: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for label, message in frames:
        pages[label].append(message)
    broken: list[str] = []
    for label, messages in pages.items():
        name = label.removesuffix(" (reloaded)")
        about: list[tuple[str, str]] = []  # (call id, type), in order
        for m in messages:
            items = m["calls"] if m["type"] == "welcome" else [m]
            about += [(item["call_id"], item["type"]) for item in items]
        if name not in SUPERVISORS:
            mine = EXTENSIONS[name]
            broken += [
                f"{label} got {kind} of {call_id}, which never reached {mine}"
                for call_id, kind in about
                if mine not in reached.get(call_id, set())
            ]
        ended: set[str] = set()
        shown: set[str] = set()
        for call_id, kind in about:
            if call_id in ended and kind != "missed":
                broken.append(f"{label} got {kind} of {call_id} after its ended")
            if kind == "ended":
                ended.add(call_id)
            elif kind in SHOWING:
                shown.add(call_id)
        broken += [f"{label} shows {c}, never ended" for c in sorted(shown - ended)]
    return broken


@pytest.mark.parametrize("trace", TRACE_LIST)
def test_the_golden_files_keep_the_promises(trace: str) -> None:
    """The same checks as the property below, on the frames the golden files hold."""
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    assert broken_promises(updates_of(trace), load(trace)) == []


class Shuffled(Script):
    """Every directory answer held, the CRM's answers held or not, all released at random
    points: before each update, each held answer is released with probability `release`."""

    hold_directory: ClassVar[bool] = True

    def __init__(self, seed: int, release: float) -> None:
        self.rng = random.Random(seed)
        self.release = release

    def crm_now(self, number: str) -> bool:
        return self.rng.random() < 0.3

    def releases(self, gate: Gate, before: CallUpdate | None, shown: set[str]) -> list[Parked]:
        if before is None:
            return list(gate.parked)
        out = [held for held in gate.parked if self.rng.random() < self.release]
        self.rng.shuffle(out)
        return out


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    trace=st.sampled_from(TRACE_LIST),
    seed=st.integers(0, 2**32 - 1),
    release=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
)
def test_whatever_order_the_lookups_answer_in_the_promises_hold(
    trace: str, seed: int, release: float
) -> None:
    need(TRACES.is_dir(), f"real Asterisk traces not found at {TRACES}")
    run = asyncio.run(run_trace(trace, Shuffled(seed, release)))
    assert broken_promises(run.updates, run.frames()) == []
