"""Phone numbers: one key per number, whatever form it was written or sent in.

Every stored and every incoming number goes through `PhoneNumbers.normalize`: E.164 with the
configured default region (the `phonenumbers` library knows each country's trunk and
international prefixes), trying what real caller IDs get wrong — the `+` lost on an
international number, a PBX's outside-line prefix (`9`) or a trunk prefix (`0`, `8`) left on.
What no rule can save still matches on its last N digits (`tail`). Caller IDs that are not
numbers (`anonymous`, `unknown`, empty) normalise to None: nothing to look up.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import phonenumbers

if TYPE_CHECKING:
    from pbxlink.clients.settings import ClientsConfig

NOT_A_NUMBER = frozenset(
    {"", "anonymous", "unknown", "<unknown>", "unavailable", "restricted", "private", "withheld"}
)
_NON_DIGITS = re.compile(r"\D")
MIN_DIGITS = 5  # shorter: an internal extension or a service code, not a client's number


@dataclass(slots=True, frozen=True)
class Number:
    raw: str
    e164: str | None  # None when no rule gave a valid number
    tail: str  # the last N digits: the fallback key


class PhoneNumbers:
    def __init__(
        self,
        default_region: str = "GE",
        *,
        strip_prefixes: tuple[str, ...] = ("9", "0", "8"),
        last_digits: int = 9,
        cache_size: int = 100_000,
    ) -> None:
        if phonenumbers.country_code_for_region(default_region.upper()) == 0:
            raise ValueError(f"unknown region {default_region!r} (use ISO codes like GE, US)")
        self.region = default_region.upper()
        self.strip_prefixes = strip_prefixes
        self.last_digits = last_digits
        self.normalize = functools.lru_cache(maxsize=cache_size)(self._normalize)

    @classmethod
    def from_config(cls, clients: ClientsConfig) -> PhoneNumbers:
        """The number rules of the `[clients]` config section."""
        return cls(
            clients.region, strip_prefixes=clients.strip_prefixes, last_digits=clients.last_digits
        )

    def _normalize(self, raw: str) -> Number | None:
        text = raw.strip()
        if text.lower() in NOT_A_NUMBER:
            return None
        digits = _NON_DIGITS.sub("", text)
        if not digits:
            return None
        if len(digits) < MIN_DIGITS:
            return Number(raw, None, digits)
        for candidate in self._candidates(digits, text.startswith("+")):
            e164 = self._valid(candidate)
            if e164 is not None:
                return Number(raw, e164, e164[1:][-self.last_digits :])
        return Number(raw, None, digits[-self.last_digits :])

    def _candidates(self, digits: str, plus: bool) -> list[str]:
        if plus:
            return ["+" + digits]
        out = [digits, "+" + digits]
        for prefix in self.strip_prefixes:
            rest = digits[len(prefix) :]
            if digits.startswith(prefix) and len(rest) >= MIN_DIGITS:
                out += [rest, "+" + rest]
        return out

    def _valid(self, candidate: str) -> str | None:
        try:
            parsed = phonenumbers.parse(candidate, self.region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(parsed):
            return None
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
