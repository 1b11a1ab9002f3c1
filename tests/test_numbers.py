"""The number-matching table of the client directory issue, and the caller-ID quirks."""

from __future__ import annotations

import pytest

from pbxlink.clients.numbers import PhoneNumbers

GE = PhoneNumbers("GE")


@pytest.mark.parametrize(
    "raw",
    [
        "+995 32 212 34 56",  # international, spaced
        "0322123456",  # national with trunk prefix 0
        "00995322123456",  # international with the 00 exit code
        "322123456",  # national significant number only
        "995322123456",  # the + lost
        "+995 (32) 212-34-56",  # punctuation
        "90322123456",  # a PBX's outside-line 9 left on
        "80322123456",  # trunk prefix 8 where 0 was meant
    ],
)
def test_every_form_of_one_number_has_the_same_key(raw: str) -> None:
    number = GE.normalize(raw)
    assert number is not None and number.e164 == "+995322123456"
    assert number.tail == "322123456" and number.raw == raw


@pytest.mark.parametrize("raw", ["anonymous", "Unknown", "<unknown>", "", "  ", "Restricted"])
def test_caller_id_quirks_are_no_number(raw: str) -> None:
    assert GE.normalize(raw) is None


def test_foreign_number_with_its_plus_lost() -> None:
    number = GE.normalize("380671234567")  # Ukrainian mobile, sent without +
    assert number is not None and number.e164 == "+380671234567"


def test_what_no_rule_saves_keeps_its_last_digits() -> None:
    number = GE.normalize("0612345678")  # not a valid Georgian number
    assert number is not None and number.e164 is None and number.tail == "612345678"
    short = GE.normalize("101")  # an internal extension
    assert short is not None and short.e164 is None and short.tail == "101"


def test_other_regions_and_bad_region() -> None:
    us = PhoneNumbers("us")
    assert us.normalize("(202) 555-0143").e164 == "+12025550143"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="XX"):
        PhoneNumbers("XX")
