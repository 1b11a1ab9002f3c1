"""What every external source shares: the number it sends, its TTL cache, its time limit,
and the rule that a failing source is logged and skipped, never raised to the caller.

A subclass implements `_fetch(value)`: the card for that number, None for "not known here",
or an exception for anything else; `lookup` turns the exception into a `sources.failed` log
line and None.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar, get_args

import phonenumbers
import structlog

from pbxlink.clients.cardfields import MAPPABLE, CardFields
from pbxlink.clients.numbers import MIN_DIGITS, Number
from pbxlink.settings import ConfigError

log = structlog.get_logger("pbxlink.clients")

NumberForm = Literal["e164", "e164_digits", "national", "raw"]
S = TypeVar("S", bound="Source")
NUMBER_FORMS: tuple[str, ...] = get_args(NumberForm)
_NON_DIGITS = re.compile(r"\D")


class SourceError(Exception):
    """An expected failure of a source (HTTP 500, bad JSON...): logged without a traceback."""


class BadArgument(ValueError):
    """A constructor argument that cannot work; `key` is its name in the config table."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def number_value(number: Number, form: str) -> str | None:
    """The number as this source wants it; None when there is nothing worth looking up.

    `e164` +995322123456, `e164_digits` 995322123456, `national` 0322123456 (the national
    format, digits only), `raw` the caller ID as the PBX sent it. A number no rule made valid
    is sent as its digits in every form; an internal extension (under 5 digits) is never sent.
    """
    digits = _NON_DIGITS.sub("", number.raw)
    if number.e164 is None and len(digits) < MIN_DIGITS:
        return None
    if form == "raw":
        return number.raw.strip() or None
    if number.e164 is None:
        return digits
    if form == "e164":
        return number.e164
    if form == "e164_digits":
        return number.e164[1:]
    parsed = phonenumbers.parse(number.e164)
    national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return _NON_DIGITS.sub("", national)


class Miss:
    """Not in the cache (None is a cached "not found")."""

    __slots__ = ()


MISS = Miss()


