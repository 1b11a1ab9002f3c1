"""Golden files of the popups: what every operator's page receives when a real trace plays.

Each trace in tests/traces (top level, freepbx/, control/) is replayed through the tracker
(`pbxlink.replay.replay` with `conftest.lab_tracker()`) into today's daemon and hub, built by
`pbxlink.daemon.Daemon` from a config as `run()` builds them, without its AMI link; every
operator's page is a real websocket on 127.0.0.1. What each page receives, in order, is the
trace's golden file, tests/golden/<trace path>.json; tests/test_golden.py compares. They were
made before the card and audience logic moved out of daemon.py and hub/server.py, so that
the move can be checked against the behaviour it must keep.

    python tests/golden.py --write [TRACE ...]   # make the files again (all by default)

Make them again only for a change of behaviour that is meant: the files' diff is then the
change, to be read in review.

What the run is given (the same for every trace, each in a fresh temporary database):
- the directory (`DIRECTORY`): some callers known (0612345678, 0699999999, 0688888888,
  0610000001-3 of the 40-call trace, the FreePBX Georgian caller +995599123456, 5559001 of
  the control traces), 5559005 shared by two clients; every other number is unknown, so the
  daemon registers it as a `potential` client (its id follows the order calls came in);
- a CRM source (`CRM`): it knows 0612345678 (a known client: it fills in the city and a
  photo), 0698765432 (unknown to the directory: the card of the potential client takes its
  name and company) and 5559001 (a known client); the first two answer within the lookup
  budget, 5559001 after it (`LATE`): the card goes out with what the directory knows and the
  CRM's answer completes it later. The late answer is held until the call has been shown,
  and given just before the call's next update (at the latest before its `CallEnded`);
- the operators (`ROSTER`): one per extension the traces ring (101-105, 2001-2005), each
  also holding extension 999 (`BARRIER_EXT`, which no trace rings: the last call of the run
  rings it so every page knows it has received everything), and one supervisor whose page is
  the wallboard. Every page connects before the first update. Before the middle update, the
  wallboard and the operator of the first extension the trace rings open a second page (a
  reload: their welcome shows the calls in progress), labelled "<name> (reloaded)";
- time: between the trace's updates the clock ticks every TICK_S (5 s) from the trace's
  first event, as the daemon's ticker does, and `too_long_call_s` is 12 s: a call talking
  longer raises `too_long` on the wallboards.

After each update the run waits until the lookups it started have settled (bounded: a hang
is an error, never a wait that decides the outcome), so the frames do not depend on how fast
the machine is. Frames are (page label, message), each checked against the protocol's JSON
Schemas as it arrives (test_hub.Page); a page's frames keep their order (the order between
two pages' sockets is no promise of the protocol): pages come in the roster's order, the
reloaded ones last. Every time (`at`, the card's
`started_at`, ISO-8601 in the protocol) is made seconds after the trace's first event,
rounded to the millisecond; call ids are the trace's, client ids those of the database.

`_feed` is the only function that knows how today's code is driven (what takes an update or
a tick, and when the lookups an update started have settled): when the card and audience
logic moves, it is the one place to adapt, and the golden files must still match. The rest
only builds `Daemon(config)`, opens what its `run()` opens and connects the pages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from test_hub import ORIGIN, Page
from test_popup_traces import ALL_TRACES, BARRIER_EXT, _token, person

from pbxlink.calllog.settings import Thresholds
from pbxlink.calls import (
    Answered,
    CallEnded,
    CallRecord,
    CallUpdate,
    Ringing,
    Transferred,
)
from pbxlink.clients.directory import Directory
from pbxlink.clients.model import Client
from pbxlink.clients.numbers import Number
from pbxlink.clients.settings import ClientsConfig
from pbxlink.clients.sources import CardFields, Source, number_value
from pbxlink.clients.sources.base import MISS, Miss, TtlCache
from pbxlink.config import Config
from pbxlink.daemon import TICK_S, Daemon
from pbxlink.db.settings import StorageConfig
from pbxlink.desk import Tick
from pbxlink.desk.card import client_number
from pbxlink.hub.settings import HubConfig
from pbxlink.logs import setup_logging
from pbxlink.operators import Operator, hash_token
from pbxlink.replay import first_timestamp, read_chunks, replay

from conftest import TRACES, lab_tracker

GOLDEN = Path(__file__).resolve().parent / "golden"
TOO_LONG_S = 12.0
BUDGET_MS = 50.0  # the default lookup budget
SETTLE_LIMIT_S = 30.0  # a run whose lookups do not settle within this is broken: an error
READ_LIMIT_S = 60.0  # likewise for a page waiting for its next frame
QUIET_PASSES = 20  # event-loop passes with nothing left to do before a step counts as settled

#: (name, extension); None: a supervisor, whose page is the wallboard
ROSTER: tuple[tuple[str, str | None], ...] = (
    ("Nino", "101"),
    ("Giorgi", "102"),
    ("Mariam", "103"),
    ("Luka", "104"),
    ("Ana", "105"),
    ("Tamar", "2001"),
    ("Davit", "2002"),
    ("Salome", "2003"),
    ("Irakli", "2004"),
    ("Keti", "2005"),
    ("Sandro", None),
)

#: what the directory holds before the run: card fields, phones, open orders
DIRECTORY: tuple[dict[str, Any], ...] = (
    {
        "name": "Jane Doe",
        "company": "Doe Trading",
        "category": "vip",
        "phones": ["0612345678"],
        "orders": [{"number": "SO-1001", "stage": "shipped", "debt": 120.5}],
    },
    {"name": "Levan Beridze", "notes": "calls twice", "phones": ["0699999999"]},
    {"name": "Nika Kapanadze", "company": "Kapanadze LLC", "phones": ["0688888888"]},
    {"name": "Eka Maisuradze", "phones": ["0610000001"]},
    {"name": "Zura Abashidze", "category": "problem", "phones": ["0610000002"]},
    {"company": "Batumi Port", "phones": ["0610000003"]},
    {"name": "Giorgi Japaridze", "city": "Kutaisi", "phones": ["+995599123456"]},
    {
        "name": "Acme Supplies",
        "company": "Acme",
        "phones": ["5559001"],
        "orders": [{"number": "PO-7", "stage": "open"}],
    },
    {"name": "Mzia Gelashvili", "phones": ["5559005"]},
    {"name": "Otar Gelashvili", "phones": ["5559005"]},  # the same number: a shared phone
)

#: what the CRM knows, by the number as the PBX sends it
CRM: dict[str, CardFields] = {
    "0612345678": CardFields(
        city="Tbilisi", photo_url="https://crm.example/photos/jane.jpg", responsible="Keti"
    ),
    "0698765432": CardFields(
        name="Irakli Lomidze",
        company="Lomidze & Sons",
        category="lead",
        orders=[{"number": "Q-55", "stage": "quote", "debt": 0.0, "open": True}],
    ),
    "5559001": CardFields(
        notes="Pays late; ask for the PO number",
        country="Georgia",
        orders=[{"number": "CRM-9", "stage": "invoiced", "debt": 990.0, "open": True}],
    ),
}
LATE = "5559001"  # the number the CRM answers after the budget

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_barriers = iter(range(1_000_000))

Frames = list[tuple[str, dict[str, Any]]]
#: one input of a run: a tracker update, the clock's tick at that time, or None (nothing new:
#: only let what a scripted answer just set off settle)
Step = CallUpdate | float | None


# -- scripted answers --------------------------------------------------------------------------


@dataclass(eq=False)
class Parked:
    """A scripted answer held back: a directory lookup's or the CRM's."""

    kind: str  # "directory" or "crm"
    number: str
    future: asyncio.Future[None]


class Gate:
    """Where held answers wait until the script releases them."""

    def __init__(self) -> None:
        self.parked: list[Parked] = []

    async def wait(self, kind: str, number: str) -> None:
        held = Parked(kind, number, asyncio.get_running_loop().create_future())
        self.parked.append(held)
        try:
            await held.future
        finally:
            if held in self.parked:  # cancelled while held
                self.parked.remove(held)

    def release(self, held: Parked) -> None:
        self.parked.remove(held)
        held.future.set_result(None)

    def count(self, kind: str) -> int:
        return sum(p.kind == kind for p in self.parked)


class Script:
    """When the scripted answers come: the golden files' rule. Subclasses (the property
    test) hold the directory's answers too and release at random."""

    hold_directory: ClassVar[bool] = False

    def crm_now(self, number: str) -> bool:
        """The CRM answers `number` within the budget (else it is held at the gate)."""
        return number != LATE

    def releases(self, gate: Gate, before: CallUpdate | None, shown: set[str]) -> list[Parked]:
        """What to release before `before` (None: the run is over, everything). `shown`: the
        calls that have rung, been answered or been transferred so far."""
        if before is None:
            return list(gate.parked)
        number = client_number(before.call).strip()
        if before.call_id not in shown and not isinstance(before, CallEnded):
            return []
        return [p for p in gate.parked if p.kind == "crm" and p.number == number]


