"""The `pbxlink` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pbxlink import __version__
from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.calls.tracker import CallTracker
from pbxlink.config import ConfigError, load, parse
from pbxlink.logs import setup_logging
from pbxlink.replay import finished_calls, read_chunks, replay

TABLE = (
    "{:<19} {:<8} {:<16.16} {:<18.18} {:<13.13} {:<9} {:<10.10} {:<8} {:>6} {:>6} {:<8.8} {:<4} {}"
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
        config = load(args.config) if args.config else parse({})
    except ConfigError as exc:
        print(f"pbxlink: {exc}", file=sys.stderr)
        return 2
    tracker = CallTracker(config.tracker)
    status = 0
    out = sys.stdout
    if not args.json:
        print(
            TABLE.format(
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
            ),
            file=out,
        )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbxlink", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pbxlink {__version__}")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning, error")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="print the call records of recorded AMI streams")
    p.add_argument("trace", nargs="+", type=Path, help="AMI byte stream(s), e.g. 01_x.ami")
    p.add_argument("--json", action="store_true", help="one JSON object per finished call")
    p.add_argument("--config", type=Path, help="pbxlink.toml with [calls] rules")
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
