"""Query-string parameters of the call log's read routes (calls, service level), checked.

Every function raises QueryError naming the parameter, so each route answers the same 400 for
the same mistake: a typo silently ignored would show the wrong calls or figures.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence

MAX_VALUE_CHARS = 128
MAX_VALUES = 100  # of one repeatable parameter

DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# '...T09:00:00+04:00' sent unencoded arrives as '...T09:00:00 04:00': the + was a space
_SPACED_OFFSET = re.compile(
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class QueryError(ValueError):
    """A query parameter that cannot be used; the API answers 400 naming `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def given(params: Mapping[str, str], key: str) -> list[str]:
    """Every value of `key` (a MultiDict may repeat it)."""
    getall = getattr(params, "getall", None)
    if getall is not None:
        return [str(v) for v in getall(key, [])]
    return [params[key]] if key in params else []


def one(params: Mapping[str, str], key: str) -> str | None:
    found = given(params, key)
    if len(found) > 1:
        raise QueryError(key, "given more than once")
    if not found:
        return None
    return text(key, found[0])


def text(key: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise QueryError(key, "empty value")
    if len(value) > MAX_VALUE_CHARS or _CONTROL.search(value):
        raise QueryError(key, f"at most {MAX_VALUE_CHARS} printable characters")
    return value


def many(params: Mapping[str, str], key: str) -> list[str]:
    """A repeatable parameter: `?status=busy&status=failed` or `?status=busy,failed`."""
    found = [text(key, part) for raw in given(params, key) for part in raw.split(",")]
    if len(found) > MAX_VALUES:
        raise QueryError(key, f"at most {MAX_VALUES} values")
    return found


def choices(params: Mapping[str, str], key: str, allowed: Sequence[str]) -> list[str]:
    values = many(params, key)
    for value in values:
        if value not in allowed:
            raise QueryError(key, f"expected one of {', '.join(allowed)}, got {value!r}")
    return values


def seconds(params: Mapping[str, str], key: str) -> float | None:
    raw = one(params, key)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise QueryError(key, f"expected a number of seconds (0 or more), got {raw!r}")
    return value


def flag(params: Mapping[str, str], key: str) -> bool | None:
    """A true/false (or 1/0) parameter; None when absent."""
    raw = one(params, key)
    if raw is None:
        return None
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise QueryError(key, f"expected true or false, got {raw!r}")


def day_start(day: dt.date, tz: dt.tzinfo) -> float:
    """When a local day begins, as epoch seconds (23 or 25 hours apart around DST)."""
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp()


def day_bounds(day: dt.date, tz: dt.tzinfo) -> tuple[float, float]:
    """[start, end) of a local day, as epoch seconds."""
    return day_start(day, tz), day_start(day + dt.timedelta(days=1), tz)


def date(key: str, raw: str) -> dt.date:
    if DATE_RE.fullmatch(raw):  # fromisoformat alone also takes 20261101 and 2026-W44-1
        with contextlib.suppress(ValueError):
            return dt.date.fromisoformat(raw)
    raise QueryError(key, f"expected a date YYYY-MM-DD, got {raw!r}")


def instant(key: str, raw: str, tz: dt.tzinfo) -> float:
    """A date (its PBX-local start) or an ISO 8601 date-time with an offset, as epoch seconds."""
    if DATE_RE.fullmatch(raw):
        return day_start(date(key, raw), tz)
    spaced = _SPACED_OFFSET.fullmatch(raw)
    text = f"{spaced.group(1)}+{spaced.group(2)}" if spaced else raw
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            key, f"expected an ISO 8601 date-time with offset or a date, got {raw!r}"
        ) from None
    if when.tzinfo is None:
        raise QueryError(key, f"{raw!r} has no UTC offset: add Z or +04:00, or give a date")
    return when.timestamp()


def instant_of(params: Mapping[str, str], key: str, tz: dt.tzinfo) -> float | None:
    raw = one(params, key)
    return None if raw is None else instant(key, raw, tz)
