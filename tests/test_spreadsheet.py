"""The spreadsheet guard of both CSV exports (pbxlink.spreadsheet): what it defuses, what it
leaves alone, and that the directory's import reads a guarded cell back exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbxlink.calllog import export
from pbxlink.spreadsheet import RISKY, safe_cell, unguard


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("\uff1dHYPERLINK(1)", "'\uff1dHYPERLINK(1)"),  # ＝, full width
        ("\uff0bcmd|' /C calc'!A0", "'\uff0bcmd|' /C calc'!A0"),  # ＋
        ("\uff0d2\uff0b3", "'\uff0d2\uff0b3"),  # －2＋3
        ("\uff20SUM(A1)", "'\uff20SUM(A1)"),  # ＠
        ("\uff0b995555123456", "'\uff0b995555123456"),  # not a plain number to a spreadsheet
        ("'=1+1", "''=1+1"),  # an apostrophe of its own stays, the guard comes on top
        ("''-x", "'''-x"),
        ("'t Hooft", "'t Hooft"),  # a name that begins with an apostrophe: nothing to guard
        ("'", "'"),
        ("'+995555123456", "'+995555123456"),
        ("a\uff1db", "a\uff1db"),
    ],
)
def test_full_width_starts_and_apostrophes(cell: str, safe: str) -> None:
    assert safe_cell(cell) == safe
    assert export.safe_cell(cell) == safe  # the call log's export uses the same rule
    assert unguard(safe) == cell


@given(st.text(alphabet=st.sampled_from(sorted({*RISKY, "'", "a", "1", " ", "."}))))
def test_unguard_undoes_safe_cell(value: str) -> None:
    guarded = safe_cell(value)
    assert unguard(guarded) == value
    rest = guarded.lstrip("'")
    assert guarded == value or guarded == "'" + value
    if rest and rest[0] in RISKY and guarded[:1] != "'":
        assert rest[0] in "+-" and rest[1:2].isdigit()  # left alone: a plain number only
