"""Records across faults: every real trace, cut at every point, through a link drop, an
Asterisk restart and a daemon restart, with gaps of nothing, a few seconds and longer than a
call (tests/faults.py builds the streams as a real reconnect looks).

For every fault the records must:
- exist exactly once per call (a call the undisturbed run has, or one the fault really cut);
- agree with the undisturbed run on every call that did not live through the fault, partial
  or not as it was;
- for a call in progress across the fault: be `partial`, and agree with the undisturbed run
  on every field the seen events determine, never contradict it (a ring, an IVR digit or a
  transfer lost in the gap may be missing; nothing may be invented or downgraded), with a
  time that nothing told the truth of named in `estimated`.

The small traces are swept at every cut point; the 40-call trace is sampled with seeded,
bounded hypothesis runs.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import faults
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.calls.rules import ChannelRules, endpoint_of
from pbxlink.calls.updates import CallEnded
from pbxlink.replay import replay

from conftest import TRACES, lab_tracker, need

SMALL = (
    "01_in_direct_answered_caller_hangup.ami",
    "02_in_direct_answered_operator_hangup.ami",
    "03_in_direct_no_answer.ami",
    "04_in_direct_busy.ami",
    "05_in_direct_caller_abandon_ringing.ami",
    "06_ivr_sales_101_noanswer_102_answers.ami",
    "07_ivr_sales_noanswer_voicemail.ami",
    "08_ivr_support_queue_103_answers.ami",
    "09_ivr_support_queue_caller_abandons.ami",
    "10_outbound_101_to_5559876.ami",
    "11_internal_101_to_102.ami",
    "12_blind_transfer_101_to_102.ami",
    "13_same_caller_twice.ami",
    "15_ami_reconnect_midcall.ami",
    "16_ivr_operator_via_local_channel.ami",
    "17_click_to_dial_originate.ami",
    "18_attended_transfer_atxfer.ami",
    "freepbx/F01_ringgroup_georgian_caller_2002_answers.ami",
    "freepbx/F02_ivr_queue_local_members_first_offer_timeout.ami",
)
BIG = "14_load_40_calls.ami"
GAPS = (0.0, 3.0, 600.0)
KINDS = ("drop", "asterisk_restart", "daemon_restart")
TOLERANCE_S = 1.0


@functools.cache
def messages(name: str) -> list[faults.Msg]:
    path = TRACES / name
    need(path.is_file(), f"real Asterisk trace not found: {path}")
    return faults.parse(path.read_bytes())


@functools.cache
def undisturbed(name: str) -> dict[str, CallRecord]:
    data = b"".join(m.raw for m in messages(name))
    ends = (u for u in replay([data], lab_tracker()) if isinstance(u, CallEnded))
    out = {u.call.call_id: u.call for u in ends}
    assert out
    return out


def cut_points(name: str) -> list[int]:
    """Every place a cut changes what the tracker saw: before each event it reads."""
    subscribed = set(lab_tracker().subscription())
    msgs = messages(name)
    return [i for i in range(4, len(msgs)) if msgs[i].event in subscribed]


def before_cut(fault: faults.Fault) -> tuple[dict[str, CallRecord], set[str]]:
    """What pbxlink knew of each call it saw before the cut (its latest record then: what the
    seen events determined), and the calls it saw end."""
    known: dict[str, CallRecord] = {}
    ended: set[str] = set()
    for u in replay([fault.before], lab_tracker(), flush=False):
        if isinstance(u, CallEnded):
            ended.add(u.call_id)
        known[u.call_id] = u.call
    return known, ended


def run_fault(fault: faults.Fault) -> list[CallRecord]:
    """The final records a daemon writes through `fault`."""
    if fault.kind != "daemon_restart":
        return [u.call for u in replay([fault.stream], lab_tracker()) if isinstance(u, CallEnded)]
    # the first run: every record it ended is in the log; what it stored of the calls still
    # in progress (the daemon's open_calls: the latest snapshot of each) survives the kill
    first = lab_tracker()
    ended: list[CallRecord] = []
    stored: dict[str, tuple[CallRecord, float]] = {}
    for u in replay([fault.before], first, flush=False):
        if isinstance(u, CallEnded):
            ended.append(u.call)
            stored.pop(u.call_id, None)
        else:
            stored[u.call_id] = (u.call, u.at)
    second = lab_tracker()
    second.adopt(list(stored.values()))
    ended += [u.call for u in replay([fault.after], second) if isinstance(u, CallEnded)]
    return ended


def make(kind: str, name: str, cut: int, gap_s: float) -> faults.Fault:
    return getattr(faults, kind)(messages(name), cut, gap_s)


def subsequence(part: str | list[str], whole: str | list[str]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


def close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= TOLERANCE_S


def problems(fault: faults.Fault, name: str) -> list[str]:
    want = undisturbed(name)
    got = run_fault(fault)
    out: list[str] = []
    counts = Counter(r.call_id for r in got)
    out += [f"{cid}: {n} records" for cid, n in counts.items() if n > 1]
    by_id = {r.call_id: r for r in got}
    started, ended = before_cut(fault)
    for cid, w in want.items():
        assert w.ended_at is not None
        unseen = cid not in started  # its first event came after the cut
        if unseen and fault.kind == "asterisk_restart":
            across = False  # it started afresh after the restart, or never
        elif unseen:
            across = fault.gap_s > 0 and w.started_at <= fault.up_at < w.ended_at
        else:
            across = cid not in ended
        r = by_id.get(cid)
        if r is None:
            gone = unseen and (fault.kind == "asterisk_restart" or w.ended_at <= fault.up_at)
            if not gone:  # (one that lived wholly in the gap was never seen, rightly)
                out.append(f"{cid}: no record")
            continue
        if not across:
            if r.to_dict() != w.to_dict():
                out.append(f"{cid} did not live through the fault but differs: {diff(w, r)}")
            continue
        knowable = not unseen or trunk_knowable(fault, name, cid, started, ended)
        out += [f"{cid}: {p}" for p in compare_across(fault, w, r, started.get(cid), knowable)]
    for cid, r in by_id.items():
        if cid not in want and not (fault.kind == "asterisk_restart" and r.partial):
            out.append(f"{cid}: a record the undisturbed run does not have: {r.to_dict()}")
    return out


def trunk_knowable(
    fault: faults.Fault, name: str, cid: str, started: dict[str, CallRecord], ended: set[str]
) -> bool:
    """Could pbxlink tell that a call begun in the gap came in on a trunk? Its first channel
    is listed after the gap where the dialplan has it by then (FreePBX: `ext-group`, `700`),
    so only if that is still a trunk context, or the run had met the trunk's endpoint before:
    a drop remembers every trunk channel seen before the cut, a restarted daemon only those
    of the calls it stored that are still there. (Else: configure `trunk_endpoints`.)"""
    msgs = messages(name)
    rules = ChannelRules()  # what lab_tracker() has: no [calls] config
    first = next(
        (m for m in msgs if m.event == "Newchannel" and m.fields.get("Uniqueid") == cid), None
    )
    if first is None:
        return True
    endpoint = endpoint_of(first.fields.get("Channel", ""))
    alive = faults.Alive()
    for i, m in enumerate(msgs):
        if i >= fault.cut and (fault.gap_s == 0 or m.at > fault.up_at):
            break  # the channels Asterisk lists at the reconnect
        alive.apply(m)
    now = alive.channels.get(cid)
    if now is not None and rules.trunk_context(now.fields.get("Context", "")):
        return True
    if fault.kind == "drop":
        before = (m for m in msgs[: fault.cut] if m.event == "Newchannel")
        return any(
            endpoint_of(m.fields.get("Channel", "")) == endpoint
            and rules.trunk_context(m.fields.get("Context", ""))
            for m in before
        )
    stored = [c for c in started if c not in ended and c in alive.channels]
    return any(
        endpoint_of(alive.channels[c].fields.get("Channel", "")) == endpoint
        and started[c].direction == "inbound"
        for c in stored
    )


def diff(w: CallRecord, r: CallRecord) -> dict[str, tuple[Any, Any]]:
    a, b = w.to_dict(), r.to_dict()
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def compare_across(
    fault: faults.Fault,
    w: CallRecord,
    r: CallRecord,
    at_cut: CallRecord | None,
    knowable: bool = True,
) -> list[str]:
    """A call in progress across the fault against its undisturbed record `w` and what was
    known of it at the cut (`at_cut`, None for a call that started in the gap); `knowable`:
    whether its trunk could be told as one (`trunk_knowable`)."""
    bad: list[str] = []
    if not r.partial:
        bad.append("not partial")
    cut_by_restart = fault.kind == "asterisk_restart"
    ended_in_gap = w.ended_at is not None and w.ended_at <= fault.up_at
    # a call that never showed itself again after the cut is judged by what was known then
    unseen_after = cut_by_restart or ended_in_gap
    if not close(r.started_at, w.started_at):
        bad.append(f"started_at {r.started_at} != {w.started_at}")
    for key in ("direction", "caller_number", "caller_name", "called_number"):
        ours, truth = getattr(r, key), getattr(w, key)
        if key == "called_number" and w.direction == "outbound" and ours.endswith(truth):
            continue  # as dialled, with the outside-line prefix: the same number
        if unseen_after and at_cut is not None and ours == getattr(at_cut, key):
            continue
        if ours != truth and (at_cut is not None or ours) and knowable:
            bad.append(f"{key} {ours!r} != {truth!r}")
    if not set(r.extensions_rung) <= set(w.extensions_rung):
        bad.append(f"rung {r.extensions_rung} not within {w.extensions_rung}")
    if not set(r.transferred_to) <= set(w.transferred_to):
        bad.append(f"transferred_to {r.transferred_to} not within {w.transferred_to}")
    if not subsequence(r.ivr_digits, w.ivr_digits):
        bad.append(f"ivr_digits {r.ivr_digits!r} not within {w.ivr_digits!r}")
    for key in ("queue", "recording"):
        if getattr(r, key) not in (None, getattr(w, key)):
            bad.append(f"{key} {getattr(r, key)!r} != {getattr(w, key)!r}")
    if cut_by_restart:
        if r.ended_at is None or not r.ended_at <= fault.up_at:
            bad.append(f"ended_at {r.ended_at} after the restart")
        if r.answered_at is not None and not close(r.answered_at, w.answered_at) and (
            "answered_at" not in r.estimated
        ):
            bad.append(f"answered_at {r.answered_at} != {w.answered_at}, not estimated")
        return bad
    answered_seen = w.answered_at is not None and (
        not ended_in_gap or (at_cut is not None and at_cut.answered_at is not None)
    )
    if answered_seen and r.answered_at is None:
        bad.append(f"answered at {w.answered_at} but the record says {r.status}")
    if w.answered_at is None and r.answered_at is not None:
        bad.append(f"never answered, but the record says answered at {r.answered_at}")
    if r.answered_at is not None and not close(r.answered_at, w.answered_at) and (
        "answered_at" not in r.estimated
    ):
        bad.append(f"answered_at {r.answered_at} != {w.answered_at}, not estimated")
    if r.answered_by not in (None, w.answered_by):
        bad.append(f"answered_by {r.answered_by!r} != {w.answered_by!r}")
    if answered_seen and r.answered_by is None and w.answered_by is not None:
        bad.append(f"answered_by lost ({w.answered_by!r})")
    if not close(r.ended_at, w.ended_at) and "ended_at" not in r.estimated:
        bad.append(f"ended_at {r.ended_at} != {w.ended_at}, not estimated")
    if not ended_in_gap and r.status != w.status:
        bad.append(f"status {r.status} != {w.status}")
    for key in ("wait_s", "talk_s"):
        if abs(getattr(r, key) - getattr(w, key)) > TOLERANCE_S and not r.estimated:
            bad.append(f"{key} {getattr(r, key)} != {getattr(w, key)}, no time estimated")
    if r.hangup_cause not in (None, w.hangup_cause) and not ended_in_gap:
        bad.append(f"hangup_cause {r.hangup_cause} != {w.hangup_cause}")
    return bad


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SMALL)
def test_every_cut_of_every_small_trace(name: str, kind: str) -> None:
    failures: list[str] = []
    for cut in cut_points(name):
        for gap in GAPS:
            fault = make(kind, name, cut, gap)
            found = problems(fault, name)
            if found:
                failures.append(f"cut {cut} gap {gap}: " + "; ".join(found[:3]))
    assert not failures, f"{len(failures)} faults break records:\n" + "\n".join(failures[:15])


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(KINDS),
    where=st.floats(0.02, 0.98),
    gap=st.sampled_from([0.0, 2.0, 15.0, 600.0]),
)
def test_sampled_cuts_of_the_40_call_trace(kind: str, where: float, gap: float) -> None:
    points = cut_points(BIG)
    fault = make(kind, BIG, points[int(where * len(points))], gap)
    found = problems(fault, BIG)
    assert not found, f"{kind} at {fault.cut} gap {gap}:\n" + "\n".join(found[:15])


# -- each item of the fault issue, on its own -------------------------------------------------

F01 = "freepbx/F01_ringgroup_georgian_caller_2002_answers.ami"
F02 = "freepbx/F02_ivr_queue_local_members_first_offer_timeout.ami"


def first_index(name: str, event: str, **fields: str) -> int:
    msgs = messages(name)
    return next(
        i
        for i, m in enumerate(msgs)
        if m.event == event and all(m.fields.get(k) == v for k, v in fields.items())
    )


def only(records: list[CallRecord]) -> CallRecord:
    (record,) = records
    return record


def test_a_restarted_daemon_keeps_what_it_knew_of_a_freepbx_call() -> None:
    """Killed while a FreePBX ring group rings: after the restart the trunk's channel sits in
    `from-internal-rg`/`ext-group`, not `from-pstn`. The call stays inbound, from the caller,
    to the DID (it came out `internal`, from `voip-provider`)."""
    cut = first_index(F01, "DialBegin") + 1
    record = only(run_fault(make("daemon_restart", F01, cut, 3.0)))
    truth = undisturbed(F01)[record.call_id]
    assert (record.direction, record.caller_number, record.called_number) == (
        "inbound",
        "+995599123456",
        "995322000102",
    )
    assert record.caller_name == truth.caller_name and record.partial
    assert (record.status, record.answered_by) == ("answered", "2002")


def test_a_call_begun_in_a_gap_is_classified_by_its_trunk_endpoint() -> None:
    """F02's call begins while the link is down, after F01's call showed `voip-provider` to be
    a trunk endpoint: it is listed in the IVR's context, and is still an inbound call."""
    f01 = b"".join(m.raw for m in messages(F01))
    f02 = b"".join(m.raw for m in messages(F02))
    msgs = faults.parse(f01 + f02)
    cut = next(
        i
        for i, m in enumerate(msgs)
        if m.event == "Newchannel" and "voip-provider" in m.fields.get("Channel", "")
        and i > len(messages(F01))
    )
    fault = faults.drop(msgs, cut, 5.0)
    got = [u.call for u in replay([fault.stream], lab_tracker()) if isinstance(u, CallEnded)]
    truth = only(list(undisturbed(F02).values()))
    record = next(r for r in got if r.call_id == truth.call_id)
    assert (record.direction, record.caller_number) == ("inbound", truth.caller_number)
    assert record.partial and record.queue == truth.queue
    assert record.called_number in ("", truth.called_number)  # the DID went by in the gap


