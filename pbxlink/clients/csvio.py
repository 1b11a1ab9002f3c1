"""CSV import and export of the client directory: the bulk path.

Why a path of its own: `Directory.create` is one transaction per client (a commit and a
thread hop per statement), far too slow for a CRM export of 10^4-10^6 rows. Here every row
is checked with the directory's own rules (`model.text` and `CLIENT_FIELDS` for the card,
`Directory._phone` for numbers; in worker processes for big files, as a number costs ~30 µs
of phonenumbers), staged in TEMP tables of a connection of its own (which lock nothing), and
only then checked against the directory and copied in one BEGIN IMMEDIATE transaction: the
daemon's writes wait for the copy (about 1 s per 100,000 rows), not for the parsing.

What an import does, decided once here:

- all or nothing: any row with an error (unknown category, not a number, too long...) and
  nothing is written; the report names every such row and field, so one fix-and-rerun does.
- a row whose number the directory already has (same E.164, or same last digits where one
  side has no E.164) is skipped whole with a report line, never duplicated nor merged into
  that client: re-importing a file is a no-op. The same goes for a number already on an
  earlier imported row of the file (the first row wins). An untouched
  `potential` client holding the number (the card made for an unknown caller) is not a
  clash: the imported client absorbs it and its calls, as `Directory.create` does.
- a number no rule makes a valid E.164 of is imported (as the directory does) with a
  warning: it will be found by its last digits only.
- an empty category cell is the default one; category names match in any case.
- the row number is the spreadsheet's: the header is row 1.
- a cell an export guarded against spreadsheet formulas (`'=...`, pbxlink.spreadsheet) is
  read without its guard, so an export imported again gives the same clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import multiprocessing
import os
import re
import sqlite3
import sys
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import structlog
from tqdm import tqdm

from pbxlink.clients.directory import _BLANK_POTENTIAL, Directory
from pbxlink.clients.model import (
    CLIENT_FIELDS,
    DEFAULT_CATEGORY,
    MULTILINE,
    POTENTIAL,
    ValidationError,
    search_key,
    text,
)
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.spreadsheet import safe_cell, unguard

log = structlog.get_logger("pbxlink.clients")

#: the columns of an export, and the default names of an import's columns
FIELDS: tuple[str, ...] = (*CLIENT_FIELDS, "phones")
#: between the numbers of one `phones` cell; an export writes "; "
PHONE_SEPARATORS = re.compile(r"[;,\r\n]")
DELIMITERS = (",", ";", "\t")
BATCH_ROWS = 2000
#: files larger than this are checked by worker processes (about 20,000 rows)
PARALLEL_BYTES = 2 << 20
MAX_JOBS = 4
#: problems of each kind kept for the report (all are counted)
KEEP_PROBLEMS = 1000

Kind = Literal["error", "skipped", "warning"]

_TEXT_FIELDS = tuple(CLIENT_FIELDS)  # name, company, category, notes, city, country, responsible
_STAGE = (
    "CREATE TEMP TABLE import_clients (seq INTEGER PRIMARY KEY, line INTEGER NOT NULL, "
    + ", ".join(f"{f} TEXT NOT NULL" for f in _TEXT_FIELDS)
    + ", search TEXT NOT NULL)",
    "CREATE TEMP TABLE import_phones "
    "(seq INTEGER NOT NULL, raw TEXT NOT NULL, e164 TEXT, tail TEXT NOT NULL)",
    "CREATE TEMP TABLE import_skip (seq INTEGER PRIMARY KEY)",
    "CREATE TEMP TABLE import_holders (id INTEGER PRIMARY KEY)",
)
_STAGE_CLIENT = (  # seq (the row number), line, the text fields, search
    f"INSERT INTO temp.import_clients VALUES (?, ?, {', '.join('?' for _ in _TEXT_FIELDS)}, ?)"
)
_STAGE_PHONE = "INSERT INTO temp.import_phones VALUES (?, ?, ?, ?)"
# numbers of the file the file has more than once (by E.164, or by tail where one has none)
_FILE_TWINS = (
    "SELECT seq, raw, e164, tail FROM temp.import_phones WHERE e164 IN "
    "(SELECT e164 FROM temp.import_phones WHERE e164 IS NOT NULL "
    " GROUP BY e164 HAVING count(*) > 1) "
    "OR tail IN (SELECT tail FROM temp.import_phones "
    " GROUP BY tail HAVING count(*) > 1 AND count(e164) < count(*)) ORDER BY seq"
)
# numbers of the file the directory has: the same number as far as the directory can tell
_DB_TWINS = (
    "SELECT s.seq, s.raw, p.client_id FROM temp.import_phones AS s "
    "JOIN main.client_phones AS p ON p.e164 = s.e164 "
    "UNION SELECT s.seq, s.raw, p.client_id FROM temp.import_phones AS s "
    "JOIN main.client_phones AS p ON p.tail = s.tail AND (p.e164 IS NULL OR s.e164 IS NULL)"
)
_KEPT = "seq NOT IN (SELECT seq FROM temp.import_skip)"


class CsvError(Exception):
    """The file as a whole cannot be imported (unreadable, not UTF-8, not CSV, no header)."""


class MappingError(CsvError):
    """The column mapping does not fit the file: a usage error, not a bad file."""


@dataclass(slots=True, frozen=True)
class Problem:
    row: int  # the spreadsheet's row number: the header is row 1
    line: int  # the file's line where the row starts (differs after multi-line cells)
    field: str  # "" for the row as a whole
    kind: Kind
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f" (line {self.line})" if self.line != self.row else "")
        what = f", {self.field}" if self.field else ""
        label = "" if self.kind == "error" else f"{self.kind}: "
        return f"{where}{what}: {label}{self.message}"


@dataclass(slots=True)
class ImportReport:
    """What an import found and did; `problems` holds the first KEEP_PROBLEMS of each kind."""

    path: Path
    dry_run: bool
    columns: dict[str, str] = field(default_factory=dict)  # field -> the file's column
    ignored: tuple[str, ...] = ()  # the file's columns no field reads
    rows: int = 0  # data rows, blank ones not counted
    imported: int = 0  # clients created (or, in a dry run, that would be)
    phones: int = 0
    absorbed: int = 0  # untouched potential clients merged into imported ones
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("error", "skipped", "warning"), 0)
    )
    problems: list[Problem] = field(default_factory=list)
    committed: bool = False
    jobs: int = 1  # processes that checked rows
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall time

    @property
    def errors(self) -> int:
        return self.counts["error"]

    @property
    def skipped(self) -> int:
        return self.counts["skipped"]

    @property
    def warnings(self) -> int:
        return self.counts["warning"]

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())

    def add(self, row: int, line: int, field_: str, kind: Kind, message: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] <= KEEP_PROBLEMS:
            self.problems.append(Problem(row, line, field_, kind, message))


def parse_mapping(items: Sequence[str]) -> dict[str, str]:
    """`--map field=Column` options as {field: column}; ValueError says what is wrong."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, column = item.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise ValueError(f"--map {item!r}: expected FIELD=COLUMN, e.g. phones=Phone")
        if name not in FIELDS:
            raise ValueError(
                f"--map {item!r}: unknown field {name!r} (fields: {', '.join(FIELDS)})"
            )
        if name in out:
            raise ValueError(f"--map: field {name!r} mapped twice")
        out[name] = column
    return out


