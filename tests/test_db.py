"""One database, one owner per table: the migrations as the field has them, who writes what
(read from the code's own SQL and the schema), and the one write the call log makes for the
directory (`relink_calls`)."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiosqlite
import pytest

from pbxlink.calllog import CallLogStore, query, relink_calls
from pbxlink.calllog.query import CallFilter
from pbxlink.calls.record import DIRECTIONS, STATUSES
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.db import HISTORY, MIGRATIONS, OWNERS, migrate, statements

from conftest import ROOT, insert_call, make_record

PACKAGE = ROOT / "pbxlink"
# sha256 of each migration's text as it shipped: a database in the field applied exactly that
SHIPPED = (
    "a5c0a0c978a23a917536fc15e85e6ae6d0ba6496882643165a216eb145f0497b",
    "5e7d14f6112981119f73fa04e87e076ca831a8d7f0201b63e08f9b35b75e0948",
    "793d9ddaf472286d2414d485fcfa6c59b44e2d50513ff1e3cb971569a686188a",
    "4bf224e98f176f61554fa29266750fa3850ec5f06c701fd0f1f2aa884a853172",
    "164e9c5c48d2596283f07f67e9a0358520ec5a483cd84228e5589889ecc2bcd6",
    "c7f5f124a02533815c6391b3aa7146f83a08eb07405ee51748ec419d58521750",
    "040dc3a176e71555e4c55feba19872569c753766f42ac815263a7b383c506de0",
    "0592cb37d0c303de35f1923c72b9c6809a291278ce1a9b20610b410e78753dc3",
)
# the release before the db part (and before migrations 7 and 8) stopped at this version
LAST_VERSION_BEFORE = 6
# an SQL write and the table it writes (SQL keywords are upper case in pbxlink's code); an
# upsert's DO UPDATE writes the table its INSERT names
WRITE = re.compile(
    r"\b(?:INSERT(?: OR \w+)? INTO|REPLACE INTO|(?<!DO )UPDATE(?: OR \w+)?|DELETE FROM)"
    r"\s+([\w.]+|\{\})"
)
# the migrations' texts are checked as a schema (below), not as code
MIGRATION_MODULES = {"db/calllog_schema.py", "db/clients_schema.py"}
# writes whose table is a variable: where, and the tables it takes
DYNAMIC = {("calllog/store.py", "DELETE FROM {}"): ("recording_access", "call_extensions", "calls")}
# sqlite3 authorizer actions a migration's statements may take on a table: (code, argument
# holding the table)
TABLE_ACTIONS = {
    sqlite3.SQLITE_CREATE_TABLE: 0,
    sqlite3.SQLITE_CREATE_INDEX: 1,
    sqlite3.SQLITE_CREATE_VIEW: 0,
    sqlite3.SQLITE_ALTER_TABLE: 1,
    sqlite3.SQLITE_DROP_INDEX: 1,
    sqlite3.SQLITE_DROP_TABLE: 0,
    sqlite3.SQLITE_DROP_VIEW: 0,
    sqlite3.SQLITE_INSERT: 0,
    sqlite3.SQLITE_UPDATE: 0,
    sqlite3.SQLITE_DELETE: 0,
}


def part_of(module: Path) -> str:
    """pbxlink/<part>/... -> part; a module at the top (pbxlink/cli.py) is a part of its own."""
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def texts(tree: ast.AST) -> Iterator[str]:
    """Every string literal of a module; an f-string whole, with `{}` where a value goes."""
    parts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts.update(id(v) for v in node.values)
            yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts
        ):
            yield node.value


def writes(source: str) -> list[str]:
    """The tables the SQL in this source writes (schema prefixes dropped; `{}`: a variable)."""
    found = []
    for text in texts(ast.parse(source)):
        for table in WRITE.findall(text):
            found.append(table.removeprefix("main."))
    return found


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path


def fresh_schema(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    for sql in MIGRATIONS:
        for statement in statements(sql):
            db.execute(statement)
    return db


# -- the migrations ---------------------------------------------------------------------------


def test_shipped_migrations_are_never_edited() -> None:
    """Databases in the field applied each migration as it was: a changed text would give a
    new database another schema than an upgraded one. Add a migration instead."""
    got = tuple(hashlib.sha256(sql.encode()).hexdigest() for sql in MIGRATIONS)
    assert got[: len(SHIPPED)] == SHIPPED
    assert len(got) == len(SHIPPED), "a new migration: pin its text here once it ships"


def test_each_migration_touches_only_its_owners_tables(tmp_path: Path) -> None:
    """What a migration creates, alters, indexes or fills belongs to the part it is listed
    under (triggers are judged by what they write, below)."""
    db = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    touched: list[str] = []

    def authorizer(action: int, a: str | None, b: str | None, *_: object) -> int:
        if action in TABLE_ACTIONS:
            table = (a, b)[TABLE_ACTIONS[action]]
            if table is not None and not table.startswith("sqlite_"):
                touched.append(table)
        return sqlite3.SQLITE_OK

    db.set_authorizer(authorizer)
    seen: dict[str, int] = {}
    for version, migration in enumerate(HISTORY, 1):
        touched.clear()
        for statement in statements(migration.sql):
            db.execute(statement)
        for table in touched:
            assert OWNERS.get(table) == migration.owner, (version, table, migration.owner)
            seen[table] = version
    assert set(seen) == set(OWNERS) - {"schema_version"}


def test_every_table_and_view_has_one_owner(tmp_path: Path) -> None:
    db = fresh_schema(tmp_path / "db.sqlite3")
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
    names = {
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%'"
        )
    }
    assert names == set(OWNERS)
    assert set(OWNERS.values()) == {"db", "calllog", "clients"}


def test_each_trigger_writes_only_the_tables_of_the_part_that_made_it(tmp_path: Path) -> None:
    """A trigger is a write like any other: the call log's unlinks calls when a client is
    deleted; the directory's of migration 3, which wrote calls, is gone since migration 8."""
    db = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    made_by: dict[str, str] = {}
    for migration in HISTORY:
        before = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        for statement in statements(migration.sql):
            db.execute(statement)
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'"):
            if name not in before:
                made_by[name] = migration.owner
    triggers = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger'"))
    assert set(triggers) == {"calls_client_deleted"}
    for name, sql in triggers.items():
        body = sql[sql.upper().index("BEGIN") :]
        written = WRITE.findall(body)
        assert written, f"trigger {name} writes nothing?"
        for table in written:
            assert OWNERS[table] == made_by[name], (name, table)


