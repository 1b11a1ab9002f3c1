"""Coming back after a gap: Asterisk's boot, the CoreShowChannel list, a previous run's calls.

After every login the tracker is fed `FullyBooted` (`booted`: did Asterisk restart?), then one
`CoreShowChannel` per live channel (`listed`), then `CoreShowChannelsComplete` (`complete`):
only the whole list tells which channels survived the gap, which were dialed or answered in
it, and which of the calls a previous run of the daemon stored (`CallTracker.adopt`) are still
there. docs/tracker.md ("Link loss, restarts") says what each case makes of a call.
"""

from __future__ import annotations

import dataclasses

from pbxlink.calls.engine import Engine
from pbxlink.calls.record import CallRecord, Status
from pbxlink.calls.rules import Kind, dialed_number
from pbxlink.calls.state import Channel, Leg
from pbxlink.calls.updates import CallEnded

#: how far FullyBooted's boot moment may move before we call it a restart (Uptime is whole s)
BOOT_TOLERANCE_S = 5.0


def booted(t: Engine, at: float, uptime: float | None) -> None:
    """FullyBooted: logged in (again). Asterisk booted at `at - uptime`; another boot than
    the last one (beyond `BOOT_TOLERANCE_S`) is a restart, which ended every call about
    when the link went down. Unknown uptime (the header missing or garbled): no restart
    can be told, and the last boot known stays the one to compare with; the
    CoreShowChannel list that follows says which calls survived, as after a blip.
    Either way the resync starts here."""
    if uptime is not None:
        boot = at - uptime
        if t.boot is not None and abs(boot - t.boot) > BOOT_TOLERANCE_S:
            gone = t.down_at if t.down_at is not None else at
            for call in list(t.calls.values()):
                call.partial = call.end_estimated = True  # died with Asterisk, about then
                t.end_call(call, max(gone, call.last_at))
        t.boot = boot
    t.resync_known = set(t.channels)
    t.resync_seen = set()


def listed(t: Engine, uniqueid: str) -> None:
    """CoreShowChannel named this channel: it is alive (the resync's count)."""
    if t.resync_known is not None:
        t.resync_seen.add(uniqueid)


def complete(t: Engine, at: float) -> None:
    """CoreShowChannelsComplete: the list is whole. Channels dialed in the gap become legs,
    a phone holding the caller (directly or across a Local pair) answered in the gap,
    channels we knew of that Asterisk no longer has are gone, and the calls a previous
    run stored (`adopt`) are finished or resumed."""
    if t.resync_known is None:
        return
    vanished = t.resync_known - t.resync_seen
    listed = t.resync_seen
    t.resync_known = None
    t.resync_seen = set()
    down = t.down_at
    # what happened in the gap happened somewhere in it: its middle is the best guess
    middle = (down + at) / 2 if down is not None and down < at else at
    for uid in listed:
        channel = t.channels.get(uid)
        if channel is not None and channel.app == "AppDial":
            _resync_leg(t, channel)
    for call in {t.channels[uid].call for uid in listed if uid in t.channels}:
        call.partial = True
        if call.answered_at is None:
            t.answer_by_bridge(call, max(middle, call.started_at), estimated=True)
    for uid in vanished:
        channel = t.channels.get(uid)
        if channel is not None:
            call = channel.call
            call.partial = True
            if vanished.issuperset(call.channels):
                call.end_estimated = True
            t.remove_channel(channel, max(middle, call.last_at))
    adopted, t.adopted = t.adopted, []
    for seen, seen_at in adopted:
        _restore(t, seen, seen_at, at)


def _restore(t: Engine, seen: CallRecord, seen_at: float, at: float) -> None:
    """One call a previous run stored (`adopt`), now that the resync says what is alive.

    A call Asterisk still has was rebuilt from CoreShowChannel as partial, its fields
    derived from the channels as they are *now* (a FreePBX trunk channel sits in
    `ext-group` or a macro by then): everything the earlier run knew wins, and a resync
    may only add what was unknown. A call Asterisk no longer has ended while nobody
    watched: it ends now, partial, as last seen, its end an estimate.
    """
    call = t.calls.get(seen.call_id)
    if call is None:
        if seen.call_id in t.ended:
            return
        t.remember(seen.call_id)
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
        t.out.append(CallEnded(end, final, phase="ended"))
        return
    call.prior = seen
    call.partial = True
    call.started_at = seen.started_at
    if seen.answered_at is not None and (
        call.answered_at is None or call.answer_estimated or seen.answered_at < call.answered_at
    ):
        call.answered_at, call.answered_by = seen.answered_at, seen.answered_by
        call.answer_estimated = "answered_at" in seen.estimated
        t.settle(call)
    first = call.channels.get(seen.call_id)  # the channel the call began on
    if first is not None and seen.direction == "inbound" and first.kind is Kind.PHONE:
        t.learn_trunk(first.endpoint)  # an inbound call begins on a trunk
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
    t.changed(call, at)


def _resync_leg(t: Engine, dest: Channel) -> None:
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
        t.begin_leg(dialer, dest, number, began)
        return
    leg = Leg(dest, dialer.uniqueid if dialer else None, dialed_number(number), began)
    leg.outcome = "answered"  # it was answered in the gap; the bridges say who holds it
    call.legs[dest.uniqueid] = leg
    if dest.kind is Kind.PHONE and dest is not call.caller and dest.extension:
        if dest.extension not in call.rung:
            call.rung.append(dest.extension)
        call.offered(began)
