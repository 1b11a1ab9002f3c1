"""Who is calling, on a million clients: `Directory.lookup` against a naive LIKE, and the CSV
import that fills the directory.

Why this shape: a popup must name the caller before the operator picks up, whatever form the
caller ID comes in (`+995 5xx`, `05xx`, `00995`, an outside-line `9`, a lost `+`), on the
directory of a big call centre. The naive way many CTI setups use, in the same run on the same
database, is the yardstick: no normalisation, `raw LIKE '%' || last 7 digits` over every stored
number. And a directory that size comes from a CRM export, so it is filled here the way an
admin would, through the bulk CSV import (`pbxlink clients import`), whose rate is measured.

What "cold" and "warm" mean here, precisely:

- cold: a number this process has not looked up before, on a Directory opened for the run
  (its lookup cache and the number-normalisation cache hold nothing for it; SQLite's page
  cache of the reader connection holds what earlier lookups read, at most 2 MB of a database
  hundreds of MB big). The OS page cache is warm: the import has just written the file. This
  is the daemon's steady state for a new caller.
- first after open: the first lookup of a freshly opened Directory (SQLite parses the schema
  and prepares its statements then), each on a new Directory.
- warm: the same caller ID again: the directory's cache (what a second call of a caller hits).
- warm, other form: a number in the cache written another way (normalisation, then the cache).

Run: `python benchmarks/lookup.py [--clients N] [--lookups N] [--naive N]`; results in
docs/benchmarks.md. `--smoke` (CI) runs the import and every lookup on 2,000 clients: it proves
the script works.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import gc
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from pbxlink.clients import csvio
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.logs import setup_logging

from machine import Others, Series, cpu_model, git_commit, size_mb, wait_quiet

ROOT = Path(__file__).resolve().parent.parent

#: the issue's goals
GOAL_WARM_P99_MS = 1.0
GOAL_COLD_P99_MS = 5.0
GOAL_IMPORT_ROWS_S = 20_000

# Georgian mobile ranges (+995 5xx) where every number is valid, Tbilisi landlines (+995 32),
# and foreign numbers: (+country area, lowest and highest local number). Every number made is
# valid, and no two kinds share last-9-digit tails, so every lookup has one right answer.
MOBILE = (514, 551, 555, 557, 558, 568, 570, 571, 574, 577, 579, 591, 592, 593, 595, 596, 597,
          598, 599)  # fmt: skip
FOREIGN = (
    ("+7495", 0, 10**7),  # Moscow
    ("+1212", 2 * 10**6, 10**7),  # New York
    ("+4930", 0, 10**8),  # Berlin
    ("+90216", 0, 10**7),  # Istanbul
    ("+38044", 0, 10**7),  # Kyiv
)
FIRST = ("ნინო", "გიორგი", "თამარ", "დავით", "ნათია", "ლევან", "Иван", "Ольга", "Nino",
         "Giorgi", "Mariam", "Levan", "Ахмед", "Anna")  # fmt: skip
LAST = ("ბერიძე", "კაპანაძე", "გელაშვილი", "მამედოვი", "Петров", "Иванова", "Beridze",
        "Kapanadze", "Gelashvili", "Smith", "Yilmaz")  # fmt: skip
COMPANIES = ("", "", "", "შპს ალფა", "შპს თბილისის ფარმა", "ООО Бета", "Acme LLC", "GeoTrans")
CITIES = ("თბილისი", "ბათუმი", "ქუთაისი", "Tbilisi", "Rustavi", "")
CATEGORIES = ("", "", "regular", "vip", "problem", "potential")
HEADER = ("name", "company", "category", "notes", "city", "country", "responsible", "phones")


@dataclass(slots=True, frozen=True)
class Phone:
    """A generated number: its E.164, how the CRM wrote it, and its kind (for the forms)."""

    e164: str
    written: str
    kind: str  # "mobile", "landline", "foreign"


def new_number(rnd: random.Random, foreign: bool = True) -> tuple[str, str]:
    """(kind, E.164) of a random number: 70 % mobile, 20 % Tbilisi landline, 10 % foreign."""
    x = rnd.random() * (1.0 if foreign else 0.9)
    if x < 0.7:
        return "mobile", f"+995{rnd.choice(MOBILE)}{rnd.randrange(10**6):06d}"
    if x < 0.9:
        return "landline", f"+99532{rnd.randrange(10**7):07d}"
    prefix, low, high = rnd.choice(FOREIGN)
    return "foreign", f"{prefix}{rnd.randrange(low, high):0{len(str(high - 1))}d}"


def written(rnd: random.Random, kind: str, e164: str) -> str:
    """How a CRM holds a number: as people typed it."""
    if kind == "foreign":
        return rnd.choice((e164, f"{e164[:-4]}-{e164[-4:]}", "00" + e164[1:]))
    n = e164[4:]  # the 9-digit national number
    if kind == "mobile":
        forms = (f"+995 {n[:3]} {n[3:5]} {n[5:7]} {n[7:]}", n, "0" + n, e164, f"{n[:3]}-{n[3:]}")
    else:
        forms = (f"0{n[:2]} {n[2:5]} {n[5:7]} {n[7:]}", f"(032) {n[2:]}", e164, "0" + n)
    return rnd.choice(forms)


def caller_id(rnd: random.Random, kind: str, e164: str) -> str:
    """How a caller ID may arrive: any form the normalisation must see through."""
    if kind == "foreign":
        return rnd.choice((e164, "00" + e164[1:], e164[1:], "900" + e164[1:]))
    n = e164[4:]
    return rnd.choice(
        (
            f"+995 {n[:3]} {n[3:5]} {n[5:7]} {n[7:]}",  # as the trunk formats it
            "0" + n,  # national, with the trunk prefix
            "00995" + n,  # international prefix
            n,  # bare national number
            "90" + n,  # outside-line 9 left on
            "995" + n,  # the + lost
        )
    )


def generate(path: Path, clients: int, seed: int) -> list[list[Phone]]:
    """Write the CSV (one or two numbers per client, none twice); returns each client's phones."""
    rnd = random.Random(seed)
    seen: set[str] = set()
    phones_of: list[list[Phone]] = []
    with path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(HEADER)
        for i in range(clients):
            phones: list[Phone] = []
            for _ in range(1 + (i % 2)):  # 1.5 numbers per client
                kind, e164 = new_number(rnd)
                while e164 in seen:
                    kind, e164 = new_number(rnd)
                seen.add(e164)
                phones.append(Phone(e164, written(rnd, kind, e164), kind))
            phones_of.append(phones)
            category = rnd.choice(CATEGORIES)
            name = "" if category == "potential" else f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"
            out.writerow(
                (
                    name,
                    "" if category == "potential" else rnd.choice(COMPANIES),
                    category,
                    "prefers calls after 18:00" if i % 10 == 0 else "",
                    rnd.choice(CITIES),
                    "GE",
                    "",
                    "; ".join(p.written for p in phones),
                )
            )
    return phones_of


