"""Framing + tracking throughput on real Asterisk traffic, against panoramisk in the same run.

Why this shape: a CTI daemon must keep up with the AMI stream of a busy PBX, and the only
honest yardstick on an unknown machine is a baseline measured in the same process, on the
same bytes, at the same moment. The baseline is panoramisk 1.4's own parser
(`AMIProtocol.data_received`): what pbxlink would cost if it simply used panoramisk.

Input: the real traces of tests/traces, concatenated and repeated `--copies` times into
one long session, each copy with fresh channel ids, channel names and bridge ids, and its
times moved forward, so the tracker sees many distinct calls rather than the same ones again.
The stream is held in memory and cut into 64 KiB chunks (one socket read each) before any
clock starts: the timed loop is parsing (and, for pbxlink, tracking) and nothing else.

Run: `python benchmarks/tracker.py [--copies N] [--repeat R]`; docs/benchmarks.md has results.
`--smoke` (CI) runs every variant and check once on two copies: it proves the script works.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from panoramisk.ami_protocol import AMIProtocol

from pbxlink.ami.framing import AmiParser, Message
from pbxlink.calls.record import RECORD_FIELDS, CallRecord
from pbxlink.calls.tracker import CallTracker, TrackerConfig
from pbxlink.calls.updates import CallEnded
from pbxlink.replay import CHUNK, finished_calls, replay

from machine import cpu_model, git_commit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRACES = Path(os.environ.get("PBXLINK_TRACES", ROOT / "tests" / "traces"))
DEFAULT_GLOBS = ("*.ami", "freepbx/*.ami")

#: AMI events a real Asterisk sends per call (trace 14: 5,596 events for 40 calls)
EVENTS_PER_CALL = 140
#: the issue's goal: framing + tracking at least this many times panoramisk's parse-only speed
GOAL_RATIO = 2.0

# -- building the input ---------------------------------------------------------------------

BANNER_AND_LOGIN = re.compile(
    rb"Asterisk Call Manager/[^\r\n]*\r?\n"
    rb"(?:Response: Success\r?\nActionID: [^\r\n]*\r?\nMessage: Authentication accepted\r?\n\r?\n)?"
)
GOODBYE = re.compile(rb"Response: Goodbye\r?\n(?:[^\r\n]+\r?\n)*\r?\n")
FIRST_TIMESTAMP = re.compile(rb"^Timestamp: (\d+\.\d+)", re.MULTILINE)
# One pass rewrites everything that identifies a call or says when it happened. Alternatives
# are tried left to right at each position, so a `Timestamp:` line is never read as an id.
REWRITE = re.compile(
    rb"(?P<ts>^Timestamp: )(?P<tsv>\d+\.\d+)"
    rb"|(?P<up>^Uptime: )(?P<upv>\d+)"
    rb"|(?P<cdr>^(?:StartTime|AnswerTime|EndTime): )(?P<cdrv>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"
    rb"|(?P<chan>\b(?:PJSIP|SIP|IAX2|DAHDI|Local)/[^\s,/\"&]*-)(?P<chanv>[0-9a-f]{8})"
    rb"(?![0-9A-Za-z])"
    rb"|(?P<uuid>\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-)(?P<uuidv>[0-9a-f]{12})\b"
    rb"|(?<![\d.])(?P<epoch>\d{10}\.)(?P<seq>\d+)(?!\d)",
    re.MULTILINE,
)
SEQ_STRIDE = 1_000_000  # Uniqueid sequence numbers of copy k are moved up by k * this
CHAN_STRIDE = 0x100000  # channel name counters (`PJSIP/101-0000001a`) by k * this
CDR_TIME = "%Y-%m-%d %H:%M:%S"
#: record fields that renumbering changes on purpose, left out of the comparison: the ids, the
#: file name and every time (`*_at`: found by name, so a time field added later is not missed)
REWRITTEN = ("call_id", "recording", *(k for k in RECORD_FIELDS if k.endswith("_at")))
#: float fields, compared rounded: times go through a shift and back to text
ROUNDED = ("wait_s", "talk_s")
COMPARED = tuple(k for k in RECORD_FIELDS if k not in REWRITTEN + ROUNDED)


@dataclass(slots=True)
class Stream:
    """The benchmark input: one long AMI session, and what a correct run must find in it."""

    data: bytes
    chunks: list[bytes]
    copies: int
    traces: list[str]
    events: int
    #: the records one copy gives when replayed on its own (see `summary`)
    per_copy: Counter[tuple[object, ...]]

    @property
    def calls_per_copy(self) -> int:
        return self.per_copy.total()

    @property
    def calls(self) -> int:
        return self.copies * self.calls_per_copy

    @property
    def megabytes(self) -> float:
        return len(self.data) / 1e6


def chunked(data: bytes) -> list[bytes]:
    """The stream as the socket reads of `pbxlink replay` would hand it over."""
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def summary(record: CallRecord) -> tuple[object, ...]:
    """A record less what renumbering changes on purpose (ids, clock times, file names)."""
    raw = record.to_dict()
    return (
        *(raw[k] if not isinstance(raw[k], list) else tuple(raw[k]) for k in COMPARED),
        *(round(getattr(record, k), 1) for k in ROUNDED),
        record.recording is not None,
    )


def records(chunks: Sequence[bytes]) -> Counter[tuple[object, ...]]:
    """The finished calls of a stream, as `summary` tuples."""
    return Counter(summary(u.call) for u in finished_calls(replay(chunks, CallTracker())))


def first_timestamp(data: bytes) -> float:
    """When a trace starts: traces are concatenated in time order."""
    match = FIRST_TIMESTAMP.search(data)
    if match is None:
        raise SystemExit("a trace without Timestamp headers: record with timestampevents = yes")
    return float(match.group(1))


def last_timestamp(data: bytes) -> float:
    """When a trace ends: the next copy must start after every trace of this one."""
    return max(float(m) for m in FIRST_TIMESTAMP.findall(data))


def renumbered(data: bytes, copy: int, shift_s: int, boot: float) -> bytes:
    """One trace as copy `copy` of itself: new ids, times `shift_s` later, one Asterisk boot.

    `Uptime` is rewritten so every FullyBooted names the same boot moment: the stream reads as
    one long-running Asterisk, not a restart per trace (which would end open calls early).
    """
    now = 0.0

    def sub(m: re.Match[bytes]) -> bytes:
        nonlocal now
        kind = m.lastgroup
        if kind == "tsv":
            now = float(m["tsv"]) + shift_s
            return m["ts"] + f"{now:.6f}".encode()
        if kind == "upv":
            return m["up"] + str(max(0, int(now - boot))).encode()
        if kind == "cdrv":
            when = dt.datetime.strptime(m["cdrv"].decode(), CDR_TIME)
            return m["cdr"] + (when + dt.timedelta(seconds=shift_s)).strftime(CDR_TIME).encode()
        if kind == "chanv":
            counter = (int(m["chanv"], 16) + copy * CHAN_STRIDE) & 0xFFFFFFFF
            return m["chan"] + f"{counter:08x}".encode()
        if kind == "uuidv":
            tail = (int(m["uuidv"], 16) + copy) % (1 << 48)
            return m["uuid"] + f"{tail:012x}".encode()
        return m["epoch"] + str(int(m["seq"]) + copy * SEQ_STRIDE).encode()

    return REWRITE.sub(sub, data)


def count_events(data: bytes) -> int:
    """AMI events in the bytes, delivered to anyone or not: messages whose first line is Event."""
    return data.count(b"\nEvent: ") + data.startswith(b"Event: ")


def build_stream(traces_dir: Path, globs: Sequence[str], copies: int) -> Stream:
    """Concatenate the traces `copies` times into one session with a single banner and login.

    Traces are taken in time order, so within a copy time only moves forward; copy k is moved
    k whole spans later. Each trace's own logoff (`Response: Goodbye`) and every banner+login
    after the first are dropped: a repeated banner would read as a reconnect. One copy must
    give the same calls as the traces replayed one by one, or the rewriting changed meaning.
    """
    paths = sorted({p for g in globs for p in traces_dir.glob(g)})
    if not paths:
        raise SystemExit(f"no traces matching {list(globs)} in {traces_dir}")
    raw = sorted((first_timestamp(p.read_bytes()), p) for p in paths)
    originals = [p.read_bytes() for _, p in raw]
    start = raw[0][0]
    span = math.ceil(max(last_timestamp(data) for data in originals) - start) + 60
    head = BANNER_AND_LOGIN.match(originals[0])
    if head is None:
        raise SystemExit(f"{raw[0][1]} does not start with an AMI banner and login")
    booted = re.search(rb"Timestamp: (\d+\.\d+)\r?\nUptime: (\d+)", originals[0])
    boot = float(booted[1]) - int(booted[2]) if booted else start
    bodies = [GOODBYE.sub(b"", BANNER_AND_LOGIN.sub(b"", data)) for data in originals]
    goodbye = b"Response: Goodbye\r\nMessage: Thanks for all the fish.\r\n\r\n"

    def session(copies: int) -> bytes:
        parts = [head.group(0)]
        for copy in range(copies):
            parts += (renumbered(body, copy, copy * span, boot) for body in bodies)
        parts.append(goodbye)
        return b"".join(parts)

    alone: Counter[tuple[object, ...]] = Counter()
    for data in originals:
        alone += records(chunked(data))
    per_copy = records(chunked(session(1)))
    if per_copy != alone:
        raise SystemExit(
            "CHECK FAILED: one copy of the session does not give the calls of the traces: "
            f"missing {alone - per_copy}, extra {per_copy - alone}"
        )
    data = session(copies)
    return Stream(
        data=data,
        chunks=chunked(data),
        copies=copies,
        traces=[str(p.relative_to(traces_dir)) for _, p in raw],
        events=count_events(data),
        per_copy=per_copy,
    )


# -- the variants ---------------------------------------------------------------------------


class _Transport:
    """What panoramisk's protocol writes to and closes; the benchmark sends nothing."""

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Factory:
    """Stands in for panoramisk's Manager: counts the events handed to `dispatch`."""

    save_stream = None
    forgetable_actions = ("ping", "login")

    def __init__(self) -> None:
        self.dispatched = 0
        self.awaiting_actions: list[object] = []

    def dispatch(self, message: object) -> None:
        self.dispatched += 1

    def connection_lost(self, exc: object) -> None:
        pass


