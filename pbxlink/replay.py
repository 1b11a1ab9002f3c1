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

from pbxlink.ami.framing import AmiParser, Banner
from pbxlink.calls.tracker import CallTracker
from pbxlink.calls.updates import CallEnded, CallUpdate

log = structlog.get_logger("pbxlink.replay")

CHUNK = 64 * 1024


def read_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def replay(
    chunks: Iterable[bytes], tracker: CallTracker, *, flush: bool = True
) -> Iterator[CallUpdate]:
    """Every update the stream causes; with `flush`, calls still open at the end end as partial."""
    parser = AmiParser({**tracker.subscription(), "FullyBooted": None})
    banners = 0
    at: float | None = None
    for chunk in chunks:
        for frame in parser.feed(chunk):
            if isinstance(frame, Banner):
                banners += 1
                if banners > 1 and at is not None:
                    yield from tracker.link_down(at)
                continue
            stamp = frame.get("Timestamp")
            if stamp is not None:
                try:
                    at = float(stamp)
                except ValueError:
                    log.warning("replay.bad_timestamp", value=stamp[:40])
            now = at if at is not None else 0.0
            if frame.get("Event") == "FullyBooted":
                try:
                    uptime = float(frame.get("Uptime", ""))
                except ValueError:
                    continue
                yield from tracker.link_up(now, uptime)
            else:
                yield from tracker.feed(frame, now)
    if flush and at is not None:
        yield from tracker.tick(at + tracker.config.call_timeout_s + 1)


def finished_calls(updates: Iterable[CallUpdate]) -> Iterator[CallEnded]:
    for update in updates:
        if isinstance(update, CallEnded):
            yield update
