"""Replay a recorded AMI stream through the framing and the tracker.

This is an adapter like the live link, with the trace as its socket: event times come from
the `Timestamp` header (`timestampevents = yes`); a message without one (action responses,
CoreShowChannel list items) takes the time of the last event before it. A banner line after
the first means the recorder reconnected: the tracker hears `link_down`, then `link_up` at the
next `FullyBooted`, and the CoreShowChannel list that follows resynchronises it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import structlog

from pbxlink.ami.framing import AmiParser, Banner, Frame, Message
from pbxlink.calls.tracker import CallTracker
from pbxlink.calls.updates import CallEnded, CallUpdate

log = structlog.get_logger("pbxlink.replay")

CHUNK = 64 * 1024
MAX_EPOCH = 1e11  # year 5138: a larger Timestamp is garbage, not a date


def read_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


class StreamDriver:
    """Turns a recorded session stream into tracker inputs.

    A banner after the first means the link was lost and made again; `FullyBooted` carries
    Asterisk's uptime; every other message is an event for the tracker.
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
        if frame.get("Event") == "FullyBooted":
            try:
                uptime = float(frame.get("Uptime", ""))
            except ValueError:
                return []
            return self.tracker.link_up(at, uptime)
        return self.tracker.feed(frame, at)


def replay(
    chunks: Iterable[bytes],
    tracker: CallTracker,
    *,
    flush: bool = True,
    parser: AmiParser | None = None,
) -> Iterator[CallUpdate]:
    """Every update the stream causes; with `flush`, calls still open at the end end as partial.

    The default parser reads only what the tracker subscribes to."""
    if parser is None:
        parser = AmiParser({**tracker.subscription(), "FullyBooted": None})
    driver = StreamDriver(tracker)
    at: float | None = None
    latest = 0.0  # the flush must reach every call, even if time went backwards at the end
    for chunk in chunks:
        for frame in parser.feed(chunk):
            stamp = frame.get("Timestamp") if isinstance(frame, Message) else None
            if stamp is not None:
                value = _timestamp(stamp)
                if value is None:
                    log.warning("replay.bad_timestamp", value=stamp[:40])
                else:
                    at = value
                    latest = max(latest, value)
            yield from driver.frame(frame, at if at is not None else 0.0)
    if flush:
        yield from tracker.tick(latest + tracker.config.call_timeout_s + 1)


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