def panoramisk_parse(chunks: Sequence[bytes]) -> int:
    """panoramisk 1.4 parsing only, set up as `Manager.connection_made` sets it up."""
    protocol = AMIProtocol()
    protocol.connection_made(_Transport())
    factory = _Factory()
    protocol.factory = factory
    protocol.log = logging.getLogger("panoramisk.manager")
    protocol.encoding = "utf8"
    protocol.responses = {}
    for chunk in chunks:
        protocol.data_received(chunk)
    return factory.dispatched


def pbxlink_track(chunks: Sequence[bytes]) -> int:
    """What `pbxlink replay` does: subscribed framing, StreamDriver and tracker."""
    updates = list(replay(chunks, CallTracker(TrackerConfig())))
    return sum(type(u) is CallEnded for u in updates)


def pbxlink_track_unfiltered(chunks: Sequence[bytes]) -> int:
    """The same without a subscription: what the event filter saves."""
    updates = list(replay(chunks, CallTracker(TrackerConfig()), parser=AmiParser(None)))
    return sum(type(u) is CallEnded for u in updates)


def pbxlink_frame_only(chunks: Sequence[bytes]) -> int:
    """Subscribed framing alone, no tracker: how the time splits between the two."""
    tracker = CallTracker(TrackerConfig())
    parser = AmiParser({**tracker.subscription(), "FullyBooted": None})
    delivered = 0
    for chunk in chunks:
        delivered += len(parser.feed(chunk))
    return delivered