def test_the_schema_accepts_every_status_and_direction_of_a_record(tmp_path: Path) -> None:
    """migration 1's CHECK lists are the record's vocabulary, written out when it shipped."""
    db = fresh_schema(tmp_path / "pbxlink.sqlite3")
    db.close()
    for i, status in enumerate(STATUSES):
        insert_call(tmp_path / "pbxlink.sqlite3", make_record(call_id=f"s{i}", status=status))
    for i, direction in enumerate(DIRECTIONS):
        insert_call(tmp_path / "pbxlink.sqlite3", make_record(call_id=f"d{i}", direction=direction))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        insert_call(tmp_path / "pbxlink.sqlite3", make_record(call_id="x", status="lost"))  # type: ignore[arg-type]


async def test_a_database_of_the_last_release_upgrades_and_keeps_its_links(
    tmp_path: Path,
) -> None:
    """A version-6 database (as deployed before migrations 7 and 8) opens; the call log's
    trigger takes over from the directory's, and a deleted client still leaves its calls
    unlinked, never pointing at a later client given the same id."""
    path = tmp_path / "pbxlink.sqlite3"
    async with aiosqlite.connect(path, isolation_level=None) as db:
        assert await migrate(db, path, MIGRATIONS[:LAST_VERSION_BEFORE]) == LAST_VERSION_BEFORE
        await db.execute(
            "INSERT INTO clients (id, name, created_at, updated_at) VALUES (7, 'Old', 0, 0)"
        )
    insert_call(path, make_record(call_id="c1"), 7)
    numbers = PhoneNumbers("GE")
    async with Directory(path, numbers, photos_dir=tmp_path / "photos") as directory:
        with contextlib.closing(sqlite3.connect(path)) as db:
            versions = [v for (v,) in db.execute("SELECT version FROM schema_version")]
            triggers = [
                n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
            ]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        assert triggers == ["calls_client_deleted"]
        await directory.delete(7)
        again = await directory.create({"name": "New"})
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT client_id FROM calls").fetchall() == [(None,)]
        summary = db.execute("SELECT * FROM client_summary").fetchall()
    assert summary == [(again.id, "New", "regular")]


