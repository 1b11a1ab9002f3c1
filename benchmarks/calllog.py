"""The call log at ten million calls: a filtered page, a page 1,000 deep, a month's service
level by day and a CSV export, on a year of generated calls in pbxlink's own SQLite schema.

Why this shape: a call centre of 100 operators keeps years of calls, and the call-log page,
the supervisor's figures and the export must stay quick at that size. The yardstick for deep
pages is what most list APIs do, LIMIT/OFFSET with the same ORDER BY, timed in the same run on
the same connection: its cost grows with the offset, a cursor's should not.

The calls: a year (2025, office hours in Asia/Tbilisi) of inbound calls through an IVR into
three queues, a ring group where several phones ring at once, and direct DIDs; outbound and
internal calls; every status; recordings, transfers, too-long calls, partial records; callers
drawn with a skew from 300,000 numbers, two thirds of them clients in the directory. Rows are
made as `pbxlink.calllog.rows.to_row` / `extension_rows` make them (every 1,000th row is
checked against them) and written straight into a database that `schema.connect` + `migrate`
created, its indexes dropped during the load and recreated from their own SQL after it. The
file is cached (`benchmarks/.data/`) so a re-run only measures.

What is timed, on the reader connection the API uses (`CallLogStore.reader`), each after one
untimed run: `query.page` for a filtered first page and for the page 1,001 reached by following
1,000 `next_cursor`s, next to LIMIT/OFFSET with the layer's own conditions and order (the two
must return the same calls); `servicelevel.service_level` and `query.by_day` for June by day;
`export.iter_csv` for June, next to a bare csv.writer over the same SELECT. Each phase reports
the share of the machine other processes took meanwhile.

Run: `python benchmarks/calllog.py [--calls N] [--db PATH] [--only pages,aggregates,csv]`
(`--generate-only` makes the cached file and stops); results in docs/benchmarks.md. `--smoke`
(CI) runs every phase and check once on a small year: it proves the script works.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import hashlib
import io
import math
import os
import platform
import queue
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import aiosqlite

from pbxlink.calllog import query
from pbxlink.calllog.export import CSV_BATCH, iter_csv
from pbxlink.calllog.params import day_start
from pbxlink.calllog.rows import COLUMNS, extension_rows, from_row, to_row
from pbxlink.calllog.servicelevel import Query as SlQuery
from pbxlink.calllog.servicelevel import service_level
from pbxlink.calllog.settings import Thresholds
from pbxlink.calllog.store import CallLogStore
from pbxlink.calls.toolong import is_too_long
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.db import MIGRATIONS, connect, migrate
from pbxlink.logs import setup_logging

from machine import Others, Series, cpu_model, git_commit, size_mb, wait_quiet

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
#: bump when the generated calls change, so a cached file of the old kind is not reused
GENERATOR = 1

YEAR = 2025
TZ = ZoneInfo("Asia/Tbilisi")
THRESHOLDS = Thresholds()  # the defaults: too long past 1800 s of talk, any direction
TOO_LONG_S = THRESHOLDS.too_long_call_s

# -- the PBX ------------------------------------------------------------------------------------

EXTENSIONS = tuple(str(n) for n in range(101, 201))
QUEUES = {
    "sales": EXTENSIONS[0:30],
    "support": EXTENSIONS[30:70],
    "billing": EXTENSIONS[70:85],
}
IVR = (("1", "sales"), ("2", "support"), ("2", "support"), ("3", "billing"))
RING_GROUP = EXTENSIONS[85:95]  # reception: several phones ring at once
MAIN_DID, RECEPTION_DID = "+995322100100", "+995322100200"
DIRECT_DID = "+9953221003"  # + the extension: each operator's own line
MONITOR = "/var/spool/asterisk/monitor"
CLIENTS = 200_000  # numbers in the directory, out of CALLERS
CALLERS = 300_000
FIRST = ("ნინო", "გიორგი", "თამარ", "დავით", "Иван", "Ольга", "Nino", "Giorgi", "Mariam", "")
LAST = ("ბერიძე", "კაპანაძე", "Петров", "Beridze", "Gelashvili", "Smith", "")

# relative call volume by local hour (weekdays); office hours: Mon-Fri 9-19, Sat 10-15
HOURS = (0.04, 0.03, 0.02, 0.02, 0.02, 0.03, 0.05, 0.12, 0.35, 1.0, 1.4, 1.5,
         1.3, 1.1, 1.3, 1.4, 1.3, 1.0, 0.6, 0.25, 0.12, 0.08, 0.06, 0.05)  # fmt: skip
WEEKDAY = (1.0, 1.0, 1.0, 1.0, 0.95, 0.35, 0.1)
HOLIDAYS = {(1, 1), (1, 2), (1, 7), (1, 19), (3, 3), (3, 8), (4, 9), (5, 9), (5, 12), (5, 26),
            (8, 28), (10, 14), (11, 23)}  # fmt: skip

T = TypeVar("T")
Row = tuple[object, ...]
ExtRow = tuple[str, str, str, float]
_N = len(COLUMNS.split(", "))  # the record's columns; then client_id and too_long
_MARKS = ", ".join("?" * (_N + 2))
INSERT_CALLS = f"INSERT INTO calls ({COLUMNS}, client_id, too_long) VALUES ({_MARKS})"
INSERT_EXTENSIONS = "INSERT INTO call_extensions VALUES (?, ?, ?, ?)"


def is_open(local: dt.datetime) -> bool:
    """Office hours, when the IVR sends callers to the queues rather than to voicemail."""
    if (local.month, local.day) in HOLIDAYS or local.weekday() == 6:
        return False
    if local.weekday() == 5:
        return 10 <= local.hour < 15
    return 9 <= local.hour < 19


def day_weights() -> list[tuple[dt.date, float]]:
    """Each day of the year and its share of the calls: weekdays, holidays, a season."""
    out = []
    day = dt.date(YEAR, 1, 1)
    while day.year == YEAR:
        w = 0.1 if (day.month, day.day) in HOLIDAYS else WEEKDAY[day.weekday()]
        season = 1.0 + 0.12 * math.cos((day.timetuple().tm_yday - 20) / 365 * 2 * math.pi)
        out.append((day, w * season))
        day += dt.timedelta(days=1)
    return out


def split(total: int, weights: Sequence[float]) -> list[int]:
    """`total` shared out by weight, whole numbers adding up exactly (largest remainder)."""
    raw = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in raw]
    by_rest = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_rest[: total - sum(counts)]:
        counts[i] += 1
    return counts


def callers(rnd: random.Random, count: int = CALLERS) -> list[tuple[str, str, int | None]]:
    """(number, caller ID name, client id) for each possible caller; clients come first."""
    clients = count * CLIENTS // CALLERS
    seen: set[str] = set()
    out: list[tuple[str, str, int | None]] = []
    while len(out) < count:
        if rnd.random() < 0.85:
            number = f"+9955{rnd.choice('1579')}{rnd.randrange(10**7):07d}"
        else:
            number = f"+99532{rnd.randrange(2 * 10**6, 3 * 10**6)}"
        if number in seen:
            continue
        seen.add(number)
        name = f"{rnd.choice(FIRST)} {rnd.choice(LAST)}".strip() if rnd.random() < 0.4 else ""
        out.append((number, name, len(out) + 1 if len(out) < clients else None))
    return out


# -- the calls ----------------------------------------------------------------------------------


def strings(values: Sequence[str]) -> str:
    """The JSON `to_row` writes for a list of extensions (digits only: nothing to escape)."""
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


@dataclass(slots=True)
class Calls:
    """A seeded stream of calls, one day at a time, as rows ready for executemany."""

    rnd: random.Random
    who: list[tuple[str, str, int | None]]
    seq: int = 0
    made: int = 0
    checked: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def day(self, day: dt.date, n: int) -> tuple[list[Row], list[ExtRow]]:
        rnd = self.rnd
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=TZ).timestamp()
        hours = rnd.choices(range(24), weights=HOURS, k=n)
        starts = sorted(midnight + h * 3600 + rnd.random() * 3600 for h in hours)
        calls: list[Row] = []
        exts: list[ExtRow] = []
        opened = {
            h: is_open(dt.datetime(day.year, day.month, day.day, h, tzinfo=TZ)) for h in set(hours)
        }
        for t in starts:
            hour = int((t - midnight) // 3600)
            row = self.call(round(t, 3), opened[hour], HOURS[hour])
            mine = [(row[0], ext, role, row[1]) for ext, role in self.extensions(row)]
            calls.append(row)
            exts += mine  # type: ignore[arg-type]
            self.made += 1
            if self.made % 1000 == 0:
                self.check(row, mine)  # type: ignore[arg-type]
        return calls, exts

    def call(self, t: float, open_: bool, load: float) -> Row:
        rnd = self.rnd
        self.seq += rnd.randrange(2, 6)  # Asterisk's uniqueid: epoch.channel counter
        call_id = f"{int(t)}.{self.seq}"
        x = rnd.random()
        if x < 0.62:
            return self.inbound(call_id, t, open_, load)
        if x < 0.9:
            return self.outbound(call_id, t)
        return self.internal(call_id, t)

    def caller(self) -> tuple[str, str, int | None]:
        if self.rnd.random() < 0.02:
            return "anonymous", "", None
        # regular clients call often: the low indices, which are the directory's
        return self.who[int(len(self.who) * self.rnd.random() ** 2.5)]

    def inbound(self, call_id: str, t: float, open_: bool, load: float) -> Row:
        rnd = self.rnd
        number, name, client = self.caller()
        x = rnd.random()
        queue: str | None = None
        digits = ""
        if not open_ or x < 0.55:  # the main line's IVR; closed: a message, then voicemail
            did, ivr = MAIN_DID, rnd.uniform(4, 14)
            if not open_:
                if rnd.random() < 0.5:
                    return self.row(
                        call_id,
                        t,
                        "inbound",
                        number,
                        name,
                        did,
                        "abandoned",
                        end=t + ivr,
                        cause=16,
                        client=client,
                    )
                return self.row(
                    call_id,
                    t,
                    "inbound",
                    number,
                    name,
                    did,
                    "voicemail",
                    end=t + ivr + rnd.uniform(5, 60),
                    cause=16,
                    client=client,
                )
            digits, queue = rnd.choice(IVR)
            members, ring_at_once, patience = QUEUES[queue], 1, rnd.expovariate(1 / 150)
            wait = rnd.expovariate(1 / (4 + 14 * load))  # busier hours: longer queues
        elif x < 0.85:
            did, ivr = RECEPTION_DID, rnd.uniform(0.5, 2)
            members, ring_at_once, patience = RING_GROUP, rnd.randint(3, 6), rnd.expovariate(1 / 40)
            wait = rnd.expovariate(1 / 9)
        else:
            ext = rnd.choice(EXTENSIONS)
            did, ivr = DIRECT_DID + ext, rnd.uniform(0.3, 1)
            members, ring_at_once, patience = (ext,), 1, rnd.expovariate(1 / 30)
            wait = rnd.expovariate(1 / 8) if rnd.random() < 0.85 else 1e9
        offered = t + ivr
        if rnd.random() < 0.01:  # the operator's phone answers busy
            ext = rnd.choice(members)
            return self.row(
                call_id,
                t,
                "inbound",
                number,
                name,
                did,
                "busy",
                offered=offered,
                end=offered + 0.5,
                rung=[ext],
                cause=17,
                queue=queue,
                digits=digits,
                client=client,
            )
        gives_up = min(patience, 20.0 if ring_at_once > 1 or queue is None else 1e9)
        if wait < gives_up:  # answered
            rung = self.rung(members, ring_at_once, wait, queue)
            answered = offered + wait
            talk = rnd.lognormvariate(math.log(150), 1.0)
            moved = [] if rnd.random() > 0.04 else [rnd.choice(EXTENSIONS)]
            return self.row(
                call_id,
                t,
                "inbound",
                number,
                name,
                did,
                "answered",
                offered=offered,
                answered=answered,
                end=answered + talk,
                rung=rung,
                by=rung[-1],
                cause=16,
                queue=queue,
                digits=digits,
                moved=moved,
                client=client,
                record=queue is not None or rnd.random() < 0.3,
            )
        rung = self.rung(members, ring_at_once, gives_up, queue)
        if gives_up < patience:  # nobody took it in time: voicemail, or the caller hangs up
            status = "voicemail" if rnd.random() < 0.6 else "no_answer"
            end = offered + gives_up + (rnd.uniform(5, 60) if status == "voicemail" else 0.0)
        else:
            status, end = "abandoned", offered + patience
        return self.row(
            call_id,
            t,
            "inbound",
            number,
            name,
            did,
            status,
            offered=offered,
            end=end,
            rung=rung,
            cause=16 if status != "no_answer" else 19,
            queue=queue,
            digits=digits,
            client=client,
        )

    def rung(
        self, members: Sequence[str], at_once: int, waited: float, queue: str | None
    ) -> list[str]:
        """Who rang: a ring group's phones at once, a queue's members one after another."""
        if at_once > 1:
            return self.rnd.sample(members, at_once)
        if queue is None:
            return [members[0]]
        tries = min(len(members), 1 + int(waited // 15))
        return self.rnd.sample(members, tries)

    def outbound(self, call_id: str, t: float) -> Row:
        rnd = self.rnd
        ext = rnd.choice(EXTENSIONS[:95])
        number, _, _ = self.who[int(len(self.who) * rnd.random() ** 2)]
        x = rnd.random()
        ring = rnd.uniform(3, 25)
        if x < 0.65:
            answered = t + ring
            talk = rnd.lognormvariate(math.log(110), 1.0)
            return self.row(
                call_id,
                t,
                "outbound",
                ext,
                "",
                number,
                "answered",
                answered=answered,
                end=answered + talk,
                cause=16,
                record=rnd.random() < 0.5,
            )
        status, cause = (("no_answer", 19), ("busy", 17), ("failed", 34))[
            0 if x < 0.87 else 1 if x < 0.95 else 2
        ]
        return self.row(
            call_id,
            t,
            "outbound",
            ext,
            "",
            number,
            status,
            end=t + (ring if status == "no_answer" else rnd.uniform(0.5, 3)),
            cause=cause,
        )

    def internal(self, call_id: str, t: float) -> Row:
        rnd = self.rnd
        ext, other = rnd.sample(EXTENSIONS, 2)
        x = rnd.random()
        if x < 0.8:
            answered = t + rnd.uniform(2, 12)
            talk = rnd.lognormvariate(math.log(60), 1.0)
            return self.row(
                call_id,
                t,
                "internal",
                ext,
                f"Ext {ext}",
                other,
                "answered",
                offered=t,
                answered=answered,
                end=answered + talk,
                rung=[other],
                by=other,
                cause=16,
            )
        status = "no_answer" if x < 0.95 else "busy"
        return self.row(
            call_id,
            t,
            "internal",
            ext,
            f"Ext {ext}",
            other,
            status,
            offered=t,
            end=t + (rnd.uniform(5, 30) if status == "no_answer" else 0.4),
            rung=[other],
            cause=19 if status == "no_answer" else 17,
        )

    def row(
        self,
        call_id: str,
        t: float,
        direction: str,
        number: str,
        name: str,
        called: str,
        status: str,
        *,
        end: float,
        offered: float | None = None,
        answered: float | None = None,
        rung: list[str] | None = None,
        by: str | None = None,
        cause: int | None = None,
        queue: str | None = None,
        digits: str = "",
        moved: list[str] | None = None,
        client: int | None = None,
        record: bool = False,
    ) -> Row:
        """The `calls` row in `to_row` order, then client_id and too_long."""
        end = round(end, 3)
        answered = None if answered is None else round(answered, 3)
        talk = round(end - answered, 3) if answered is not None else 0.0
        recording = None
        if record:
            local = dt.datetime.fromtimestamp(t, TZ)
            kind = "in" if direction == "inbound" else "out"
            recording = (  # FreePBX's MIXMONITOR_FILENAME
                f"{MONITOR}/{local:%Y/%m/%d}/{kind}-{called}-{number}-"
                f"{local:%Y%m%d-%H%M%S}-{call_id}.wav"
            )
        partial = 1 if self.rnd.random() < 0.001 else 0
        estimated = "[]"
        if partial:  # an outage hid when it ended, or, answered, when it was answered
            guess = answered is not None and self.rnd.random() < 0.5
            estimated = '["answered_at"]' if guess else '["ended_at"]'
        self.counts[status] = self.counts.get(status, 0) + 1
        return (
            call_id,
            t,
            None if offered is None else round(offered, 3),
            answered,
            end,
            direction,
            number,
            name,
            called,
            strings(rung or []),
            by,
            status,
            round((answered if answered is not None else end) - t, 3),
            talk,
            cause,
            queue,
            digits,
            strings(moved or []),
            recording,
            partial,
            estimated,
            client,
            1 if talk > TOO_LONG_S else 0,
        )

    @staticmethod
    def extensions(row: Row) -> Iterator[tuple[str, str]]:
        """The (extension, role) pairs `extension_rows` gives for the row, fast."""
        pairs: dict[tuple[str, str], None] = {}
        if row[5] != "inbound":
            pairs[(row[6], "caller")] = None  # type: ignore[index]
        rung = row[9]
        if rung != "[]":
            for ext in rung[2:-2].split('","'):  # type: ignore[index]
                pairs[(ext, "rang")] = None
        if row[10]:
            pairs[(row[10], "answered")] = None  # type: ignore[index]
        if row[17] != "[]":
            for ext in row[17][2:-2].split('","'):  # type: ignore[index]
                pairs[(ext, "transferred")] = None
        return iter(pairs)

    def check(self, row: Row, mine: list[ExtRow]) -> None:
        """The row is what pbxlink itself would write for that call, to the byte."""
        record = from_row(row[:_N])  # type: ignore[arg-type]
        if to_row(record) != row[:_N]:
            raise SystemExit(f"CHECK FAILED: {row} is not to_row's {to_row(record)}")
        if row[_N + 1] != int(is_too_long(THRESHOLDS, record)):
            raise SystemExit(f"CHECK FAILED: too_long {row[_N + 1]} for {row}")
        if extension_rows(record) != mine:
            raise SystemExit(
                f"CHECK FAILED: {mine} is not extension_rows' {extension_rows(record)}"
            )
        self.checked += 1


# -- the database -------------------------------------------------------------------------------


async def create_schema(path: Path) -> None:
    """An empty database exactly as pbxlink makes one: its connect() and its migrations."""
    db = await connect(path, busy_timeout_s=5.0)
    try:
        await migrate(db, path)
    finally:
        await db.close()


def bulk(path: Path) -> sqlite3.Connection:
    """A connection for the load only: no journal, no fsync (a failed load is thrown away)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the sorts of CREATE INDEX stay in memory
    return db


