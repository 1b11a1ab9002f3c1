"""Spreadsheet-safe CSV cells, for every export of text anyone can write (a caller ID, a
client's name or notes): opened in a spreadsheet, such a cell must never run as a formula
(CWE-1236, "CSV injection"). One rule for the call log's and the directory's exports, and its
exact inverse for the directory's import, so an export imported again changes nothing.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return, or with their
full-width forms `＝` `＋` `－` `＠` (which spreadsheets in CJK locales read as the ASCII
ones), gets a leading `'`; `+` and `-` before a plain number (`+995555123456`, `-5`) do not.
A cell that already starts with `'` before such a start gets one more, so `unguard` can tell
the guard from a name that begins with an apostrophe.
"""

from __future__ import annotations

import re

#: what a spreadsheet may start a formula with
RISKY = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
#: the first characters `safe_cell` may change a cell for: a quick test before the full one
GUARDED_FIRST = RISKY | {"'"}
_NUMBERLIKE = re.compile(r"[+-][0-9][0-9 ().-]*")


def needs_guard(value: str) -> bool:
    """Whether the cell, or what is left of it after its leading apostrophes, is risky."""
    rest = value.lstrip("'")
    return bool(rest) and rest[0] in RISKY and not _NUMBERLIKE.fullmatch(rest)


def safe_cell(value: str) -> str:
    """The cell as a spreadsheet may open it: `'` first when it needs a guard."""
    if value and value[0] in GUARDED_FIRST and needs_guard(value):
        return "'" + value
    return value


def unguard(value: str) -> str:
    """What `safe_cell` was given: `unguard(safe_cell(v)) == v` for every string."""
    if value[:1] == "'" and needs_guard(value[1:]):
        return value[1:]
    return value
