"""The `pbxlink` command."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from pbxlink import __version__
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
from pbxlink.config import Config, ConfigError, hash_token, load, parse
from pbxlink.logs import setup_logging
from pbxlink.replay import finished_calls, read_chunks, replay
from pbxlink.sim import scenarios

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


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        config = _load_or_default(args.config)
    except ConfigError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2
    tracker = CallTracker(config.tracker)
    status = 0
    out = sys.stdout
    if not args.json:
        print(TABLE.format(*HEADER), file=out)
    for trace in args.trace:
        try:
            ended = list(finished_calls(replay(read_chunks(trace), tracker)))
        except OSError as exc:
            print(f"pbxlink: {trace}: cannot read: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
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
    """The daemon. Exit codes: 0 stopped cleanly, 2 bad config, 78 AMI login refused."""
    import asyncio

    from pbxlink.daemon import Daemon

    try:
        config = _load_or_default(args.config)
    except ConfigError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(Daemon(config).run())


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2
    ami = config.ami
    target = "the built-in simulator" if ami.mode == "simulator" else f"{ami.host}:{ami.port}"
    print(
        f"{args.file}: OK. AMI: {target}; database: {config.storage.database_path}; "
        f"web: {config.web.host}:{config.web.port}; {len(config.operators)} operator(s)."
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """A fresh random token for an operator; only its hash goes into the config file."""
    token = secrets.token_urlsafe(32)
    print(f"token (give it to the operator; it is not stored anywhere): {token}")
    print("config line for that operator's [[operators]] table:")
    print(f'token_hash = "{hash_token(token)}"')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbxlink", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pbxlink {__version__}")
    parser.add_argument(
        "--log-level", help="debug, info, warning, error (default: info for run, else warning)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="print the call records of recorded AMI streams")
    p.add_argument("trace", nargs="+", type=Path, help="AMI byte stream(s), e.g. 01_x.ami")
    p.add_argument("--json", action="store_true", help="one JSON object per finished call")
    p.add_argument("--config", type=Path, help="pbxlink.toml with [calls] rules")
    p.set_defaults(func=cmd_replay)
    d = sub.add_parser("demo", help="replay the recorded calls shipped with pbxlink")
    d.set_defaults(func=cmd_demo)
    r = sub.add_parser("run", help="run the daemon (the simulator when no Asterisk is set)")
    r.add_argument("--config", type=Path, help="pbxlink.toml (default: built-in defaults)")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("check-config", help="validate a config file without starting")
    c.add_argument("file", type=Path)
    c.set_defaults(func=cmd_check_config)
    t = sub.add_parser("token", help="print a new operator token and its config line")
    t.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level or ("info" if args.command == "run" else "warning"))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