def drop_indexes(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """Drop the migrations' indexes (not the primary keys); returns their SQL to recreate."""
    found = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('calls', 'call_extensions', 'clients', 'client_phones')"
    ).fetchall()
    for name, _ in found:
        db.execute(f'DROP INDEX "{name}"')
    return found


def add_clients(db: sqlite3.Connection, who: list[tuple[str, str, int | None]]) -> None:
    """The directory's clients (the callers with a client id), so calls can name them."""
    now = dt.datetime(YEAR, 1, 1, tzinfo=TZ).timestamp()
    clients, phones = [], []
    for number, name, client in who:
        if client is None:
            continue
        category = ("regular", "regular", "regular", "vip", "problem")[client % 5]
        clients.append((client, name, category, name.casefold() + "\n", now, now))
        phones.append((client, number, number, number[-9:]))
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO clients (id, name, category, search, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        clients,
    )
    db.executemany(
        "INSERT INTO client_phones (client_id, raw, e164, tail) VALUES (?, ?, ?, ?)", phones
    )
    db.execute("COMMIT")


def load(db: sqlite3.Connection, days: Iterator[tuple[list[Row], list[ExtRow]]]) -> None:
    """Write each day's rows in a thread of its own: sqlite3 lets go of the GIL while it
    inserts, so making the next day's calls and writing this one's share the two cores."""
    todo: queue.Queue[tuple[list[Row], list[ExtRow]] | None] = queue.Queue(maxsize=4)
    failed: list[BaseException] = []

    def writer() -> None:
        while (item := todo.get()) is not None:
            if failed:
                continue  # drain, so the producer never blocks on a dead writer
            try:
                db.execute("BEGIN")
                db.executemany(INSERT_CALLS, item[0])
                db.executemany(INSERT_EXTENSIONS, item[1])
                db.execute("COMMIT")
            except BaseException as exc:
                failed.append(exc)

    thread = threading.Thread(target=writer, name="calllog-load")
    thread.start()
    try:
        for item in days:
            if failed:
                break
            todo.put(item)
    finally:
        todo.put(None)
        thread.join()
    if failed:
        raise failed[0]