@dataclass(slots=True, eq=False)
class ScriptedCrm(Source):
    """A CRM source answering from `CRM`; what the script holds waits at the gate."""

    kind: ClassVar[str] = "scripted"
    gate: Gate
    script: Script
    name: str = "crm"
    timeout_s: float = 3600.0
    number_form: str = "raw"
    _cache: TtlCache = field(default_factory=lambda: TtlCache(0, 1))
    _inflight: dict[str, Any] = field(default_factory=dict)

    def cached(self, number: Number) -> CardFields | Miss | None:
        value = number_value(number, self.number_form)
        if value is None:
            return None
        if not self.script.crm_now(value):
            return MISS  # the chain asks `lookup`, which is held
        return self._answer(value)

    async def lookup(self, number: Number) -> CardFields | None:
        value = number_value(number, self.number_form)
        if value is None:
            return None
        await self.gate.wait("crm", value)
        return self._answer(value)

    def _answer(self, value: str) -> CardFields | None:
        card = CRM.get(value)
        if card is None:
            return None
        out = card.copy()
        out.source = self.name
        return out


# -- the run -----------------------------------------------------------------------------------


def operators() -> list[Operator]:
    return [
        Operator(name, (ext, BARRIER_EXT), "operator", hash_token(_token(name)))
        if ext is not None
        else Operator(name, (), "supervisor", hash_token(_token(name)))
        for name, ext in ROSTER
    ]


