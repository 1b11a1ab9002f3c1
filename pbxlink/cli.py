"""pbxlink: a CTI daemon for Asterisk (call records, client cards, popups, call log), and the
commands that replay AMI captures, check its config and manage its client directory."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from pbxlink import __version__, lock
from pbxlink.calllog import relink_calls
from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.calls.tracker import CallTracker
from pbxlink.calls.updates import (
    Answered,
    CallEnded,
    CallStarted,
    CallUpdate,
    RingEnded,
    Ringing,
    Transferred,
)
from pbxlink.clients import csvio
from pbxlink.clients.csvio import ImportReport
from pbxlink.clients.directory import Directory
from pbxlink.config import Config, ConfigError, load, parse
from pbxlink.db import SchemaError
from pbxlink.logs import setup_logging
from pbxlink.operators import hash_token
from pbxlink.replay import ReplayStats, finished_calls, first_timestamp, read_chunks, replay
from pbxlink.sim import scenarios
from pbxlink.startup import StartError

TABLE = (
    "{:<19} {:<8} {:<26.26} {:<14.14} {:<11.11} {:<8} {:<10.10} {:<8} {:>6} {:>6} {:<4.4} {:<3} {}"
)


HEADER = (
    "started (UTC)",
    "dir",
    "caller",
    "called",
    "rung",
    "answered",
    "status",
    "queue",
    "wait",
    "talk",
    "ivr",
    "rec",
    "transferred",
)


def _table_row(r: CallRecord) -> str:
    started = (iso_utc(r.started_at) or "")[:19].replace("T", " ")
    caller = f"{r.caller_number} {r.caller_name}".strip()
    return TABLE.format(
        started,
        r.direction,
        caller,
        r.called_number,
        ",".join(r.extensions_rung) or "-",
        r.answered_by or "-",
        r.status + ("*" if r.partial else ""),
        r.queue or "-",
        f"{r.wait_s:.1f}",
        f"{r.talk_s:.1f}",
        r.ivr_digits or "-",
        "rec" if r.recording else "-",
        ",".join(r.transferred_to) or "",
    )


def _config_failed(exc: ConfigError) -> int:
    """Every mistake of the file, a line each; exit code 2."""
    for problem in exc.problems:
        print(f"pbxlink: {problem}", file=sys.stderr)
    return 2


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        config = _load_or_default(args.config)
    except ConfigError as exc:
        return _config_failed(exc)
    tracker = CallTracker(config.tracker)
    status = 0
    out = sys.stdout
    if not args.json:
        print(TABLE.format(*HEADER), file=out)
    for trace in args.trace:
        stats = ReplayStats()
        try:
            start, fallback = first_timestamp(read_chunks(trace)), None
            if start is None:  # nothing to tell the time by but the file itself
                start = fallback = trace.stat().st_mtime
            updates = replay(read_chunks(trace), tracker, start_at=start, stats=stats)
            ended = list(finished_calls(updates))
        except OSError as exc:
            print(f"pbxlink: {trace}: cannot read: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        if not stats.messages:
            print(
                f"pbxlink: {trace}: no AMI message in it (expected a capture of an AMI session: "
                "blocks of 'Key: value' lines, each ending with a blank line)",
                file=sys.stderr,
            )
            status = 1
            continue
        if fallback is not None:
            stamped = dt.datetime.fromtimestamp(fallback, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            print(
                f"pbxlink: warning: {trace}: no message has a Timestamp header "
                "(timestampevents = yes in manager.conf adds them), so the calls' times are "
                f"unknown: every event was stamped with the file's modification time, {stamped} "
                "UTC, and every wait and talk time is 0",
                file=sys.stderr,
            )
        for update in ended:
            if args.json:
                out.write(json.dumps(update.call.to_dict(), ensure_ascii=False) + "\n")
            else:
                print(_table_row(update.call), file=out)
    if not args.json:
        print("(* = partial: the tracker did not see the whole call)", file=out)
    return status


def _describe(update: CallUpdate) -> str:
    r = update.call
    clock = (iso_utc(update.at) or "")[11:19]
    who = f"{r.caller_number} {r.caller_name}".strip() or "?"
    match update:
        case CallStarted():
            what = f"{r.direction} call from {who} to {r.called_number or '?'}"
        case Ringing(extension=ext):
            what = f"rings {ext}"
        case RingEnded(extension=ext, outcome=outcome):
            what = f"{ext} stops ringing: {outcome}"
        case Answered(extension=ext):
            what = f"answered by {ext or 'the far end'}"
        case Transferred(extension=ext, kind=kind):
            what = f"{kind} transfer to {ext}"
        case CallEnded():
            what = f"ended: {r.status}, waited {r.wait_s:.1f} s, talked {r.talk_s:.1f} s"
        case _:
            what = type(update).__name__
    return f"{clock}  {r.call_id:<16} {what}"


def cmd_demo(args: argparse.Namespace) -> int:
    """Replay the recorded calls shipped with pbxlink, as a daemon would see them live."""
    tracker = CallTracker(parse({"calls": {"pbx_timezone": "UTC"}}).tracker)
    ended: list[CallRecord] = []
    for scenario in scenarios():
        print(f"--- {scenario.name}")
        for update in replay([scenario.read_bytes()], tracker):
            print(_describe(update))
            if isinstance(update, CallEnded):
                ended.append(update.call)
    print()
    print(TABLE.format(*HEADER))
    for record in ended:
        print(_table_row(record))
    print(f"\n{len(ended)} calls. Replay your own: pbxlink replay FILE.ami [--json]")
    return 0


def _load_or_default(path: Path | None) -> Config:
    return load(path) if path else parse({})


def cmd_run(args: argparse.Namespace) -> int:
    """The daemon. Exit codes: 0 stopped cleanly, 2 bad config, a port in use or the database
    held by another daemon, 78 AMI login refused."""
    # the one import inside a function: the daemon's own imports (websockets, aiosqlite,
    # panoramisk, prometheus_client) would double the start of every other command
    from pbxlink.daemon import Daemon

    try:
        config = _load_or_default(args.config)
    except ConfigError as exc:
        return _config_failed(exc)
    log = structlog.get_logger("pbxlink.cli")
    for warning in config.warnings:
        log.warning("config.unsafe", problem=warning)
    try:
        return asyncio.run(Daemon(config).run())
    except ConfigError as exc:  # a TLS file that changed since the config was read
        return _config_failed(exc)
    except StartError as exc:  # a port or the database taken: one line, no traceback
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        _config_failed(exc)
        count = len(exc.problems)
        print(f"pbxlink: {args.file}: {count} mistake{'s' * (count != 1)}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"pbxlink: warning: {warning}", file=sys.stderr)
    ami, web, hub = config.ami, config.web, config.hub
    target = "the built-in simulator" if ami.mode == "simulator" else f"{ami.host}:{ami.port}"
    page = f"{'https' if web.tls else 'http'}://{web.host}:{web.port}"
    popups = f"{'wss' if hub.tls_cert_file else 'ws'}://{hub.host}:{hub.port}"
    print(
        f"{args.file}: OK. AMI: {target}; web: {page}; popups: {popups}; "
        f"{len(config.operators)} operator(s)."
    )
    print(lock.describe(config.storage.database_path))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """A fresh random token for an operator; only its hash goes into the config file."""
    token = secrets.token_urlsafe(32)
    print(f"token (give it to the operator; it is not stored anywhere): {token}")
    print("config line for that operator's [[operators]] table:")
    print(f'token_hash = "{hash_token(token)}"')
    return 0


def cmd_clients_import(args: argparse.Namespace) -> int:
    """Exit codes: 0 imported (or a clean dry run), 1 the file was rejected and nothing was
    written (row errors, not UTF-8, not CSV), 2 bad options, config or column mapping."""
    try:
        config = _load_or_default(args.config)
        mapping = csvio.parse_mapping(args.map)
    except ConfigError as exc:
        return _config_failed(exc)
    except ValueError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2
    print(f"pbxlink: {lock.describe(config.storage.database_path)}", file=sys.stderr)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()

    async def run() -> csvio.ImportReport:
        async with Directory.from_config(config, relink_calls=relink_calls) as directory:
            return await csvio.import_csv(
                directory,
                args.file,
                mapping,
                dry_run=args.dry_run,
                delimiter=args.delimiter,
                progress=progress,
                jobs=args.jobs,
            )

    try:
        report = asyncio.run(run())
    except csvio.MappingError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2
    except (csvio.CsvError, SchemaError) as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        print("pbxlink: nothing imported", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # disk full, I/O: the transaction was rolled back
        print(f"pbxlink: {config.storage.database_path}: {exc}", file=sys.stderr)
        print("pbxlink: nothing imported", file=sys.stderr)
        return 1
    _print_import(report, args.show)
    return 1 if report.errors else 0


def _print_import(report: ImportReport, show: int) -> None:
    """The report: columns read, each problem by row, then what was (or would be) done."""
    columns = ", ".join(f"{f}={c!r}" if f != c else f for f, c in report.columns.items())
    print(f"{report.path}: {report.rows:,} rows; columns: {columns}")
    if report.ignored:
        print(f"ignored columns: {', '.join(map(repr, report.ignored))}")
    shown = {"error": 0, "skipped": 0, "warning": 0}
    for problem in sorted(report.problems, key=lambda p: (p.row, p.kind != "error")):
        shown[problem.kind] += 1
        if not show or shown[problem.kind] <= show:
            print(problem)
    for kind, count in report.counts.items():
        hidden = count - min(count, show or count)
        if hidden:
            print(f"... and {hidden:,} more {kind} lines (--show 0 lists up to 1,000 of each)")
    rate = f"{report.rows / report.total_s:,.0f} rows/s" if report.total_s > 0 else ""
    plural = "s" if report.errors != 1 else ""
    if report.errors:
        print(
            f"{report.errors:,} error{plural} in {report.rows:,} rows: nothing imported "
            "(all or nothing: fix the rows above and run again)"
        )
        return
    verb = "imported" if report.committed else "dry run, nothing written: would import"
    print(
        f"{verb} {report.imported:,} clients with {report.phones:,} numbers"
        + (f", absorbing {report.absorbed:,} potential clients" if report.absorbed else "")
        + (
            f"; skipped {report.skipped:,} rows whose numbers the directory already has"
            if report.skipped
            else ""
        )
        + (f"; {report.warnings:,} warnings" if report.warnings else "")
        + f" ({report.total_s:.1f} s, {rate})"
    )


def cmd_clients_export(args: argparse.Namespace) -> int:
    try:
        config = _load_or_default(args.config)
    except ConfigError as exc:
        return _config_failed(exc)
    database = config.storage.database_path
    print(f"pbxlink: {lock.describe(database)}", file=sys.stderr)
    if not database.exists():
        print(f"pbxlink: {database}: no database (nothing to export)", file=sys.stderr)
        return 1

    async def run() -> int:
        async with Directory.from_config(config) as directory:
            return await csvio.export_csv(directory, args.file, bom=args.bom)

    try:
        rows = asyncio.run(run())
    except OSError as exc:
        print(f"pbxlink: {args.file}: cannot write: {exc.strerror}", file=sys.stderr)
        return 1
    except SchemaError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: {rows:,} clients exported")
    return 0


def _delimiter(value: str) -> str:
    value = {"tab": "\t", "\\t": "\t"}.get(value, value)
    if len(value) != 1:
        raise argparse.ArgumentTypeError("one character, or 'tab'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbxlink", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pbxlink {__version__}")
    parser.add_argument(
        "--log-level", help="debug, info, warning, error (default: info for run, else warning)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "replay",
        help="print the call records of recorded AMI streams",
        description="Replay captures of an AMI session through pbxlink's call tracker and "
        "print the calls they hold: a table, or with --json one record per line (the fields "
        "of the README). Times come from the events' Timestamp headers (timestampevents = yes "
        "in manager.conf); a capture without them is replayed with a warning saying what "
        "times it got. Exit code 1 when a file cannot be read or holds no AMI message.",
    )
    p.add_argument("trace", nargs="+", type=Path, help="AMI byte stream(s), e.g. 01_x.ami")
    p.add_argument("--json", action="store_true", help="one JSON object per finished call")
    p.add_argument("--config", type=Path, help="pbxlink.toml with [calls] rules")
    p.set_defaults(func=cmd_replay)
    d = sub.add_parser(
        "demo",
        help="replay the recorded calls shipped with pbxlink",
        description="Replay the real Asterisk calls shipped with pbxlink and print, event by "
        "event, what the call tracker makes of them, then the finished calls as a table. "
        "Needs no PBX and writes nothing (`pbxlink run` with no config plays them live).",
    )
    d.set_defaults(func=cmd_demo)
    r = sub.add_parser(
        "run",
        help="run the daemon (the simulator when no Asterisk is set)",
        description="Run the daemon: the AMI link, the call log, the operator page and its API, "
        "the popups. Without --config it runs on the built-in defaults against the AMI "
        "simulator. Exit codes: 0 stopped by SIGTERM or SIGINT; 2 a bad config file, a port "
        "in use or the database held by another pbxlink daemon; 78 the AMI login refused.",
    )
    r.add_argument("--config", type=Path, help="pbxlink.toml (default: built-in defaults)")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser(
        "check-config",
        help="validate a config file without starting",
        description="Read a config file as the daemon would, without starting anything: every "
        "mistake at once, each with its file, line and key (exit code 2); then warnings about "
        "what works but is unsafe; then what the file sets up and the database it names "
        "(and whether a running daemon uses that database).",
    )
    c.add_argument("file", type=Path, help="the config file, e.g. /etc/pbxlink/pbxlink.toml")
    c.set_defaults(func=cmd_check_config)
    t = sub.add_parser(
        "token",
        help="print a new operator token and its config line",
        description="Print a new random operator token, to hand to the person, and the "
        "token_hash line for their [[operators]] table: only the hash is stored.",
    )
    t.set_defaults(func=cmd_token)
    cl = sub.add_parser(
        "clients",
        help="import or export the client directory as CSV",
        description="Import clients from a CSV file, or export the directory to one. Both "
        "print the database they use: pass the daemon's config (--config) to reach the "
        "daemon's database.",
    )
    clsub = cl.add_subparsers(dest="clients_command", required=True)
    ci = clsub.add_parser(
        "import",
        help="import clients from a CSV file (all or nothing)",
        description="Import clients from a UTF-8 CSV file whose first line names the columns. "
        "All or nothing: any row error and nothing is written. Rows whose numbers the "
        "directory (or an earlier row) already has are skipped and reported.",
    )
    ci.add_argument("file", type=Path, help="the CSV file (UTF-8, with or without BOM)")
    ci.add_argument("--config", type=Path, help="pbxlink.toml: database and region")
    ci.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD from the column named COLUMN (repeatable); fields: name, company, "
        "category, notes, city, country, responsible, phones; default: the column named so",
    )
    ci.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    ci.add_argument(
        "--delimiter", type=_delimiter, help="',', ';' or 'tab' (default: from the header)"
    )
    ci.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    ci.add_argument(
        "--show", type=int, default=50, metavar="N", help="list N lines of each kind (0: all)"
    )
    ci.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="processes checking rows (default: one per CPU, up to 4, for files over 2 MiB; "
        "1: this process only)",
    )
    ci.set_defaults(func=cmd_clients_import)
    ce = clsub.add_parser(
        "export",
        help="export every client to a CSV file",
        description="Write every client of the directory to a CSV file (UTF-8, with a header "
        "line), in the columns `pbxlink clients import` reads back.",
    )
    ce.add_argument("file", type=Path, help="the CSV file to write (replaced if it exists)")
    ce.add_argument("--config", type=Path, help="pbxlink.toml: the database")
    ce.add_argument("--bom", action="store_true", help="start with a BOM (Excel needs it)")
    ce.set_defaults(func=cmd_clients_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or ("info" if args.command == "run" else "warning"))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