def unknown_numbers(rnd: random.Random, known: set[str], n: int) -> list[tuple[str, str]]:
    """Georgian numbers nobody has (a foreign one might share a tail with a stored one)."""
    out: list[tuple[str, str]] = []
    while len(out) < n:
        kind, e164 = new_number(rnd, foreign=False)
        if e164 not in known:
            out.append((kind, e164))
    return out


# -- measuring ----------------------------------------------------------------------------------


def open_directory(db: Path, tmp: Path) -> Directory:
    return Directory(db, PhoneNumbers("GE"), photos_dir=tmp / "photos", register_unknown=False)


async def timed(
    series: Series, lookup: Callable[[str], object], numbers: Sequence[str]
) -> list[object]:
    results = []
    for number in numbers:
        t0 = time.perf_counter()
        result = await lookup(number)  # type: ignore[misc]
        series.times.append(time.perf_counter() - t0)
        results.append(result)
    return results


async def measure(
    db: Path,
    tmp: Path,
    phones_of: list[list[Phone]],
    lookups: int,
    naive_n: int,
    opens: int,
    seed: int,
) -> tuple[list[Series], dict[str, str]]:
    rnd = random.Random(seed + 1)
    # known numbers: a random client's random number, in a random caller-ID form; 10 % unknown
    picks = rnd.sample(range(len(phones_of)), min(lookups, len(phones_of)))
    calls: list[tuple[str, int | None, str, str]] = []  # caller id, client id, kind, e164
    for index in picks[: int(len(picks) * 0.9)]:
        phone = rnd.choice(phones_of[index])
        calls.append((caller_id(rnd, phone.kind, phone.e164), index + 1, phone.kind, phone.e164))
    known = {p.e164 for phones in phones_of for p in phones}
    for kind, e164 in unknown_numbers(rnd, known, len(picks) - len(calls)):
        calls.append((caller_id(rnd, kind, e164), None, kind, e164))
    rnd.shuffle(calls)
    del known
    gc.collect()

    cold = Series("pbxlink cold (new number)")
    warm = Series("pbxlink warm (same caller ID again)")
    other = Series("pbxlink warm, other form of the number")
    first = Series("pbxlink first lookup after open")
    naive = Series("naive LIKE '%'||last 7 digits [baseline]")
    notes: dict[str, str] = {}

    for i in range(opens):  # each on a new Directory: connections, schema, statements all new
        async with open_directory(db, tmp) as directory:
            await timed(first, directory.lookup, [calls[-1 - i][0]])

    async with open_directory(db, tmp) as directory:
        numbers = [c[0] for c in calls]
        results = await timed(cold, directory.lookup, numbers)
        wrong = [
            (c[0], c[1], [x.id for x in r])  # type: ignore[attr-defined]
            for c, r in zip(calls, results, strict=True)
            if [x.id for x in r] != ([c[1]] if c[1] else [])  # type: ignore[attr-defined]
        ]
        if wrong:
            raise SystemExit(f"CHECK FAILED: {len(wrong)} lookups wrong, e.g. {wrong[:3]}")
        await timed(warm, directory.lookup, numbers)
        again = [caller_id(rnd, c[2], c[3]) for c in calls]
        await timed(other, directory.lookup, again)

        # the naive way, on the same reader connection: a scan of every stored number
        sample = rnd.sample(calls, min(naive_n, len(calls)))

        async def like(number: str) -> list[int]:
            digits = re.sub(r"\D", "", number)[-7:]
            rows = await directory.reader.execute_fetchall(
                "SELECT client_id FROM client_phones WHERE raw LIKE '%' || ?", (digits,)
            )
            return [int(r[0]) for r in rows]

        found = await timed(naive, like, [c[0] for c in sample])
        hit = sum(1 for c, r in zip(sample, found, strict=True) if c[1] and c[1] in r)  # type: ignore[operator]
        stray = sum(1 for c, r in zip(sample, found, strict=True) if set(r) - {c[1]})  # type: ignore[arg-type]
        known_n = sum(1 for c in sample if c[1])
        notes["naive"] = (
            f"the naive query found the right client for {hit} of {known_n} known numbers "
            f"({hit / max(known_n, 1):.0%}); {stray} of {len(sample)} lookups returned "
            "other clients too"
        )
        notes["pbxlink"] = (
            f"all {len(calls):,} cold lookups returned exactly the expected client "
            f"({sum(1 for c in calls if c[1]):,} known, {sum(1 for c in calls if not c[1]):,} "
            "unknown: none)"
        )
    return [naive, cold, first, warm, other], notes