def updates_of(trace: str) -> list[CallUpdate]:
    return list(replay(read_chunks(TRACES / trace), lab_tracker()))


def config_in(folder: Path, gate: Gate, script: Script) -> Config:
    crm = ScriptedCrm(gate, script)
    return Config(
        company="ACME",
        storage=StorageConfig(state_dir=folder),
        hub=HubConfig(port=0, origins=(ORIGIN,), queue_frames=1_000_000),
        clients=ClientsConfig(lookup_budget_ms=BUDGET_MS, sources=(crm,)),
        thresholds=Thresholds(too_long_call_s=TOO_LONG_S),
        operators=operators(),
    )


async def seed(config: Config) -> None:
    """The scripted directory, written before the daemon opens the database."""
    async with Directory.from_config(config) as directory:
        for entry in DIRECTORY:
            fields = {k: v for k, v in entry.items() if k != "orders"}
            client = await directory.create(fields)
            for order in entry.get("orders", ()):
                await directory.add_order(client.id, order)


async def _feed(daemon: Daemon, step: Step, gate: Gate) -> None:
    """THE ONE PLACE THAT KNOWS HOW TODAY'S CODE IS DRIVEN: the redesign adapts this function,
    nothing else of the harness, and the golden files must still match.

    Hand `step` to the daemon as its AMI read path (an update) or its ticker (a float: the
    time of the tick; the tracker of the trace is not the daemon's, so only the too-long
    watch ticks) would, then wait until every caller lookup it started is done or waits for
    an answer the gate holds: in the directory, or the CRM's after the budget (the chain has
    returned, the card is out, the task waits for `found.pending`). That must hold for
    QUIET_PASSES passes of the event loop in a row: an answer just released takes a few
    passes to reach the task that waits for it."""
    if isinstance(step, float):
        daemon.desk_adapter.tell(Tick(step))
    elif step is not None:
        daemon._dispatch([step])
    deadline = time.monotonic() + SETTLE_LIMIT_S
    quiet = 0
    while quiet < QUIET_PASSES:
        busy = sum(not t.done() for t in daemon.desk_adapter._tasks)
        waiting = gate.count("directory") + sum(
            not t.done() and t.get_name() == "lookup update" for t in daemon.sources._tasks
        )
        quiet = quiet + 1 if busy == waiting else 0
        if time.monotonic() > deadline:
            raise TimeoutError(f"lookups still running after {SETTLE_LIMIT_S:g} s: {busy}")
        await asyncio.sleep(0 if quiet else 0.001)


