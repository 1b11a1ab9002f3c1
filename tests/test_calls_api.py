"""The call log API: the query layer on a real SQLite file, checked against an independent
reading of the same calls in Python, then the routes over real TCP on 127.0.0.1 per role.

The seeded calls are random but reproducible (fixed seeds): every direction and status, ring
groups answered by a colleague, transfers, queues, recordings, partial records, numbers in
every written form Asterisk may send, calls that start in the same second (cursor ties), and
a span across the spring DST change of Europe/Berlin (a 23-hour local day).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import io
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import aiosqlite
import pytest
from multidict import MultiDict

from pbxlink.calllog import CallLogStore, export, relink_calls
from pbxlink.calllog import query as q
from pbxlink.calllog.params import MAX_VALUES, QueryError
from pbxlink.calllog.rows import from_row
from pbxlink.calls.record import CallRecord, Estimated, iso_utc
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.config import Config
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, make_app

from conftest import FakeStatus, make_record, session_to

TZ = ZoneInfo("Europe/Berlin")
NUMBERS = PhoneNumbers("GE")
T0 = dt.datetime(2024, 3, 29, 20, 0, tzinfo=TZ).timestamp()  # DST starts on 31 March
EXTS = ("101", "102", "103", "104", "105", "106")
RING_GROUP = ("101", "102", "103")
CLIENT_PHONES = {  # name -> (category, E.164)
    "Nino": ("vip", "+995555123456"),
    "Giorgi": ("regular", "+995599000111"),
    "Tamar": ("problem", "+995322222333"),
}
STRANGERS = ("+995577888999", "+4930123456")  # no client; the second one foreign
DIDS = ("0322100100", "+995322100200")


def written_forms(e164: str) -> list[str]:
    """How a PBX may send a Georgian number: E.164, without +, 00, national, 9 for a line."""
    national = e164[4:]
    if not e164.startswith("+995"):
        return [e164, e164[1:], "00" + e164[1:]]
    return [e164, e164[1:], "00" + e164[1:], "0" + national, national, "90" + national]


# -- the calls ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Seeded:
    """A call as stored, with what the test knows of its client."""

    record: CallRecord
    client_id: int | None = None
    client_name: str | None = None
    category: str | None = None
    too_long: bool = False
    involved: set[str] = field(default_factory=set)


GUESSES: tuple[list[Estimated], ...] = (["answered_at"], ["ended_at"], ["answered_at", "ended_at"])


def random_calls(rng: random.Random, n: int, clients: dict[str, int]) -> list[Seeded]:
    out: list[Seeded] = []
    at = T0
    by_e164 = {e164: name for name, (_, e164) in CLIENT_PHONES.items()}
    for i in range(n):
        if rng.random() > 0.15:  # else: the same start as the previous call (a cursor tie)
            at += rng.uniform(60, 2400)
        direction = rng.choices(("inbound", "outbound", "internal"), (6, 3, 1))[0]
        e164 = rng.choice([*by_e164, *STRANGERS])
        number = rng.choice(written_forms(e164))
        rung: list[str] = []
        answered_by: str | None = None
        queue = None
        if direction == "inbound":
            caller, called = (number, rng.choice(DIDS)) if rng.random() > 0.05 else ("", DIDS[0])
            rung = list(RING_GROUP) if rng.random() < 0.3 else rng.sample(EXTS, rng.randint(0, 2))
            queue = rng.choice((None, None, "sales", "support"))
            if rung and rng.random() < 0.6:
                answered_by = rng.choice(rung)
        elif direction == "outbound":
            caller, called = rng.choice(EXTS), number
        else:
            caller = rng.choice(EXTS)
            called = rng.choice([e for e in EXTS if e != caller])
            rung = [called]
            answered_by = called if rng.random() < 0.6 else None
        answered = answered_by is not None or (direction == "outbound" and rng.random() < 0.5)
        status = "answered" if answered else rng.choice((*q.MISSED, "failed"))
        wait = round(rng.uniform(0, 90), 3)
        talk = round(rng.uniform(1, 900), 6) if answered else 0.0
        record = CallRecord(
            call_id=f"{int(at)}.{i}",
            started_at=at,
            direction=direction,
            caller_number=caller,
            caller_name=rng.choice(("", "Nino B.", "=HYPERLINK(1)", "ნინო", '"Q", Ltd')),
            called_number=called,
            status=status,
            offered_at=at + 1 if rung or queue else None,
            answered_at=at + wait if answered else None,
            ended_at=at + wait + talk,
            extensions_rung=rung,
            answered_by=answered_by,
            wait_s=wait,
            talk_s=talk,
            hangup_cause=rng.choice((16, 17, 19, None)),
            queue=queue,
            ivr_digits=rng.choice(("", "1", "2*")),
            transferred_to=[rng.choice(EXTS)] if answered and rng.random() < 0.1 else [],
            recording=f"rec-{i}.wav" if answered and rng.random() < 0.5 else None,
            partial=rng.random() < 0.03,
        )
        if record.partial:  # the times an outage may have left to guess; no draw of rng
            guessed = GUESSES[i % len(GUESSES)]
            record.estimated = guessed if answered else [t for t in guessed if t == "ended_at"]
        client_number = caller if direction == "inbound" else called
        parsed = NUMBERS.normalize(client_number) if direction != "internal" else None
        name = by_e164.get(parsed.e164) if parsed is not None and parsed.e164 else None
        seeded = Seeded(record, too_long=talk > 600)
        if name is not None and rng.random() < 0.9:  # a few calls never got their client
            seeded.client_id = clients[name]
            seeded.client_name = name
            seeded.category = CLIENT_PHONES[name][0]
        seeded.involved = involved(record)
        out.append(seeded)
    return out


def involved(r: CallRecord) -> set[str]:
    """The extensions a call involved, read from the record (not from call_extensions)."""
    out = {*r.extensions_rung, *r.transferred_to}
    if r.answered_by:
        out.add(r.answered_by)
    if r.direction != "inbound" and r.caller_number:
        out.add(r.caller_number)
    return out


@dataclass(slots=True)
class Log:
    path: Path
    store: CallLogStore
    directory: Directory
    calls: list[Seeded]
    clients: dict[str, int]

    @property
    def db(self) -> aiosqlite.Connection:
        return self.store.reader


async def seed(store: CallLogStore, calls: Sequence[Seeded]) -> None:
    """Through the store, as the daemon writes; too_long straight into its column (the
    store's own rule for it is tested in test_toolong.py)."""
    for s in calls:
        store.submit(s.record, client_id=s.client_id)
    await store.flush()
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:
        db.executemany(
            "UPDATE calls SET too_long = 1 WHERE call_id = ?",
            [(s.record.call_id,) for s in calls if s.too_long],
        )


@contextlib.asynccontextmanager
async def opened_log(path: Path, n: int, seed_value: int = 5) -> AsyncIterator[Log]:
    store = CallLogStore(path)
    directory = Directory(
        path, NUMBERS, photos_dir=path.parent / "photos", relink_calls=relink_calls
    )
    await store.open()
    try:
        async with directory:
            clients = {}
            for name, (category, e164) in CLIENT_PHONES.items():
                made = await directory.create(
                    {"name": name, "category": category, "phones": [e164]}
                )
                clients[name] = made.id
            calls = random_calls(random.Random(seed_value), n, clients)
            await seed(store, calls)
            yield Log(path, store, directory, calls, clients)
    finally:
        await store.close()


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[Log]:
    async with opened_log(tmp_path / "pbxlink.sqlite3", 400) as seeded:
        yield seeded


# -- the independent reading ---------------------------------------------------------------------


def e164_of(number: str) -> str | None:
    parsed = NUMBERS.normalize(number)
    return parsed.e164 if parsed is not None else None


def expected(
    calls: Sequence[Seeded], params: dict[str, Any], scope: tuple[str, ...] | None
) -> list[Seeded]:
    """What a filter means, in plain Python over the records themselves."""

    def local(ts: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(ts, TZ)

    def values(key: str) -> list[str]:
        raw = params.get(key)
        return [] if raw is None else raw.split(",")

    statuses = set(values("status")) - {"missed"}
    missed_only = set(q.MISSED) - statuses if "missed" in values("status") else set()
    exts = set(values("extension"))
    out = []
    for s in calls:
        r = s.record
        if scope is not None and not s.involved & set(scope):
            continue
        if "day" in params and local(r.started_at).date().isoformat() != params["day"]:
            continue
        if "from" in params and r.started_at < start_of(params["from"]):
            continue
        if "until" in params and r.started_at >= start_of(params["until"]):
            continue
        if values("direction") and r.direction not in values("direction"):
            continue
        if exts and not s.involved & exts:
            continue
        if statuses or missed_only:
            rang = bool(set(r.extensions_rung) & exts) if exts else True
            if not (r.status in statuses or (r.status in missed_only and rang)):
                continue
        if "number" in params:
            wanted = e164_of(params["number"])
            if wanted not in (e164_of(r.caller_number), e164_of(r.called_number)):
                continue
        if "client" in params and s.client_id != int(params["client"]):
            continue
        if "category" in params and s.category != params["category"]:
            continue
        if "queue" in params and r.queue != params["queue"]:
            continue
        if "talk_min_s" in params and r.talk_s < float(params["talk_min_s"]):
            continue
        if "wait_max_s" in params and r.wait_s > float(params["wait_max_s"]):
            continue
        if "too_long" in params and s.too_long != (params["too_long"] == "true"):
            continue
        if "recorded" in params and bool(r.recording) != (params["recorded"] == "true"):
            continue
        out.append(s)
    return out


def start_of(value: str) -> float:
    if len(value) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), TZ).timestamp()
    return dt.datetime.fromisoformat(value).timestamp()


