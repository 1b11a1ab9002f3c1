"""Service-level figures over real TCP on 127.0.0.1, from a real SQLite call log: a hand-made
set of calls whose figures are worked out by hand in the comments, per group kind; DST days;
roles; and 400s that name the parameter at fault."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from pbxlink.calllog import CallLogStore
from pbxlink.calllog import servicelevel as sl
from pbxlink.calllog.settings import Thresholds
from pbxlink.calls.record import CallRecord
from pbxlink.calls.tracker import TrackerConfig
from pbxlink.config import Config
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, make_app, openapi
from pbxlink.web.auth import route_access
from pbxlink.web.servicelevel import PATH, ROUTES, Report, add_routes

from conftest import FakeStatus, make_record, session_to

TBILISI = ZoneInfo("Asia/Tbilisi")  # +04:00 all year
BERLIN = ZoneInfo("Europe/Berlin")  # CEST -> CET on 2026-10-25 03:00, CET -> CEST 2026-03-29
TOKENS = {
    "operator": "op-token-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supervisor": "sup-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "admin": "admin-token-cccccccccccccccccccccccccccccccccc",
}


def at(tz: dt.tzinfo, text: str, fold: int = 0) -> float:
    """A PBX-local wall time as epoch seconds."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).timestamp()


def inbound(
    call_id: str,
    offered: float | None,
    wait: float,
    status: str,
    *,
    talk: float = 0.0,
    rung: tuple[str, ...] = (),
    by: str | None = None,
    queue: str | None = None,
    estimated: tuple[str, ...] = (),
) -> CallRecord:
    """An inbound call that waited `wait` s from its offer (8 s of IVR before it); with
    `estimated`, a partial record whose named times pbxlink had to guess."""
    start = (offered if offered is not None else 0.0) - 8.0
    answered = offered + wait if status == "answered" and offered is not None else None
    ended = (answered + talk) if answered is not None else start + 8.0 + wait
    return make_record(
        call_id=call_id,
        started_at=start,
        status=status,
        offered_at=offered,
        answered_at=answered,
        ended_at=ended,
        extensions_rung=list(rung),
        answered_by=by,
        wait_s=(answered or ended) - start,
        talk_s=talk,
        queue=queue,
        partial=bool(estimated),
        estimated=list(estimated),
    )


def nov(clock: str, day: int = 1) -> float:
    return at(TBILISI, f"2026-11-{day:02d}T{clock}")


# The hand-made set; T = 20 s, short abandon < 5 s. Waits count from the offer.
CALLS = [
    inbound("c1", nov("09:05"), 10, "answered", talk=60, rung=("101",), by="101", queue="sales"),
    inbound("c2", nov("09:10"), 20, "answered", talk=120, rung=("102",), by="102", queue="sales"),
    # a ring group: 101 and 102 rang, 102 answered; not a missed call for 101
    inbound("c3", nov("09:20"), 45, "answered", talk=30, rung=("101", "102"), by="102"),
    inbound("c4", nov("09:30"), 3, "abandoned", rung=("101",)),  # short abandon
    inbound("c5", nov("09:40"), 15, "abandoned", rung=("101",), queue="sales"),
    inbound("c6", nov("10:05"), 90, "abandoned", queue="support"),  # nobody rang: queue only
    inbound("c7", nov("10:10"), 30, "no_answer", rung=("103",)),
    inbound("c8", None, 20, "abandoned"),  # hung up in the IVR: never offered
    inbound("c10", nov("10:40"), 25, "voicemail", rung=("101",)),
    # the next day
    inbound("c12", nov("11:00", 2), 5, "answered", talk=100, rung=("101",), by="101"),
    # 2026-11-03: a short abandon and an IVR hang-up, nothing offered
    inbound("c14", nov("12:00", 3), 2, "abandoned", rung=("101",)),
    inbound("c15", None, 30, "abandoned"),
]
CALLS[7].started_at = nov("10:20")  # c8, the IVR hang-up: Nov 1, 10:20
CALLS[7].ended_at = nov("10:20") + 20
CALLS[11].started_at = nov("13:00", 3)
CALLS[11].ended_at = nov("13:00", 3) + 30
OUTBOUND = make_record(
    call_id="c9", started_at=nov("10:30"), direction="outbound", caller_number="101",
    called_number="+995322000000", answered_at=nov("10:30") + 5, ended_at=nov("10:31"),
    extensions_rung=[], answered_by=None, talk_s=55.0, wait_s=5.0,
)  # fmt: skip