def _barrier(at: float) -> Ringing:
    """A call ringing BARRIER_EXT: every page gets it, and it is the last thing they get."""
    call = CallRecord(
        call_id=f"barrier-{next(_barriers)}",
        started_at=at,
        direction="internal",
        caller_number="",
        caller_name="",
        called_number=BARRIER_EXT,
        status="no_answer",
    )
    return Ringing(at, call, BARRIER_EXT)


@dataclass
class Seen:
    """One page of the run and what it received (the welcome first)."""

    label: str
    operator: Operator
    frames: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    updates: list[CallUpdate]
    pages: list[Seen]
    first_event: float

    def frames(self) -> Frames:
        return [
            (seen.label, relative(frame, self.first_event))
            for seen in self.pages
            for frame in seen.frames
        ]


async def _read(page: Page, seen: Seen) -> None:
    seen.frames.append(page.welcome)
    while True:
        message = await page.recv(timeout=READ_LIMIT_S)
        if message["call_id"].startswith("barrier"):
            return
        seen.frames.append(message)


def _ticks(first: float, updates: list[CallUpdate]) -> Iterator[Step]:
    """The updates with the clock's ticks (every TICK_S from the first event) among them."""
    k = 1
    for update in updates:
        while first + k * TICK_S <= update.at:
            yield first + k * TICK_S
            k += 1
        yield update


