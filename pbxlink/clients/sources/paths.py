"""A tiny JSON path: enough to point at a field in a CRM's answer, nothing to learn.

Syntax (a subset of JSONPath, so what admins copy from API docs mostly works):

- `customer.name`: keys, separated by dots; a leading `$` or `$.` is allowed and ignored;
- `items[0].city`, `items[-1].city`: a list element, negative from the end;
- `orders[*].stage`: every element of a list (or every value of an object); at most one
  `[*]` per path, so the field gets a flat list, with None where an element lacks the key
  (the lists of several `orders.*` paths then line up element by element);
- `["key with.dots"]`: a key that is not a plain word.

Why not jsonpath-ng: it brings a parser generator (ply) and filters, slices and recursion
that a field mapping never needs, and its errors on a bad path are hard to show an admin.
This one is checked when the config is read and never raises on data: a missing key, a wrong
type or an index out of range is simply "no value".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(r"[^.\[\]\"'\s]+")
_BRACKET = re.compile(r"\[\s*(?:(?P<index>-?\d+)|(?P<star>\*)|\"(?P<quoted>[^\"]*)\")\s*\]")


class Wildcard:
    __slots__ = ()

    def __repr__(self) -> str:
        return "[*]"


WILDCARD = Wildcard()
Step = str | int | Wildcard


@dataclass(slots=True, frozen=True)
class JsonPath:
    text: str
    steps: tuple[Step, ...]

    @property
    def many(self) -> bool:
        return WILDCARD in self.steps

    def get(self, data: Any) -> Any:
        """The value at the path (None if absent); with `[*]` a list of values."""
        values: list[Any] = [data]
        for step in self.steps:
            if isinstance(step, Wildcard):
                inner = values[0]  # one wildcard per path: one value before it
                if isinstance(inner, list):
                    values = list(inner)
                elif isinstance(inner, dict):
                    values = list(inner.values())
                else:
                    values = []
            elif isinstance(step, int):
                values = [_index(v, step) for v in values]
            else:
                values = [v.get(step) if isinstance(v, dict) else None for v in values]
        return values if self.many else values[0]


def _index(value: Any, index: int) -> Any:
    if isinstance(value, list) and -len(value) <= index < len(value):
        return value[index]
    return None


def compile_path(text: str) -> JsonPath:
    """Parse a path; ValueError says what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"expected a JSON path string, got {text!r}")
    s = text.strip()
    if s.startswith("$"):
        s = s[1:]
        if s.startswith("."):
            s = s[1:]
            if not s:
                raise ValueError(f"{text!r}: nothing after '$.'")
    steps: list[Step] = []
    pos = 0
    while pos < len(s):
        if s[pos] == "[":
            m = _BRACKET.match(s, pos)
            if m is None:
                raise ValueError(f'{text!r}: expected [n], [*] or ["key"] at {s[pos:]!r}')
            if m["index"] is not None:
                steps.append(int(m["index"]))
            elif m["star"]:
                steps.append(WILDCARD)
            else:
                steps.append(m["quoted"])
            pos = m.end()
            continue
        if steps:
            if s[pos] != ".":
                raise ValueError(f"{text!r}: expected '.' or '[' at {s[pos:]!r}")
            pos += 1
        m = _KEY.match(s, pos)
        if m is None:
            raise ValueError(f"{text!r}: expected a key at {s[pos:]!r}")
        steps.append(m.group())
        pos = m.end()
    if not steps and text.strip() != "$":
        raise ValueError("empty JSON path (use '$' for the whole answer)")
    if steps.count(WILDCARD) > 1:
        raise ValueError(f"{text!r}: at most one [*] per path")
    return JsonPath(text, tuple(steps))
