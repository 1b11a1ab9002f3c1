"""One small handler per AMI event, in one dispatch table (as Wazo's CEL interpreters do).

Each handler reads the fields it needs with `.get` (a garbled event lacks some) and changes
the tracker's state through the `Engine` it is handed (engine.py), whose helpers emit the
updates. An event about a channel the tracker does not know (already hung up, or from before
a gap) is ignored. An event is a `Mapping[str, str]` of its headers. The tracker imports this
table; the handlers know the engine's type only for checking.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pbxlink.calls import resync
from pbxlink.calls.rules import ChannelRules, Kind, local_pair_key
from pbxlink.calls.state import Channel, Leg, clean_cid
from pbxlink.calls.updates import RingOutcome, Transferred

if TYPE_CHECKING:
    from pbxlink.calls.engine import Engine

Handler = Callable[["Engine", Mapping[str, str], float], None]

#: a DialEnd's DialStatus; anything else is a failure
DIAL_OUTCOME: dict[str, RingOutcome] = {
    "ANSWER": "answered",
    "BUSY": "busy",
    "NOANSWER": "no_answer",
    "CANCEL": "cancelled",
    "CONGESTION": "failed",
    "CHANUNAVAIL": "failed",
}
#: bridges that hold several unrelated calls: a conference or a parking lot joins no calls
NON_MIXING = ("softmix", "holding_bridge")


def on_newchannel(t: Engine, msg: Mapping[str, str], at: float) -> None:
    t.add_channel(msg, at, at)


def on_newcallerid(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is None or channel is not channel.call.caller or channel.kind is not Kind.TRUNK:
        return  # a phone's caller ID is rewritten for outbound calls: keep the first one
    before = (channel.cid_name, channel.cid_num)
    if not channel.cid_name:
        channel.cid_name = clean_cid(msg.get("CallerIDName"))
    if not channel.cid_num:
        channel.cid_num = clean_cid(msg.get("CallerIDNum"))
    if (channel.cid_name, channel.cid_num) != before:
        t.changed(channel.call, at)


def on_dial_begin(t: Engine, msg: Mapping[str, str], at: float) -> None:
    dest = t.channels.get(msg.get("DestUniqueid", ""))
    if dest is None:
        return
    originate = "Uniqueid" not in msg  # AMI Originate: the Dial* events name no caller
    dialer = None if originate else t.channels.get(msg["Uniqueid"])
    dest.call.last_at = at
    t.begin_leg(dialer, dest, msg.get("DialString", ""), at, originate=originate)


def on_dial_end(t: Engine, msg: Mapping[str, str], at: float) -> None:
    dest = t.channels.get(msg.get("DestUniqueid", ""))
    if dest is None:
        return
    call = dest.call
    call.last_at = at
    leg = call.legs.get(dest.uniqueid)
    if leg is None or not leg.ringing:
        return  # app_queue repeats DialEnd for the same leg
    status = msg.get("DialStatus", "")
    outcome = DIAL_OUTCOME.get(status, "failed")
    if dest.kind is Kind.LOCAL and outcome in ("no_answer", "busy", "failed"):
        _hint_local_pair(t, dest, outcome)
    if outcome == "answered" and dest.kind is Kind.LOCAL:
        leg.outcome = "answered"  # the phone behind the Local pair answers on its own leg
        t.settle(call)
        return
    t.end_leg(leg, outcome, at)


def _hint_local_pair(t: Engine, half: Channel, outcome: RingOutcome) -> None:
    """A Local ;1 leg that rang out: the phone its ;2 dials gets a CANCEL, but really rang out."""
    key = local_pair_key(half.name)
    for leg in half.call.legs.values():
        dialer = t.channels.get(leg.dialer or "")
        if dialer is not None and dialer.kind is Kind.LOCAL and dialer.endpoint == key:
            leg.hint = outcome


def on_agent_ring_no_answer(t: Engine, msg: Mapping[str, str], at: float) -> None:
    """The queue's member timeout expired (RingTime is in milliseconds): a real no-answer."""
    dest = t.channels.get(msg.get("DestUniqueid", ""))
    if dest is None:
        return
    leg = dest.call.legs.get(dest.uniqueid)
    if leg is not None:
        leg.hint = "no_answer"
    if dest.kind is Kind.LOCAL:
        _hint_local_pair(t, dest, "no_answer")