@dataclass(slots=True)
class Variant:
    """One contender: a function from chunks to a count that `check` can verify."""

    name: str
    run: Callable[[Sequence[bytes]], int]
    times: list[float] = field(default_factory=list)
    result: int | None = None


VARIANTS = (
    ("panoramisk 1.4 data_received (parse only) [baseline]", panoramisk_parse),
    ("pbxlink AmiParser(subscription) + tracker", pbxlink_track),
    ("pbxlink AmiParser(no subscription) + tracker", pbxlink_track_unfiltered),
    ("pbxlink AmiParser(subscription) only, no tracker", pbxlink_frame_only),
)


def measure(stream: Stream, repeat: int) -> list[Variant]:
    """Best-of-`repeat`, variants interleaved so a slow moment of the machine hits them all.

    gc stays enabled (a daemon runs with it); garbage left by the previous run is collected
    before the clock starts so that no variant pays for another's.
    """
    variants = [Variant(name, run) for name, run in VARIANTS]
    for _ in range(repeat):
        for variant in variants:
            gc.collect()
            t0 = time.perf_counter()
            result = variant.run(stream.chunks)
            variant.times.append(time.perf_counter() - t0)
            if variant.result is not None and variant.result != result:
                raise SystemExit(f"{variant.name}: {result} this time, {variant.result} before")
            variant.result = result
    return variants


