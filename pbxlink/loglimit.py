"""Log lines that anyone can cause from outside, at most a few a minute per event.

A refused token, a foreign origin or a garbled hello costs whoever sends it nothing, and each
was one journal line: a script could fill the disk and bury the lines that matter. A
`LogLimit` lets `RATE` lines of each event through and holds the rest back; the next line
it lets through says how many were held back (`suppressed`). Every occurrence is counted,
logged or not, and /metrics shows the counts (`pbxlink_refused_total`,
`pbxlink_log_suppressed_total`), so a flood is visible without reading the journal.

The window is the `limits` package's moving window in memory: a maintained, tested rate
limiter rather than one more hand-written counter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

RATE = "10/minute"


class Logger(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...


class LogLimit:
    """`warning(log, event, **fields)` writes the line unless `event` is over its rate."""

    def __init__(self, events: Iterable[str] = (), rate: str = RATE) -> None:
        self.rate = parse(rate)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        #: event -> every occurrence, logged or not (the events named up front start at 0)
        self.seen: dict[str, int] = dict.fromkeys(events, 0)
        #: event -> lines held back, ever
        self.suppressed: dict[str, int] = dict.fromkeys(events, 0)
        self._held: dict[str, int] = {}  # event -> held back since its last line

    def warning(self, log: Logger, event: str, **fields: Any) -> bool:
        """Count `event`; log it at warning level if within the rate. True: written."""
        self.seen[event] = self.seen.get(event, 0) + 1
        if not self._limiter.hit(self.rate, event):
            self.suppressed[event] = self.suppressed.get(event, 0) + 1
            self._held[event] = self._held.get(event, 0) + 1
            return False
        held = self._held.pop(event, 0)
        if held:
            fields["suppressed"] = held
        log.warning(event, **fields)
        return True