# -- who writes what, read from the code --------------------------------------------------------


def test_the_scan_finds_writes_however_they_are_spelled() -> None:
    """The scanner below is only as good as its reading of SQL: it must see these."""
    source = """
A = "INSERT OR IGNORE INTO call_extensions VALUES (?)"
B = f"UPDATE clients SET {x} = ?"
C = ("INSERT INTO open_calls VALUES (?) ON CONFLICT(call_id) DO UPDATE "
     "SET record = excluded.record")
D = "DELETE FROM main.client_phones WHERE id = ?"
E = f"DELETE FROM {table} WHERE 1"
F = "SELECT * FROM calls WHERE status = 'UPDATE'"
"""
    assert sorted(writes(source)) == sorted(
        ["call_extensions", "clients", "open_calls", "client_phones", "{}"]
    )


def test_each_table_is_written_only_by_its_owners_modules() -> None:
    """No part writes another's table, whatever connection it holds: it asks the owner (the
    directory's merges run the call log's relink_calls, whose SQL lives in calllog/)."""
    seen: dict[str, set[str]] = {}
    for name, path in modules():
        if name in MIGRATION_MODULES:
            continue
        part = part_of(path)
        for table in writes(path.read_text(encoding="utf-8")):
            if table == "{}":
                key = (name, "DELETE FROM {}")
                assert key in DYNAMIC, f"pbxlink/{name}: a write to a table named at run time"
                tables = DYNAMIC[key]
            elif table.startswith("temp."):
                continue  # a connection's own scratch tables (the CSV import's staging)
            else:
                tables = (table,)
            for t in tables:
                assert t in OWNERS, f"pbxlink/{name} writes {t}, a table no part owns"
                assert OWNERS[t] == part, f"pbxlink/{name} writes {t}, {OWNERS[t]}'s table"
                seen.setdefault(t, set()).add(name)
    # not vacuous: every table is written somewhere, the call log's calls by the store
    assert set(seen) == set(OWNERS) - {"client_summary"}
    assert {"calllog/store.py", "calllog/links.py"} <= seen["calls"]
    assert "clients/csvio.py" in seen["clients"]


