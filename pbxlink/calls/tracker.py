"""The call tracker: AMI events in, call updates out. Sans-IO, like h11's `Connection`.

Nothing here reads a socket or a clock: every input carries its time `at` (epoch seconds) and
every method returns the updates it caused. The adapters at the edge (the live AMI link, the
trace replayer, the simulator) decide where events and time come from.

Inputs
    feed(message, at)     one AMI event (or CoreShowChannel list item)
    tick(at)              time passes: calls silent for `call_timeout_s` end as partial
    link_down(at)         the AMI link was lost; events from now on may be missing
    link_up(at, uptime)   logged in again; `uptime` is FullyBooted's Uptime. Asterisk restarted
                          if it booted at another moment: every call ends as partial. Otherwise
                          the CoreShowChannel list fed next says which channels survived.

Per-event handlers live in `pbxlink.calls.handlers`, in one dispatch table. An event is any
`Mapping[str, str]` of its headers (the AMI framing's `Message` is a dict): the tracker knows
nothing of where events come from, so it imports nothing of `pbxlink.ami`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pbxlink.calls.handlers import HANDLERS, subscription
from pbxlink.calls.record import CallRecord, Status
from pbxlink.calls.rules import ChannelRules, Kind, dialed_number
from pbxlink.calls.state import Call, Channel, Leg, clean_cid
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

#: how far FullyBooted's boot moment may move before we call it a restart (Uptime is whole s)
BOOT_TOLERANCE_S = 5.0
#: trunk endpoints learned from the channels seen (a bound against a hostile stream)
MAX_TRUNKS = 10_000
#: ended channels and calls remembered so that a late or duplicated event cannot revive them
REMEMBER_ENDED = 20_000


@dataclass(slots=True)
class TrackerConfig:
    rules: ChannelRules = field(default_factory=ChannelRules)
    #: the PBX's time zone, for the `Cdr` event's AnswerTime (local time, whole seconds)
    pbx_timezone: dt.tzinfo = dt.UTC
    #: a call with no event for this long is ended as partial by `tick`
    call_timeout_s: float = 4 * 3600.0


class CallTracker:
    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.rules = self.config.rules
        self._handlers = HANDLERS
        self._subscription = subscription(self.rules)
        self.channels: dict[str, Channel] = {}
        self.calls: dict[str, Call] = {}
        self._by_linkedid: dict[str, Call] = {}
        self.bridges: dict[str, set[str]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._out: list[CallUpdate] = []
        self._boot: float | None = None
        self._down_at: float | None = None
        self._resync_known: set[str] | None = None
        self._resync_seen: set[str] = set()
        self._adopted: list[tuple[CallRecord, float]] = []
        self._trunk_endpoints: set[str] = set()

    # -- public API -----------------------------------------------------------------------------

    def subscription(self) -> dict[str, tuple[bytes, ...] | None]:
        """The events (and VarSet variables) the tracker reads, for `AmiParser`."""
        return dict(self._subscription)

    def feed(self, message: Mapping[str, str], at: float) -> list[CallUpdate]:
        handler = self._handlers.get(message.get("Event", ""))
        if handler is not None:
            handler(self, message, at)
        return self._flush()

    def tick(self, at: float) -> list[CallUpdate]:
        limit = at - self.config.call_timeout_s
        for call in [c for c in self.calls.values() if c.last_at < limit]:
            call.partial = call.end_estimated = True
            self.end_call(call, call.last_at)
        return self._flush()

    def link_down(self, at: float) -> list[CallUpdate]:
        """From here on events may be missing: every call in progress becomes partial."""
        self._down_at = at
        for call in self.calls.values():
            call.partial = True
        self._resync_known = None
        return self._flush()

    def link_up(self, at: float, uptime: float) -> list[CallUpdate]:
        boot = at - uptime
        if self._boot is not None and abs(boot - self._boot) > BOOT_TOLERANCE_S:
            gone = self._down_at if self._down_at is not None else at
            for call in list(self.calls.values()):
                call.partial = call.end_estimated = True  # died with Asterisk, about then
                self.end_call(call, max(gone, call.last_at))
        self._boot = boot
        self._resync_known = set(self.channels)
        self._resync_seen = set()
        return self._flush()

    def adopt(self, seen: Iterable[tuple[CallRecord, float]]) -> None:
        """What a previous run of the daemon stored of the calls it did not see end: each one's
        latest record and when it was taken. Applied when the next resync is complete: a call
        Asterisk still has gets back everything that run knew; one it no longer has ends,
        partial, as last seen."""
        self._adopted = list(seen)

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    # -- used by the handlers -------------------------------------------------------------------

    def classify(self, channel: str, context: str) -> tuple[Kind, str]:
        """The rules' kind, and a trunk for an endpoint seen as one before: a trunk's channel
        listed after a resync sits wherever the dialplan moved it, not in a trunk context."""
        kind, endpoint = self.rules.classify(channel, context)
        if kind is Kind.PHONE and endpoint in self._trunk_endpoints:
            return Kind.TRUNK, endpoint
        return kind, endpoint

    def emit(self, update: CallUpdate) -> None:
        self._out.append(update)

    def call_of(self, uniqueid: str | None) -> Call | None:
        if not uniqueid:
            return None
        channel = self.channels.get(uniqueid)
        return channel.call if channel is not None else None

    def add_channel(self, msg: Mapping[str, str], at: float, created_at: float) -> Channel | None:
        """A new channel joins the call its Linkedid names, or starts a new one."""
        uid = msg.get("Uniqueid")
        name = msg.get("Channel")
        if not uid or not name or uid in self.channels or uid in self._ended:
            return None
        linkedid = msg.get("Linkedid") or uid
        context = msg.get("Context", "")
        kind, endpoint = self.classify(name, context)
        if kind is Kind.TRUNK:
            self._learn_trunk(endpoint)
        call = self._by_linkedid.get(linkedid) or self.call_of(linkedid)
        if call is None:
            if linkedid in self._ended:
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
        if linkedid not in self._by_linkedid:
            self._by_linkedid[linkedid] = call
            call.linkedids.add(linkedid)
        if kind is not Kind.LOCAL and (
            call.caller is None or uid == linkedid or created_at < call.caller.created_at
        ):
            call.caller = channel  # the first channel; after a resync, the oldest one listed
        if started:
            self.emit(CallStarted(at, call.record(at)))
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
            self.emit(Ringing(at, call.record(at), dest.extension))

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
        if leg.announced and dest.extension:
            self.emit(RingEnded(at, call.record(at), dest.extension, outcome))
        if outcome == "answered" and call.answered_at is not None:
            if dest.extension and self._dialed_by_caller(leg):  # a blind transfer's target
                self.emit(Answered(at, call.record(at), dest.extension))
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
        leg = call.legs.get(by.uniqueid)
        if leg is not None and leg.ringing:  # answered while we were not looking
            leg.outcome = "answered"
            if leg.announced and by.extension:
                self.emit(RingEnded(at, call.record(at), by.extension, "answered"))
        self.emit(Answered(at, call.record(at), call.answered_by))

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
        # a phone still ringing for the absorbed call rings for the merged one from now on:
        # its ring ends under the old call and starts under the new (each told once)
        moving = [
            leg.dest.extension
            for leg in gone.legs.values()
            if leg.ringing and leg.announced and leg.dest.extension
        ]
        for ext in moving:
            self.emit(RingEnded(at, gone.record(at), ext, "unknown"))
        gone.ended_at = at
        self.emit(CallEnded(at, gone.record(at)))
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
            self._by_linkedid[linkedid] = keep
        keep.linkedids |= gone.linkedids
        keep.recording = keep.recording or gone.recording
        keep.last_at = max(keep.last_at, gone.last_at)
        self.calls.pop(gone.call_id, None)
        self._remember(gone.call_id)
        for ext in moving:
            self.emit(Ringing(at, keep.record(at), ext))
        return keep

    def remove_channel(self, channel: Channel, at: float) -> None:
        call = channel.call
        self.channels.pop(channel.uniqueid, None)
        call.channels.pop(channel.uniqueid, None)
        self.leave_bridge(channel)
        self._remember(channel.uniqueid)
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
            self._remember(channel.uniqueid)
        call.channels.clear()
        for linkedid in call.linkedids:
            self._by_linkedid.pop(linkedid, None)
        del self.calls[call.call_id]
        self._remember(call.call_id)
        self.emit(CallEnded(at, call.record(at)))

    def resync_seen(self, uniqueid: str) -> None:
        if self._resync_known is not None:
            self._resync_seen.add(uniqueid)

    def resync_done(self, at: float) -> None:
        """CoreShowChannelsComplete: the list is whole. Channels dialed in the gap become legs,
        a phone holding the caller (directly or across a Local pair) answered in the gap,
        channels we knew of that Asterisk no longer has are gone, and the calls a previous
        run stored (`adopt`) are finished or resumed."""
        if self._resync_known is None:
            return
        vanished = self._resync_known - self._resync_seen
        listed = self._resync_seen
        self._resync_known = None
        self._resync_seen = set()
        down = self._down_at
        # what happened in the gap happened somewhere in it: its middle is the best guess
        middle = (down + at) / 2 if down is not None and down < at else at
        for uid in listed:
            channel = self.channels.get(uid)
            if channel is not None and channel.app == "AppDial":
                self._resync_leg(channel)
        for call in {self.channels[uid].call for uid in listed if uid in self.channels}:
            call.partial = True
            if call.answered_at is None:
                self.answer_by_bridge(call, max(middle, call.started_at), estimated=True)
        for uid in vanished:
            channel = self.channels.get(uid)
            if channel is not None:
                call = channel.call
                call.partial = True
                if vanished.issuperset(call.channels):
                    call.end_estimated = True
                self.remove_channel(channel, max(middle, call.last_at))
        adopted, self._adopted = self._adopted, []
        for seen, seen_at in adopted:
            self._restore(seen, seen_at, at)

    def _restore(self, seen: CallRecord, seen_at: float, at: float) -> None:
        """One call a previous run stored (`adopt`), now that the resync says what is alive.

        A call Asterisk still has was rebuilt from CoreShowChannel as partial, its fields
        derived from the channels as they are *now* (a FreePBX trunk channel sits in
        `ext-group` or a macro by then): everything the earlier run knew wins, and a resync
        may only add what was unknown. A call Asterisk no longer has ended while nobody
        watched: it ends now, partial, as last seen, its end an estimate.
        """
        call = self.calls.get(seen.call_id)
        if call is None:
            if seen.call_id in self._ended:
                return
            self._remember(seen.call_id)
            end = max(seen_at, seen.started_at)
            answered = seen.answered_at
            status: Status = (
                "answered"
                if answered is not None
                else ("no_answer" if seen.extensions_rung else "failed")
            )
            estimated = [e for e in seen.estimated if e != "ended_at"]
            final = dataclasses.replace(
                seen,
                ended_at=end,
                status=status,
                partial=True,
                wait_s=round((answered if answered is not None else end) - seen.started_at, 3),
                talk_s=round(end - answered, 3) if answered is not None else 0.0,
                estimated=[*estimated, "ended_at"],
            )
            self.emit(CallEnded(end, final))
            return
        call.prior = seen
        call.partial = True
        call.started_at = seen.started_at
        if seen.answered_at is not None and (
            call.answered_at is None or call.answer_estimated or seen.answered_at < call.answered_at
        ):
            call.answered_at, call.answered_by = seen.answered_at, seen.answered_by
            call.answer_estimated = "answered_at" in seen.estimated
        first = call.channels.get(seen.call_id)  # the channel the call began on
        if first is not None and seen.direction == "inbound" and first.kind is Kind.PHONE:
            self._learn_trunk(first.endpoint)  # an inbound call begins on a trunk
        if seen.offered_at is not None:
            call.offered(seen.offered_at)
        call.rung[:0] = [ext for ext in seen.extensions_rung if ext not in call.rung]
        call.ivr_digits = seen.ivr_digits + call.ivr_digits
        call.queue = seen.queue or call.queue
        call.recording = seen.recording or call.recording
        call.transferred_to[:0] = seen.transferred_to
        if seen.direction == "inbound" and seen.called_number and not call.did:
            call.did = seen.called_number
        if call.hangup_cause is None:
            call.hangup_cause = seen.hangup_cause
        call.caller_gave_up = call.caller_gave_up or seen.status == "abandoned"
        call.voicemail = call.voicemail or seen.status == "voicemail"
        if call.last_outcome is None and seen.status in ("busy", "no_answer"):
            call.last_outcome = seen.status  # how its rings ended, before we lost sight
        self.changed(call, at)

    def _resync_leg(self, dest: Channel) -> None:
        """A channel the resync lists as dialed (`AppDial`) and that we never saw dialed: the
        leg it is, dialed by the channel whose `Dial` names its endpoint (the number from
        that dial string); still ringing, or answered if it is up."""
        call = dest.call
        if dest.uniqueid in call.legs:
            return
        dialer, number = None, ""
        for other in call.channels.values():
            if other.app in ("Dial", "Queue") and dest.endpoint and dest.endpoint in other.app_data:
                dialer = other
                targets = other.app_data.split(",", 1)[0].split("&")
                number = next((d for d in targets if dest.endpoint in d), "")
                break
        began = max(dest.created_at, call.started_at)
        if not dest.up:
            self.begin_leg(dialer, dest, number, began)
            return
        leg = Leg(dest, dialer.uniqueid if dialer else None, dialed_number(number), began)
        leg.outcome = "answered"  # it was answered in the gap; the bridges say who holds it
        call.legs[dest.uniqueid] = leg
        if dest.kind is Kind.PHONE and dest is not call.caller and dest.extension:
            if dest.extension not in call.rung:
                call.rung.append(dest.extension)
            call.offered(began)

    def answer_from_cdr(
        self, call: Call, extension: str | None, answered_at: float, at: float
    ) -> None:
        """A `Cdr` says `extension` (None: the far end of an outbound call) answered at
        `answered_at`, unseen (in a gap)."""
        call.answered_at, call.answered_by = answered_at, extension
        call.answer_estimated, call.answer_from_cdr = False, True
        if extension is not None and extension not in call.rung:
            call.rung.append(extension)
        self.emit(Answered(at, call.record(at), extension))

    def changed(self, call: Call, at: float) -> None:
        """The call's record changed in a way no other update tells: say so (`Changed`)."""
        self.emit(Changed(at, call.record(at)))

    def _learn_trunk(self, endpoint: str) -> None:
        """`endpoint` is a trunk: its channels are, whatever context they are in later."""
        if endpoint in self._trunk_endpoints or len(self._trunk_endpoints) >= MAX_TRUNKS:
            return
        self._trunk_endpoints.add(endpoint)
        for channel in self.channels.values():
            leg = channel.call.legs.get(channel.uniqueid)
            if (
                channel.kind is Kind.PHONE
                and channel.endpoint == endpoint
                and (leg is None or not leg.announced)  # its ring was told: its end will be
            ):
                channel.kind, channel.extension = Kind.TRUNK, None

    @property
    def down_at(self) -> float | None:
        return self._down_at

    # -- internals ------------------------------------------------------------------------------

    def _remember(self, key: str) -> None:
        ended = self._ended
        ended[key] = None
        if len(ended) > REMEMBER_ENDED:
            ended.popitem(last=False)

    def _flush(self) -> list[CallUpdate]:
        out, self._out = self._out, []
        return out