# -- import -------------------------------------------------------------------------------------


async def import_csv(
    directory: Directory,
    path: Path,
    mapping: Mapping[str, str] | None = None,
    *,
    dry_run: bool = False,
    delimiter: str | None = None,
    progress: bool = False,
    jobs: int | None = None,
) -> ImportReport:
    """Import a CSV file into an open directory; see the module docstring for the rules.

    The work runs in a worker thread, so the event loop stays free. Checking a number costs
    about 20-40 µs (phonenumbers), so files over PARALLEL_BYTES are checked by `jobs` worker
    processes (default: one per CPU, at most MAX_JOBS) while this one reads and stages;
    `jobs=1` keeps it all in this process. Raises CsvError (MappingError) for a file that
    cannot be imported at all.
    """
    categories = frozenset(c.name for c in await directory.categories())
    job = _Import(directory, Path(path), dict(mapping or {}), categories, delimiter, progress)
    report = await asyncio.to_thread(job.run, dry_run, jobs)
    if report.committed:
        directory._invalidate()  # the rows came in through another connection
    log.info(
        "clients.imported" if report.committed else "clients.import_checked",
        path=str(path),
        rows=report.rows,
        imported=report.imported,
        absorbed=report.absorbed,
        skipped=report.skipped,
        errors=report.errors,
        warnings=report.warnings,
        dry_run=dry_run,
        jobs=report.jobs,
        seconds=round(report.total_s, 3),
    )
    return report