def build(path: Path, n: int, seed: int, n_callers: int = CALLERS) -> dict[str, float]:
    """Generate the calls into `path` (written under another name, renamed when complete, so
    a killed run never leaves a cache that looks whole). Returns the phases' seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(path.name + ".partial")
    work.unlink(missing_ok=True)
    rnd = random.Random(seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    asyncio.run(create_schema(work))
    db = bulk(work)
    try:
        indexes = drop_indexes(db)
        who = callers(rnd, n_callers)
        add_clients(db, who)
        gen = Calls(rnd, who)
        weights = day_weights()
        plan = list(zip((d for d, _ in weights), split(n, [w for _, w in weights]), strict=True))

        def days() -> Iterator[tuple[list[Row], list[ExtRow]]]:
            for i, (day, count) in enumerate(plan):
                yield gen.day(day, count)
                if i % 30 == 29:
                    rate = gen.made / (time.perf_counter() - t0)
                    print(f"  {day}: {gen.made:,} calls, {rate:,.0f}/s", file=sys.stderr)

        load(db, days())
        seconds["generate + insert"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _, sql in indexes:
            db.execute(sql)
        seconds["recreate indexes"] = time.perf_counter() - t1
        db.execute("PRAGMA journal_mode=WAL")  # what CallLogStore.open() sets
    finally:
        db.close()
    if gen.made != n or gen.checked < n // 1000:
        raise SystemExit(f"CHECK FAILED: made {gen.made:,} calls of {n:,}, checked {gen.checked}")
    work.rename(path)
    seconds["total"] = time.perf_counter() - t0
    shares = ", ".join(f"{k} {v / n:.1%}" for k, v in sorted(gen.counts.items()))
    print(f"  statuses: {shares}", file=sys.stderr)
    return seconds


# -- measuring ----------------------------------------------------------------------------------

PAGE = 50
DEPTH = 1000  # pages skipped before the deep page
MONTH = (dt.date(YEAR, 6, 1), dt.date(YEAR, 7, 1))
JUNE = {"from": MONTH[0].isoformat(), "until": MONTH[1].isoformat()}
# the list a supervisor opens: June's inbound calls nobody took, newest first
MISSED = {**JUNE, "direction": "inbound", "status": "missed"}
OPERATOR = ("105",)  # an operator of the sales queue: their scope, as the API gives it


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}" if seconds < 10 else f"{seconds * 1000:,.0f}"


@dataclass(slots=True)
class Result:
    """One line of the report: a series, its goal and, where there is one, its baseline."""

    series: Series
    goal: str = ""
    met: bool | None = None
    base: Series | None = None
    note: str = ""
    others: float = 0.0  # % of the machine other processes took during the phase

    def markdown(self) -> str:
        s = self.series
        ratio = f"{self.base.pct(50) / s.pct(50):,.1f}×" if self.base is not None else ""
        verdict = "" if self.met is None else (" met" if self.met else " **not met**")
        return (
            f"| {s.name} | {len(s.times)} | {ms(s.pct(50))} | {ms(s.pct(99))} | {ratio} | "
            f"{self.goal}{verdict} | {self.others:.0f}% | {self.note} |"
        )


async def timed(series: Series, runs: int, make: Callable[[], Awaitable[T]]) -> T:
    """`runs` timed calls after one untimed (it warms SQLite's and the OS's caches)."""
    result = await make()
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await make()
        series.times.append(time.perf_counter() - t0)
    return result


def naive_sql(f: query.CallFilter, scope: tuple[str, ...] | None) -> tuple[str, list[object]]:
    """The same rows, columns and order as `query.page`, as one plain SELECT: the layer's own
    conditions, with no arms and no cursor. What a list API usually does."""
    w = query._conditions(f, scope)
    sql = (
        f"SELECT {query.ITEM_COLUMNS} FROM calls AS c {query._JOIN_CLIENT} WHERE {w.sql()} "
        "ORDER BY c.started_at DESC, c.call_id DESC"
    )
    return sql, w.params


async def offset_page(
    db: aiosqlite.Connection, f: query.CallFilter, scope: tuple[str, ...] | None, offset: int
) -> list[dict[str, object]]:
    """The baseline deep page: LIMIT/OFFSET, made into the same items."""
    sql, params = naive_sql(f, scope)
    rows = await db.execute_fetchall(f"{sql} LIMIT {PAGE} OFFSET {offset}", params)
    return [query.item(tuple(r)) for r in rows]


async def follow(
    db: aiosqlite.Connection,
    f: query.CallFilter,
    scope: tuple[str, ...] | None,
    depth: int,
    each: Series,
) -> str:
    """Follow `depth` next_cursor links from the first page, timing each page; returns the
    cursor of the page after them."""
    cursor: str | None = None
    for n in range(depth):
        t0 = time.perf_counter()
        got = await query.page(db, f, scope=scope, limit=PAGE, cursor=cursor)
        each.times.append(time.perf_counter() - t0)
        if got.next_cursor is None:
            raise SystemExit(f"CHECK FAILED: page {n + 1} of {depth} has no next_cursor")
        cursor = got.next_cursor
    assert cursor is not None
    return cursor


async def export(db: aiosqlite.Connection, f: query.CallFilter) -> int:
    """The CSV export as the API streams it; returns the rows (the header not counted)."""
    lines = 0
    async for chunk in iter_csv(db, f, scope=None):
        lines += chunk.count(b"\r\n")  # no generated name or number holds a line break
    return lines - 1


async def bare_csv(db: aiosqlite.Connection, f: query.CallFilter) -> int:
    """The export's floor: the same SELECT's rows through csv.writer as they come, in one
    long query, nothing formatted or guarded."""
    sql, params = naive_sql(f, None)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    n = 0
    async with db.execute(sql, params) as cur:
        while rows := await cur.fetchmany(CSV_BATCH):
            writer.writerows(rows)
            out.getvalue().encode()
            out.seek(0)
            out.truncate()
            n += len(rows)
    return n


async def first_page(
    db: aiosqlite.Connection,
    name: str,
    f: query.CallFilter,
    scope: tuple[str, ...] | None,
    runs: int,
) -> Result:
    first = Series(f"{name}: first page")
    got = await timed(first, runs, partial(query.page, db, f, scope=scope, limit=PAGE))
    ok = first.pct(99) < 0.05
    return Result(first, "p99 < 50 ms", ok, note=f"{len(got.items)} calls")


async def deep(
    db: aiosqlite.Connection,
    name: str,
    f: query.CallFilter,
    scope: tuple[str, ...] | None,
    runs: int,
) -> list[Result]:
    """The first page, then the page DEPTH pages deep by cursor, against LIMIT/OFFSET to the
    same rows."""
    first = await first_page(db, name, f, scope, runs)
    count = (await query.totals(db, f, scope=scope))["count"]
    depth = min(DEPTH, count // PAGE - 1)
    each = Series(f"{name}: pages 1-{depth:,} while following next_cursor")
    cursor = await follow(db, f, scope, depth, each)
    by_cursor = Series(f"{name}: page {depth + 1:,} by cursor")
    got = await timed(by_cursor, runs, partial(query.page, db, f, scope=scope, cursor=cursor))
    base = Series(f"{name}: LIMIT {PAGE} OFFSET {depth * PAGE:,} (baseline)")
    naive = await timed(base, max(10, runs // 5), partial(offset_page, db, f, scope, depth * PAGE))
    mine, theirs = [c["call_id"] for c in got.items], [c["call_id"] for c in naive]
    speed = by_cursor.pct(50) / first.series.pct(50)
    note = (
        f"{count:,} calls match; the same {len(naive)} calls both ways; "
        f"p50 {speed:.2f}× the first page's"
    )
    if mine != theirs:  # reported, not fatal: the timings still say something
        note = (
            f"**CHECK FAILED**: {len(set(mine) ^ set(theirs))} of {len(mine)} calls differ "
            f"from OFFSET's page, {len(mine) - len(set(mine))} repeated"
        )
        print(f"CHECK FAILED   {name}: {note}", file=sys.stderr)
    return [
        first,
        Result(each, "p99 < 50 ms", each.pct(99) < 0.05),
        Result(base),
        Result(by_cursor, "p99 < 50 ms", by_cursor.pct(99) < 0.05, base, note),
    ]


async def aggregates(db: aiosqlite.Connection, june: query.CallFilter) -> list[Result]:
    """A month by day: the supervisor's service level, and the log's daily totals."""
    start, end = (day_start(d, TZ) for d in MONTH)
    sl = Series("service level, June by day (`servicelevel.service_level`)")
    report = await timed(sl, 10, partial(service_level, db, SlQuery(start, end, TZ)))
    note = f"{len(report.groups)} days, {report.total.offered:,} calls offered"
    days = Series("calls per day, June (`query.by_day`)")
    await timed(days, 10, partial(query.by_day, db, june, scope=None, tz=TZ))
    return [Result(sl, "p99 < 1 s", sl.pct(99) < 1.0, note=note), Result(days)]


async def exports(db: aiosqlite.Connection, june: query.CallFilter) -> list[Result]:
    """A month as CSV, next to the floor of a bare csv.writer over the same rows."""
    bare = Series("CSV floor: csv.writer over the plain SELECT, June")
    n = await timed(bare, 3, partial(bare_csv, db, june))
    series = Series("CSV export, June (`export.iter_csv`)")
    rows = await timed(series, 3, partial(export, db, june))
    if rows != n:
        raise SystemExit(f"CHECK FAILED: the export has {rows:,} rows, the SELECT {n:,}")
    rate = rows / series.pct(50)
    return [
        Result(bare, note=f"{n / bare.pct(50):,.0f} rows/s"),
        Result(series, "≥ 100,000 rows/s", rate >= 100_000, bare, f"{rows:,} rows: {rate:,.0f}/s"),
    ]


PHASES = ("pages", "aggregates", "csv")


async def measure(path: Path, runs: int, only: Sequence[str] = PHASES) -> list[Result]:
    """Every series of the report, on the reader connection the API uses, each phase with
    the share of the machine others took meanwhile."""
    numbers = PhoneNumbers("GE")
    store = CallLogStore(path)
    await store.open()
    try:
        db = store.reader
        missed = query.parse_filter(MISSED, numbers=numbers, tz=TZ)
        june = query.parse_filter(JUNE, numbers=numbers, tz=TZ)
        everyone = query.parse_filter({}, numbers=numbers, tz=TZ)
        operator = f"operator {OPERATOR[0]}'s calls"

        async def scoped_june() -> list[Result]:
            return [await first_page(db, f"{operator}, June", june, OPERATOR, runs)]

        phases: list[tuple[str, Callable[[], Awaitable[list[Result]]]]] = [
            ("pages", partial(deep, db, "inbound missed, June", missed, None, runs)),
            ("pages", scoped_june),
            ("pages", partial(deep, db, f"{operator}, all year", everyone, OPERATOR, runs)),
            ("aggregates", partial(aggregates, db, june)),
            ("csv", partial(exports, db, june)),
        ]
        results: list[Result] = []
        for kind, phase in phases:
            if kind not in only:
                continue
            others = Others()
            got = await phase()
            share = others.pct()
            for r in got:
                r.others = share
            results += got
        return results
    finally:
        await store.close()


# -- report -------------------------------------------------------------------------------------


def default_db(calls: int, seed: int) -> Path:
    """The cache's name changes with the generator and with the schema's migrations."""
    schema = hashlib.sha256("\n".join(MIGRATIONS).encode()).hexdigest()[:8]
    return DATA / f"calllog-{calls}-s{seed}-g{GENERATOR}-{schema}.sqlite3"


def run(args: argparse.Namespace) -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"date       {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"cpu        {cpu_model()}, {os.cpu_count()} cores ({usable} usable)")
    print(
        f"python     {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, pbxlink {version('pbxlink')} @ {git_commit()}"
    )
    path: Path = args.db or default_db(args.calls, args.seed)
    if args.rebuild or not path.exists():
        others = Others()
        seconds = build(path, args.calls, args.seed, args.callers)
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        print(
            f"generated  {args.calls:,} calls in {phases} "
            f"({args.calls / seconds['total']:,.0f} calls/s); others took {others.pct():.0f}%"
        )
    print(f"database   {path} ({size_mb(path) / 1000:.2f} GB)")
    if args.generate_only:
        return 0
    print(f"machine    {wait_quiet(args.quiet_wait)}")
    others = Others()
    results = asyncio.run(measure(path, args.runs, args.only.split(",")))
    print(f"measured   others took {others.pct():.0f}% of the machine meanwhile")
    print()
    print("| measurement | runs | p50 ms | p99 ms | baseline p50 ÷ p50 | goal | others | |")
    print("|---|---:|---:|---:|---:|---|---:|---|")
    for r in results:
        print(r.markdown())
    return 1 if any(r.note.startswith("**CHECK FAILED**") for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=10_000_000, help="calls in the year")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", type=Path, help=f"the database (default: {DATA}/calllog-N-...)")
    ap.add_argument("--rebuild", action="store_true", help="generate even if the file exists")
    ap.add_argument(
        "--generate-only", action="store_true", help="make the database, measure nothing"
    )
    ap.add_argument("--runs", type=int, default=100, help="timed runs of each page query")
    ap.add_argument(
        "--quiet-wait", type=float, default=120, help="wait up to S s for a quiet machine first"
    )
    ap.add_argument(
        "--only", default=",".join(PHASES), help=f"what to measure, of {','.join(PHASES)}"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI: 20,000 calls from 3,000 callers in a temporary file, 5 runs each; every "
        "phase and check, no timing judged",
    )
    args = ap.parse_args(argv)
    args.callers = CALLERS
    if not set(args.only.split(",")) <= set(PHASES):
        ap.error(f"--only: expected some of {','.join(PHASES)}, got {args.only!r}")
    setup_logging("warning")
    if args.smoke:  # never the cache: a file of its own, gone afterwards
        args.calls, args.callers, args.runs, args.quiet_wait = 20_000, 3_000, 5, 0
        with tempfile.TemporaryDirectory(prefix="pbxlink-calllog-") as tmp:
            args.db, args.rebuild = Path(tmp) / "calllog.sqlite3", True
            return run(args)
    if args.calls < 10_000 or args.runs < 50:
        ap.error("--calls must be at least 10,000 and --runs at least 50")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
