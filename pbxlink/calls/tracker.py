"""The call tracker: AMI events in, call updates out. Sans-IO, like h11's `Connection`.

Nothing here reads a socket or a clock: every input carries its time `at` (epoch seconds) and
every method returns the updates it caused. The adapters at the edge (the live AMI link, the
trace replayer, the simulator) decide where events and time come from, and all of them drive
the tracker with the same few calls:

    feed(message, at)     one AMI event (or CoreShowChannel list item). `FullyBooted` is one
                          too: the link is up again, Asterisk restarted if it booted at
                          another moment (every call ends as partial), and the CoreShowChannel
                          list fed next says which channels survived
    tick(at)              time passes: calls silent for `call_timeout_s` end as partial
    link_down(at)         the AMI link was lost; events from now on may be missing
    adopt(stored)         after a daemon restart: the calls the previous run did not see end

Per-event handlers live in `pbxlink.calls.handlers`, in one dispatch table; they work on the
tracker's internal `Engine` (engine.py), which nothing outside this package holds. An event is
any `Mapping[str, str]` of its headers (the AMI framing's `Message` is a dict): the tracker
knows nothing of where events come from, so it imports nothing of `pbxlink.ami`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pbxlink.calls.engine import Engine
from pbxlink.calls.handlers import HANDLERS, subscription
from pbxlink.calls.record import CallRecord
from pbxlink.calls.resync import BOOT_TOLERANCE_S
from pbxlink.calls.rules import ChannelRules
from pbxlink.calls.updates import CallUpdate

__all__ = ["BOOT_TOLERANCE_S", "CallTracker", "TrackerConfig"]


@dataclass(slots=True)
class TrackerConfig:
    rules: ChannelRules = field(default_factory=ChannelRules)
    #: the PBX's time zone, for the `Cdr` event's AnswerTime (local time, whole seconds)
    pbx_timezone: dt.tzinfo = dt.UTC
    #: a call with no event for this long is ended as partial by `tick`
    call_timeout_s: float = 4 * 3600.0


class CallTracker:
    """The public face of the tracker: what the adapters call, and nothing else."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        config = config or TrackerConfig()
        self._engine = Engine(config)
        self._handlers = HANDLERS
        self._subscription = subscription(config.rules)

    def subscription(self) -> dict[str, tuple[bytes, ...] | None]:
        """The events (and VarSet variables) the tracker reads, for `AmiParser`."""
        return dict(self._subscription)

    def feed(self, message: Mapping[str, str], at: float) -> list[CallUpdate]:
        engine = self._engine
        handler = self._handlers.get(message.get("Event", ""))
        if handler is not None:
            handler(engine, message, at)
        out = engine.out
        if not out:  # most events change no record: the read path's common case
            return []
        engine.out = []
        return out

    def tick(self, at: float) -> list[CallUpdate]:
        """Calls silent for `call_timeout_s` end, partial; `tick(math.inf)` ends them all."""
        self._engine.expire(at)
        return self._engine.flush()

    def link_down(self, at: float) -> list[CallUpdate]:
        """From here on events may be missing: every call in progress becomes partial."""
        self._engine.link_down(at)
        return self._engine.flush()

    def adopt(self, seen: Iterable[tuple[CallRecord, float]]) -> None:
        """What a previous run of the daemon stored of the calls it did not see end: each one's
        latest record and when it was taken. Applied when the next resync is complete: a call
        Asterisk still has gets back everything that run knew; one it no longer has ends,
        partial, as last seen."""
        self._engine.adopted = list(seen)

    @property
    def active_calls(self) -> int:
        return len(self._engine.calls)

    @property
    def refused_transitions(self) -> int:
        """Phase changes the transition table refused (`state.TRANSITIONS`): 0 unless the
        tracker has a bug; a daemon may export it, the tests check it."""
        return self._engine.refused
