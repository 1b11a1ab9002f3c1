"""The tracker's working state: channels, the phone legs they dial, and the calls they form.

A call is a set of channels that belong together. Asterisk's Linkedid says so for channels
created by the call's own dialplan, but not for channels that join later through a bridge,
a pickup or an attended transfer; so a call owns its channels, and two calls merge when their
channels meet. Everything a record needs is kept here; `Call.record` derives the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pbxlink.calls.record import CallRecord, Direction, Estimated, Status
from pbxlink.calls.rules import Kind
from pbxlink.calls.updates import Phase, RingOutcome

UNKNOWN = "<unknown>"

#: the phase changes a call can go through, h11-style: state as data. `Engine._move` is the
#: one writer of `Call.phase` and refuses (and counts) any change not listed here. An
#: unanswered call moves freely between its waiting phases; an answer and an end are final.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    "dialplan": frozenset({"queued", "ringing", "answered", "ended"}),
    "queued": frozenset({"dialplan", "ringing", "answered", "ended"}),
    "ringing": frozenset({"dialplan", "queued", "answered", "ended"}),
    "answered": frozenset({"ended"}),
    "ended": frozenset(),
}


def clean_cid(value: str | None) -> str:
    """Asterisk writes an empty caller ID as the literal `<unknown>`."""
    if not value or value == UNKNOWN:
        return ""
    return value


@dataclass(slots=True, eq=False)
class Channel:
    uniqueid: str
    name: str
    kind: Kind
    endpoint: str  # phone/trunk endpoint, or the Local pair key
    extension: str | None
    linkedid: str
    context: str
    exten: str
    cid_num: str
    cid_name: str
    created_at: float
    call: Call
    up: bool = False
    bridge: str | None = None
    originated: bool = False  # created by an AMI Originate, not by a caller
    app: str = ""  # the dialplan application CoreShowChannel last listed it in
    app_data: str = ""


@dataclass(slots=True, eq=False)
class Leg:
    """One channel being dialed (a Dial, a queue offer, a ring-group member)."""

    dest: Channel
    dialer: str | None  # uniqueid of the dialing channel (None for Originate)
    number: str  # the number in the DialString
    began_at: float
    outcome: RingOutcome | None = None
    hint: RingOutcome | None = None  # what the queue or a Local wrapper said of this offer
    announced: bool = False  # a Ringing went out for it, so its end must be told too

    @property
    def ringing(self) -> bool:
        return self.outcome is None


@dataclass(slots=True, eq=False)
class Call:
    call_id: str
    started_at: float
    last_at: float
    channels: dict[str, Channel] = field(default_factory=dict)
    legs: dict[str, Leg] = field(default_factory=dict)
    linkedids: set[str] = field(default_factory=set)
    caller: Channel | None = None
    did: str | None = None
    rung: list[str] = field(default_factory=list)
    offered_at: float | None = None
    answered_at: float | None = None
    answered_by: str | None = None
    answer_estimated: bool = False  # answered while the link was down: a guess until a Cdr
    answer_from_cdr: bool = False  # dated by a Cdr (whole seconds): an earlier one may come
    end_estimated: bool = False  # ended while the link or the daemon was down
    transferred_to: list[str] = field(default_factory=list)
    queue: str | None = None
    in_queue: bool = False
    ivr_digits: str = ""
    recording: str | None = None
    voicemail: bool = False
    caller_gave_up: bool = False
    last_outcome: RingOutcome | None = None
    hangup_cause: int | None = None
    partial: bool = False
    ended_at: float | None = None
    #: what a previous run of the daemon stored of this call: its direction and parties win
    #: over what the channels say after a restart (a resync never downgrades what was known)
    prior: CallRecord | None = None
    #: stored, not derived: written only by `Engine._move`, through `TRANSITIONS`
    phase: Phase = "dialplan"

    # -- derived ----------------------------------------------------------------------------

    def waiting_phase(self) -> Phase:
        """The phase of an unanswered call in progress: its legs and the queue say it."""
        caller = self.caller
        for leg in self.legs.values():  # a plain loop: this runs at every leg change
            if leg.outcome is None and leg.dest is not caller:  # ringing, to another
                return "ringing"
        return "queued" if self.in_queue else "dialplan"

    @property
    def direction(self) -> Direction:
        caller = self.caller
        if caller is None:
            return "internal"
        if caller.kind is Kind.TRUNK:
            return "outbound" if caller.originated else "inbound"
        if any(leg.dest.kind is Kind.TRUNK for leg in self.legs.values()):
            return "outbound"
        return "internal"

    def status(self, direction: Direction) -> Status:
        """The final status; while the call goes on, the one it would end with now (what a
        restart must find stored: a busy ring, the caller gone, voicemail). Popups show an
        unanswered call in progress as `no_answer` (hub/card.py, docs/popup-protocol.md)."""
        if self.answered_at is not None:
            return "answered"
        if self.voicemail:
            return "voicemail"
        if self.caller_gave_up:
            return "abandoned" if direction == "inbound" else "no_answer"
        outcome = self.last_outcome
        if outcome == "busy":
            return "busy"
        if outcome in ("no_answer", "cancelled", "answered_elsewhere"):
            return "no_answer"
        if outcome == "failed":
            return "failed"
        if self.ended_at is None or any(not leg.ringing for leg in self.legs.values()):
            return "no_answer"  # still ringing (or in the IVR): nothing has failed yet
        return "failed"

    def offered(self, at: float) -> None:
        """A person could take the call from now on (first ring or queue join)."""
        if self.offered_at is None or at < self.offered_at:
            self.offered_at = at

    def record(self, now: float) -> CallRecord:
        direction = self.direction
        caller = self.caller
        end = self.ended_at if self.ended_at is not None else now
        if caller is None:
            number = name = called = ""
        elif direction == "inbound":
            number, name = caller.cid_num, caller.cid_name
            called = self.did or (caller.exten if caller.exten not in ("s", "") else "")
        else:
            number = self._operator_number(caller)
            name = caller.cid_name if caller.kind is Kind.PHONE else ""
            called = self._called_from_inside(direction, caller)
        prior = self.prior
        if prior is not None:
            number = prior.caller_number or number
            name = prior.caller_name or name
            # inbound (a trunk called) and outbound (a trunk was dialed) are facts; "internal"
            # is only what a call is until it reaches a trunk, which the resync may show
            if prior.direction != "internal" or direction == "internal":
                direction = prior.direction
                called = prior.called_number or called
        answered = self.answered_at
        wait = (answered if answered is not None else end) - self.started_at
        talk = end - answered if answered is not None else 0.0
        return CallRecord(
            call_id=self.call_id,
            started_at=self.started_at,
            offered_at=self.offered_at,
            answered_at=answered,
            ended_at=self.ended_at,
            direction=direction,
            caller_number=number,
            caller_name=name,
            called_number=called,
            extensions_rung=list(self.rung),
            answered_by=self.answered_by,
            status=self.status(direction),
            wait_s=round(max(wait, 0.0), 3),
            talk_s=round(max(talk, 0.0), 3),
            hangup_cause=self.hangup_cause,
            queue=self.queue,
            ivr_digits=self.ivr_digits,
            transferred_to=list(self.transferred_to),
            recording=self.recording,
            partial=self.partial,
            estimated=self._estimated(),
        )

    def _estimated(self) -> list[Estimated]:
        out: list[Estimated] = []
        if self.answer_estimated and self.answered_at is not None:
            out.append("answered_at")
        if self.end_estimated and self.ended_at is not None:
            out.append("ended_at")
        return out

    def _operator_number(self, caller: Channel) -> str:
        if caller.extension is not None:
            return caller.extension
        for leg in self.legs.values():  # originated trunk-first: the operator is dialed later
            if leg.dest.extension is not None:
                return leg.dest.extension
        return caller.cid_num

    def _called_from_inside(self, direction: Direction, caller: Channel) -> str:
        if direction == "outbound":
            for leg in self.legs.values():
                if leg.dest.kind is Kind.TRUNK and leg.number:
                    return leg.number
            if caller.kind is Kind.TRUNK:
                return caller.exten if caller.exten not in ("s", "") else caller.cid_num
        if caller.exten not in ("s", ""):
            return caller.exten
        for leg in self.legs.values():
            if leg.dest is not caller and leg.number:
                return leg.number
        return ""