class _Import:
    """One import: read and check the rows into TEMP tables, then resolve clashes and copy."""

    def __init__(
        self,
        directory: Directory,
        path: Path,
        mapping: dict[str, str],
        categories: frozenset[str],
        delimiter: str | None,
        progress: bool,
    ) -> None:
        self.directory = directory
        self.path = path
        self.mapping = mapping
        self.categories = categories
        self.delimiter = delimiter
        self.progress = progress
        self.report = ImportReport(path, dry_run=False)

    def run(self, dry_run: bool, jobs: int | None = None) -> ImportReport:
        self.report.dry_run = dry_run
        db = _connect(self.directory.path, self.directory.busy_timeout_s)
        try:
            for statement in _STAGE:
                db.execute(statement)
            t0 = time.perf_counter()
            db.execute("BEGIN")  # TEMP tables only: no lock on the database
            self._read(db, jobs)
            db.execute("CREATE INDEX temp.import_phones_e164 ON import_phones (e164)")
            db.execute("CREATE INDEX temp.import_phones_tail ON import_phones (tail)")
            db.execute("COMMIT")
            t1 = time.perf_counter()
            self.report.seconds["read"] = t1 - t0
            write = not dry_run and self.report.errors == 0
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as exc:
                raise CsvError(
                    f"{self.directory.path}: the database is busy ({exc}); try again"
                ) from exc
            try:
                absorbed = self._resolve(db)
                t2 = time.perf_counter()
                self.report.seconds["check"] = t2 - t1
                if write:
                    self._write(db, absorbed)
                    db.execute("COMMIT")
                    self.report.committed = True
                    t3 = time.perf_counter()
                    self.report.seconds["write"] = t3 - t2
            finally:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            if self.report.committed:  # the lock is free again; a PASSIVE checkpoint blocks none
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.report.seconds["checkpoint"] = time.perf_counter() - t3
        finally:
            db.close()
        return self.report

    # -- reading -----------------------------------------------------------------------------

    def _read(self, db: sqlite3.Connection, jobs: int | None) -> None:
        try:
            f = self.path.open("rb")
        except OSError as exc:
            raise CsvError(f"{self.path}: cannot read: {exc.strerror}") from exc
        size = _size(f)
        if jobs is None:
            big = size is not None and size > PARALLEL_BYTES
            jobs = min(os.cpu_count() or 1, MAX_JOBS) if big else 1
        self.report.jobs = jobs = max(1, jobs)
        with f, _bar(self.progress, size, self.path.name) as bar:
            consumed = [0]
            lines = _decoded(self.path, f, consumed)
            first = next(lines, "")
            delimiter = self.delimiter or _sniff(first)
            reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter, strict=True)
            rules = self._header(reader, delimiter)
            checks = _Checks(rules, self.directory if jobs == 1 else None, jobs)
            try:
                batch: list[tuple[int, int, list[str]]] = []
                row, line, shown = 1, reader.line_num + 1, 0
                for cells in reader:
                    row += 1
                    start, line = line, reader.line_num + 1
                    if not cells or not "".join(cells).strip():
                        continue  # blank rows (a spreadsheet's trailing ",,,,") mean nothing
                    batch.append((row, start, cells))
                    if len(batch) >= BATCH_ROWS:
                        self.report.rows += len(batch)
                        for result in checks.submit(batch):
                            self._stage(db, result)
                        batch = []
                        bar.update(consumed[0] - shown)
                        shown = consumed[0]
                        bar.set_postfix(rows=f"{self.report.rows:,}", refresh=False)
                self.report.rows += len(batch)
                for result in checks.submit(batch, last=True):
                    self._stage(db, result)
            except csv.Error as exc:
                raise CsvError(
                    f"{self.path}: line {reader.line_num}: not valid CSV: {exc}"
                ) from None
            finally:
                checks.close()
            bar.update(consumed[0] - shown)
            bar.set_postfix(rows=f"{self.report.rows:,}", refresh=True)

    def _stage(self, db: sqlite3.Connection, result: _Checked) -> None:
        """Checked rows into the TEMP tables (their row number is their key); problems to
        the report."""
        clients, phones, problems = result
        for problem in problems:
            self.report.add(*problem)
        db.executemany(_STAGE_CLIENT, clients)
        db.executemany(_STAGE_PHONE, phones)

    def _header(self, reader: Iterator[list[str]], delimiter: str) -> _Rules:
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise CsvError(f"{self.path}: line 1: not valid CSV: {exc}") from None
        if header is None or not "".join(header).strip():
            raise CsvError(f"{self.path}: no header line (the first line names the columns)")
        names = [h.strip() for h in header]
        columns: dict[str, int] = {}
        for name, column in self.mapping.items():
            index = _column(self.path, names, column)
            if index is None:
                raise MappingError(
                    f"{self.path}: no column {column!r} (columns: {', '.join(map(repr, names))})"
                )
            columns[name] = index
        for name in FIELDS:
            if name not in columns:
                index = _column(self.path, names, name)
                if index is not None:
                    columns[name] = index
        if not columns:
            raise MappingError(
                f"{self.path}: no column is a field (columns: {', '.join(map(repr, names))}); "
                f"name them {', '.join(FIELDS)} or map them, e.g. --map name='Full Name'"
            )
        self.report.columns = {f: names[i] for f, i in sorted(columns.items(), key=lambda x: x[1])}
        used = set(columns.values())
        self.report.ignored = tuple(n for i, n in enumerate(names) if i not in used and n)
        numbers = self.directory.numbers
        return _Rules(
            numbers.region,
            numbers.strip_prefixes,
            numbers.last_digits,
            columns,
            self.categories,
            len(names),
            delimiter,
        )

    # -- clashes and writing -----------------------------------------------------------------

    def _resolve(self, db: sqlite3.Connection) -> list[tuple[int, int]]:
        """Decide which staged rows are skipped (into import_skip) and which potential
        clients are absorbed; returns (potential id, seq) pairs."""
        holders: dict[int, list[tuple[str, int]]] = defaultdict(list)  # seq -> (raw, client)
        if db.execute("SELECT 1 FROM main.client_phones LIMIT 1").fetchone():  # none: 1st import
            for seq, raw, client_id in db.execute(_DB_TWINS):
                holders[seq].append((raw, client_id))
        # the numbers the file has twice: seq -> [(raw, earlier seq)]
        twins: dict[int, list[tuple[str, int]]] = defaultdict(list)
        by_e164: dict[str, list[int]] = defaultdict(list)
        by_tail: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
        for seq, raw, e164, tail in db.execute(_FILE_TWINS):
            earlier = set(by_e164[e164]) if e164 is not None else set()
            earlier.update(s for s, e in by_tail[tail] if e is None or e164 is None)
            twins[seq].extend((raw, s) for s in sorted(earlier) if s != seq)
            if e164 is not None:
                by_e164[e164].append(seq)
            by_tail[tail].append((seq, e164))
        candidates = {c for pairs in holders.values() for _, c in pairs}
        blank = self._blank_potentials(db, candidates)
        skip: dict[int, tuple[str, str]] = {}  # seq -> (raw, why)
        claimed: dict[int, int] = {}  # absorbed potential -> seq
        absorbed: list[tuple[int, int]] = []
        for seq in sorted(holders.keys() | twins.keys()):
            owned = [(raw, c) for raw, c in holders.get(seq, ()) if c not in blank]
            taken = [(raw, claimed[c]) for raw, c in holders.get(seq, ()) if c in claimed]
            earlier = [(raw, s) for raw, s in twins.get(seq, ()) if s not in skip]
            if owned:
                raw, client_id = owned[0]
                skip[seq] = (raw, f"client {client_id}")
            elif earlier or taken:
                raw, other = (earlier or taken)[0]
                skip[seq] = (raw, f"row {other} of this file")
            else:
                for _, c in holders.get(seq, ()):
                    if c not in claimed:
                        claimed[c] = seq
                        absorbed.append((c, seq))
        shown = dict(itertools.islice(skip.items(), KEEP_PROBLEMS))
        names = self._names(db, [why for _, why in shown.values()])
        lines = self._lines(db, list(shown))
        for seq, (raw, why) in skip.items():
            self.report.add(
                seq,
                lines.get(seq, seq),
                "phones",
                "skipped",
                f"{raw!r} already belongs to {why}{names.get(why, '')}",
            )
        db.executemany("INSERT INTO temp.import_skip VALUES (?)", ((s,) for s in skip))
        staged = db.execute("SELECT count(*) FROM temp.import_clients").fetchone()[0]
        self.report.imported = staged - len(skip)
        self.report.phones = db.execute(
            f"SELECT count(*) FROM temp.import_phones WHERE {_KEPT}"
        ).fetchone()[0]
        self.report.absorbed = len(absorbed)
        return absorbed

    def _blank_potentials(self, db: sqlite3.Connection, ids: set[int]) -> set[int]:
        """Which of these clients are untouched potential ones: the directory's own test."""
        if not ids:
            return set()
        db.execute("DELETE FROM temp.import_holders")
        db.executemany("INSERT INTO temp.import_holders VALUES (?)", ((i,) for i in ids))
        potential = [
            r[0]
            for r in db.execute(
                "SELECT c.id FROM temp.import_holders AS h JOIN main.clients AS c "
                "ON c.id = h.id WHERE c.category = ?",
                (POTENTIAL,),
            )
        ]
        return {i for i in potential if db.execute(_BLANK_POTENTIAL, (i, POTENTIAL)).fetchone()}

    def _lines(self, db: sqlite3.Connection, seqs: list[int]) -> dict[int, int]:
        """The file's line of each of these rows (for the report lines shown)."""
        out: dict[int, int] = {}
        for seq in seqs:
            row = db.execute(
                "SELECT line FROM temp.import_clients WHERE seq = ?", (seq,)
            ).fetchone()
            out[seq] = int(row[0])
        return out

    def _names(self, db: sqlite3.Connection, whys: Sequence[str]) -> dict[str, str]:
        """' (Name)' for the `client N` reasons shown: a report line should say who."""
        out: dict[str, str] = {}
        for why in dict.fromkeys(whys):
            if why.startswith("client "):
                row = db.execute(
                    "SELECT name, company FROM main.clients WHERE id = ?", (int(why[7:]),)
                ).fetchone()
                label = " / ".join(v for v in row if v) if row else ""
                out[why] = f" ({label})" if label else ""
        return out

    def _write(self, db: sqlite3.Connection, absorbed: list[tuple[int, int]]) -> None:
        # ids follow the rows (the header's row 1 is id base + 0, never used): gaps only where
        # blank or skipped rows were
        base = int(db.execute("SELECT coalesce(max(id), 0) FROM main.clients").fetchone()[0]) - 1
        now = time.time()
        columns = ", ".join(_TEXT_FIELDS)
        db.execute(
            f"INSERT INTO main.clients (id, {columns}, search, created_at, updated_at) "
            f"SELECT ? + seq, {columns}, search, ?, ? FROM temp.import_clients "
            f"WHERE {_KEPT} ORDER BY seq",
            (base, now, now),
        )
        for gone, seq in absorbed:  # as Directory._merge: the calls move, the potential goes
            db.execute(*self.directory.relink(gone, base + seq))
            db.execute("DELETE FROM main.clients WHERE id = ?", (gone,))
        db.execute(
            "INSERT INTO main.client_phones (client_id, raw, e164, tail, label) "
            f"SELECT ? + seq, raw, e164, tail, '' FROM temp.import_phones WHERE {_KEPT} "
            "ORDER BY rowid",
            (base,),
        )


