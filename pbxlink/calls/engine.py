"""The tracker's working state and the helpers its handlers change it through.

`CallTracker` (tracker.py) is the public face: it hands each event to its handler
(handlers.py, and resync.py for what comes after a login) together with this `Engine`, and
returns the updates the engine collected.
Nothing outside `pbxlink/calls/` holds an `Engine`: its dicts and helpers are internal, free
to change with the handlers.

A call's phase (`Call.phase`, docs/tracker.md) is stored, and changed only by `Engine._move`,
which consults `TRANSITIONS`. A change the table does not allow is refused: the call keeps
its phase and `refused` counts it. h11 raises instead, but there a protocol violation is the
peer's fault to report; here the input is a stream from a PBX that the daemon must outlive,
garbled or not, and the records depend on the call's fields, not on its phase.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pbxlink.calls.record import CallRecord
from pbxlink.calls.rules import Kind, dialed_number
from pbxlink.calls.state import TRANSITIONS, Call, Channel, Leg, Phase, clean_cid
from pbxlink.calls.updates import (
    Answered,
    CallEnded,
    CallStarted,
    CallUpdate,
    Changed,
    RingEnded,
    Ringing,
    RingOutcome,
)

if TYPE_CHECKING:
    from pbxlink.calls.tracker import TrackerConfig

#: trunk endpoints learned from the channels seen (a bound against a hostile stream)
MAX_TRUNKS = 10_000
#: ended channels and calls remembered so that a late or duplicated event cannot revive them
REMEMBER_ENDED = 20_000


class Engine:
    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self.rules = config.rules
        self.channels: dict[str, Channel] = {}
        self.calls: dict[str, Call] = {}
        self.by_linkedid: dict[str, Call] = {}
        self.bridges: dict[str, set[str]] = {}
        self.ended: OrderedDict[str, None] = OrderedDict()
        #: the updates of the input being handled, each made with the call's phase after it
        self.out: list[CallUpdate] = []
        self.boot: float | None = None
        self.down_at: float | None = None
        self.resync_known: set[str] | None = None
        self.resync_seen: set[str] = set()
        self.adopted: list[tuple[CallRecord, float]] = []
        self.trunk_endpoints: set[str] = set()
        #: phase changes `TRANSITIONS` refused (none on any stream seen so far: a bug's trace)
        self.refused = 0

    # -- time and the link -----------------------------------------------------------------------

    def expire(self, at: float) -> None:
        """Calls with no event for `call_timeout_s` end, partial, at their last event."""
        limit = at - self.config.call_timeout_s
        for call in [c for c in self.calls.values() if c.last_at < limit]:
            call.partial = call.end_estimated = True
            self.end_call(call, call.last_at)

    def link_down(self, at: float) -> None:
        """From here on events may be missing: every call in progress becomes partial."""
        self.down_at = at
        for call in self.calls.values():
            call.partial = True
        self.resync_known = None

    # -- phases ---------------------------------------------------------------------------------

    def _move(self, call: Call, to: Phase) -> None:
        """The one writer of `Call.phase`: a change `TRANSITIONS` does not allow is refused and
        counted, the call keeps its phase (see the module's docstring)."""
        if to == call.phase:
            return
        if to in TRANSITIONS[call.phase]:
            call.phase = to
        else:
            self.refused += 1

    def settle(self, call: Call) -> None:
        """A leg, the queue or the answer changed: the call moves to the phase they imply
        (an unanswered call waits in the phase its legs say). Never to `ended`: that is
        `end_call`'s."""
        if call.ended_at is not None:
            return
        if call.answered_at is not None:  # on the read path: legs ending after an answer
            if call.phase != "answered":
                self._move(call, "answered")
            return
        to = call.waiting_phase()
        if to != call.phase:
            self._move(call, to)

    def flush(self) -> list[CallUpdate]:
        out, self.out = self.out, []
        return out

    # -- used by the handlers -------------------------------------------------------------------

    def classify(self, channel: str, context: str) -> tuple[Kind, str]:
        """The rules' kind, and a trunk for an endpoint seen as one before: a trunk's channel
        listed after a resync sits wherever the dialplan moved it, not in a trunk context."""
        kind, endpoint = self.rules.classify(channel, context)
        if kind is Kind.PHONE and endpoint in self.trunk_endpoints:
            return Kind.TRUNK, endpoint
        return kind, endpoint

    def call_of(self, uniqueid: str | None) -> Call | None:
        if not uniqueid:
            return None
        channel = self.channels.get(uniqueid)
        return channel.call if channel is not None else None

    def add_channel(self, msg: Mapping[str, str], at: float, created_at: float) -> Channel | None:
        """A new channel joins the call its Linkedid names, or starts a new one."""
        uid = msg.get("Uniqueid")
        name = msg.get("Channel")
        if not uid or not name or uid in self.channels or uid in self.ended:
            return None
        linkedid = msg.get("Linkedid") or uid
        context = msg.get("Context", "")
        kind, endpoint = self.classify(name, context)
        if kind is Kind.TRUNK:
            self.learn_trunk(endpoint)
        call = self.by_linkedid.get(linkedid) or self.call_of(linkedid)
        if call is None:
            if linkedid in self.ended:
                return None
            call = Call(call_id=linkedid, started_at=created_at, last_at=at)
            self.calls[call.call_id] = call
            started = True
        else:
            started = False
        channel = Channel(
            uniqueid=uid,
            name=name,
            kind=kind,
            endpoint=endpoint,
            extension=self.rules.extension(endpoint) if kind is Kind.PHONE else None,
            linkedid=linkedid,
            context=context,
            exten=msg.get("Exten", ""),
            cid_num=clean_cid(msg.get("CallerIDNum")),
            cid_name=clean_cid(msg.get("CallerIDName")),
            created_at=created_at,
            call=call,
        )
        self.channels[uid] = channel
        call.channels[uid] = channel
        if linkedid not in self.by_linkedid:
            self.by_linkedid[linkedid] = call
            call.linkedids.add(linkedid)
        if kind is not Kind.LOCAL and (
            call.caller is None or uid == linkedid or created_at < call.caller.created_at
        ):
            call.caller = channel  # the first channel; after a resync, the oldest one listed
            if call.legs:  # a leg to the new caller no longer rings for the call
                self.settle(call)
        if started:
            self.out.append(CallStarted(at, call.record(at), phase=call.phase))
        return channel

    def touch(self, msg: Mapping[str, str], at: float) -> Channel | None:
        """The known channel an event is about, with its call marked alive at `at`."""
        channel = self.channels.get(msg.get("Uniqueid", ""))
        if channel is not None:
            channel.call.last_at = at
        return channel

    def begin_leg(
        self,
        dialer: Channel | None,
        dest: Channel,
        dial_string: str,
        at: float,
        *,
        originate: bool = False,
    ) -> None:
        call = dest.call
        if dialer is not None and dialer.call is not call:
            call = self.merge(dialer.call, call, at)
        if dest.uniqueid in call.legs:
            return
        if originate:
            dest.originated = True
        leg = Leg(dest, dialer.uniqueid if dialer else None, dialed_number(dial_string), at)
        call.legs[dest.uniqueid] = leg
        if dest.kind is Kind.PHONE and dest is not call.caller and dest.extension:
            if dest.extension not in call.rung:
                call.rung.append(dest.extension)
            leg.announced = True
            call.offered(at)
        if dest is not call.caller and call.answered_at is None and call.phase != "ringing":
            self._move(call, "ringing")  # a new leg rings: no need to look at the others
        if leg.announced:
            self.out.append(Ringing(at, call.record(at), dest.extension, phase=call.phase))

    def end_leg(self, leg: Leg, outcome: RingOutcome, at: float) -> None:
        if not leg.ringing:
            return
        call = leg.dest.call
        if outcome in ("cancelled", "no_answer", "unknown") and leg.hint is not None:
            outcome = leg.hint
        if outcome in ("cancelled", "no_answer", "unknown") and call.answered_at is not None:
            outcome = "answered_elsewhere"
        leg.outcome = outcome
        dest = leg.dest
        counts = dest is not call.caller and (
            dest.kind is Kind.PHONE or (dest.kind is Kind.TRUNK and leg.dialer is not None)
        )
        if counts and outcome != "answered":
            call.last_outcome = outcome
        self.settle(call)
        if leg.announced and dest.extension:
            self.out.append(
                RingEnded(at, call.record(at), dest.extension, outcome, phase=call.phase)
            )
        if outcome == "answered" and call.answered_at is not None:
            if dest.extension and self._dialed_by_caller(leg):  # a blind transfer's target
                self.out.append(Answered(at, call.record(at), dest.extension, phase=call.phase))
        elif outcome == "answered":
            self.mark_answered(call, dest, at)

    def _dialed_by_caller(self, leg: Leg) -> bool:
        """The caller's channel dialed this leg (itself, or through a Local pair it dialed):
        whoever answers talks to the caller. A consult call's leg is dialed by the operator."""
        caller = leg.dest.call.caller
        dialer = self.channels.get(leg.dialer or "")
        if caller is None or dialer is None:
            return False
        if dialer is caller:
            return True
        return dialer.kind is Kind.LOCAL and any(
            other.dest.kind is Kind.LOCAL
            and other.dest.endpoint == dialer.endpoint
            and other.dialer == caller.uniqueid
            for other in leg.dest.call.legs.values()
        )

    def mark_answered(self, call: Call, by: Channel, at: float, *, estimated: bool = False) -> None:
        if call.answered_at is not None or by is call.caller or by.kind is Kind.LOCAL:
            return
        direction = call.direction
        if by.kind is Kind.PHONE:
            if direction == "outbound" and call.caller is not None and not call.caller.originated:
                return  # an outbound call is answered by the far end, not by a phone
            call.answered_by = by.extension
        elif direction != "outbound":
            leg = call.legs.get(by.uniqueid)
            call.answered_by = leg.number if leg is not None and leg.number else None
        call.answered_at = at
        call.answer_estimated = estimated
        self._move(call, "answered")
        leg = call.legs.get(by.uniqueid)
        if leg is not None and leg.ringing:  # answered while we were not looking
            leg.outcome = "answered"
            if leg.announced and by.extension:
                self.out.append(
                    RingEnded(at, call.record(at), by.extension, "answered", phase=call.phase)
                )
        self.out.append(Answered(at, call.record(at), call.answered_by, phase=call.phase))

    def merge(self, keep: Call, gone: Call, at: float) -> Call:
        """Two calls met (shared bridge, transfer, pickup): the older one absorbs the other.

        The absorbed call gets its own final record first: it really happened (a consult call,
        a pickup), and every call that started ends exactly once.
        """
        if keep is gone:
            return keep
        if gone.started_at < keep.started_at:
            keep, gone = gone, keep
        if gone.answered_at is None and gone.caller is not None:
            gone.answered_at = at  # its caller is now talking to the other call
            self._move(gone, "answered")
        # a phone still ringing for the absorbed call rings for the merged one from now on:
        # its ring ends under the old call and starts under the new (each told once)
        moving = [
            leg.dest.extension
            for leg in gone.legs.values()
            if leg.ringing and leg.announced and leg.dest.extension
        ]
        for ext in moving:
            self.out.append(RingEnded(at, gone.record(at), ext, "unknown", phase=gone.phase))
        gone.ended_at = at
        self._move(gone, "ended")
        self.out.append(CallEnded(at, gone.record(at), phase=gone.phase))
        for uid, channel in gone.channels.items():
            channel.call = keep
            keep.channels[uid] = channel
        for uid, leg in gone.legs.items():
            keep.legs.setdefault(uid, leg)
        for ext in gone.rung:
            if ext not in keep.rung:
                keep.rung.append(ext)
        if gone.offered_at is not None and keep.offered_at is None:
            keep.offered(gone.offered_at)
        for linkedid in gone.linkedids:
            self.by_linkedid[linkedid] = keep
        keep.linkedids |= gone.linkedids
        keep.recording = keep.recording or gone.recording
        keep.last_at = max(keep.last_at, gone.last_at)
        self.calls.pop(gone.call_id, None)
        self.remember(gone.call_id)
        self.settle(keep)
        for ext in moving:
            self.out.append(Ringing(at, keep.record(at), ext, phase=keep.phase))
        return keep

    def remove_channel(self, channel: Channel, at: float) -> None:
        call = channel.call
        self.channels.pop(channel.uniqueid, None)
        call.channels.pop(channel.uniqueid, None)
        self.leave_bridge(channel)
        self.remember(channel.uniqueid)
        leg = call.legs.get(channel.uniqueid)
        if leg is not None and leg.ringing:
            self.end_leg(leg, "unknown", at)
        if not call.channels:
            self.end_call(call, at)

    def enter_bridge(self, channel: Channel, bridge_id: str, mixing: bool, at: float) -> None:
        self.leave_bridge(channel)
        members = self.bridges.setdefault(bridge_id, set())
        channel.bridge = bridge_id
        if mixing:  # a two-party bridge joins calls; a conference or parking lot does not
            for uid in list(members):
                other = self.channels.get(uid)
                if other is not None and other.call is not channel.call:
                    self.merge(other.call, channel.call, at)
        members.add(channel.uniqueid)

    def answer_by_bridge(self, call: Call, at: float, *, estimated: bool = False) -> None:
        """Answered if a phone (or the far end) sits in one bridge with the caller, directly or
        across Local pairs (a queue or ring group with Local members, not optimised away)."""
        caller = call.caller
        if call.answered_at is not None or caller is None or caller.bridge is None:
            return
        holder = self._holder(caller)
        if holder is not None:
            self.mark_answered(call, holder, at, estimated=estimated)

    def _holder(self, caller: Channel) -> Channel | None:
        """The channel that is up and talking to `caller`, following Local pairs."""
        bridges, seen = [caller.bridge], {caller.uniqueid}
        while bridges:
            for uid in self.bridges.get(bridges.pop(), ()):
                other = self.channels.get(uid)
                if other is None or other.uniqueid in seen or not other.up:
                    continue
                seen.add(uid)
                if other.kind is not Kind.LOCAL:
                    return other
                for half in other.call.channels.values():  # its other half, and its bridge
                    if (
                        half.kind is Kind.LOCAL
                        and half.endpoint == other.endpoint
                        and half.uniqueid not in seen
                        and half.bridge is not None
                    ):
                        seen.add(half.uniqueid)
                        bridges.append(half.bridge)
        return None

    def leave_bridge(self, channel: Channel) -> None:
        if channel.bridge is None:
            return
        members = self.bridges.get(channel.bridge)
        if members is not None:
            members.discard(channel.uniqueid)
            if not members:
                del self.bridges[channel.bridge]
        channel.bridge = None

    def end_call(self, call: Call, at: float) -> None:
        if call.call_id not in self.calls:
            return
        for leg in call.legs.values():
            if leg.ringing:
                self.end_leg(leg, "unknown", at)
        call.ended_at = max(at, call.started_at)
        for channel in list(call.channels.values()):
            self.channels.pop(channel.uniqueid, None)
            self.leave_bridge(channel)
            self.remember(channel.uniqueid)
        call.channels.clear()
        for linkedid in call.linkedids:
            self.by_linkedid.pop(linkedid, None)
        del self.calls[call.call_id]
        self.remember(call.call_id)
        self._move(call, "ended")
        self.out.append(CallEnded(at, call.record(at), phase=call.phase))

    def answer_from_cdr(
        self, call: Call, extension: str | None, answered_at: float, at: float
    ) -> None:
        """A `Cdr` says `extension` (None: the far end of an outbound call) answered at
        `answered_at`, unseen (in a gap)."""
        call.answered_at, call.answered_by = answered_at, extension
        call.answer_estimated, call.answer_from_cdr = False, True
        self._move(call, "answered")
        if extension is not None and extension not in call.rung:
            call.rung.append(extension)
        self.out.append(Answered(at, call.record(at), extension, phase=call.phase))

    def changed(self, call: Call, at: float) -> None:
        """The call's record changed in a way no other update tells: say so (`Changed`)."""
        self.out.append(Changed(at, call.record(at), phase=call.phase))

    def learn_trunk(self, endpoint: str) -> None:
        """`endpoint` is a trunk: its channels are, whatever context they are in later."""
        if endpoint in self.trunk_endpoints or len(self.trunk_endpoints) >= MAX_TRUNKS:
            return
        self.trunk_endpoints.add(endpoint)
        for channel in self.channels.values():
            leg = channel.call.legs.get(channel.uniqueid)
            if (
                channel.kind is Kind.PHONE
                and channel.endpoint == endpoint
                and (leg is None or not leg.announced)  # its ring was told: its end will be
            ):
                channel.kind, channel.extension = Kind.TRUNK, None

    # -- internals ------------------------------------------------------------------------------

    def remember(self, key: str) -> None:
        ended = self.ended
        ended[key] = None
        if len(ended) > REMEMBER_ENDED:
            ended.popitem(last=False)