def test_an_answer_across_a_local_pair_in_a_gap_is_kept() -> None:
    """F02: 2004 answers (behind a Local queue member) while the link is down. The bridges
    after the gap show who holds the call, the Local ;2 -> phone Cdr when it answered (it came
    out `no_answer`, talk 0, and not partial)."""
    answer = first_index(F02, "DialEnd", DialStatus="ANSWER")
    msgs = messages(F02)
    fault = make("drop", F02, answer - 2, msgs[answer].at - msgs[answer - 3].at + 1.0)
    record = only(run_fault(fault))
    truth = undisturbed(F02)[record.call_id]
    assert (record.status, record.answered_by, record.partial) == ("answered", "2004", True)
    assert record.answered_at is not None and truth.answered_at is not None
    assert abs(record.answered_at - truth.answered_at) <= TOLERANCE_S
    assert "answered_at" not in record.estimated  # the Cdr told it
    assert abs(record.talk_s - truth.talk_s) <= TOLERANCE_S


def test_partial_means_pbxlink_may_not_have_seen_the_whole_call() -> None:
    """Trace 15's call, answered while the link was down, is partial, its other fields as its
    truth says; a queue call known before a drop keeps its queue and IVR digits, partial."""
    (rec15,) = undisturbed("15_ami_reconnect_midcall.ami").values()
    assert rec15.partial and rec15.status == "answered" and rec15.answered_by == "101"
    name = "08_ivr_support_queue_103_answers.ami"
    cut = first_index(name, "QueueCallerJoin") + 1
    record = only(run_fault(make("drop", name, cut, 3.0)))
    assert (record.queue, record.ivr_digits, record.partial) == ("support", "2", True)