@dataclass(slots=True, frozen=True)
class _Rules:
    """How rows are checked; picklable, so a worker process checks rows as this one does."""

    region: str
    strip_prefixes: tuple[str, ...]
    last_digits: int
    columns: dict[str, int]  # field -> index of its column
    categories: frozenset[str]
    width: int  # cells in the header
    delimiter: str


# checked rows: the rows of import_clients (row, line, the text fields, the search key), those
# of import_phones (row, raw, e164, tail), and the problems (ImportReport.add's arguments)
_Checked = tuple[
    list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[int, int, str, Kind, str]]
]


class _Checker:
    """Checks rows with the directory's rules: `model.text` for the card, `Directory._phone`
    for the numbers (in a worker process, of an unopened directory with the same rules)."""

    def __init__(self, rules: _Rules, directory: Directory | None = None) -> None:
        if directory is None:
            numbers = PhoneNumbers(
                rules.region, strip_prefixes=rules.strip_prefixes, last_digits=rules.last_digits
            )
            directory = Directory(Path(os.devnull), numbers, photos_dir=Path(os.devnull))
        self.phone = directory._phone
        self.rules = rules
        self.texts = tuple(
            (name, index, CLIENT_FIELDS[name], name in MULTILINE)
            for name, index in rules.columns.items()
            if name != "phones"
        )
        self.phones = rules.columns.get("phones")
        self.no_e164 = (
            f"is no valid number (region {rules.region}): it will be found by its last "
            f"{rules.last_digits} digits only"
        )

    def batch(self, rows: list[tuple[int, int, list[str]]]) -> _Checked:
        clients: list[tuple[Any, ...]] = []
        phones: list[tuple[Any, ...]] = []
        problems: list[tuple[int, int, str, Kind, str]] = []
        for row, line, cells in rows:
            checked = self.check(cells, row, line, problems)
            if checked is not None:
                clients.append((row, line, *checked[0]))
                phones.extend((row, *number) for number in checked[1])
        return clients, phones, problems

    def check(
        self, cells: list[str], row: int, line: int, problems: list[tuple[int, int, str, Kind, str]]
    ) -> tuple[tuple[str, ...], list[tuple[str, str | None, str]]] | None:
        """One row's values and numbers; None (and the problems) when it has errors."""
        rules = self.rules
        before = len(problems)
        errors = 0
        n = len(cells)
        if n > rules.width and "".join(cells[rules.width :]).strip():
            problems.append((
                row, line, "", "error",
                f"{n} cells, the header has {rules.width}: a {rules.delimiter!r} in a cell "
                "that is not in quotes?",
            ))  # fmt: skip
        values = dict.fromkeys(_TEXT_FIELDS, "")
        for name, index, max_len, multiline in self.texts:
            cell = unguard(cells[index]) if index < n else ""
            if cell:
                try:
                    values[name] = text(name, cell, max_len, multiline=multiline)
                except ValidationError as exc:
                    problems.append((row, line, name, "error", exc.message))
        category = values["category"]
        if not category:
            values["category"] = DEFAULT_CATEGORY
        elif category.lower() in rules.categories:
            values["category"] = category.lower()  # names are lower case: "VIP" is vip
        else:
            known = ", ".join(sorted(rules.categories))
            problems.append(
                (row, line, "category", "error", f"unknown {category!r} (known: {known})")
            )
        numbers: list[tuple[str, str | None, str]] = []
        cell = unguard(cells[self.phones]) if self.phones is not None and self.phones < n else ""
        if cell:
            for part in PHONE_SEPARATORS.split(cell):
                if not part.strip():
                    continue
                try:
                    number = self.phone("phones", part)
                except ValidationError as exc:
                    problems.append((row, line, "phones", "error", exc.message))
                    continue
                if any(tail == number.tail for _, _, tail in numbers):
                    problems.append(
                        (row, line, "phones", "error", f"{number.raw!r}: the same number twice")
                    )
                    continue
                if number.e164 is None:
                    problems.append(
                        (row, line, "phones", "warning", f"{number.raw!r} {self.no_e164}")
                    )
                numbers.append((number.raw, number.e164, number.tail))
        errors = sum(p[3] == "error" for p in problems[before:])
        if errors:
            return None
        if not (values["name"] or values["company"] or numbers):
            problems.append(
                (row, line, "", "error", "a client needs a name, a company or a phone number")
            )
            return None
        return (*values.values(), search_key(values["name"], values["company"])), numbers