async def run_trace(trace: str, script: Script | None = None) -> Run:
    """Replay `trace` into today's daemon and hub with the scripted directory, CRM and roster;
    what every page received."""
    script = script or Script()
    path = TRACES / trace
    first = first_timestamp(read_chunks(path))
    updates = updates_of(trace)
    if first is None:
        first = updates[0].at if updates else 0.0
    middle = len(updates) // 2
    rung = next((u.extension for u in updates if isinstance(u, Ringing)), None)
    gate = Gate()
    with tempfile.TemporaryDirectory(prefix="pbxlink-golden-") as tmp:
        config = config_in(Path(tmp), gate, script)
        await seed(config)
        daemon = Daemon(config)
        if script.hold_directory:
            _hold_directory(daemon.directory, gate)
        await daemon.store.open()
        await daemon.directory.open()
        await daemon.hub.start()
        writer = asyncio.create_task(daemon.store.run(), name="store")
        pages: list[Seen] = []
        readers: list[asyncio.Task[None]] = []
        try:
            async with contextlib.AsyncExitStack() as stack:

                async def open_page(label: str, op: Operator) -> None:
                    page = await stack.enter_async_context(person(daemon.hub, op.name))
                    seen = Seen(label, op)
                    pages.append(seen)
                    readers.append(asyncio.create_task(_read(page, seen)))

                for op in config.operators:
                    await open_page(op.name, op)
                shown: set[str] = set()
                index = 0
                for step in _ticks(first, updates):
                    if isinstance(step, CallUpdate):
                        if index == middle:
                            for op in config.operators:
                                if op.role != "operator" or rung in op.extensions:
                                    await open_page(f"{op.name} (reloaded)", op)
                        index += 1
                        for held in script.releases(gate, step, shown):
                            gate.release(held)
                            await _feed(daemon, None, gate)
                    await _feed(daemon, step, gate)
                    if isinstance(step, Ringing | Answered | Transferred):
                        shown.add(step.call_id)
                while gate.parked:  # what is still held answers now, the calls being over
                    for held in script.releases(gate, None, shown):
                        gate.release(held)
                        await _feed(daemon, None, gate)
                last = updates[-1].at if updates else first
                await _feed(daemon, _barrier(last), gate)
                await asyncio.wait_for(asyncio.gather(*readers), READ_LIMIT_S)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await daemon.hub.close()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await daemon.store.close()
            await daemon.sources.close()
            await daemon.directory.close()
    return Run(updates, pages, first)


def _hold_directory(directory: Directory, gate: Gate) -> None:
    """The directory's answers wait at the gate (the property test's random orders)."""
    lookup = directory.lookup

    async def held(raw_number: str) -> list[Client]:
        found = await lookup(raw_number)
        await gate.wait("directory", raw_number)
        return found

    directory.lookup = held  # type: ignore[method-assign]


async def popup_frames(trace: str) -> Frames:
    """Every frame every page received while `trace` played, as (page label, message)."""
    return (await run_trace(trace)).frames()


def relative(message: Any, first: float) -> Any:
    """`message` with every ISO-8601 time as seconds after `first`, to the millisecond."""
    if isinstance(message, dict):
        return {k: relative(v, first) for k, v in message.items()}
    if isinstance(message, list):
        return [relative(v, first) for v in message]
    if isinstance(message, str) and _TIME.match(message):
        at = datetime.fromisoformat(message.replace("Z", "+00:00")).timestamp()
        return round(at - first, 3)
    return message


# -- the files ---------------------------------------------------------------------------------


def golden_path(trace: str) -> Path:
    return GOLDEN / f"{trace}.json"


def dumps(trace: str, frames: Frames) -> str:
    """A golden file: one frame a line, so a change reads as a diff of frames."""
    lines = [json.dumps([label, message], ensure_ascii=False) for label, message in frames]
    body = ",\n".join(lines)
    return f'{{"trace": {json.dumps(trace)}, "frames": [\n{body}\n]}}\n'


def load(trace: str) -> Frames:
    data = json.loads(golden_path(trace).read_text(encoding="utf-8"))
    return [(label, message) for label, message in data["frames"]]


def traces() -> list[str]:
    return list(ALL_TRACES)


async def _write(names: list[str]) -> None:
    for name in names:
        started = time.perf_counter()
        frames = await popup_frames(name)
        path = golden_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(name, frames), encoding="utf-8")
        took = time.perf_counter() - started
        print(f"{path.relative_to(GOLDEN.parent)}: {len(frames)} frames ({took:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the golden files")
    parser.add_argument("traces", nargs="*", help="trace paths under tests/traces (default: all)")
    args = parser.parse_args(argv)
    if not args.write:
        parser.error("say --write to make the golden files again")
    unknown = sorted(set(args.traces) - set(traces()))
    if unknown:
        parser.error(f"not a trace: {', '.join(unknown)}")
    setup_logging("warning")  # what the run itself logs is not the golden files' business
    asyncio.run(_write(args.traces or traces()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