# -- report -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path) -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"date       {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"cpu        {cpu_model()}, {os.cpu_count()} cores ({usable} usable)")
    print(
        f"python     {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, phonenumbers {version('phonenumbers')}, "
        f"pbxlink {version('pbxlink')} @ {git_commit()}"
    )
    print(f"machine    {wait_quiet(args.quiet_wait)}")
    csv_path, db = tmp / "clients.csv", tmp / "pbxlink.sqlite3"
    t0 = time.perf_counter()
    phones_of = generate(csv_path, args.clients, args.seed)
    numbers = sum(len(p) for p in phones_of)
    print(
        f"input      {args.clients:,} clients, {numbers:,} numbers, CSV {size_mb(csv_path):.0f} MB "
        f"(generated in {time.perf_counter() - t0:.1f} s)"
    )
    sys.stdout.flush()

    others = Others()
    async with open_directory(db, tmp) as directory:
        report = await csvio.import_csv(directory, csv_path, progress=args.progress, jobs=args.jobs)
    if not report.committed or report.imported != args.clients or report.phones != numbers:
        raise SystemExit(
            f"CHECK FAILED: import committed={report.committed}, {report.imported:,} clients, "
            f"{report.phones:,} numbers, {report.errors} errors, {report.skipped} skipped: "
            + "; ".join(str(p) for p in report.problems[:5])
        )
    rate = report.rows / report.total_s
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    locked = report.seconds["check"] + report.seconds["write"]
    print(
        f"import     {report.rows:,} rows in {report.total_s:.1f} s = {rate:,.0f} rows/s "
        f"({phases}; {report.jobs} checking processes; write lock held {locked:.1f} s); "
        f"database {size_mb(db, Path(f'{db}-wal')):.0f} MB; others took {others.pct():.0f}% "
        "of the machine meanwhile"
    )
    sys.stdout.flush()

    others = Others()
    series, notes = await measure(
        db, tmp, phones_of, args.lookups, args.naive, args.opens, args.seed
    )
    print(f"lookups    others took {others.pct():.0f}% of the machine meanwhile")
    print()
    header = (
        f"{'lookup':<44} {'n':>7} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'mean ms':>9} "
        f"{'naive p50 /':>11}"
    )
    print(header)
    print("-" * len(header))
    for s in series:
        print(s.row(series[0]))
    print()
    print(f"check      {notes['pbxlink']}")
    print(f"naive      {notes['naive']}")
    cold, warm = series[1], series[3]
    verdicts = (
        ("warm p99", warm.pct(99) * 1000, GOAL_WARM_P99_MS, "ms", True),
        ("cold p99", cold.pct(99) * 1000, GOAL_COLD_P99_MS, "ms", True),
        ("import", rate, GOAL_IMPORT_ROWS_S, "rows/s", False),
    )
    for name, value, goal, unit, below in verdicts:
        ok = value < goal if below else value >= goal
        sign = "<" if below else ">="
        print(
            f"goal       {name} {sign} {goal:,g} {unit}: {'met' if ok else 'NOT met'} "
            f"({value:,.3f} {unit})"
            if unit == "ms"
            else f"goal       {name} {sign} {goal:,g} {unit}: {'met' if ok else 'NOT met'} "
            f"({value:,.0f} {unit})"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--clients", type=int, default=1_000_000, help="clients to generate")
    ap.add_argument("--lookups", type=int, default=20_000, help="distinct numbers looked up")
    ap.add_argument("--naive", type=int, default=100, help="naive lookups (each scans all)")
    ap.add_argument("--opens", type=int, default=20, help="fresh Directories, one lookup each")
    ap.add_argument("--jobs", type=int, help="checking processes for the import (default: auto)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--quiet-wait", type=float, default=300, help="wait up to S s for a quiet machine first"
    )
    ap.add_argument("--keep", type=Path, help="write the CSV and database here and keep them")
    ap.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the import's progress bar on stderr",
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI: 2,000 clients, 200 lookups; the import and every check, no timing judged",
    )
    args = ap.parse_args(argv)
    setup_logging("warning")
    if args.smoke:
        args.clients, args.lookups, args.naive, args.opens = 2_000, 200, 5, 2
        args.quiet_wait, args.progress, args.jobs = 0, False, args.jobs or 2  # the real path
    if args.clients < 1 or args.lookups < 10 or args.naive < 1 or args.opens < 1:
        ap.error("--clients, --naive and --opens must be at least 1, --lookups at least 10")
    if args.opens > args.lookups:
        ap.error("--opens must not exceed --lookups")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            ap.error(f"{args.keep} is not empty")
        return asyncio.run(run(args, args.keep))
    with tempfile.TemporaryDirectory(prefix="pbxlink-lookup-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