class _Checks:
    """Row checking, in this process or in worker processes; results come back in order."""

    def __init__(self, rules: _Rules, directory: Directory | None, jobs: int) -> None:
        self.local = _Checker(rules, directory) if jobs == 1 else None
        self.pool: ProcessPoolExecutor | None = None
        self.pending: deque[Future[_Checked]] = deque()
        self.depth = 2 * jobs
        if self.local is None:
            # spawn: this process has threads (aiosqlite's, asyncio's) a fork would copy mid-step
            self.pool = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(rules,),
            )

    def submit(
        self, rows: list[tuple[int, int, list[str]]], last: bool = False
    ) -> Iterator[_Checked]:
        """Check `rows`; yields the results that are ready (with `last`, all of them)."""
        if self.local is not None:
            if rows:
                yield self.local.batch(rows)
            return
        assert self.pool is not None
        if rows:
            self.pending.append(self.pool.submit(_worker_batch, rows))
        while self.pending and (last or len(self.pending) > self.depth):
            yield self.pending.popleft().result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


_worker: _Checker | None = None


def _worker_start(rules: _Rules) -> None:
    global _worker
    _worker = _Checker(rules)


def _worker_batch(rows: list[tuple[int, int, list[str]]]) -> _Checked:
    assert _worker is not None
    return _worker.batch(rows)


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection of the import's own, set up like the directory's writer."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA wal_autocheckpoint=0")  # run() checkpoints, once the lock is released
    for schema in ("main", "temp"):  # 128 MiB each: a big import's indexes stay in memory
        db.execute(f"PRAGMA {schema}.cache_size=-131072")
    return db