async def seeded(store: CallLogStore, calls: list[CallRecord]) -> CallLogStore:
    for call in calls:
        store.submit(call)
    await store.flush()
    assert store.written == len(calls) and store.rejected == 0
    return store


async def opened_store(path: Path, calls: list[CallRecord]) -> CallLogStore:
    """A call log of its own at `path`, holding `calls`; the caller closes it."""
    store = CallLogStore(path)
    await store.open()
    return await seeded(store, calls)


@pytest.fixture
async def store(store: CallLogStore) -> CallLogStore:
    """The call log holding the hand-made set and one outbound call."""
    return await seeded(store, [*CALLS, OUTBOUND])


def make_config(tz: dt.tzinfo = TBILISI, **thresholds: Any) -> Config:
    operators = [
        Operator("Nino", ("101",), "operator", hash_token(TOKENS["operator"])),
        Operator("Sandro", (), "supervisor", hash_token(TOKENS["supervisor"])),
        Operator("Ana", (), "admin", hash_token(TOKENS["admin"])),
    ]
    return Config(
        operators=operators,
        tracker=TrackerConfig(pbx_timezone=tz),
        thresholds=Thresholds(**thresholds),
    )


@pytest.fixture
def config() -> Config:
    return make_config()


def make_service_app(config: Config, store: CallLogStore) -> web.Application:
    app = make_app(config, FakeStatus(), Metrics())
    add_routes(app, store)
    return app


@pytest.fixture
async def http(config: Config, store: CallLogStore) -> AsyncIterator[aiohttp.ClientSession]:
    async with session_to(make_service_app(config, store)) as session:
        yield session


# what the OpenAPI document says a report is: each answer the tests get is checked against it
REPORT_SCHEMA = openapi.standalone(Report, *ROUTES[0].components)