def check(stream: Stream, variants: list[Variant]) -> None:
    """Fail loudly if the input or any variant is wrong: a fast wrong answer is worth nothing.

    Every copy must give the very calls one copy gives alone (the copies do not collide), the
    event filter must not change what the tracker reports, and every parser must see every
    event (a baseline that skipped some would look faster than it is).
    """
    by_run = {v.run: v.result for v in variants}
    problems = []
    if by_run[pbxlink_track] != stream.calls:
        problems.append(
            f"CallEnded {by_run[pbxlink_track]} != {stream.copies} copies x "
            f"{stream.calls_per_copy} calls = {stream.calls}"
        )
    got = records(stream.chunks)
    want = Counter({key: n * stream.copies for key, n in stream.per_copy.items()})
    if got != want:
        problems.append(f"records differ from one copy's: missing {want - got}, extra {got - want}")
    if by_run[pbxlink_track_unfiltered] != by_run[pbxlink_track]:
        problems.append(
            f"without a subscription the tracker ends {by_run[pbxlink_track_unfiltered]} calls, "
            f"with one {by_run[pbxlink_track]}"
        )
    parser = AmiParser(None)
    parsed = sum(
        isinstance(m, Message) and "Event" in m
        for chunk in stream.chunks
        for m in parser.feed(chunk)
    )
    if parsed != stream.events:
        problems.append(f"AmiParser(None) delivered {parsed} of {stream.events} events")
    if by_run[panoramisk_parse] != stream.events:
        problems.append(f"panoramisk dispatched {by_run[panoramisk_parse]} of {stream.events}")
    if problems:
        raise SystemExit("CHECK FAILED: " + "; ".join(problems))


# -- report ---------------------------------------------------------------------------------


def report(stream: Stream, variants: list[Variant], repeat: int) -> None:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"date       {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"cpu        {cpu_model()}, {os.cpu_count()} cores ({usable} usable)")
    print(
        f"python     {platform.python_implementation()} {platform.python_version()}, "
        f"panoramisk {version('panoramisk')}, pbxlink {version('pbxlink')} @ {git_commit()}"
    )
    print(
        f"input      {len(stream.traces)} traces x {stream.copies} copies = "
        f"{stream.megabytes:.1f} MB, {stream.events:,} events, {stream.calls:,} calls "
        f"({stream.calls_per_copy} per copy), {len(stream.chunks)} chunks of {CHUNK // 1024} KiB"
    )
    print(f"timing     best of {repeat} (median in brackets), gc enabled")
    print()
    base = min(variants[0].times)
    header = (
        f"{'variant':<52} {'events/s':>18} {'MB/s':>6} {'calls/s':>8} "
        f"{'x panoramisk':>12} {'calls/s @140':>12}"
    )
    print(header)
    print("-" * len(header))
    for variant in variants:
        best, median = min(variant.times), statistics.median(variant.times)
        events_s = stream.events / best
        print(
            f"{variant.name:<52} {events_s:>9,.0f} ({stream.events / median / 1000:>5,.0f}k) "
            f"{stream.megabytes / best:>6.1f} {stream.calls / best:>8,.0f} "
            f"{base / best:>12.2f} {events_s / EVENTS_PER_CALL:>12,.0f}"
        )
    print()
    ours = base / min(variants[1].times)
    verdict = "met" if ours >= GOAL_RATIO else "NOT met"
    print(
        f"check      ok: {stream.calls:,} CallEnded = {stream.copies} x {stream.calls_per_copy}, "
        "each copy's records as the traces' own, all events seen by every parser"
    )
    print(f"goal       framing + tracking >= {GOAL_RATIO:g}x panoramisk: {verdict} ({ours:.2f}x)")
    print(f"           calls/s @140 = events/s / {EVENTS_PER_CALL} (real AMI events per call)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--copies", type=int, default=10, help="times the traces are repeated")
    ap.add_argument("--repeat", type=int, default=5, help="runs per variant; the best counts")
    ap.add_argument("--traces-dir", type=Path, default=DEFAULT_TRACES)
    ap.add_argument(
        "--traces",
        nargs="+",
        default=list(DEFAULT_GLOBS),
        metavar="GLOB",
        help="which traces, relative to --traces-dir (default: all of them)",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI: 2 copies, one run each; every check, no timing judged",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.copies, args.repeat = 2, 1
    if args.copies < 1 or args.repeat < 1 or args.copies * CHAN_STRIDE > 0xFFFFFFFF:
        ap.error("--copies and --repeat must be at least 1, --copies below 4096")
    if not args.traces_dir.is_dir():
        ap.error(f"traces not found at {args.traces_dir} (set PBXLINK_TRACES or --traces-dir)")
    stream = build_stream(args.traces_dir, args.traces, args.copies)
    variants = measure(stream, args.repeat)
    check(stream, variants)
    report(stream, variants, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
