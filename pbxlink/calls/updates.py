"""What the tracker says happened. Each update carries a snapshot of the call at that moment.

Consumers (call log, popups, supervisors) dispatch on the class; none of them needs to look at
AMI events. An extension's ring ends exactly once, with a reason that tells a missed call
(`no_answer`, `busy`) from a phone that rang while a colleague answered (`answered_elsewhere`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pbxlink.calls.record import CallRecord

RingOutcome = Literal[
    "answered", "answered_elsewhere", "no_answer", "busy", "cancelled", "failed", "unknown"
]

#: where a call is (docs/tracker.md, "A call's phases"); `state.TRANSITIONS` says how it moves
Phase = Literal["dialplan", "queued", "ringing", "answered", "ended"]


@dataclass(slots=True, frozen=True)
class CallUpdate:
    at: float
    call: CallRecord
    #: the call's phase once this update happened; None for an update not made by the
    #: tracker (tests, simulations). Consumers need not read it: the tests check the
    #: tracker's state machine through it
    phase: Phase | None = field(default=None, kw_only=True)

    @property
    def call_id(self) -> str:
        return self.call.call_id


@dataclass(slots=True, frozen=True)
class CallStarted(CallUpdate):
    """A new call appeared (first channel seen, or found running after a resync)."""


@dataclass(slots=True, frozen=True)
class Ringing(CallUpdate):
    """An operator's phone started to ring for this call."""

    extension: str


@dataclass(slots=True, frozen=True)
class RingEnded(CallUpdate):
    """An operator's phone stopped ringing for this call."""

    extension: str
    outcome: RingOutcome


@dataclass(slots=True, frozen=True)
class Answered(CallUpdate):
    """The call was answered: by an operator (`extension`), or, outbound, by the far end.
    Again when a blind transfer's or a redirect's target picks up (`extension` the target):
    the call has a new holder, while the record's `answered_by` stays who answered first."""

    extension: str | None


@dataclass(slots=True, frozen=True)
class Transferred(CallUpdate):
    """The call was transferred (blind or attended) to `extension`."""

    extension: str
    kind: Literal["blind", "attended"]


@dataclass(slots=True, frozen=True)
class Changed(CallUpdate):
    """The call's record changed in a way no other update tells (an IVR digit, a queue join,
    the recording, the DID, fields a previous run knew): what a restart must find stored."""


@dataclass(slots=True, frozen=True)
class CallEnded(CallUpdate):
    """The final record. Emitted exactly once per call."""


@dataclass(slots=True, frozen=True)
class TooLong(CallUpdate):
    """The call's talk time passed `threshold_s` while it still goes on: supervisors may step
    in now, not read about it in the log later. Emitted at most once per call."""

    threshold_s: float
    talk_s: float