class TtlCache:
    """Answers and "not found"s for `ttl_s`, at most `max_size` numbers (least recent out).

    Failures are not cached: the next call asks again. `ttl_s = 0` turns the cache off.
    """

    __slots__ = ("_data", "clock", "max_size", "ttl_s")

    def __init__(
        self, ttl_s: float, max_size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_size = max_size
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, CardFields | None]] = OrderedDict()

    def get(self, key: str) -> CardFields | Miss | None:
        hit = self._data.get(key)
        if hit is None:
            return MISS
        expires, value = hit
        if self.clock() >= expires:
            del self._data[key]
            return MISS
        self._data.move_to_end(key)
        return value.copy() if value is not None else None

    def put(self, key: str, value: CardFields | None) -> None:
        if self.ttl_s <= 0:
            return
        self._data[key] = (self.clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class Source:
    """Base of HttpSource and SqlSource: cache, in-flight sharing, time limit, logging.

    Subclasses are dataclasses that define `name`, `timeout_s`, `number_form` and the
    `_cache` and `_inflight` slots (set up by `_setup_base`).
    """

    __slots__ = ()
    kind: ClassVar[str] = "source"
    name: str
    timeout_s: float
    number_form: str
    _cache: TtlCache
    _inflight: dict[str, asyncio.Task[CardFields | None]]

    def cached(self, number: Number) -> CardFields | Miss | None:
        """What is known without asking: the cached answer, None for a number this source
        would not look up (or a cached "not found"), MISS when it must be asked."""
        value = number_value(number, self.number_form)
        return None if value is None else self._cache.get(value)

    async def lookup(self, number: Number) -> CardFields | None:
        """The card this source has for `number`, or None (unknown, failed, timed out).

        Never raises (but for cancellation). Two lookups of one number at once share one
        request; cancelling a caller does not cancel the request, whose answer is cached.
        """
        value = number_value(number, self.number_form)
        if value is None:
            return None
        hit = self._cache.get(value)
        if not isinstance(hit, Miss):
            return hit
        task = self._inflight.get(value)
        if task is None:
            task = asyncio.create_task(self._guarded(value), name=f"source {self.name}")
            self._inflight[value] = task
            task.add_done_callback(lambda _: self._inflight.pop(value, None))
        card = await asyncio.shield(task)
        return card.copy() if card is not None else None

    async def _guarded(self, value: str) -> CardFields | None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                card = await self._fetch(value)
        except TimeoutError:
            self._failed(value, "timeout", started, timeout_s=self.timeout_s)
            return None
        except SourceError as exc:
            self._failed(value, str(exc), started)
            return None
        except Exception as exc:
            self._failed(value, type(exc).__name__, started, error=str(exc)[:300])
            return None
        if card is not None and card.empty():
            card = None
        if card is not None:
            card.source = self.name
        self._cache.put(value, card)
        log.debug(
            "sources.answered",
            source=self.name,
            number=value,
            found=card is not None,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return card

    def _failed(self, value: str, reason: str, started: float, **extra: Any) -> None:
        log.warning(
            "sources.failed",
            source=self.name,
            kind=self.kind,
            number=value,
            reason=reason,
            ms=round((time.monotonic() - started) * 1000, 1),
            **extra,
        )

    async def _fetch(self, value: str) -> CardFields | None:
        raise NotImplementedError

    async def close(self) -> None:
        """Cancel what is in flight; subclasses also close their connections."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()

    def clear_cache(self) -> None:
        self._cache.clear()


# -- argument checks shared by the sources: each raises BadArgument naming the config key ----


def check_base(name: Any, timeout_s: Any, cache_ttl_s: Any, cache_size: Any, form: Any) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise BadArgument("name", f"expected a short name (letters, digits, _ . -), got {name!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise BadArgument("timeout_s", f"expected a positive number, got {timeout_s!r}")
    if isinstance(cache_ttl_s, bool) or not isinstance(cache_ttl_s, int | float) or cache_ttl_s < 0:
        raise BadArgument(
            "cache_ttl_s", f"expected a number of seconds, 0 or more, got {cache_ttl_s!r}"
        )
    if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
        raise BadArgument("cache_size", f"expected a whole number, 1 or more, got {cache_size!r}")
    if form not in NUMBER_FORMS:
        raise BadArgument("number_form", f"expected one of {', '.join(NUMBER_FORMS)}, got {form!r}")


def check_fields(fields: Any) -> dict[str, str]:
    if not isinstance(fields, dict) or not fields:
        raise BadArgument("fields", f"expected a table of card field = where, got {fields!r}")
    for key, value in fields.items():
        if key not in MAPPABLE:
            raise BadArgument(
                "fields", f"unknown card field {key!r} (known: {', '.join(MAPPABLE)})"
            )
        if not isinstance(value, str) or not value.strip():
            raise BadArgument(f"fields.{key}", f"expected a non-empty string, got {value!r}")
    return dict(fields)


def check_count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadArgument(key, f"expected a whole number of at least 1, got {value!r}")
    return value


def from_table(
    cls: type[S],
    where: str,
    table: dict[str, Any],
    renamed: dict[str, str],
    required: tuple[str, ...],
) -> S:
    """Build a source from a TOML table: unknown and missing keys, and every BadArgument the
    constructor raises, become a ConfigError naming `where` and the key."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    dataclass_fields = getattr(cls, "__dataclass_fields__")  # noqa: B009 (a dataclass)
    keys = {name: name for name, f in dataclass_fields.items() if f.init}
    for toml_key, arg in renamed.items():
        keys.pop(arg)
        keys[toml_key] = arg
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "type":
            if value != cls.kind:
                raise ConfigError(f"{where}.type: expected {cls.kind!r}, got {value!r}")
            continue
        if key not in keys:
            known = ", ".join(["type", *sorted(keys)])
            raise ConfigError(f"{where}.{key}: unknown key (known: {known})")
        kwargs[keys[key]] = value
    for key in (*required, "fields"):
        if key not in table:
            raise ConfigError(f"{where}.{key}: missing")
    try:
        return cls(**kwargs)
    except BadArgument as exc:
        raise ConfigError(f"{where}.{exc.key}: {exc.message}") from None
