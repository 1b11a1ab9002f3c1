"""CallRecord <-> database row. Checked strictly: a record that would not round-trip is refused.

The tables are not STRICT (see schema.py), so SQLite would happily store a str in a REAL
column; the checks here are what keeps `get()` returning exactly what was submitted.
"""

from __future__ import annotations

import json
from typing import Any

from pbxlink.calls.record import RECORD_FIELDS, CallRecord

Row = tuple[str | int | float | None, ...]

COLUMNS = ", ".join(RECORD_FIELDS)
PLACEHOLDERS = ", ".join("?" for _ in RECORD_FIELDS)


class BadRecord(ValueError):
    """A record that cannot be stored as it is."""


def _text(name: str, value: Any, *, null: bool = False) -> str | None:
    if value is None and null:
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{name}: expected a string, got {value!r}")
    return value


def _real(name: str, value: Any, *, null: bool = False) -> float | None:
    if value is None and null:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRecord(f"{name}: expected a number, got {value!r}")
    return float(value)


def _strings(name: str, value: Any) -> str:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRecord(f"{name}: expected a list of strings, got {value!r}")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def to_row(r: CallRecord) -> Row:
    """The row for `calls`, in RECORD_FIELDS order."""
    if r.hangup_cause is not None and (
        isinstance(r.hangup_cause, bool) or not isinstance(r.hangup_cause, int)
    ):
        raise BadRecord(f"hangup_cause: expected an integer, got {r.hangup_cause!r}")
    if not isinstance(r.partial, bool):
        raise BadRecord(f"partial: expected true or false, got {r.partial!r}")
    return (
        _text("call_id", r.call_id),
        _real("started_at", r.started_at),
        _real("offered_at", r.offered_at, null=True),
        _real("answered_at", r.answered_at, null=True),
        _real("ended_at", r.ended_at, null=True),  # NOT NULL in SQL: an open call is refused
        _text("direction", r.direction),
        _text("caller_number", r.caller_number),
        _text("caller_name", r.caller_name),
        _text("called_number", r.called_number),
        _strings("extensions_rung", r.extensions_rung),
        _text("answered_by", r.answered_by, null=True),
        _text("status", r.status),
        _real("wait_s", r.wait_s),
        _real("talk_s", r.talk_s),
        r.hangup_cause,
        _text("queue", r.queue, null=True),
        _text("ivr_digits", r.ivr_digits),
        _strings("transferred_to", r.transferred_to),
        _text("recording", r.recording, null=True),
        int(r.partial),
        _strings("estimated", r.estimated),
    )


def from_row(row: Row) -> CallRecord:
    """The inverse of `to_row` (columns selected in RECORD_FIELDS order)."""
    values = dict(zip(RECORD_FIELDS, row, strict=True))
    values["extensions_rung"] = json.loads(str(values["extensions_rung"]))
    values["transferred_to"] = json.loads(str(values["transferred_to"]))
    values["partial"] = bool(values["partial"])
    values["estimated"] = json.loads(str(values["estimated"]))
    return CallRecord(**values)


def extension_rows(r: CallRecord) -> list[tuple[str, str, str, float]]:
    """(call_id, extension, role, started_at) for every extension the call involved.

    The caller is an extension only when the call began on a phone (outbound, internal);
    an inbound caller_number is an outside number. Repeats (a phone rung twice) collapse.
    """
    pairs: list[tuple[str, str]] = []
    if r.direction in ("outbound", "internal") and r.caller_number:
        pairs.append((r.caller_number, "caller"))
    pairs += [(ext, "rang") for ext in r.extensions_rung]
    if r.answered_by:
        pairs.append((r.answered_by, "answered"))
    pairs += [(ext, "transferred") for ext in r.transferred_to]
    return [(r.call_id, ext, role, r.started_at) for ext, role in dict.fromkeys(pairs)]