def _decoded(path: Path, f: IO[bytes], consumed: list[int]) -> Iterator[str]:
    """The file's lines as text: UTF-8, a BOM dropped; anything else names its line."""
    for number, raw in enumerate(f, 1):
        consumed[0] += len(raw)
        if number == 1:
            if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise CsvError(
                    f"{path}: line 1: UTF-16 text (Excel's 'Unicode Text'); save it as 'CSV UTF-8'"
                )
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
            raise CsvError(
                f"{path}: line {number}, column {column}: not UTF-8 (byte 0x{raw[exc.start]:02x}); "
                "save the file as 'CSV UTF-8', or convert it, e.g. "
                "iconv -f WINDOWS-1251 -t UTF-8"
            ) from None


def _sniff(first_line: str) -> str:
    """The delimiter: what the header has most of (Excel writes ';' in many locales)."""
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _column(path: Path, names: list[str], wanted: str) -> int | None:
    """The index of a column by its name: exact, else in any case; None if absent."""
    wanted = wanted.strip()
    hits = [i for i, n in enumerate(names) if n == wanted]
    if not hits:
        hits = [i for i, n in enumerate(names) if n.casefold() == wanted.casefold()]
    if len(hits) > 1:
        raise MappingError(f"{path}: the header has column {wanted!r} {len(hits)} times")
    return hits[0] if hits else None