def imports(path: Path) -> set[str]:
    """The pbxlink modules a file imports, at the top, in functions or for type checking."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m == "pbxlink" or m.startswith("pbxlink.")}


@pytest.mark.parametrize(
    ("part", "never"),
    [("calllog", ("pbxlink.clients",)), ("clients", ("pbxlink.calllog",)), ("db", ("pbxlink.",))],
)
def test_the_call_log_and_the_directory_do_not_import_each_other(
    part: str, never: tuple[str, ...]
) -> None:
    """Both depend on db/, which depends on no part; what one needs of the other the
    composition root passes (relink_calls, the number rules)."""
    found = {m for path in (PACKAGE / part).rglob("*.py") for m in imports(path)}
    assert any(m.startswith("pbxlink.db") for m in found) or part == "db"
    bad = {m for m in found if m.startswith(never) and not m.startswith(f"pbxlink.{part}")}
    assert not bad, f"pbxlink/{part} imports {sorted(bad)}"


# -- the call log's write for the directory, and its read of clients -----------------------------


def test_relink_calls_moves_exactly_one_clients_calls(tmp_path: Path) -> None:
    path = tmp_path / "pbxlink.sqlite3"
    fresh_schema(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO clients (id, created_at, updated_at) VALUES (?, 0, 0)", [(1,), (2,), (3,)]
        )
    for i, client_id in enumerate((1, 1, 2, None)):
        insert_call(path, make_record(call_id=f"c{i}"), client_id)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        assert db.execute(*relink_calls(1, 3)).rowcount == 2
        rows = db.execute("SELECT call_id, client_id FROM calls ORDER BY call_id").fetchall()
    assert rows == [("c0", 3), ("c1", 3), ("c2", 2), ("c3", None)]


async def test_a_directory_without_the_call_logs_relink_cannot_merge(tmp_path: Path) -> None:
    """Merging would leave the calls behind (then unlinked): refused, and nothing changes."""
    path = tmp_path / "pbxlink.sqlite3"
    async with Directory(path, PhoneNumbers("GE"), photos_dir=tmp_path / "photos") as directory:
        keep = await directory.create({"name": "Keep"})
        gone = await directory.create({"name": "Gone", "phones": ["0555123456"]})
        insert_call(path, make_record(call_id="c1"), gone.id)
        with pytest.raises(RuntimeError, match="relink_calls"):
            await directory.merge(keep.id, gone.id)
        assert await directory.get(gone.id) == gone
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT client_id FROM calls").fetchall() == [(gone.id,)]


def test_the_cli_import_moves_an_absorbed_clients_calls(tmp_path: Path) -> None:
    """`pbxlink clients import` builds its directory with the call log's relink_calls: the
    potential client a caller left behind is absorbed with its calls."""
    state = tmp_path / "state"
    config = tmp_path / "pbxlink.toml"
    config.write_text(f'[storage]\nstate_dir = "{state}"\n', encoding="utf-8")
    path = state / "pbxlink.sqlite3"

    async def potential() -> int:
        async with Directory(path, PhoneNumbers("GE"), photos_dir=state / "photos") as d:
            made = await d.register_unknown("0555777888")
            assert made is not None
            return made.id

    potential_id = asyncio.run(potential())
    insert_call(path, make_record(call_id="c1"), potential_id)
    csv = tmp_path / "in.csv"
    csv.write_text("name,phones\nNino,+995 555 77 78 88\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pbxlink", "clients", "import", str(csv), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "absorbing 1 potential clients" in done.stdout
    with contextlib.closing(sqlite3.connect(path)) as db:
        ((nino,),) = db.execute("SELECT id FROM clients WHERE name = 'Nino'").fetchall()
        assert db.execute("SELECT client_id FROM calls").fetchall() == [(nino,)]
        assert db.execute("SELECT count(*) FROM clients").fetchone() == (1,)


async def test_the_call_log_reads_clients_through_the_view_as_fast_as_the_table(
    store: CallLogStore,
) -> None:
    """client_summary is flattened into the call log's queries: the plans are the ones the
    `clients` table itself gives (only the name SQLite prints differs)."""
    for f in (CallFilter(), CallFilter(category="vip"), CallFilter(client_id=3)):
        sql, params = await query._page_sql(store.reader, f, None, "-started_at", 51, None)
        assert "client_summary" in sql
        plans = []
        for text in (sql, sql.replace("client_summary", "clients")):
            rows = await store.reader.execute_fetchall(f"EXPLAIN QUERY PLAN {text}", params)
            plans.append([re.sub(r"\b(cl|k)\b", "clients", str(r[3])) for r in rows])
        assert plans[0] == plans[1]
        assert not any("SCAN clients" in p or "MATERIALIZE" in p for p in plans[0])