def test_kill_9_keeps_the_ivr_digits_and_the_queue() -> None:
    """DTMF and queue joins are stored as they happen (`Changed`), so a restarted daemon still
    knows them (they were lost: only rings and answers wrote the snapshot)."""
    name = "08_ivr_support_queue_103_answers.ami"
    cut = first_index(name, "QueueCallerJoin") + 1
    record = only(run_fault(make("daemon_restart", name, cut, 3.0)))
    assert (record.queue, record.ivr_digits, record.partial) == ("support", "2", True)


def test_times_nothing_told_are_named_estimated() -> None:
    """Daemon down while a call ended: its end is an estimate, named (it was the answer time:
    talk 0). Only the link down: likewise (it was the reconnect time). A survivor's answer in
    a gap is dated by the Cdr, no estimate left."""
    name = "01_in_direct_answered_caller_hangup.ami"
    truth = only(list(undisturbed(name).values()))
    answered = first_index(name, "DialEnd", DialStatus="ANSWER") + 1
    for kind in ("daemon_restart", "drop"):
        record = only(run_fault(make(kind, name, answered, 600.0)))
        assert record.partial and record.estimated == ["ended_at"], kind
        assert record.answered_at == truth.answered_at and record.status == "answered", kind
    (rec15,) = undisturbed("15_ami_reconnect_midcall.ami").values()
    assert rec15.estimated == [] and rec15.answered_at is not None


async def test_a_reload_after_a_restart_shows_the_stored_times() -> None:
    """The welcome of a call a restarted daemon adopted carries the times the first run
    stored, not the resync's (the answer `at` was the reconnect's estimate)."""
    from desk_hub import Popups
    from test_hub import hub_config, page, running

    name = "01_in_direct_answered_caller_hangup.ami"
    truth = only(list(undisturbed(name).values()))
    answered = first_index(name, "DialEnd", DialStatus="ANSWER") + 1
    fault = make("daemon_restart", name, answered, 3.0)
    first = lab_tracker()
    stored = {u.call_id: (u.call, u.at) for u in replay([fault.before], first, flush=False)}
    second = lab_tracker()
    second.adopt(stored.values())
    async with running(Popups(hub_config())) as hub:
        alive = fault.after[: fault.after.index(b"Event: Hangup\r\n")]  # the call goes on
        for u in replay([alive], second, flush=False):
            hub.on_update(u)
        async with page(hub, "101") as p101:
            (call,) = p101.welcome["calls"]
    assert call["type"] == "answered"
    assert call["at"] == iso_utc(truth.answered_at)
    assert call["card"]["started_at"] == iso_utc(truth.started_at)