def day_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, TZ).date().isoformat()


def ordered(calls: list[Seeded], sort: str) -> list[str]:
    column, desc = q.SORTS[sort]
    key: Callable[[Seeded], tuple[float, str]] = lambda s: (  # noqa: E731
        getattr(s.record, column),
        s.record.call_id,
    )
    return [s.record.call_id for s in sorted(calls, key=key, reverse=desc)]


def random_params(rng: random.Random, calls: Sequence[Seeded]) -> dict[str, Any]:
    """A random combination of filters, most of them off."""
    params: dict[str, Any] = {}

    def maybe(p: float) -> bool:
        return rng.random() < p

    days = sorted({dt.datetime.fromtimestamp(s.record.started_at, TZ).date() for s in calls})
    if maybe(0.2):
        params["day"] = rng.choice(days).isoformat()
    elif maybe(0.25):
        a, b = sorted(rng.sample(days, 2))
        params["from"] = a.isoformat()
        if maybe(0.5):
            params["until"] = b.isoformat()
        else:
            params["until"] = dt.datetime.combine(b, dt.time(13, 30), dt.UTC).isoformat()
    if maybe(0.25):
        params["direction"] = ",".join(rng.sample(("inbound", "outbound", "internal"), 2))
    if maybe(0.35):
        params["status"] = ",".join(rng.sample((*q.MISSED, "answered", "failed", "missed"), 2))
    if maybe(0.3):
        params["extension"] = ",".join(rng.sample(EXTS, rng.randint(1, 2)))
    if maybe(0.15):
        params["number"] = rng.choice(written_forms(rng.choice(CLIENT_PHONES["Nino"][1:])))
    if maybe(0.1):
        params["category"] = rng.choice(("vip", "regular", "problem"))
    if maybe(0.1):
        params["queue"] = rng.choice(("sales", "support"))
    if maybe(0.1):
        params["talk_min_s"] = str(rng.choice((0, 100, 500)))
    if maybe(0.1):
        params["wait_max_s"] = str(rng.choice((10, 45.5)))
    for key in ("too_long", "recorded"):
        if maybe(0.08):
            params[key] = rng.choice(("true", "false"))
    return params