async def get(
    http: aiohttp.ClientSession, role: str | None = "supervisor", expect: int = 200, **params: str
) -> Any:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
    async with http.get(PATH, params=params, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == expect, body
    if expect == 200:
        jsonschema.validate(body, REPORT_SCHEMA)
    return body


def by_key(report: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {g["key"]: g for g in report["groups"]}


# -- the figures, worked out by hand ---------------------------------------------------------------

NONE_LEFT_OUT = {"answered": 0, "abandoned": 0, "unanswered_other": 0, "talk": 0}


async def test_one_day_every_figure(http: aiohttp.ClientSession) -> None:
    report = await get(http, day="2026-11-01")
    # offered: c1 c2 c3 c5 c6 c7 c10 = 7 (c4 short abandon, c8 never offered, c9 outbound)
    # answered c1 c2 c3; within 20 s: c1 (10 s), c2 (20 s, the limit counts) = 2
    # abandoned (not short): c5 (15 s, within), c6 (90 s); other: c7 no_answer, c10 voicemail
    total = report["total"]
    assert total == {
        "no_data": False,
        "offered": 7,
        "answered": 3,
        "answered_within_threshold": 2,
        "abandoned": 2,
        "abandoned_within_threshold": 1,
        "unanswered_other": 2,
        "short_abandoned": 1,
        "not_offered": 1,
        "service_level": 0.2857,  # abandons_against: 2 / 7
        "service_levels": {
            "abandons_against": 0.2857,  # 2 / 7
            "abandons_ignored": 0.6667,  # 2 / 3
            "quick_abandons_succeed": 0.4286,  # (2 + 1) / 7
        },
        "abandon_rate": 0.2857,  # 2 / 7
        "asa_s": 25.0,  # (10 + 20 + 45) / 3
        "aht_s": 70.0,  # (60 + 120 + 30) / 3
        "longest_wait_s": 90.0,  # c6
        "estimated_left_out": NONE_LEFT_OUT,  # no time of these records is an estimate
    }
    assert report["threshold_s"] == 20.0 and report["short_abandon_s"] == 5.0
    assert report["variant"] == "abandons_against" and report["group"] == "day"
    assert report["period"] == {
        "from": "2026-10-31T20:00:00.000Z",
        "until": "2026-11-01T20:00:00.000Z",
        "timezone": "Asia/Tbilisi",
    }
    [day] = report["groups"]
    assert day["key"] == "2026-11-01" and day["from"] == report["period"]["from"]
    assert {k: v for k, v in day.items() if k not in ("key", "from", "until")} == total


async def test_days_and_their_total(http: aiohttp.ClientSession) -> None:
    report = await get(http, **{"from": "2026-11-01", "until": "2026-11-04"})
    days = by_key(report)
    assert list(days) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    # Nov 2: c12 only, answered in 5 s after 100 s of talk
    nov2 = days["2026-11-02"]
    assert (nov2["offered"], nov2["answered_within_threshold"], nov2["service_level"]) == (1, 1, 1)
    assert (nov2["asa_s"], nov2["aht_s"], nov2["longest_wait_s"]) == (5.0, 100.0, 5.0)
    # Nov 3: a short abandon and an IVR hang-up: nothing offered, so no figures, never 100 %
    nov3 = days["2026-11-03"]
    assert nov3["no_data"] is True and nov3["offered"] == 0
    assert (nov3["short_abandoned"], nov3["not_offered"]) == (1, 1)
    assert nov3["service_level"] is None and set(nov3["service_levels"].values()) == {None}
    assert nov3["asa_s"] is nov3["aht_s"] is nov3["longest_wait_s"] is nov3["abandon_rate"] is None
    # the total: Nov 1 + c12 -> offered 8, answered 4, within 3, ASA (75 + 5) / 4
    total = report["total"]
    assert (total["offered"], total["answered"], total["answered_within_threshold"]) == (8, 4, 3)
    assert total["service_levels"] == {
        "abandons_against": 0.375,  # 3 / 8
        "abandons_ignored": 0.75,  # 3 / 4
        "quick_abandons_succeed": 0.5,  # (3 + 1) / 8
    }
    assert (total["asa_s"], total["aht_s"], total["abandon_rate"]) == (20.0, 77.5, 0.25)
    assert (total["short_abandoned"], total["not_offered"]) == (2, 2)


async def test_a_day_without_calls_is_no_data(http: aiohttp.ClientSession) -> None:
    report = await get(http, day="2026-12-25", group="hour")
    assert report["total"]["no_data"] is True and report["total"]["service_level"] is None
    assert len(report["groups"]) == 24 and all(g["no_data"] for g in report["groups"])


async def test_hours(http: aiohttp.ClientSession) -> None:
    report = await get(http, day="2026-11-01", group="hour")
    hours = by_key(report)
    assert len(hours) == 24 and next(iter(hours)) == "2026-11-01T00:00+04:00"
    nine, ten = hours["2026-11-01T09:00+04:00"], hours["2026-11-01T10:00+04:00"]
    assert nine["from"] == "2026-11-01T05:00:00.000Z" and nine["until"] == ten["from"]
    # 09:xx: c1 c2 c3 c5 offered (c4 short); 2 of 4 within; ASA (10 + 20 + 45) / 3
    assert (nine["offered"], nine["service_level"], nine["asa_s"]) == (4, 0.5, 25.0)
    assert (nine["short_abandoned"], nine["abandoned_within_threshold"]) == (1, 1)
    # 10:xx: c6 abandoned, c7 no answer, c10 voicemail, c8 the IVR hang-up (by its start)
    assert (ten["offered"], ten["answered"], ten["service_level"]) == (3, 0, 0.0)
    assert ten["service_levels"]["abandons_ignored"] is None  # nothing answered: no ratio
    assert (ten["not_offered"], ten["unanswered_other"], ten["longest_wait_s"]) == (1, 2, 90.0)
    assert sum(h["offered"] for h in hours.values()) == report["total"]["offered"] == 7


async def test_queues(http: aiohttp.ClientSession) -> None:
    report = await get(http, day="2026-11-01", group="queue")
    queues = by_key(report)
    assert list(queues) == [None, "sales", "support"]  # no queue first, then by name
    # no queue: c3 (45 s), c7, c10 offered; c4 short; c8 never offered
    none = queues[None]
    assert (none["offered"], none["answered"], none["service_level"]) == (3, 1, 0.0)
    assert (none["short_abandoned"], none["not_offered"], none["asa_s"]) == (1, 1, 45.0)
    # sales: c1 (10 s), c2 (20 s), c5 abandoned after 15 s
    sales = queues["sales"]
    assert sales["service_levels"] == {
        "abandons_against": 0.6667,  # 2 / 3
        "abandons_ignored": 1.0,  # 2 / 2
        "quick_abandons_succeed": 1.0,  # (2 + 1) / 3
    }
    assert (sales["asa_s"], sales["aht_s"]) == (15.0, 90.0)
    support = queues["support"]
    assert (support["offered"], support["abandoned"], support["asa_s"]) == (1, 1, None)
    assert "from" not in support


async def test_extensions_missed_and_answered_elsewhere(http: aiohttp.ClientSession) -> None:
    report = await get(http, day="2026-11-01", group="extension")
    exts = by_key(report)
    assert list(exts) == ["101", "102", "103"]
    # 101 rang for c1 (answered it), c3 (102 answered: not missed), c4 (short), c5, c10
    assert exts["101"] == {
        "key": "101",
        "no_data": False,
        "offered": 4,
        "answered": 1,
        "answered_within_threshold": 1,
        "answered_elsewhere": 1,
        "missed": 2,  # c5 abandoned, c10 voicemail
        "short_abandoned": 1,
        "answer_rate": 0.25,
        "asa_s": 10.0,
        "aht_s": 60.0,
        "longest_wait_s": 45.0,  # c3
        "estimated_left_out": {"answered": 0, "answered_elsewhere": 0, "missed": 0, "talk": 0},
    }
    # 102 answered both its calls: c2 in 20 s, c3 in 45 s
    e102 = exts["102"]
    assert (e102["offered"], e102["answered"], e102["answered_within_threshold"]) == (2, 2, 1)
    assert (e102["missed"], e102["asa_s"], e102["aht_s"]) == (0, 32.5, 75.0)
    e103 = exts["103"]
    assert (e103["offered"], e103["missed"], e103["asa_s"], e103["answer_rate"]) == (1, 1, None, 0)
    assert report["total"]["offered"] == 7  # the calls, each once, not a sum over extensions


async def test_filters(http: aiohttp.ClientSession) -> None:
    # calls 101 rang or answered: c1 c3 c5 c10 offered (c4 short); answered c1, c3 (by 102)
    mine = await get(http, day="2026-11-01", extension="101")
    assert mine["filters"] == {"queue": None, "extension": "101"}
    assert (mine["total"]["offered"], mine["total"]["answered"]) == (4, 2)
    assert mine["total"]["answered_within_threshold"] == 1
    one = await get(http, day="2026-11-01", group="extension", extension="102")
    assert [g["key"] for g in one["groups"]] == ["102"] and one["total"]["offered"] == 2
    sales = await get(http, day="2026-11-01", queue="sales")
    assert (sales["total"]["offered"], sales["total"]["service_level"]) == (3, 0.6667)
    both = await get(http, day="2026-11-01", queue="sales", extension="102")
    assert both["total"]["offered"] == 1  # c2


async def test_period_as_date_times_clips_the_buckets(http: aiohttp.ClientSession) -> None:
    # 09:00-09:35 local: c1 c2 c3 offered, c4 a short abandon; c5 at 09:40 is outside
    report = await get(
        http, **{"from": "2026-11-01T05:00:00Z", "until": "2026-11-01T09:35:00+04:00"}
    )
    [day] = report["groups"]
    assert day["from"] == "2026-11-01T05:00:00.000Z" and day["until"] == "2026-11-01T05:35:00.000Z"
    assert (day["offered"], day["short_abandoned"], day["abandoned"]) == (3, 1, 0)
    # an unencoded + in the offset arrives as a space, and is read as the + it was
    async with http.get(
        f"{PATH}?from=2026-11-01T09:00:00+04:00&until=2026-11-01T09:35:00+04:00",
        headers={"Authorization": f"Bearer {TOKENS['admin']}"},
    ) as resp:
        assert resp.status == 200
        assert (await resp.json())["total"]["offered"] == 3


async def test_thresholds_and_variant_come_from_the_config(
    tmp_path: Path, store: CallLogStore
) -> None:
    config = make_config(
        service_level_s=30.0, short_abandon_s=2.0, service_level_variant="quick_abandons_succeed"
    )
    async with session_to(make_service_app(config, store)) as http:
        report = await get(http, day="2026-11-01")
    # short abandon now < 2 s: c4 (3 s) is an offered abandon within 30 s -> offered 8
    # within 30 s: answered c1 c2 (c3 45 s); abandoned c4 c5 -> (2 + 2) / 8
    total = report["total"]
    assert (report["threshold_s"], report["short_abandon_s"]) == (30.0, 2.0)
    assert report["variant"] == "quick_abandons_succeed"
    assert (total["offered"], total["short_abandoned"], total["service_level"]) == (8, 0, 0.5)


async def test_a_pickup_counts_once_for_the_extension_that_answered(tmp_path: Path) -> None:
    # 104 picked up a call that rang 101: 104 answered without ringing; 101 is not missed
    calls = [
        inbound("p1", nov("09:00"), 12, "answered", talk=40, rung=("101",), by="104"),
        inbound("p2", nov("09:30"), 8, "answered", talk=20, rung=("104",), by="104"),
    ]
    store = await opened_store(tmp_path / "p.sqlite3", calls)
    try:
        q = sl.Query(nov("00:00"), nov("00:00", 2), TBILISI, group="extension")
        report = await sl.service_level(store.reader, q)
    finally:
        await store.close()
    exts = {b.key: t for b, t in report.groups}
    assert isinstance(exts["104"], sl.ExtensionTally) and isinstance(exts["101"], sl.ExtensionTally)
    assert (exts["104"].offered, exts["104"].answered, exts["104"].answered_within) == (2, 2, 2)
    assert (exts["101"].offered, exts["101"].missed, exts["101"].answered_elsewhere) == (1, 0, 1)


# -- estimated times are left out of what they would decide ----------------------------------------

# Nov 5; T = 20 s, S = 5 s. The recorded waits and talks of estimated times are what a link
# outage makes of them: e2's 8 s would pass the threshold, e4's 2 s would be a short abandon,
# e3's talk 0 s (the daemon was down at the end), e6's 400 s the reconnect time.
# fmt: off
ESTIMATED = [
    inbound("e1", nov("09:05", 5), 10, "answered", talk=60, rung=("101",), by="101"),
    inbound(
        "e2", nov("09:10", 5), 8, "answered", talk=100, rung=("101", "102"), by="101",
        queue="vip", estimated=("answered_at",),
    ),
    inbound(
        "e3", nov("09:20", 5), 30, "answered", talk=0, rung=("102",), by="102",
        estimated=("ended_at",),
    ),
    inbound("e8", nov("09:30", 5), 3, "abandoned", rung=("101",)),  # a real short abandon
    inbound("e4", nov("10:05", 5), 2, "abandoned", rung=("101",), estimated=("ended_at",)),
    inbound("e5", nov("10:10", 5), 15, "abandoned", rung=("101",)),
    inbound("e6", nov("10:20", 5), 400, "no_answer", rung=("103",), estimated=("ended_at",)),
    inbound("e7", nov("10:30", 5), 25, "answered", talk=40, rung=("102",), by="102"),
]
# fmt: on
ESTIMATED[7].partial = True  # e7: partial but nothing estimated: counted like any call


@pytest.fixture
async def estimated_http(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    store = await opened_store(tmp_path / "estimated.sqlite3", ESTIMATED)
    try:
        async with session_to(make_service_app(make_config(), store)) as http:
            yield http
    finally:
        await store.close()


async def test_estimated_times_are_left_out_and_counted(
    estimated_http: aiohttp.ClientSession,
) -> None:
    total = (await get(estimated_http, day="2026-11-05"))["total"]
    # offered e1 e2 e3 e4 e5 e6 e7 = 7: e4 counts as abandoned, not short (its 2 s is a guess)
    # judged against T (wait known, answered or abandoned, or unanswered whatever the wait):
    # e1 e3 e5 e6 e7 = 5; within T: e1 answered, e5 abandoned (e2's 8 s is not judged)
    assert total == {
        "no_data": False,
        "offered": 7,
        "answered": 4,  # e1 e2 e3 e7
        "answered_within_threshold": 1,  # e1
        "abandoned": 2,  # e4 e5
        "abandoned_within_threshold": 1,  # e5
        "unanswered_other": 1,  # e6
        "short_abandoned": 1,  # e8
        "not_offered": 0,
        "service_level": 0.2,
        "service_levels": {
            "abandons_against": 0.2,  # 1 / (7 - 1 - 1)
            "abandons_ignored": 0.3333,  # 1 / (4 - 1)
            "quick_abandons_succeed": 0.4,  # (1 + 1) / 5
        },
        "abandon_rate": 0.2857,  # 2 / 7: whether a caller gave up is known
        "asa_s": 21.667,  # (10 + 30 + 25) / 3: e2 out
        "aht_s": 50.0,  # (60 + 40) / 2: e2 and e3 out
        "longest_wait_s": 30.0,  # e3; e6's 400 s and e2's, e4's guessed waits out
        "estimated_left_out": {"answered": 1, "abandoned": 1, "unanswered_other": 1, "talk": 2},
    }


async def test_estimated_times_per_hour_queue_and_extension(
    estimated_http: aiohttp.ClientSession,
) -> None:
    report = await get(estimated_http, day="2026-11-05", group="hour")
    hours = by_key(report)
    nine, ten = hours["2026-11-05T09:00+04:00"], hours["2026-11-05T10:00+04:00"]
    # 09: e1 e2 e3 offered, e8 short; judged e1 e3: 1 / 2; ASA (10 + 30) / 2; AHT e1's 60
    assert nine["estimated_left_out"] == {
        "answered": 1, "abandoned": 0, "unanswered_other": 0, "talk": 2
    }  # fmt: skip
    assert (nine["offered"], nine["service_level"], nine["asa_s"], nine["aht_s"]) == (
        3, 0.5, 20.0, 60.0
    )  # fmt: skip
    # 10: e4 e5 e6 e7 offered; judged e5 e6 e7; e5 abandoned within T: (0 + 1) / 3
    assert ten["estimated_left_out"] == {
        "answered": 0, "abandoned": 1, "unanswered_other": 1, "talk": 0
    }  # fmt: skip
    assert (ten["service_level"], ten["service_levels"]["quick_abandons_succeed"]) == (0.0, 0.3333)
    assert (ten["abandoned"], ten["short_abandoned"], ten["longest_wait_s"]) == (2, 0, 25.0)
    assert report["total"]["estimated_left_out"]["talk"] == 2  # the hours add up

    # the vip queue holds only e2: answered, but nothing about it can be judged or averaged
    vip = by_key(await get(estimated_http, day="2026-11-05", group="queue"))["vip"]
    assert (vip["no_data"], vip["offered"], vip["answered"]) == (False, 1, 1)
    assert vip["service_level"] is None and set(vip["service_levels"].values()) == {None}
    assert vip["asa_s"] is vip["aht_s"] is vip["longest_wait_s"] is None

    exts = by_key(await get(estimated_http, day="2026-11-05", group="extension"))
    # 101 had e1 (10 s, answered), e2 (answered, guessed), e4 (guessed, missed), e5 (15 s,
    # missed), e8 (short)
    assert {k: v for k, v in exts["101"].items() if k != "key"} == {
        "no_data": False,
        "offered": 4,
        "answered": 2,
        "answered_within_threshold": 1,  # e1; e2 not judged
        "answered_elsewhere": 0,
        "missed": 2,
        "short_abandoned": 1,
        "answer_rate": 0.5,
        "asa_s": 10.0,
        "aht_s": 60.0,
        "longest_wait_s": 15.0,  # e5; e2's and e4's waits are guesses
        "estimated_left_out": {"answered": 1, "answered_elsewhere": 0, "missed": 1, "talk": 1},
    }
    # 102: e2 (101 answered it, after a guessed wait), e3 (30 s, guessed talk), e7 (25 s, 40 s)
    e102 = exts["102"]
    assert e102["estimated_left_out"] == {
        "answered": 0, "answered_elsewhere": 1, "missed": 0, "talk": 1
    }  # fmt: skip
    assert (e102["offered"], e102["answered"], e102["answered_elsewhere"]) == (3, 2, 1)
    assert (e102["asa_s"], e102["aht_s"], e102["longest_wait_s"]) == (27.5, 40.0, 30.0)
    # 103: e6 only, its 400 s a guess: missed, and no longest wait to show
    e103 = exts["103"]
    assert (e103["missed"], e103["longest_wait_s"], e103["estimated_left_out"]["missed"]) == (
        1, None, 1
    )  # fmt: skip


# -- DST: the PBX-local days and hours are the real ones -------------------------------------------


async def test_dst_fall_back_day_has_25_hours(tmp_path: Path) -> None:
    calls = [
        inbound("d1", at(BERLIN, "2026-10-24T23:30"), 5, "abandoned", rung=("101",)),
        inbound("d2", at(BERLIN, "2026-10-25T00:30"), 6, "abandoned", rung=("101",)),
        inbound("d3", at(BERLIN, "2026-10-25T02:30", fold=0), 7, "abandoned"),  # CEST
        inbound("d4", at(BERLIN, "2026-10-25T02:30", fold=1), 8, "abandoned"),  # CET
        inbound("d5", at(BERLIN, "2026-10-25T23:30"), 9, "abandoned"),
        inbound("d6", at(BERLIN, "2026-10-26T00:30"), 10, "abandoned"),
    ]
    store = await opened_store(tmp_path / "dst.sqlite3", calls)
    try:
        async with session_to(make_service_app(make_config(BERLIN), store)) as http:
            days = by_key(await get(http, **{"from": "2026-10-24", "until": "2026-10-27"}))
            hours = await get(http, day="2026-10-25", group="hour")
    finally:
        await store.close()
    assert {k: d["offered"] for k, d in days.items()} == {
        "2026-10-24": 1,
        "2026-10-25": 4,  # 00:30, both 02:30s and 23:30: a fixed +02:00 would lose 23:30
        "2026-10-26": 1,
    }
    assert days["2026-10-25"]["from"] == "2026-10-24T22:00:00.000Z"
    assert days["2026-10-25"]["until"] == "2026-10-25T23:00:00.000Z"  # 25 hours later
    keys = [g["key"] for g in hours["groups"]]
    assert len(keys) == 25 and keys[2:4] == ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00"]
    waits = {g["key"]: g["longest_wait_s"] for g in hours["groups"] if not g["no_data"]}
    assert waits == {
        "2026-10-25T00:00+02:00": 6.0,
        "2026-10-25T02:00+02:00": 7.0,
        "2026-10-25T02:00+01:00": 8.0,
        "2026-10-25T23:00+01:00": 9.0,
    }


def test_spring_forward_and_half_hour_zones() -> None:
    berlin = sl.day_buckets(at(BERLIN, "2026-03-29T00:00"), at(BERLIN, "2026-03-30T00:00"), BERLIN)
    assert [(b.key, b.end - b.start) for b in berlin] == [("2026-03-29", 23 * 3600)]
    hours = sl.hour_buckets(berlin[0].start, berlin[0].end, BERLIN)
    assert [h.key[11:] for h in hours[1:3]] == ["01:00+01:00", "03:00+02:00"]  # no 02:00
    assert all(h.end - h.start == 3600 for h in hours) and len(hours) == 23
    # India is +05:30: its hours start at :30 UTC; a period starting mid-hour clips the first
    kolkata = ZoneInfo("Asia/Kolkata")
    start = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.UTC).timestamp()  # 09:30 local
    first, second = sl.hour_buckets(start, start + 7200, kolkata)[:2]
    assert (first.key, first.end - first.start) == ("2026-11-01T09:00+05:30", 1800)
    assert second.key == "2026-11-01T10:00+05:30"


# -- access and parameters -------------------------------------------------------------------------


async def test_supervisors_and_admins_only(http: aiohttp.ClientSession, config: Config) -> None:
    app = make_app(config, FakeStatus(), Metrics())
    add_routes(app, CallLogStore(Path("unused")))
    routes = [r for r in app.router.routes() if r.resource.canonical == PATH]
    assert {r.method for r in routes} == {"GET", "HEAD"}
    assert {route_access(r) for r in routes} == {"supervisor"}
    error = await get(http, role=None, expect=401, day="2026-11-01")
    assert error["error"] == "unauthorized"
    error = await get(http, role="operator", expect=403, day="2026-11-01")
    assert error["error"] == "forbidden" and error["needed"] == "supervisor"
    for role in ("supervisor", "admin"):
        assert (await get(http, role=role, day="2026-11-01"))["total"]["offered"] == 7


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-01T09:00:00"}, "from"),  # no offset: ambiguous
        ({"from": "20261101"}, "from"),
        ({"from": "2026-11-02", "until": "2026-11-01"}, "until"),
        ({"from": "2026-11-01", "until": "2026-11-01"}, "until"),
        ({"until": "2026-11-01"}, "from"),
        ({"from": "2099-01-01"}, "from"),  # until defaults to now
        ({"from": "2025-01-01", "until": "2026-11-01"}, "until"),  # more than 366 days
        ({"day": "2026-13-01"}, "day"),
        ({"day": "2026-11-01", "from": "2026-11-01"}, "day"),
        ({"day": "2026-11-01", "group": "week"}, "group"),
        ({"from": "2026-10-01", "until": "2026-11-02", "group": "hour"}, "group"),
        ({"day": "2026-11-01", "queue": ""}, "queue"),
        ({"day": "2026-11-01", "extension": "1\x00"}, "extension"),
        ({"day": "2026-11-01", "grop": "hour"}, "grop"),
    ],
)
async def test_bad_parameters_are_named(
    http: aiohttp.ClientSession, params: dict[str, str], field: str
) -> None:
    error = await get(http, expect=400, **params)
    assert error["error"] == "bad_request" and error["field"] == field
    assert error["message"].startswith(f"{field}: ")