def on_hangup_request(t: Engine, msg: Mapping[str, str], at: float) -> None:
    """The far end of `Channel` hung up. For the caller, before an answer: who was waiting?"""
    channel = t.touch(msg, at)
    if channel is None:
        return
    call = channel.call
    if channel is call.caller and call.answered_at is None:
        ringing = any(leg.ringing and leg.dest is not channel for leg in call.legs.values())
        gave_up = ringing or call.in_queue or not call.legs
        if gave_up != call.caller_gave_up:
            call.caller_gave_up = gave_up
            t.changed(call, at)


def on_hangup(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.channels.get(msg.get("Uniqueid", ""))
    if channel is None:
        return
    call = channel.call
    call.last_at = at
    cause = _int(msg.get("Cause"))
    told = channel is call.caller and call.hangup_cause is None
    if told:  # the caller's cause; once known (or restored) a later "caller" does not change it
        call.hangup_cause = cause
    leg = call.legs.get(channel.uniqueid)
    if leg is not None and leg.ringing:
        t.end_leg(leg, _cause_outcome(cause), at)
    t.remove_channel(channel, at)
    if told and call.call_id in t.calls:  # the call goes on: a restart must find the cause
        t.changed(call, at)


def _cause_outcome(cause: int | None) -> RingOutcome:
    if cause == 17:
        return "busy"
    if cause == 26:
        return "answered_elsewhere"
    if cause in (0, 16, 18, 19, 21, 31, 127, None):
        return "no_answer"
    return "failed"


def on_bridge_enter(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    bridge = msg.get("BridgeUniqueid")
    if channel is None or not bridge:
        return
    channel.up = msg.get("ChannelStateDesc") == "Up"
    mixing = msg.get("BridgeTechnology", "") not in NON_MIXING
    t.enter_bridge(channel, bridge, mixing, at)
    t.answer_by_bridge(channel.call, at)


def on_bridge_leave(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is not None and channel.bridge == msg.get("BridgeUniqueid"):
        t.leave_bridge(channel)


def on_varset(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is None:
        return
    variable, value = msg.get("Variable", ""), msg.get("Value", "")
    call = channel.call
    if variable == "MIXMONITOR_FILENAME" and value and call.recording is None:
        call.recording = value
        t.changed(call, at)
    elif variable in t.rules.did_variables and value and value != call.did:
        call.did = value
        t.changed(call, at)


def on_newexten(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is None:
        return
    call = channel.call
    voicemail = msg.get("Application", "").lower() == "voicemail"
    if voicemail and call.answered_at is None and not call.voicemail:
        call.voicemail = True
        t.changed(call, at)


def on_dtmf_end(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is None or msg.get("Direction") != "Received":
        return
    call = channel.call
    digit = msg.get("Digit", "")[:1]
    if channel is call.caller and call.answered_at is None and digit:
        call.ivr_digits += digit
        t.changed(call, at)


def on_queue_join(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is not None:
        call = channel.call
        call.queue = call.queue or msg.get("Queue") or None
        call.in_queue = True
        call.offered(at)
        t.settle(call)
        t.changed(call, at)


def on_queue_leave(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is not None:
        channel.call.in_queue = False
        t.settle(channel.call)


def on_queue_abandon(t: Engine, msg: Mapping[str, str], at: float) -> None:
    channel = t.touch(msg, at)
    if channel is not None and channel.call.answered_at is None:
        channel.call.caller_gave_up = True
        t.changed(channel.call, at)


def on_blind_transfer(t: Engine, msg: Mapping[str, str], at: float) -> None:
    if msg.get("Result") != "Success":
        return
    call = t.call_of(msg.get("TransfereeUniqueid")) or t.call_of(msg.get("TransfererUniqueid"))
    target = msg.get("Extension", "")
    if call is None or not target:
        return
    call.last_at = at
    call.transferred_to.append(target)
    t.out.append(Transferred(at, call.record(at), target, "blind", phase=call.phase))


def on_attended_transfer(t: Engine, msg: Mapping[str, str], at: float) -> None:
    if msg.get("Result") != "Success":
        return
    first = t.call_of(msg.get("OrigTransfererUniqueid")) or t.call_of(msg.get("TransfereeUniqueid"))
    second = t.call_of(msg.get("SecondTransfererUniqueid")) or t.call_of(
        msg.get("TransferTargetUniqueid")
    )
    if first is None:
        return
    call = t.merge(first, second, at) if second is not None else first
    call.last_at = at
    target = _phone_behind(t, msg.get("TransferTargetUniqueid", "")) or clean_cid(
        msg.get("TransferTargetCallerIDNum") or msg.get("SecondTransfererConnectedLineNum")
    )
    if target:
        call.transferred_to.append(target)
        t.out.append(Transferred(at, call.record(at), target, "attended", phase=call.phase))


def _phone_behind(t: Engine, uniqueid: str) -> str | None:
    """The extension a channel reaches: itself if a phone, else what its Local pair dials."""
    channel = t.channels.get(uniqueid)
    if channel is None:
        return None
    if channel.kind is Kind.PHONE:
        return channel.extension
    if channel.kind is Kind.LOCAL:
        legs: list[Leg] = list(channel.call.legs.values())
        for leg in reversed(legs):
            dialer = t.channels.get(leg.dialer or "")
            if dialer is not None and dialer.endpoint == channel.endpoint and leg.dest.extension:
                return leg.dest.extension
    return None


def on_cdr(t: Engine, msg: Mapping[str, str], at: float) -> None:
    """An answer that happened while the link was down survives in a `Cdr` (sent as a channel
    of the call hangs up). Only a CDR whose destination is a phone and whose `AnswerTime` is
    later than its `StartTime` and than the dialing of that phone dates the phone's answer:
    a caller already answered by an IVR or a queue has every later CDR answered at its start
    (trace 06), a queue with Local members dates the phone's answer only on the Local `;2`
    -> phone CDR (F02), and an Originate's CDR is answered when the operator's phone picks
    up, before the customer is dialed (trace 17)."""
    call = t.call_of(msg.get("UniqueID"))
    if call is None or not call.partial or msg.get("Disposition") != "ANSWERED":
        return
    if call.answered_at is not None and not (call.answer_estimated or call.answer_from_cdr):
        return  # seen as it happened
    tz = t.config.pbx_timezone
    answered = _pbx_time(msg.get("AnswerTime", ""), tz)
    started = _pbx_time(msg.get("StartTime", ""), tz)
    if answered is None or started is None or answered <= started:
        return
    dest_name = msg.get("DestinationChannel", "")
    kind, endpoint = t.classify(dest_name, "")
    leg = next((leg for leg in call.legs.values() if leg.dest.name == dest_name), None)
    if leg is not None and leg.began_at >= answered:
        return  # the caller's own answer (an Originate's phone picked up before the dial)
    far_end = kind is Kind.TRUNK and call.direction == "outbound"
    if not endpoint or not (kind is Kind.PHONE or far_end):
        return
    # AnswerTime is truncated to the second: the middle of that second is the best estimate
    # (CDRs come as their channels hang up: the earliest answer is the first one, whichever
    # CDR tells it — a transfer target's comes too)
    when = min(max(answered + 0.5, call.started_at), at)
    if call.answered_at is None:
        t.answer_from_cdr(call, None if far_end else t.rules.extension(endpoint), when, at)
    elif call.answer_estimated or when < call.answered_at:
        call.answered_at = when
        if not far_end:
            call.answered_by = t.rules.extension(endpoint)
        call.answer_estimated, call.answer_from_cdr = False, True
        t.changed(call, at)


def _pbx_time(text: str, tz: dt.tzinfo) -> float | None:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz).timestamp()
    except ValueError:
        return None


def on_core_show_channel(t: Engine, msg: Mapping[str, str], at: float) -> None:
    """One live channel listed after a (re)login: what the gap hid from us. The list is
    complete only at CoreShowChannelsComplete, so legs and answers are worked out there."""
    uid = msg.get("Uniqueid", "")
    if not uid:
        return
    resync.listed(t, uid)
    channel = t.channels.get(uid)
    if channel is None:
        age = _duration(msg.get("Duration", ""))
        channel = t.add_channel(msg, at, at - age)
        if channel is None:
            return
        call = channel.call
        if call.started_at > channel.created_at:
            call.started_at = channel.created_at
        call.partial = True
        if channel.kind is Kind.TRUNK and not (
            t.rules.trunk_context(channel.context) and channel.exten.lstrip("+").isdigit()
        ):  # where the dialplan has it now (an IVR, a ring group), not the DID it came to
            channel.exten = ""
        if channel.kind is Kind.PHONE:
            channel.cid_name = ""  # by now maybe the company's outbound caller ID, not its own
    call = channel.call
    call.last_at = at
    channel.up = msg.get("ChannelStateDesc") == "Up"
    channel.app, channel.app_data = msg.get("Application", ""), msg.get("ApplicationData", "")
    if channel.app.lower() == "voicemail" and channel is call.caller and call.answered_at is None:
        call.voicemail = True  # it went to voicemail in the gap
    if channel.app == "Queue" and not call.queue:  # it joined a queue in the gap: which one
        call.queue = channel.app_data.split(",", 1)[0] or None
        call.in_queue = True
        t.settle(call)
    bridge = msg.get("BridgeId")
    if bridge:
        t.enter_bridge(channel, bridge, True, at)
    else:
        t.leave_bridge(channel)


def _duration(text: str) -> float:
    try:
        h, m, s = (int(part) for part in text.split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


def on_core_show_complete(t: Engine, msg: Mapping[str, str], at: float) -> None:
    resync.complete(t, at)


def on_fully_booted(t: Engine, msg: Mapping[str, str], at: float) -> None:
    """Logged in (again): Asterisk's `Uptime` dates its boot, which tells a restart from a
    blip; without a usable one, no restart can be told (see `resync.booted`)."""
    resync.booted(t, at, _seconds(msg.get("Uptime")))


def _seconds(text: str | None) -> float | None:
    """A non-negative, finite number of seconds, or None (missing, garbled, nan, inf)."""
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and 0.0 <= value < float("inf") else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


HANDLERS: dict[str, Handler] = {
    "Newchannel": on_newchannel,
    "NewCallerid": on_newcallerid,
    "DialBegin": on_dial_begin,
    "DialEnd": on_dial_end,
    "AgentRingNoAnswer": on_agent_ring_no_answer,
    "HangupRequest": on_hangup_request,
    "Hangup": on_hangup,
    "BridgeEnter": on_bridge_enter,
    "BridgeLeave": on_bridge_leave,
    "VarSet": on_varset,
    "Newexten": on_newexten,
    "DTMFEnd": on_dtmf_end,
    "QueueCallerJoin": on_queue_join,
    "QueueCallerLeave": on_queue_leave,
    "QueueCallerAbandon": on_queue_abandon,
    "BlindTransfer": on_blind_transfer,
    "AttendedTransfer": on_attended_transfer,
    "Cdr": on_cdr,
    "CoreShowChannel": on_core_show_channel,
    "CoreShowChannelsComplete": on_core_show_complete,
    "FullyBooted": on_fully_booted,
}


def subscription(rules: ChannelRules) -> dict[str, tuple[bytes, ...] | None]:
    """What `AmiParser` must deliver: every handled event, but of the two chattiest ones only
    the few that matter (VarSet of the recording file and the DID, Newexten into VoiceMail)."""
    sub: dict[str, tuple[bytes, ...] | None] = dict.fromkeys(HANDLERS)
    variables = ("MIXMONITOR_FILENAME", *rules.did_variables)
    sub["VarSet"] = tuple(f"\nVariable: {v}".encode() for v in variables)
    sub["Newexten"] = (b"\nApplication: VoiceMail",)
    return sub
