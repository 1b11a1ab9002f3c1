"""Replay a recorded AMI stream through the framing and the tracker.

This is an adapter like the live link, with the trace as its socket: event times come from
the `Timestamp` header (`timestampevents = yes`); a message without one (action responses,
CoreShowChannel list items) takes the time of the last event before it, and one before any
event had a Timestamp the first Timestamp of the stream (`first_timestamp`). A capture with
no Timestamp at all has no times to tell: `pbxlink replay` then says so, and what it used.
A banner line after the first means the recorder reconnected: the tracker hears `link_down`;
the next `FullyBooted` (an event like any other, fed as the live link feeds it) and the
CoreShowChannel list that follows resynchronise it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from pbxlink.ami.framing import AmiParser, Banner, Frame, Message
from pbxlink.calls.tracker import CallTracker
from pbxlink.calls.updates import CallEnded, CallUpdate

log = structlog.get_logger("pbxlink.replay")

CHUNK = 64 * 1024
MAX_EPOCH = 1e11  # year 5138: a larger Timestamp is garbage, not a date


_STAMP = re.compile(rb"\r?\nTimestamp: *([0-9]+(?:\.[0-9]+)?)\r?\n")


@dataclass(slots=True)
class ReplayStats:
    """What a replay read: for the command's report of a capture it could not use well."""

    messages: int = 0  # AMI messages, those the tracker does not read included
    stamped: int = 0  # messages with a usable Timestamp header


def first_timestamp(chunks: Iterable[bytes]) -> float | None:
    """The first usable `Timestamp:` of a stream: the time of what comes before it."""
    tail = b""
    for chunk in chunks:
        data = tail + chunk
        for match in _STAMP.finditer(data):
            value = _timestamp(match.group(1).decode("ascii"))
            if value is not None:
                return value
        tail = data[-64:]
    return None


def read_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


class StreamDriver:
    """Turns a recorded session stream into tracker inputs.

    A banner after the first means the link was lost and made again; every message is an
    event for the tracker, `FullyBooted` included (the tracker decides what a boot means).
    """

    def __init__(self, tracker: CallTracker) -> None:
        self.tracker = tracker
        self.banners = 0
        self.last_at: float | None = None

    def frame(self, frame: Frame, at: float) -> list[CallUpdate]:
        if isinstance(frame, Banner):
            self.banners += 1
            if self.banners > 1 and self.last_at is not None:
                return self.tracker.link_down(self.last_at)
            return []
        self.last_at = at
        return self.tracker.feed(frame, at)


def replay(
    chunks: Iterable[bytes],
    tracker: CallTracker,
    *,
    flush: bool = True,
    parser: AmiParser | None = None,
    start_at: float = 0.0,
    stats: ReplayStats | None = None,
) -> Iterator[CallUpdate]:
    """Every update the stream causes; with `flush`, calls still open at the end end as partial.

    Messages before the first `Timestamp` take `start_at` (the command passes the stream's
    first Timestamp, or for a capture with none the file's time); `stats` counts what was read.
    The default parser reads only what the tracker subscribes to."""
    if parser is None:
        parser = AmiParser(tracker.subscription())
    stats = stats if stats is not None else ReplayStats()
    driver = StreamDriver(tracker)
    at = start_at
    for chunk in chunks:
        for frame in parser.feed(chunk):
            stamp = frame.get("Timestamp") if isinstance(frame, Message) else None
            stats.messages += isinstance(frame, Message)
            if stamp is not None:
                value = _timestamp(stamp)
                if value is None:
                    log.warning("replay.bad_timestamp", value=stamp[:40])
                else:
                    at = value
                    stats.stamped += 1
            yield from driver.frame(frame, at)
    stats.messages += parser.skipped_events
    for anomaly, count in sorted(parser.anomalies.items()):  # the framing counts, we tell
        log.warning(f"ami.{anomaly}", count=count)
    if flush:
        yield from tracker.tick(math.inf)  # every call still open ends, at its last event


def _timestamp(text: str) -> float | None:
    """Epoch seconds, or None for what cannot be one (nan, inf, 1e300, garbage)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value < MAX_EPOCH else None


def finished_calls(updates: Iterable[CallUpdate]) -> Iterator[CallEnded]:
    for update in updates:
        if isinstance(update, CallEnded):
            yield update