async def test_a_parameter_given_twice_is_named(http: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    params = [("day", "2026-11-01"), ("group", "day"), ("group", "hour")]
    async with http.get(PATH, params=params, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["field"] == "group"


async def test_no_period_is_today(http: aiohttp.ClientSession) -> None:
    report = await get(http)
    today = dt.datetime.now(TBILISI).date().isoformat()
    assert [g["key"] for g in report["groups"]] == [today]


# -- the OpenAPI fragment and the query plan -------------------------------------------------------


def test_the_openapi_operation_is_valid_and_lists_every_parameter(config: Config) -> None:
    app = make_service_app(config, CallLogStore(Path("unused")))
    doc = openapi.build(app)
    validate(doc)
    get_ = doc["paths"][PATH]["get"]
    assert {p["name"] for p in get_["parameters"]} == {
        "from", "until", "day", "group", "queue", "extension"
    }  # fmt: skip
    assert {"200", "400", "401", "403"} <= set(get_["responses"])


async def test_each_bucket_is_one_range_of_the_offered_index(store: CallLogStore) -> None:
    q = sl.Query(nov("00:00"), nov("00:00", 8), TBILISI)
    buckets = sl.day_buckets(q.start, q.end, q.tz)
    with sqlite3.connect(store.path) as db:
        for sql in (
            sl._offered_sql(buckets, "b.i", q),
            sl._not_offered_sql(buckets, "b.i", q),
        ):
            plan = " | ".join(
                row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", sl._params(q))
            )
            assert (
                "SEARCH c USING" in plan
                and "INDEX calls_offered (direction=? AND offered_at" in plan
            ), plan


async def test_the_sums_read_the_offered_index_alone(tmp_path: Path) -> None:
    """The wait and the estimate flags come from `calls_offered`'s expressions, not the table:
    an ESTIMATE_SQL or WAIT_SQL that drifted from migration 6's text would read every call's
    row, which no query plan line shows (SQLite says 'INDEX', not 'COVERING', either way)."""
    store = await opened_store(tmp_path / "alone.sqlite3", [*ESTIMATED, *CALLS])
    await store.close()
    q = sl.Query(nov("00:00"), nov("00:00", 8), TBILISI)
    sql = sl._offered_sql(sl.day_buckets(q.start, q.end, q.tz), "b.i", q)
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        [(root,)] = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'calls'")
        program = list(db.execute(f"EXPLAIN {sql}", sl._params(q)))
    [table] = [op[2] for op in program if op[1] == "OpenRead" and op[3] == root]
    assert [op for op in program if op[1] == "Column" and op[2] == table] == []
    assert any(op[1] == "Column" for op in program)  # and the check looks at something