def parse(params: dict[str, Any], **extra: Any) -> q.CallFilter:
    return q.parse_filter(MultiDict({**params, **extra}), numbers=NUMBERS, tz=TZ)


async def walk(
    db: aiosqlite.Connection,
    f: q.CallFilter,
    scope: tuple[str, ...] | None,
    sort: str,
    limit: int,
    bound: int,
) -> list[dict[str, Any]]:
    """Every page, following next_cursor; at most `bound` pages."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(bound):
        page = await q.page(db, f, scope=scope, sort=sort, limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        items += page.items
        cursor = page.next_cursor
        if cursor is None:
            return items
        assert len(page.items) == limit  # only a full page may have a next one
    raise AssertionError(f"more than {bound} pages")


# -- the query layer -----------------------------------------------------------------------------


async def test_random_filters_pages_totals_days_and_csv_agree_with_the_records(log: Log) -> None:
    rng = random.Random(11)
    nonempty = 0
    for _ in range(60):
        params = random_params(rng, log.calls)
        scope = tuple(rng.sample(EXTS, 2)) if rng.random() < 0.3 else None
        if scope is not None and "extension" in params:
            params["extension"] = scope[0]  # an operator may ask only for its own
        sort = rng.choice(list(q.SORTS))
        f = parse(params)
        want = expected(log.calls, params, scope)
        nonempty += bool(want)
        limit = rng.randint(1, 9)
        got = await walk(log.db, f, scope, sort, limit, bound=len(want) // limit + 2)
        assert [i["call_id"] for i in got] == ordered(want, sort), (params, scope, sort)

        totals = await q.totals(log.db, f, scope=scope)
        answered = [s for s in want if s.record.status == "answered"]
        assert totals["count"] == len(want)
        assert totals["answered"] == len(answered)
        assert totals["missed"] == len(missed_of(want, params))
        assert totals["talk_s"] == pytest.approx(sum(s.record.talk_s for s in want), abs=0.01)
        waits = [s.record.wait_s for s in want]
        assert totals["wait_avg_s"] == (
            pytest.approx(sum(waits) / len(waits), abs=0.001) if waits else None
        )

        days = await q.by_day(log.db, f, scope=scope, tz=TZ)
        by_local_day: dict[str, list[Seeded]] = {}
        for s in want:
            day = dt.datetime.fromtimestamp(s.record.started_at, TZ).date().isoformat()
            by_local_day.setdefault(day, []).append(s)
        assert [d["day"] for d in days] == sorted(by_local_day)
        for d in days:
            those = by_local_day[d["day"]]
            assert d["count"] == len(those)
            assert d["missed"] == len(missed_of(those, params))
            assert d["abandoned"] == len(missed_of(those, params, ("abandoned",)))

        exported = b"".join([c async for c in export.iter_csv(log.db, f, scope=scope, batch=limit)])
        lines = list(csv.DictReader(io.StringIO(exported.decode("utf-8"), newline="")))
        assert [line["call_id"] for line in lines] == ordered(want, "-started_at")
    assert nonempty >= 30  # the filters were not all empty ones


def missed_of(
    calls: Sequence[Seeded], params: dict[str, Any], statuses: Sequence[str] = q.MISSED
) -> list[Seeded]:
    """Missed: unanswered; with an extension filter, also rung on one of those extensions."""
    exts = set(params.get("extension", "").split(",")) - {""}
    return [
        s
        for s in calls
        if s.record.status in statuses and (not exts or set(s.record.extensions_rung) & exts)
    ]


async def test_a_page_item_is_the_record_as_to_dict_has_it(log: Log) -> None:
    page = await q.page(log.db, parse({}), scope=None, limit=q.MAX_LIMIT)
    by_id = {s.record.call_id: s for s in log.calls}
    assert len(page.items) == len(log.calls)
    for it in page.items:
        s = by_id[it["call_id"]]
        stored = await log.store.get(it["call_id"])
        assert stored is not None
        assert {k: it[k] for k in stored.to_dict()} == stored.to_dict()
        assert it["client_id"] == s.client_id
        assert it["client_name"] == s.client_name
        assert it["client_category"] == s.category
        assert it["too_long"] is s.too_long
    assert {"answered_at", "ended_at"} <= {t for it in page.items for t in it["estimated"]}
    sql = f"SELECT {q.ITEM_COLUMNS} FROM calls AS c LEFT JOIN clients AS cl ON cl.id = c.client_id"
    for row in await log.db.execute_fetchall(sql):
        record = from_row(tuple(row[: len(q.RECORD_FIELDS)])).to_dict()
        assert {k: v for k, v in q.item(tuple(row)).items() if k in record} == record


async def test_every_written_form_of_a_number_finds_the_same_calls(log: Log) -> None:
    e164 = CLIENT_PHONES["Nino"][1]
    want = {
        s.record.call_id
        for s in log.calls
        if e164 in (e164_of(s.record.caller_number), e164_of(s.record.called_number))
    }
    assert len(want) >= 20
    for form in [*written_forms(e164), "+995 555 12-34-56", "(0555) 12 34 56"]:
        got = await walk(log.db, parse({"number": form}), None, "-started_at", 50, 10)
        assert {i["call_id"] for i in got} == want, form
        totals = await q.totals(log.db, parse({"number": form}), scope=None)
        assert totals["count"] == len(want)


async def test_missed_for_an_extension_means_it_rang_and_nobody_answered(tmp_path: Path) -> None:
    async with opened_log(tmp_path / "pbxlink.sqlite3", 0) as lg:
        base = make_record(called_number=DIDS[0], status="no_answer", extensions_rung=[])
        calls = [
            # the ring group rang 101 and 102, 102 answered: 101 missed nothing
            dataclasses.replace(base, call_id="group", status="answered",
                                extensions_rung=["101", "102"], answered_by="102"),
            dataclasses.replace(base, call_id="rang-101", extensions_rung=["101"]),
            dataclasses.replace(base, call_id="abandoned", status="abandoned",
                                extensions_rung=["103", "101"]),
            # 101 called out and nobody answered: not a call 101 missed
            dataclasses.replace(base, call_id="out-101", direction="outbound",
                                caller_number="101", called_number="+995555123456"),
            # a transfer to 101 after 102 answered
            dataclasses.replace(base, call_id="xfer", status="answered", extensions_rung=["102"],
                                answered_by="102", transferred_to=["101"]),
        ]  # fmt: skip
        await seed(lg.store, [Seeded(dataclasses.replace(c, started_at=T0 + i, ended_at=T0 + i))
                              for i, c in enumerate(calls)])  # fmt: skip

        async def ids(params: dict[str, str], scope: tuple[str, ...] | None = None) -> set[str]:
            page = await q.page(lg.db, parse(params), scope=scope, limit=50)
            return {i["call_id"] for i in page.items}

        assert await ids({"status": "missed", "extension": "101"}) == {"rang-101", "abandoned"}
        assert await ids({"status": "no_answer", "extension": "101"}) == {"rang-101", "out-101"}
        assert await ids({"status": "missed,no_answer", "extension": "101"}) == {
            "rang-101", "abandoned", "out-101"
        }  # fmt: skip
        assert await ids({"extension": "101"}) == {c.call_id for c in calls}
        assert await ids({"status": "missed"}) == {"rang-101", "abandoned", "out-101"}
        assert await ids({}, scope=("103",)) == {"abandoned"}
        assert await ids({"status": "missed"}, scope=("101",)) == {
            "rang-101", "abandoned", "out-101"
        }  # fmt: skip
        totals = await q.totals(lg.db, parse({"extension": "101"}), scope=None)
        assert (totals["count"], totals["answered"], totals["missed"]) == (5, 2, 2)
        days = await q.by_day(lg.db, parse({"extension": "101"}), scope=None, tz=TZ)
        assert [(d["count"], d["missed"], d["abandoned"]) for d in days] == [(5, 2, 1)]


async def test_an_extension_filter_never_widens_the_scope(log: Log) -> None:
    """The API answers 403 first; the query layer keeps to the scope whoever calls it."""
    f = parse({"extension": "104,105"})
    page = await q.page(log.db, f, scope=("101",), limit=q.MAX_LIMIT)
    assert page.items == []
    mixed = await q.page(log.db, parse({"extension": "101,105"}), scope=("101",), limit=500)
    assert {i["call_id"] for i in mixed.items} == {
        s.record.call_id for s in log.calls if "101" in s.involved
    }
    assert (await q.totals(log.db, f, scope=("101",)))["count"] == 0


STARTED_SORT_FILTERS: list[tuple[dict[str, str], tuple[str, ...] | None]] = [
    ({}, None),
    ({"day": "2024-03-31"}, None),
    ({"direction": "inbound"}, None),
    ({"direction": "inbound,internal"}, None),
    ({"status": "missed"}, None),
    ({"status": "busy", "direction": "inbound,outbound"}, None),
    ({"status": "missed", "direction": "inbound,outbound", "from": "2024-03-30"}, None),
    ({"extension": "101"}, None),
    ({"extension": "101,102", "status": "missed"}, None),
    ({}, ("101",)),
    ({"status": "missed"}, ("101", "102", "103")),
    ({"number": "0555123456"}, None),
    ({"number": "0555123456", "extension": "101"}, None),
    ({"number": "0322100100", "status": "answered"}, None),
    ({"client": "1"}, None),
    ({"client": "1"}, ("102",)),
    ({"category": "vip"}, None),
    ({"queue": "sales", "status": "abandoned"}, None),
    ({"too_long": "true"}, None),
    ({"recorded": "true", "talk_min_s": "60"}, None),
]


async def test_pages_in_time_order_never_sort_and_never_scan_a_table(log: Log) -> None:
    """Each arm reads an index in order, from the cursor on (SQLite has no statistics here, so
    its choices do not depend on this small file); a sort may only order ties of one entry."""
    for params, scope in STARTED_SORT_FILTERS:
        for sort in ("-started_at", "started_at"):
            for after in (None, (T0 + 86400, "5")):
                f = parse(params)
                plan = await q.explain(log.db, f, scope=scope, sort=sort, after=after)
                where = (params, scope, sort, after, plan)
                assert not [p for p in plan if p.startswith("SCAN") and "USING" not in p], where
                sorts = [p for p in plan if "TEMP B-TREE FOR" in p and "RIGHT PART" not in p]
                assert not sorts, where


TALK_ORDER_INDEXES: list[tuple[dict[str, str], tuple[str, ...] | None, str]] = [
    ({}, None, "calls_talk"),
    ({"direction": "internal"}, None, "calls_talk"),
    ({"status": "missed", "queue": "sales"}, None, "calls_talk"),
    ({"number": "0555123456"}, None, "calls_caller"),
    ({"day": "2024-03-31"}, None, "calls_started"),  # few calls that day: sorted
    ({}, ("101",), "call_extensions_extension"),
]


async def test_talk_order_reads_the_cheapest_index(log: Log) -> None:
    for params, scope, index in TALK_ORDER_INDEXES:
        plan = await q.explain(log.db, parse(params), scope=scope, sort="-talk_s")
        assert any(index in p for p in plan), (params, scope, plan)


async def test_a_page_a_hundred_deep_costs_what_the_first_costs(tmp_path: Path) -> None:
    """Counted in SQLite VM instructions, not time: a busy machine cannot make this flaky."""
    async with opened_log(tmp_path / "pbxlink.sqlite3", 3000, seed_value=8) as lg:
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        await lg.db.set_progress_handler(count, 10)
        month = {"from": day_of(T0 + 2 * 86400), "until": day_of(T0 + 40 * 86400)}
        cases = [
            ({}, None, "-started_at"),
            ({"status": "missed"}, None, "-started_at"),
            ({}, ("101", "102"), "-started_at"),
            ({"direction": "inbound,outbound"}, None, "started_at"),
            # a period and a cursor bound the same column: the cursor's bound must be sought
            (month, None, "-started_at"),
            (month, None, "started_at"),
            ({**month, "extension": "101,103"}, None, "-started_at"),
            ({**month, "status": "answered,busy"}, ("101", "102", "103"), "started_at"),
            ({"talk_max_s": "700"}, None, "-talk_s"),  # the same with the talk index
            ({"wait_min_s": "10"}, None, "wait_s"),
        ]
        for params, scope, sort in cases:
            f, cursor, costs = parse(params), None, []
            for _ in range(100):
                steps = 0
                page = await q.page(lg.db, f, scope=scope, sort=sort, limit=10, cursor=cursor)
                costs.append(steps)
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert len(costs) >= 40, (params, len(costs))  # deep enough to tell
            first, deep = costs[0], max(costs[len(costs) // 2 :])
            assert deep <= first * 1.5 + 20, (params, first, deep, costs)
            if (params, scope, sort) == cases[0]:
                steps = 0
                await lg.db.execute_fetchall(
                    f"SELECT {q.ITEM_COLUMNS} FROM calls AS c {q._JOIN_CLIENT} "
                    "ORDER BY c.started_at DESC, c.call_id DESC LIMIT 10 OFFSET 900"
                )
                assert steps > 5 * first  # the yardstick: OFFSET reads what it skips
        await lg.db.set_progress_handler(None, 10)


# -- parameters and cursors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"direction": "sideways"}, "direction"),
        ({"direction": ""}, "direction"),
        ({"status": "answered,lost"}, "status"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2024-03-01T10:00:00"}, "from"),  # no offset
        ({"until": "2024-02-30"}, "until"),
        ({"from": "2024-03-02", "until": "2024-03-01"}, "until"),
        ({"day": "2024-3-1"}, "day"),
        ({"day": "2024-03-01", "from": "2024-03-01"}, "day"),
        ({"number": "anonymous"}, "number"),
        ({"client": "0"}, "client"),
        ({"client": "x1"}, "client"),
        ({"client": "99999999999999999999"}, "client"),
        ({"talk_min_s": "-1"}, "talk_min_s"),
        ({"talk_max_s": "nan"}, "talk_max_s"),
        ({"wait_min_s": "inf"}, "wait_min_s"),
        ({"talk_min_s": "10", "talk_max_s": "5"}, "talk_max_s"),
        ({"too_long": "yes"}, "too_long"),
        ({"recorded": ""}, "recorded"),
        ({"queue": "x" * 200}, "queue"),
        ({"category": "v\x00ip"}, "category"),
        ({"colour": "red"}, "colour"),
        ({"extension": "101,,102"}, "extension"),
    ],
    ids=str,
)
def test_a_bad_parameter_is_named(params: dict[str, str], param: str) -> None:
    with pytest.raises(QueryError) as err:
        parse(params)
    assert err.value.param == param
    assert param in str(err.value)


def test_repeated_single_parameters_are_refused_and_lists_may_repeat() -> None:
    with pytest.raises(QueryError) as err:
        q.parse_filter(MultiDict([("queue", "a"), ("queue", "b")]), numbers=NUMBERS, tz=TZ)
    assert err.value.param == "queue"
    f = q.parse_filter(
        MultiDict([("status", "busy"), ("status", "missed"), ("direction", "inbound")]),
        numbers=NUMBERS,
        tz=TZ,
    )
    assert f.statuses == ("no_answer", "busy", "abandoned", "voicemail")
    assert f.missed_rang == ("no_answer", "abandoned", "voicemail")  # busy was asked itself
    for params, param in (({"sort": "talk"}, "sort"), ({"limit": "0"}, "limit"),
                          ({"limit": "501"}, "limit"), ({"limit": "1e2"}, "limit")):  # fmt: skip
        with pytest.raises(QueryError) as err:
            q.parse_page(MultiDict(params))
        assert err.value.param == param


def test_dates_are_local_days_and_offsets_are_kept() -> None:
    spring = parse({"day": "2024-03-31"})
    assert spring.since is not None and spring.until is not None
    assert spring.until - spring.since == 23 * 3600  # Berlin's clocks went forward
    assert dt.datetime.fromtimestamp(spring.since, TZ).hour == 0
    f = parse({"from": "2024-03-01", "until": "2024-03-01T12:00:00+04:00"})
    assert f.since == dt.datetime(2024, 3, 1, tzinfo=TZ).timestamp()
    assert f.until == dt.datetime(2024, 3, 1, 8, tzinfo=dt.UTC).timestamp()
    # an unencoded + arrives as a space; Z is UTC
    assert parse({"from": "2024-03-01T12:00:00 04:00"}).since == f.until
    assert parse({"from": "2024-03-01T08:00:00Z"}).since == f.until


async def test_a_cursor_only_works_where_it_was_made(log: Log) -> None:
    f = parse({})
    page = await q.page(log.db, f, scope=None, limit=5)
    assert page.next_cursor is not None
    again = await q.page(log.db, f, scope=None, limit=5, cursor=page.next_cursor)
    assert again.items[0]["call_id"] not in {i["call_id"] for i in page.items}
    cursor = page.next_cursor
    edits = [
        cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1],  # one character
        cursor[:10] + cursor[11:],
        cursor + "x",
        "",
        "not a cursor",
        "ünïcode",
        "A" * 2000,
        q.encode_cursor("-started_at", 1.0, "x")[:-1],
    ]
    for bad in edits:
        with pytest.raises(QueryError) as err:
            await q.page(log.db, f, scope=None, limit=5, cursor=bad)
        assert err.value.param == "cursor"
    with pytest.raises(QueryError, match="sort"):
        await q.page(log.db, f, scope=None, sort="-talk_s", limit=5, cursor=cursor)
    forged = q.encode_cursor("-started_at", "1", "x")  # type: ignore[arg-type]
    with pytest.raises(QueryError):
        await q.page(log.db, f, scope=None, limit=5, cursor=forged)


# -- CSV -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("-", "'-"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("+995555123456", "+995555123456"),
        ("+995 (555) 12-34-56", "+995 (555) 12-34-56"),
        ("-5", "-5"),
        ("-1.5", "-1.5"),
        ("Nino", "Nino"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_spreadsheet_formulas_are_defused(cell: str, safe: str) -> None:
    assert export.safe_cell(cell) == safe


def test_fast_iso_is_iso_utc() -> None:
    rng = random.Random(3)
    values = [T0, T0 + 0.5, T0 + 0.0005, T0 + 0.9999995, T0 + 0.9994999, 0.0, 59.9999996]
    values += [round(rng.uniform(1e9, 2e9), 6) for _ in range(20_000)]
    values += [rng.uniform(0, 2e9) for _ in range(20_000)]
    for value in values:
        assert export.fast_iso(value) == iso_utc(value), value


async def test_csv_has_every_field_bom_on_request_and_defused_names(log: Log) -> None:
    f = parse({})
    plain = b"".join([c async for c in export.iter_csv(log.db, f, scope=None, batch=37)])
    with_bom = b"".join([c async for c in export.iter_csv(log.db, f, scope=None, bom=True)])
    assert with_bom == export.BOM + plain
    assert not plain.startswith(export.BOM)
    text = plain.decode("utf-8")
    assert text.count("\r\n") == len(log.calls) + 1
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == export.CSV_COLUMNS
    page = await q.page(log.db, f, scope=None, limit=q.MAX_LIMIT)
    for row, it in zip(rows[1:], page.items, strict=True):
        cell = dict(zip(export.CSV_COLUMNS, row, strict=True))
        for name in ("call_id", "started_at", "answered_at", "direction", "status", "queue"):
            assert cell[name] == (it[name] or ""), name
        assert cell["caller_name"] == export.safe_cell(it["caller_name"])
        assert cell["extensions_rung"] == " ".join(it["extensions_rung"])
        assert float(cell["talk_s"]) == it["talk_s"]
        assert cell["client_name"] == (it["client_name"] or "")
        assert cell["too_long"] == str(it["too_long"]).lower()
        assert cell["partial"] == str(it["partial"]).lower()
        assert cell["estimated"] == " ".join(it["estimated"])
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text
    guessed = {t for row in rows[1:] for t in row[export.CSV_COLUMNS.index("estimated")].split()}
    assert guessed == {"answered_at", "ended_at"}  # the column is filled, space-separated
    assert "+995555123456" in text and "'+995555123456" not in text


async def test_an_export_stopped_half_way_leaves_the_reader_usable(log: Log) -> None:
    chunks = export.iter_csv(log.db, parse({}), scope=None, batch=10)
    assert (await anext(chunks)).startswith(b"call_id,")
    await anext(chunks)
    await chunks.aclose()  # the client went away
    assert await q.visible(log.db, log.calls[0].record.call_id, None)


async def test_visible_and_get_keep_to_the_scope(log: Log) -> None:
    some = next(s for s in log.calls if s.involved and s.record.direction == "inbound")
    ext = sorted(some.involved)[0]
    other = next(e for e in EXTS if e not in some.involved)
    cid = some.record.call_id
    assert await q.visible(log.db, cid, None)
    assert await q.visible(log.db, cid, (other, ext))
    assert not await q.visible(log.db, cid, (other,))
    assert not await q.visible(log.db, cid, ())
    assert not await q.visible(log.db, "no-such-call", None)
    got = await q.get(log.db, cid, (ext,))
    assert got is not None and got["call_id"] == cid and got["client_id"] == some.client_id
    assert await q.get(log.db, cid, (other,)) is None


# -- the routes ----------------------------------------------------------------------------------

TOKENS = {
    "operator": "op-token-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supervisor": "sup-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "admin": "admin-token-cccccccccccccccccccccccccccccccccc",
}
OPERATOR_EXTS = ("101", "104")
SCOPES: dict[str, tuple[str, ...] | None] = {
    "operator": OPERATOR_EXTS,
    "supervisor": None,
    "admin": None,
}
ROUTES = ("/api/calls", "/api/calls/totals", "/api/calls/by-day", "/api/calls.csv")


def app_config() -> Config:
    config = Config(
        operators=[
            Operator("Nino", OPERATOR_EXTS, "operator", hash_token(TOKENS["operator"])),
            Operator("Sandro", ("200",), "supervisor", hash_token(TOKENS["supervisor"])),
            Operator("Ana", (), "admin", hash_token(TOKENS["admin"])),
        ]
    )
    config.tracker.pbx_timezone = TZ
    return config


@pytest.fixture
async def http(log: Log) -> AsyncIterator[aiohttp.ClientSession]:
    app = make_app(app_config(), FakeStatus(), Metrics(), directory=log.directory, store=log.store)
    async with session_to(app) as session:
        yield session


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


async def get_json(
    http: aiohttp.ClientSession, path: str, role: str, expect: int = 200, **params: Any
) -> Any:
    async with http.get(path, headers=auth(role), params=params) as resp:
        text = await resp.text()
        assert resp.status == expect, f"{path} {params}: {resp.status} {text}"
        assert resp.content_type == "application/json", text
        return json.loads(text)


async def all_pages(http: aiohttp.ClientSession, role: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(100):
        body = await get_json(http, "/api/calls", role, **params)
        items += body["items"]
        if body["next_cursor"] is None:
            return items
        params["cursor"] = body["next_cursor"]
    raise AssertionError("more than 100 pages")


async def read_csv(http: aiohttp.ClientSession, role: str, **params: Any) -> list[dict[str, str]]:
    async with http.get("/api/calls.csv", headers=auth(role), params=params) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert resp.headers["Transfer-Encoding"] == "chunked"  # streamed, no Content-Length
        assert resp.headers["Content-Disposition"].startswith('attachment; filename="calls-')
        body = await resp.read()
    text = body.decode("utf-8-sig" if params.get("bom") == "true" else "utf-8")
    assert body.startswith(export.BOM) == (params.get("bom") == "true")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("role", ["operator", "supervisor", "admin"])
async def test_each_route_shows_a_role_its_calls(
    log: Log, http: aiohttp.ClientSession, role: str
) -> None:
    scope = SCOPES[role]
    for params in ({}, {"status": "missed", "direction": "inbound"}, {"sort": "wait_s"}):
        sort = params.get("sort", "-started_at")
        filters = {k: v for k, v in params.items() if k != "sort"}
        want = expected(log.calls, filters, scope)
        assert want and (scope is None) == (len(want) == len(expected(log.calls, filters, None)))
        items = await all_pages(http, role, limit="7", **params)
        assert [i["call_id"] for i in items] == ordered(want, sort)
        totals = await get_json(http, "/api/calls/totals", role, **filters)
        assert totals["count"] == len(want)
        days = (await get_json(http, "/api/calls/by-day", role, **filters))["days"]
        assert sum(d["count"] for d in days) == len(want)
        rows = await read_csv(http, role, **params)
        assert [r["call_id"] for r in rows] == ordered(want, sort)
    mine = next(s for s in log.calls if s.client_id and s.involved & set(OPERATOR_EXTS))
    others = next(s for s in log.calls if s.client_id and not s.involved & set(OPERATOR_EXTS))
    for s in (mine, others):
        path = f"/api/calls/{s.record.call_id}"
        if scope is not None and s is others:
            error = await get_json(http, path, role, expect=404)
            assert error["error"] == "not_found"  # the same as a call that does not exist
            continue
        call = await get_json(http, path, role)
        assert set(call) == {*q.RECORD_FIELDS, "client_id", "too_long", "client_name",
                             "client_category", "client", "recording_accesses"}  # fmt: skip
        assert call["recording_accesses"] == []  # nobody listened
        assert call["call_id"] == s.record.call_id
        assert call["client"]["id"] == s.client_id
        assert call["client"]["name"] == s.client_name
        assert call["client"]["phones"][0]["e164"] == CLIENT_PHONES[s.client_name or ""][1]
    missing = await get_json(http, "/api/calls/1700000000.999", role, expect=404)
    assert missing["what"] == "call"


@pytest.mark.parametrize("path", ROUTES)
async def test_an_operator_asking_for_another_extension_gets_403(
    http: aiohttp.ClientSession, path: str
) -> None:
    for value in ("102", "101,102"):
        async with http.get(path, headers=auth("operator"), params={"extension": value}) as resp:
            assert resp.status == 403
            error = await resp.json()
            assert (error["error"], error["field"]) == ("forbidden", "extension")
            assert "102" in error["message"]
    async with http.get(path, headers=auth("operator"), params={"extension": "104"}) as resp:
        assert resp.status == 200
    async with http.get(path, headers=auth("supervisor"), params={"extension": "102"}) as resp:
        assert resp.status == 200


async def test_a_supervisor_filters_by_any_extension_and_number(
    log: Log, http: aiohttp.ClientSession
) -> None:
    params = {"extension": "102", "status": "missed", "number": "+995 555 12-34-56"}
    want = expected(log.calls, params, None)
    items = await all_pages(http, "supervisor", **params)
    assert [i["call_id"] for i in items] == ordered(want, "-started_at")
    assert set(items[0]) == {*q.RECORD_FIELDS, "client_id", "too_long", "client_name",
                             "client_category"}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/api/calls", {"limit": "0"}, "limit"),
        ("/api/calls", {"limit": "many"}, "limit"),
        ("/api/calls", {"sort": "caller"}, "sort"),
        ("/api/calls", {"cursor": "garbage"}, "cursor"),
        ("/api/calls", {"from": "2024-13-01"}, "from"),
        ("/api/calls", {"direction": "up"}, "direction"),
        ("/api/calls", {"callerid": "1"}, "callerid"),
        ("/api/calls/totals", {"limit": "5"}, "limit"),  # not a parameter of totals
        ("/api/calls/by-day", {"status": "gone"}, "status"),
        ("/api/calls.csv", {"cursor": "x"}, "cursor"),
        ("/api/calls.csv", {"bom": "maybe"}, "bom"),
        ("/api/calls/1.1", {"day": "monday"}, "day"),
    ],
    ids=str,
)
async def test_a_bad_parameter_is_a_400_naming_it(
    http: aiohttp.ClientSession, path: str, params: dict[str, str], param: str
) -> None:
    error = await get_json(http, path, "supervisor", expect=400, **params)
    assert (error["error"], error["field"]) == ("bad_request", param)
    assert param in error["message"]


async def test_a_cursor_pages_on_over_http(log: Log, http: aiohttp.ClientSession) -> None:
    first = await get_json(http, "/api/calls", "admin", limit="3", sort="-talk_s")
    second = await get_json(
        http, "/api/calls", "admin", limit="3", sort="-talk_s", cursor=first["next_cursor"]
    )
    want = ordered(log.calls, "-talk_s")
    assert [i["call_id"] for i in first["items"] + second["items"]] == want[:6]
    error = await get_json(
        http, "/api/calls", "admin", expect=400, limit="3", cursor=first["next_cursor"]
    )
    assert error["field"] == "cursor"  # made for -talk_s, asked with the default order
    last = await get_json(http, "/api/calls", "admin", limit="500")
    assert last["next_cursor"] is None and len(last["items"]) == len(log.calls)


async def test_every_route_needs_a_token(http: aiohttp.ClientSession, log: Log) -> None:
    for path in (*ROUTES, f"/api/calls/{log.calls[0].record.call_id}"):
        async with http.get(path) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"] == "unauthorized"


async def test_a_failure_half_way_through_an_export_breaks_the_download(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short file that looks complete would be worse than none: the connection is cut."""

    async def failing(*args: Any, **kwargs: Any) -> AsyncIterator[bytes]:
        yield b"call_id\r\n1\r\n"
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(export, "iter_csv", failing)
    async with http.get("/api/calls.csv", headers=auth("admin")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    async with http.get("/api/calls/totals", headers=auth("admin")) as resp:
        assert resp.status == 200  # the server goes on


async def test_a_long_extension_list_is_one_query_and_too_long_a_list_a_400(log: Log) -> None:
    many = [str(n) for n in range(101, 101 + q.MAX_ARMS + 6)]
    params = {"extension": ",".join(many), "status": "missed"}
    plan = await q.explain(log.db, parse(params), scope=None)
    assert not any("MERGE" in p for p in plan), plan
    page = await q.page(log.db, parse(params), scope=None, limit=q.MAX_LIMIT)
    assert [i["call_id"] for i in page.items] == ordered(
        expected(log.calls, params, None), "-started_at"
    )
    with pytest.raises(QueryError) as err:
        parse({"extension": ",".join(str(n) for n in range(MAX_VALUES + 1))})
    assert err.value.param == "extension"