def _size(f: IO[bytes]) -> int | None:
    try:
        return os.fstat(f.fileno()).st_size
    except OSError:
        return None


class _NoBar:
    """Stands in for tqdm when no bar is wanted."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _bar(enabled: bool, total: int | None, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    return tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
        dynamic_ncols=True, leave=True,
    )  # fmt: skip


# -- export -------------------------------------------------------------------------------------


async def export_csv(directory: Directory, path: Path, *, bom: bool = False) -> int:
    """Write every client as a row of FIELDS (phones joined with ';'); returns the rows.
    Cells a spreadsheet would run as a formula are guarded, with or without `bom`.

    Streamed: one read transaction, clients and phones merged by id as they come, so a
    million clients take no more memory than a thousand. Written to a temporary file beside
    `path` and renamed at the end: a failed export leaves no half file.
    """
    rows = await asyncio.to_thread(_export, directory.path, Path(path), bom)
    log.info("clients.exported", path=str(path), rows=rows, bom=bom)
    return rows


def _export(db_path: Path, path: Path, bom: bool) -> int:
    db = sqlite3.connect(db_path, isolation_level=None)
    # beside the target, so the rename is atomic; created as open() would (the umask's mode)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("BEGIN")  # one snapshot for both queries
        clients = db.execute(f"SELECT id, {', '.join(_TEXT_FIELDS)} FROM clients ORDER BY id")
        phones = db.cursor().execute(
            "SELECT client_id, raw, e164 FROM client_phones ORDER BY client_id, id"
        )
        clients.arraysize = phones.arraysize = 1000
        count = 0
        with open(tmp, "x", encoding="utf-8-sig" if bom else "utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(FIELDS)
            pending = phones.fetchone()
            for client_id, *values in _rows(clients):
                numbers: list[str] = []
                while pending is not None and pending[0] <= client_id:
                    if pending[0] == client_id:
                        numbers.append(_exported_number(pending[1], pending[2]))
                    pending = phones.fetchone()
                # names and notes are anyone's to write: never a formula in a spreadsheet
                writer.writerow([safe_cell(v) for v in (*values, "; ".join(numbers))])
                count += 1
        db.execute("COMMIT")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        db.close()
    return count


def _rows(cursor: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
    while batch := cursor.fetchmany():
        yield from batch


def _exported_number(raw: str, e164: str | None) -> str:
    """The number as written, unless it holds a separator: then its E.164 (same number)."""
    if PHONE_SEPARATORS.search(raw):
        return e164 or PHONE_SEPARATORS.sub(" ", raw)
    return raw
