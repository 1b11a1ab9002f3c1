"""Compare records with a trace's truth the way tests/traces/README.md says to."""

from __future__ import annotations

from typing import Any

TOLERANCE_S = 1.0
AS_SETS = ("extensions_rung", "transferred_to")


def mismatches(expected: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The fields in which `record` differs from one truth entry (empty: it matches)."""
    bad = []
    for key, want in expected.items():
        if key == "called_number_any":
            if record["called_number"] not in want:
                bad.append(f"called_number {record['called_number']!r} not in {want}")
            continue
        got = record.get(key)
        if key in AS_SETS:
            ok = set(got or []) == set(want)
        elif key == "recording":
            ok = bool(got) == want
        elif key in ("wait_s", "talk_s"):
            ok = got is not None and abs(got - want) <= TOLERANCE_S
        else:
            ok = got == want
        if not ok:
            bad.append(f"{key}: got {got!r}, want {want!r}")
    return bad


def match_multiset(expected: list[dict], records: list[dict]) -> list[str]:
    """Problems found pairing every truth entry with its own record (empty: all paired)."""
    problems = []
    if len(records) != len(expected):
        problems.append(f"{len(records)} records for {len(expected)} expected calls")
    free = list(records)
    for want in expected:
        best: tuple[int, list[str]] | None = None
        for i, rec in enumerate(free):
            bad = mismatches(want, rec)
            if best is None or len(bad) < len(best[1]):
                best = (i, bad)
            if not bad:
                break
        if best is None:
            problems.append(f"no record left for {want.get('caller_number')}")
            continue
        i, bad = best
        if bad:
            problems.append(f"{want.get('caller_number')}: " + "; ".join(bad))
        else:
            free.pop(i)
    return problems
