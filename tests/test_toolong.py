"""Too-long calls: the sans-IO watch, a real trace replayed through the tracker, the daemon's
hand-off to listeners, and the call log's `too_long` column on a real SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import structlog

from pbxlink.calllog import CallLogStore
from pbxlink.calllog.settings import Thresholds
from pbxlink.calls import (
    Answered,
    CallEnded,
    CallRecord,
    CallStarted,
    TooLong,
    Transferred,
)
from pbxlink.calls.toolong import TooLongWatch, is_too_long
from pbxlink.config import Config
from pbxlink.daemon import Daemon
from pbxlink.db.settings import StorageConfig
from pbxlink.replay import read_chunks, replay

from conftest import lab_tracker, make_record

T0 = 1_760_000_000.0
RULE = Thresholds(too_long_call_s=60.0, too_long_inbound_s=30.0)


def answered(call_id: str = "c1", direction: str = "inbound", at: float = T0 + 5) -> Answered:
    """101 answers: the snapshot of a call in progress."""
    call = make_record(
        call_id=call_id, started_at=T0, direction=direction, answered_at=at, ended_at=None
    )
    return Answered(at, call, "101")


def ended(record: CallRecord, at: float) -> CallEnded:
    talk = at - record.answered_at if record.answered_at is not None else 0.0
    return CallEnded(at, dataclasses.replace(record, ended_at=at, talk_s=talk))


# -- the watch -----------------------------------------------------------------------------------


def test_told_once_when_the_talk_time_passes_the_threshold_of_its_direction() -> None:
    watch = TooLongWatch(RULE)
    watch.update(answered("in", "inbound"))
    watch.update(answered("out", "outbound"))
    watch.update(answered("int", "internal"))
    assert watch.tick(T0 + 5 + 30) == []  # exactly at the threshold: not past it
    [told] = watch.tick(T0 + 5 + 30.5)
    assert told.call_id == "in"
    assert (told.at, told.threshold_s, told.talk_s) == (T0 + 35.5, 30.0, 30.5)
    assert told.call.answered_by == "101"
    assert watch.tick(T0 + 5 + 45) == []  # never twice
    assert sorted(t.call_id for t in watch.tick(T0 + 5 + 61)) == ["int", "out"]
    assert watch.tick(T0 + 5 + 3600) == []
    assert watch.watched == 0


def test_unanswered_calls_are_never_too_long() -> None:
    watch = TooLongWatch(RULE)
    ringing = make_record(call_id="c1", started_at=T0, status="no_answer", ended_at=None)
    watch.update(CallStarted(T0, ringing))
    assert watch.tick(T0 + 10_000) == []
    assert watch.watched == 0


def test_nothing_after_the_call_ended() -> None:
    watch = TooLongWatch(RULE)
    up = answered()
    watch.update(up)
    watch.update(ended(up.call, T0 + 20))
    assert watch.tick(T0 + 1000) == []
    assert watch.watched == 0


def test_a_told_call_stays_told_until_it_ends_and_is_then_forgotten() -> None:
    watch = TooLongWatch(RULE)
    up = answered()
    watch.update(up)
    assert len(watch.tick(T0 + 100)) == 1
    watch.update(
        Transferred(T0 + 110, dataclasses.replace(up.call, answered_by="102"), "102", "blind")
    )
    assert watch.tick(T0 + 200) == []  # a later update does not re-arm it
    watch.update(ended(up.call, T0 + 300))
    assert watch.tick(T0 + 400) == [] and watch.watched == 0 and not watch._told


def test_the_latest_snapshot_is_what_supervisors_see() -> None:
    watch = TooLongWatch(RULE)
    up = answered()
    watch.update(up)
    moved = dataclasses.replace(up.call, transferred_to=["205"])
    watch.update(Transferred(T0 + 10, moved, "205", "attended"))
    [told] = watch.tick(T0 + 40)
    assert told.call.transferred_to == ["205"]


def test_a_too_long_update_fed_back_changes_nothing() -> None:
    watch = TooLongWatch(RULE)
    watch.update(answered())
    [told] = watch.tick(T0 + 40)
    watch.update(told)  # the daemon hands every update around, TooLong included
    assert watch.tick(T0 + 80) == []


def test_is_too_long_for_final_records() -> None:
    assert is_too_long(RULE, make_record(talk_s=30.001))
    assert not is_too_long(RULE, make_record(talk_s=30.0))
    assert not is_too_long(RULE, make_record(direction="outbound", talk_s=59.0))
    assert is_too_long(RULE, make_record(direction="internal", talk_s=61.0))
    assert not is_too_long(RULE, make_record(answered_at=None, talk_s=1000.0))  # never answered


# -- a real trace --------------------------------------------------------------------------------


def test_real_load_trace_through_the_tracker(traces_dir: Path) -> None:
    """40 real calls, 25 s or 8 s of talk: with 15 s, exactly the long ones are told, once,
    before they end; what the watch says agrees with what the log will say."""
    rule = Thresholds(too_long_call_s=3600.0, too_long_inbound_s=15.0)
    watch = TooLongWatch(rule)
    told: list[TooLong] = []
    order: list[tuple[str, str]] = []
    finals: list[CallRecord] = []
    for u in replay(read_chunks(traces_dir / "14_load_40_calls.ami"), lab_tracker()):
        for t in watch.tick(u.at):  # the clock as the events give it
            told.append(t)
            order.append(("told", t.call_id))
        watch.update(u)
        if isinstance(u, CallEnded):
            finals.append(u.call)
            order.append(("ended", u.call_id))
    long_ones = {r.call_id for r in finals if is_too_long(rule, r)}
    answered_ones = {r.call_id for r in finals if r.answered_at is not None}
    assert len(finals) == 40
    assert long_ones and answered_ones - long_ones  # both sides of the threshold are there
    assert {t.call_id for t in told} == long_ones and len(told) == len(long_ones)
    for t in told:
        assert t.talk_s > t.threshold_s == 15.0
        assert order.index(("told", t.call_id)) < order.index(("ended", t.call_id))
    assert watch.watched == 0


# -- the daemon ----------------------------------------------------------------------------------


def test_daemon_tick_logs_and_counts_a_too_long_call_once(tmp_path: Path) -> None:
    config = Config(storage=StorageConfig(state_dir=tmp_path))
    config.thresholds = Thresholds(too_long_internal_s=10.0)
    daemon = Daemon(config, clock=lambda: T0)
    internal = make_record(
        call_id="c1",
        started_at=T0,
        direction="internal",
        caller_number="101",
        answered_at=T0,
        ended_at=None,
    )
    with structlog.testing.capture_logs() as logs:
        daemon._dispatch([Answered(T0, internal, "102")])  # internal: no lookup, nothing opened
        daemon._tick(T0 + 5)
        assert [e for e in logs if e["event"] == "call.too_long"] == []
        daemon._tick(T0 + 11)
        daemon._tick(T0 + 20)
    (told,) = [e for e in logs if e["event"] == "call.too_long"]
    assert told["call_id"] == "c1" and told["talk_s"] == 11.0
    assert b"pbxlink_calls_too_long_total 1.0" in daemon.metrics.render()


# -- the call log --------------------------------------------------------------------------------


async def test_the_log_flags_too_long_calls_also_when_a_partial_row_is_completed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.sqlite3"
    store = CallLogStore(path, too_long=RULE)
    await store.open()
    try:
        base = make_record(started_at=T0, answered_at=T0 + 5, ended_at=T0 + 100)
        store.submit(dataclasses.replace(base, call_id="long-in", talk_s=95.0))
        store.submit(dataclasses.replace(base, call_id="short-in", talk_s=30.0))
        store.submit(dataclasses.replace(base, call_id="out", direction="outbound", talk_s=59.0))
        store.submit(dataclasses.replace(base, call_id="missed", answered_at=None, talk_s=0.0))
        # partial (seen half of it): short; then the whole call: long
        store.submit(dataclasses.replace(base, call_id="upgraded", talk_s=3.0, partial=True))
        await store.flush()
        store.submit(dataclasses.replace(base, call_id="upgraded", talk_s=95.0))
        await store.flush()
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        flags = dict(db.execute("SELECT call_id, too_long FROM calls").fetchall())
    db.close()
    assert flags == {"long-in": 1, "short-in": 0, "out": 0, "missed": 0, "upgraded": 1}


async def test_a_store_without_thresholds_flags_nothing(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite3"
    store = CallLogStore(path)
    await store.open()
    store.submit(make_record(talk_s=99_999.0))
    await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT too_long FROM calls").fetchall() == [(0,)]
    db.close()
