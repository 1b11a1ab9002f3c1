"""The call log's read side for the API: filters, keyset pages, totals, days and CSV.

Pages are keyset (seek) pages on (sort key, call_id), so page 1,000 costs what page 1 does.
For the default order, newest first, every page is a UNION of "arms" that SQLite merges
(`MERGE (UNION)` in EXPLAIN QUERY PLAN): one arm per value of the filter that drives the
query (each written form of a number, each extension, each status...), each arm reading an
index already in (value, started_at) order, so a page reads about `limit` rows per arm
whatever the filters and however deep it is. Talk and wait orders use their own indexes
(migration 4); when a filter leaves only a few thousand calls, those are sorted instead.

Operators see only their calls: `scope` is their extensions, matched through
`call_extensions` (caller, rang, answered, transferred). `None` is everyone's calls.

A call's client (name, category) is read through the directory's `client_summary` view, the
columns it publishes for other parts (db/clients_schema.py), never its tables; the number rules
come from whoever calls (`NumberRules`): the call log imports nothing of the directory.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite
import phonenumbers

from pbxlink.calllog.params import (
    QueryError,
    choices,
    date,
    day_bounds,
    flag,
    given,
    instant_of,
    many,
    one,
    seconds,
)
from pbxlink.calllog.rows import COLUMNS, from_row
from pbxlink.calls.record import DIRECTIONS, RECORD_FIELDS, STATUSES, CallRecord, iso_utc

MISSED = ("no_answer", "busy", "abandoned", "voicemail")
SORTS: dict[str, tuple[str, bool]] = {  # name -> (column, descending)
    "-started_at": ("started_at", True),
    "started_at": ("started_at", False),
    "-talk_s": ("talk_s", True),
    "talk_s": ("talk_s", False),
    "-wait_s": ("wait_s", True),
    "wait_s": ("wait_s", False),
}
SORT_INDEXES = {"talk_s": "calls_talk", "wait_s": "calls_wait"}
DEFAULT_SORT = "-started_at"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# fmt: off
FILTER_PARAMS = (
    "from", "until", "day", "direction", "status", "extension", "number", "client", "category",
    "queue", "talk_min_s", "talk_max_s", "wait_min_s", "wait_max_s", "too_long", "recorded",
)
# fmt: on
PAGE_PARAMS = ("sort", "limit", "cursor")
MAX_ARMS = 64  # beyond, one query with IN lists (sorted by SQLite) beats a merge this wide
MAX_CLIENT_ID = (1 << 63) - 1
MIN_FEW = 1_000  # talk/wait order: this many calls are always worth sorting

# The cursor's checksum key. Not a secret: a forged cursor only picks a position, which
# from/until can do anyway; the scope applies to every page. It catches garbage and edits.
_CURSOR_KEY = b"pbxlink.calllog.cursor.v1"
MAX_CURSOR_CHARS = 1024


@dataclass(slots=True, frozen=True)
class CallFilter:
    """What to select. Times are epoch seconds, `until` exclusive; empty tuples: any."""

    since: float | None = None
    until: float | None = None
    directions: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    #: statuses only `missed` asked for: with `extensions`, such a call must have RUNG one
    #: of them (a phone that rang while a colleague answered missed nothing anyway)
    missed_rang: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    number_forms: tuple[str, ...] = ()  # every written form of the number asked for
    client_id: int | None = None
    category: str | None = None
    queue: str | None = None
    talk_min_s: float | None = None
    talk_max_s: float | None = None
    wait_min_s: float | None = None
    wait_max_s: float | None = None
    too_long: bool | None = None
    recorded: bool | None = None


class Normalized(Protocol):
    @property
    def e164(self) -> str | None: ...


class NumberRules(Protocol):
    """What the number filter needs of the configured number rules (the directory's
    `PhoneNumbers` has it; the web layer passes it in)."""

    @property
    def region(self) -> str: ...

    @property
    def strip_prefixes(self) -> tuple[str, ...]: ...

    def normalize(self, raw: str, /) -> Normalized | None: ...


@dataclass(slots=True)
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None


# -- parsing ---------------------------------------------------------------------------------


def number_forms(numbers: NumberRules, raw: str) -> tuple[str, ...]:
    """Every form the calls table may hold the number in, as Asterisk sends it.

    The columns keep what the PBX sent, so instead of normalising every row the number is
    spelled out: E.164 with and without +, the international prefix, national with and
    without the trunk prefix (numbers of the configured region), and each of those behind
    the configured strip prefixes (an outside-line 9). Exact matches: the indexes serve them.
    """
    number = numbers.normalize(raw)
    if number is None:
        raise QueryError("number", f"not a phone number: {raw!r}")
    if number.e164 is None:  # no rule made it valid: only the digits as written
        digits = re.sub(r"\D", "", raw)
        return (digits, "+" + digits) if raw.strip().startswith("+") else (digits,)
    region = numbers.region
    parsed = phonenumbers.parse(number.e164)
    digits = number.e164[1:]
    forms = [digits]
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    intl = meta.international_prefix if meta else None
    if intl and not intl.isdigit():
        intl = (meta.preferred_international_prefix or "").replace("~", "") if meta else ""
    if intl and intl.isdigit():
        forms.append(intl + digits)
    if parsed.country_code == phonenumbers.country_code_for_region(region):
        national = phonenumbers.national_significant_number(parsed)
        forms.append(national)
        if meta is not None and meta.national_prefix:
            forms.append(meta.national_prefix + national)
    prefixed = [p + form for p in numbers.strip_prefixes for form in forms]
    return tuple(dict.fromkeys([number.e164, *forms, *prefixed]))


def parse_filter(
    params: Mapping[str, str],
    *,
    numbers: NumberRules,
    tz: dt.tzinfo,
    extra: Collection[str] = PAGE_PARAMS,
) -> CallFilter:
    """The filter of a query string; `extra` names the other parameters the route reads.

    Raises QueryError naming the first bad or unknown parameter."""
    for key in params:
        if key not in FILTER_PARAMS and key not in extra:
            known = ", ".join((*FILTER_PARAMS, *extra))
            raise QueryError(key, f"unknown parameter (known: {known})")
    since, until = instant_of(params, "from", tz), instant_of(params, "until", tz)
    day = one(params, "day")
    if day is not None:
        if since is not None or until is not None:
            raise QueryError("day", "give either day or from/until")
        since, until = day_bounds(date("day", day), tz)
    if since is not None and until is not None and until <= since:
        raise QueryError("until", "must be after from")
    asked = choices(params, "status", (*STATUSES, "missed"))
    explicit = [s for s in asked if s != "missed"]
    missed = MISSED if "missed" in asked else ()
    statuses = sorted({*explicit, *missed}, key=STATUSES.index)
    client = one(params, "client")
    if client is not None and (not client.isdigit() or not 0 < int(client) <= MAX_CLIENT_ID):
        raise QueryError("client", f"expected a client id, got {client!r}")
    number = one(params, "number")
    f = CallFilter(
        since=since,
        until=until,
        directions=tuple(dict.fromkeys(choices(params, "direction", DIRECTIONS))),
        statuses=tuple(statuses),
        missed_rang=tuple(s for s in missed if s not in explicit),
        extensions=tuple(dict.fromkeys(many(params, "extension"))),
        number_forms=number_forms(numbers, number) if number is not None else (),
        client_id=int(client) if client is not None else None,
        category=one(params, "category"),
        queue=one(params, "queue"),
        talk_min_s=seconds(params, "talk_min_s"),
        talk_max_s=seconds(params, "talk_max_s"),
        wait_min_s=seconds(params, "wait_min_s"),
        wait_max_s=seconds(params, "wait_max_s"),
        too_long=flag(params, "too_long"),
        recorded=flag(params, "recorded"),
    )
    for low, high in (("talk_min_s", "talk_max_s"), ("wait_min_s", "wait_max_s")):
        lo, hi = getattr(f, low), getattr(f, high)
        if lo is not None and hi is not None and hi < lo:
            raise QueryError(high, f"smaller than {low}")
    return f


def parse_page(params: Mapping[str, str]) -> tuple[str, int, str | None]:
    """(sort, limit, cursor) of a list request."""
    sort = one(params, "sort") or DEFAULT_SORT
    if sort not in SORTS:
        raise QueryError("sort", f"expected one of {', '.join(SORTS)}, got {sort!r}")
    raw = one(params, "limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise QueryError("limit", f"expected a whole number 1-{MAX_LIMIT}, got {raw!r}")
        limit = int(raw)
    cursors = given(params, "cursor")
    if len(cursors) > 1:
        raise QueryError("cursor", "given more than once")
    return sort, limit, cursors[0] if cursors else None


# -- cursors ---------------------------------------------------------------------------------


def encode_cursor(sort: str, key: float, call_id: str) -> str:
    body = json.dumps([sort, key, call_id], separators=(",", ":")).encode()
    mac = hashlib.blake2b(body, key=_CURSOR_KEY, digest_size=8).digest()
    return base64.urlsafe_b64encode(mac + body).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, sort: str) -> tuple[float, str]:
    """The (sort key, call_id) a cursor resumes after; QueryError("cursor") if it is not ours."""
    bad = QueryError("cursor", "not a cursor of this list: start again from the first page")
    if len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    mac, body = blob[:8], blob[8:]
    expected = hashlib.blake2b(body, key=_CURSOR_KEY, digest_size=8).digest()
    if not hmac.compare_digest(mac, expected):
        raise bad
    try:
        made_for, key, call_id = json.loads(body)
    except (ValueError, TypeError):
        raise bad from None
    if made_for != sort:
        raise QueryError("cursor", f"made for sort={made_for}, not sort={sort}")
    if isinstance(key, bool) or not isinstance(key, int | float) or not isinstance(call_id, str):
        raise bad
    return float(key), call_id


# -- SQL -------------------------------------------------------------------------------------

_N = len(RECORD_FIELDS)
TIME_NAMES = tuple(name for name in RECORD_FIELDS if name.endswith("_at"))
LIST_NAMES = ("extensions_rung", "transferred_to", "estimated")
TEXT_NAMES = (
    "call_id",
    "caller_number",
    "caller_name",
    "called_number",
    *LIST_NAMES,
    "answered_by",
    "queue",
    "ivr_digits",
    "recording",
)
ITEM_COLUMNS = ", ".join(
    [
        *(f"c.{name}" for name in RECORD_FIELDS),
        "c.client_id",
        "c.too_long",
        "cl.name",
        "cl.category",
    ]
)
_JOIN_CLIENT = "LEFT JOIN client_summary AS cl ON cl.id = c.client_id"


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class _Where:
    """Conditions and their parameters, in order."""

    def __init__(self) -> None:
        self.terms: list[str] = []
        self.params: list[Any] = []

    def add(self, term: str, *params: Any) -> None:
        self.terms.append(term)
        self.params.extend(params)

    def isin(self, column: str, values: Sequence[Any]) -> None:
        if len(values) == 1:
            self.add(f"{column} = ?", values[0])
        else:
            self.add(f"{column} IN ({_marks(values)})", *values)

    def sql(self) -> str:
        return " AND ".join(self.terms) or "1"


def _effective_extensions(
    f: CallFilter, scope: tuple[str, ...] | None
) -> tuple[tuple[str, ...] | None, bool]:
    """The extensions a call must involve, and whether the `missed` ring rule applies.

    The extension filter, cut to the scope (the API refuses an operator's request for
    others' extensions; this keeps any other caller inside the scope too); without one, the
    scope. None: no extension condition; (): no call at all."""
    if f.extensions:
        inside = tuple(e for e in f.extensions if scope is None or e in scope)
        return inside, bool(f.missed_rang)
    return scope, False


def _ring_rule(f: CallFilter, role: str) -> tuple[Any, ...]:
    """The `missed` rule as a term and its parameters: those statuses need a ring. When all
    of them do, the term is on the role alone, which the extension index holds."""
    if set(f.missed_rang) == set(f.statuses):
        return (f"{role} = 'rang'",)
    return (f"({role} = 'rang' OR c.status NOT IN ({_marks(f.missed_rang)}))", *f.missed_rang)


def _conditions(
    f: CallFilter, scope: tuple[str, ...] | None, *, skip: Collection[str] = ()
) -> _Where:
    """Every condition of `f` and `scope` on `c`, except the dimensions in `skip`, which
    the caller turns into the query's driving arms."""
    w = _Where()
    if "period" not in skip:
        if f.since is not None:
            w.add("c.started_at >= ?", f.since)
        if f.until is not None:
            w.add("c.started_at < ?", f.until)
    if f.directions and "direction" not in skip:
        w.isin("c.direction", f.directions)
    if f.statuses and "status" not in skip:
        w.isin("c.status", f.statuses)
    extensions, rule = _effective_extensions(f, scope)
    if extensions is not None and "extension" not in skip:
        if not extensions:
            w.add("0")  # a scope with no extensions sees nothing
        else:
            sub = _Where()
            sub.add("x.call_id = c.call_id")
            sub.isin("x.extension", extensions)
            if rule:
                sub.add(*_ring_rule(f, "x.role"))
            w.add(f"EXISTS (SELECT 1 FROM call_extensions AS x WHERE {sub.sql()})", *sub.params)
    if f.number_forms and "number" not in skip:
        marks = _marks(f.number_forms)
        w.add(
            f"(c.caller_number IN ({marks}) OR c.called_number IN ({marks}))",
            *f.number_forms,
            *f.number_forms,
        )
    if f.client_id is not None:
        w.add("c.client_id = ?", f.client_id)
    if f.category is not None:
        w.add(
            "EXISTS (SELECT 1 FROM client_summary AS k "
            "WHERE k.id = c.client_id AND k.category = ?)",
            f.category,
        )
    if f.queue is not None:
        w.add("c.queue = ?", f.queue)
    for column, low, high in (
        ("c.talk_s", f.talk_min_s, f.talk_max_s),
        ("c.wait_s", f.wait_min_s, f.wait_max_s),
    ):
        if low is not None:
            w.add(f"{column} >= ?", low)
        if high is not None:
            w.add(f"{column} <= ?", high)
    if f.too_long is not None:
        w.add(f"c.too_long = {int(f.too_long)}")  # a literal: the partial index needs one
    if f.recorded is not None:
        w.add(f"coalesce(c.recording, '') {'<>' if f.recorded else '='} ''")
    return w


def _extension_rows(f: CallFilter, extensions: Sequence[str]) -> _Where:
    """The call_extensions rows of `extensions` in f's period: what their index serves."""
    w = _Where()
    w.isin("extension", extensions)
    if f.since is not None:
        w.add("started_at >= ?", f.since)
    if f.until is not None:
        w.add("started_at < ?", f.until)
    return w


@dataclass(slots=True)
class _Arm:
    source: str  # what follows FROM
    key: str  # the sort key's expression
    ident: str  # the call_id's expression
    where: _Where
    source_params: tuple[Any, ...] = ()
    #: rows repeat per role (call_extensions): alone, the arm groups them itself (in index
    #: order, no sort); in a UNION, the merge drops the repeats
    repeats: bool = False


def _started_arms(f: CallFilter, scope: tuple[str, ...] | None) -> list[_Arm]:
    """Newest/oldest first: one arm per value of the driving filter, each in index order."""
    extensions, rule = _effective_extensions(f, scope)
    arms: list[_Arm] = []
    if f.number_forms:
        for column in ("caller_number", "called_number"):
            for form in f.number_forms:
                w = _conditions(f, scope, skip=("number",))
                w.add(f"c.{column} = ?", form)
                arms.append(_Arm("calls AS c", "c.started_at", "c.call_id", w))
    elif extensions:
        for extension in extensions:
            w = _conditions(f, scope, skip=("extension", "period"))
            w.add("e.extension = ?", extension)
            if f.since is not None:
                w.add("e.started_at >= ?", f.since)
            if f.until is not None:
                w.add("e.started_at < ?", f.until)
            if rule:
                w.add(*_ring_rule(f, "e.role"))
            source = "call_extensions AS e JOIN calls AS c ON c.call_id = e.call_id"
            arms.append(_Arm(source, "e.started_at", "e.call_id", w, repeats=True))
    elif len(f.statuses) > 1 or len(f.directions) > 1:
        name, values = (
            ("status", f.statuses) if len(f.statuses) > 1 else ("direction", f.directions)
        )
        for value in values:
            w = _conditions(f, scope, skip=(name,))
            w.add(f"c.{name} = ?", value)
            arms.append(_Arm("calls AS c", "c.started_at", "c.call_id", w))
    if not arms or len(arms) > MAX_ARMS:
        arms = [_Arm("calls AS c", "c.started_at", "c.call_id", _conditions(f, scope))]
    return arms


async def _rowid(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    rows = await db.execute_fetchall(sql, params)
    found = next(iter(rows), None)
    return int(found[0]) if found is not None and found[0] is not None else 0


async def _estimate(db: aiosqlite.Connection, f: CallFilter) -> tuple[int, int]:
    """(calls in the log, calls in f's period), in O(log n): rows get their rowid as calls
    end, so the rowid span of a period is close to its call count (only speed hangs on it)."""
    first = await _rowid(db, "SELECT min(rowid) FROM calls")
    last = await _rowid(db, "SELECT max(rowid) FROM calls")
    seek = "SELECT rowid FROM calls WHERE started_at >= ? ORDER BY started_at LIMIT 1"
    low = await _rowid(db, seek, (f.since,)) if f.since is not None else first
    high = await _rowid(db, seek, (f.until,)) if f.until is not None else last + 1
    high = high or last + 1  # nothing starts after `until`
    return last - first + 1, max(high - low, 0)


async def _at_most(db: aiosqlite.Connection, n: int, sql: str, params: Sequence[Any]) -> bool:
    """Whether `sql` has at most n rows; reads n + 1 of them at most."""
    rows = await db.execute_fetchall(f"SELECT count(*) FROM ({sql} LIMIT {n + 1})", params)
    return int(next(iter(rows))[0]) <= n


async def _sorted_arm(
    db: aiosqlite.Connection,
    f: CallFilter,
    scope: tuple[str, ...] | None,
    column: str,
    limit: int,
) -> _Arm:
    """Talk/wait order: the cheapest of three ways for the calls the filter leaves (n).

    Sorting them costs ~5 us a call (a row lookup each); scanning the sort index while
    checking each entry's call_id against a set of them costs ~0.2 us a call to build the
    set and ~0.3 us an entry, limit * total / n entries; scanning it and reading each row
    to check it costs ~5 us an entry. Measured on SQLite 3.40; the break-evens follow. An
    extension's calls are counted up to the first only (counting them all would cost what
    the set does): past it, the set. A number or a client leaves few calls: SQLite's
    planner sorts them itself."""
    key = f"c.{column}"
    if f.number_forms or f.client_id is not None:
        return _Arm("calls AS c", key, "c.call_id", _conditions(f, scope))
    total, in_period = await _estimate(db, f)
    sort_up_to = max(MIN_FEW, math.isqrt(limit * total // 16))
    set_up_to = math.isqrt(24 * limit * total)
    by_index = f"calls AS c INDEXED BY {SORT_INDEXES[column]}"
    extensions, rule = _effective_extensions(f, scope)
    if extensions:
        ids = _extension_rows(f, extensions)
        driver = f"SELECT DISTINCT call_id FROM call_extensions WHERE {ids.sql()}"
        w = _conditions(f, scope, skip=() if rule else ("extension",))
        if await _at_most(db, sort_up_to, driver, ids.params):
            source = f"({driver}) AS d CROSS JOIN calls AS c ON c.call_id = d.call_id"
            return _Arm(source, key, "c.call_id", w, tuple(ids.params))
        members = f"SELECT call_id FROM call_extensions WHERE {ids.sql()}"  # IN drops repeats
        w.add(f"c.call_id IN ({members})", *ids.params)
        return _Arm(by_index, key, "c.call_id", w)
    w = _conditions(f, scope)
    if (f.since is None and f.until is None) or in_period > set_up_to:
        return _Arm(by_index, key, "c.call_id", w)
    if in_period <= sort_up_to:
        return _Arm("calls AS c INDEXED BY calls_started", key, "c.call_id", w)
    period = _conditions(CallFilter(since=f.since, until=f.until), None)
    w.add(f"c.call_id IN (SELECT c.call_id FROM calls AS c WHERE {period.sql()})", *period.params)
    return _Arm(by_index, key, "c.call_id", w)


def _select(
    arms: list[_Arm], after: tuple[float, str] | None, desc: bool, limit: int
) -> tuple[str, list[Any]]:
    """The compound SELECT of the arms, resuming after `after`, and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    for arm in arms:
        terms = list(arm.where.terms)
        if after is not None:
            terms.append(f"({arm.key}, {arm.ident}) {'<' if desc else '>'} (?, ?)")
        group = f" GROUP BY {arm.key}, {arm.ident}" if arm.repeats and len(arms) == 1 else ""
        parts.append(
            f"SELECT {arm.key} AS sk, {arm.ident} AS id, {ITEM_COLUMNS} "
            f"FROM {arm.source} {_JOIN_CLIENT} WHERE {' AND '.join(terms) or '1'}{group}"
        )
        params += [*arm.source_params, *arm.where.params, *(after or ())]
    order = "DESC" if desc else "ASC"
    sql = " UNION ".join(parts) + f" ORDER BY sk {order}, id {order} LIMIT {int(limit)}"
    return sql, params


async def _page_sql(
    db: aiosqlite.Connection,
    f: CallFilter,
    scope: tuple[str, ...] | None,
    sort: str,
    limit: int,
    after: tuple[float, str] | None,
) -> tuple[str, list[Any]]:
    column, desc = SORTS[sort]
    f, after = _seek(f, after, column, desc)
    if column == "started_at":
        arms = _started_arms(f, scope)
    else:
        arms = [await _sorted_arm(db, f, scope, column, limit)]
    return _select(arms, after, desc, limit)


# the sort column's bounds in a filter: (lower, inclusive), (upper, inclusive)
_BOUNDS = {
    "started_at": (("since", True), ("until", False)),
    "talk_s": (("talk_min_s", True), ("talk_max_s", True)),
    "wait_s": (("wait_min_s", True), ("wait_max_s", True)),
}


def _seek(
    f: CallFilter, after: tuple[float, str] | None, column: str, desc: bool
) -> tuple[CallFilter, tuple[float, str] | None]:
    """Keep only the tighter of the cursor and the filter's bound on the sort column.

    Given both (`started_at < until` and `(started_at, call_id) < cursor`), SQLite seeks
    the index on the filter's bound and checks the cursor's row by row: every page would
    read all the pages before it again. One of the two always implies the other."""
    if after is None:
        return f, None
    key = after[0]
    (name, inclusive) = _BOUNDS[column][1 if desc else 0]
    bound = getattr(f, name)
    if bound is None:
        return f, after
    inside = key >= bound if not desc else key <= bound if inclusive else key < bound
    if inside:
        return dataclasses.replace(f, **{name: None}), after
    return f, None


async def rows_after(
    db: aiosqlite.Connection,
    f: CallFilter,
    *,
    scope: tuple[str, ...] | None,
    sort: str,
    limit: int,
    after: tuple[float, str] | None,
) -> list[tuple[Any, ...]]:
    """Raw rows (sort key, call_id, ITEM_COLUMNS...) of the page after `after`."""
    sql, params = await _page_sql(db, f, scope, sort, limit, after)
    return [tuple(r) for r in await db.execute_fetchall(sql, params)]


async def explain(
    db: aiosqlite.Connection,
    f: CallFilter,
    *,
    scope: tuple[str, ...] | None,
    sort: str = DEFAULT_SORT,
    limit: int = DEFAULT_LIMIT,
    after: tuple[float, str] | None = None,
) -> list[str]:
    """SQLite's plan for that page (EXPLAIN QUERY PLAN details, in order): how tests and
    benchmarks check that every filter is served by an index."""
    sql, params = await _page_sql(db, f, scope, sort, limit + 1, after)
    rows = await db.execute_fetchall(f"EXPLAIN QUERY PLAN {sql}", params)
    return [str(row[3]) for row in rows]


def item(row: Sequence[Any]) -> dict[str, Any]:
    """A list item: the record as `CallRecord.to_dict` has it, and the client's columns.

    Built straight from the row: through a CallRecord (`dataclasses.asdict`) a 500-row page
    spent 20 ms here, ten times the query. tests/test_calls_api.py checks both agree."""
    out = dict(zip(RECORD_FIELDS, row[:_N], strict=True))
    for name in TIME_NAMES:
        out[name] = iso_utc(out[name])
    for name in LIST_NAMES:
        out[name] = json.loads(out[name])
    out["partial"] = bool(out["partial"])
    client_id, too_long, name, category = row[_N : _N + 4]
    out.update(
        client_id=client_id, too_long=bool(too_long), client_name=name, client_category=category
    )
    return out


async def page(
    db: aiosqlite.Connection,
    f: CallFilter,
    *,
    scope: tuple[str, ...] | None,
    sort: str = DEFAULT_SORT,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page:
    """One page of calls; `next_cursor` is None on the last."""
    if sort not in SORTS:
        raise QueryError("sort", f"expected one of {', '.join(SORTS)}, got {sort!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"expected 1-{MAX_LIMIT}, got {limit}")
    after = decode_cursor(cursor, sort) if cursor is not None else None
    rows = await rows_after(db, f, scope=scope, sort=sort, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    next_cursor = encode_cursor(sort, last[0], last[1]) if last is not None else None
    return Page([item(row[2:]) for row in rows], next_cursor)


async def get(
    db: aiosqlite.Connection, call_id: str, scope: tuple[str, ...] | None
) -> dict[str, Any] | None:
    """One call as a list item, or None when it does not exist or `scope` may not see it."""
    if not await visible(db, call_id, scope):
        return None
    rows = list(
        await db.execute_fetchall(
            f"SELECT {ITEM_COLUMNS} FROM calls AS c {_JOIN_CLIENT} WHERE c.call_id = ?", (call_id,)
        )
    )
    return item(tuple(rows[0])) if rows else None


async def client_calls(
    db: aiosqlite.Connection, client_id: int, limit: int, *, scope: Sequence[str] | None
) -> list[CallRecord]:
    """A client's calls, newest first (the directory's card shows them). With `scope` (an
    operator's extensions) only the calls one of them took part in, the rule of the call log
    API: a client's history must not show an operator others' calls."""
    where = "client_id = ?"
    params: list[object] = [client_id]
    if scope is not None:
        if not scope:
            return []
        where += (
            " AND EXISTS (SELECT 1 FROM call_extensions AS x"
            f" WHERE x.call_id = calls.call_id AND x.extension IN ({_marks(scope)}))"
        )
        params += scope
    rows = await db.execute_fetchall(
        f"SELECT {COLUMNS} FROM calls WHERE {where} "
        "ORDER BY started_at DESC, call_id DESC LIMIT ?",
        (*params, limit),
    )
    return [from_row(tuple(r)) for r in rows]


async def visible(db: aiosqlite.Connection, call_id: str, scope: tuple[str, ...] | None) -> bool:
    """Whether the call exists and one of `scope`'s extensions took part (None: anyone's)."""
    if scope is None:
        sql, params = "SELECT 1 FROM calls WHERE call_id = ?", [call_id]
    elif not scope:
        return False
    else:
        sql = (
            "SELECT 1 FROM call_extensions WHERE call_id = ? "
            f"AND extension IN ({_marks(scope)}) LIMIT 1"
        )
        params = [call_id, *scope]
    return bool(await db.execute_fetchall(sql, params))


# -- totals and days -------------------------------------------------------------------------


def _aggregate_source(f: CallFilter, scope: tuple[str, ...] | None) -> tuple[str, _Where]:
    """FROM and WHERE for a whole filtered set: driven by the extensions' index when there are
    extensions (each call once), else by whichever index SQLite finds best."""
    extensions, rule = _effective_extensions(f, scope)
    if not extensions or f.number_forms or f.client_id is not None:
        return "calls AS c", _conditions(f, scope)
    sub = _extension_rows(f, extensions)
    w = _conditions(f, scope, skip=() if rule else ("extension",))
    source = (
        f"(SELECT DISTINCT call_id FROM call_extensions WHERE {sub.sql()}) AS d "
        "CROSS JOIN calls AS c ON c.call_id = d.call_id"
    )
    w.params[:0] = sub.params  # the FROM's parameters come first
    return source, w


def _unanswered(
    f: CallFilter, scope: tuple[str, ...] | None, statuses: Sequence[str]
) -> tuple[str, list[Any]]:
    """A call of `statuses`; with an extension filter, one that RANG one of the extensions:
    the same rule as `status=missed&extension=`."""
    term = f"c.status IN ({_marks(statuses)})"
    extensions, _ = _effective_extensions(f, scope)
    if not f.extensions or not extensions:
        return term, list(statuses)
    rang = (
        "EXISTS (SELECT 1 FROM call_extensions AS r WHERE r.call_id = c.call_id "
        f"AND r.extension IN ({_marks(extensions)}) AND r.role = 'rang')"
    )
    return f"({term} AND {rang})", [*statuses, *extensions]


async def totals(
    db: aiosqlite.Connection, f: CallFilter, *, scope: tuple[str, ...] | None
) -> dict[str, Any]:
    """count, answered, missed, talk_s (sum) and wait_avg_s of the filtered calls."""
    source, where = _aggregate_source(f, scope)
    missed, missed_params = _unanswered(f, scope, MISSED)
    sql = (
        "SELECT count(*), coalesce(sum(c.status = 'answered'), 0), "
        f"coalesce(sum({missed}), 0), coalesce(sum(c.talk_s), 0), avg(c.wait_s) "
        f"FROM {source} WHERE {where.sql()}"
    )
    rows = await db.execute_fetchall(sql, [*missed_params, *where.params])
    count, answered, missed_n, talk, wait = next(iter(rows))
    return {
        "count": count,
        "answered": answered,
        "missed": missed_n,
        "talk_s": round(float(talk), 3),
        "wait_avg_s": None if wait is None else round(float(wait), 3),
    }


BUCKET_S = 900  # every UTC offset in use is a multiple of 15 minutes, and so are DST shifts


async def by_day(
    db: aiosqlite.Connection, f: CallFilter, *, scope: tuple[str, ...] | None, tz: dt.tzinfo
) -> list[dict[str, Any]]:
    """Per local PBX day (days with calls only): count, answered, missed, abandoned, talk_s.

    SQLite knows no time zones, so it sums per 15 minutes of UTC and each quarter hour is
    given to its local day here: exact for every zone, DST days included."""
    source, where = _aggregate_source(f, scope)
    missed, missed_params = _unanswered(f, scope, MISSED)
    abandoned, abandoned_params = _unanswered(f, scope, ("abandoned",))
    sql = (
        f"SELECT CAST(c.started_at / {BUCKET_S} AS INTEGER) AS b, count(*), "
        f"sum(c.status = 'answered'), sum({missed}), sum({abandoned}), sum(c.talk_s) "
        f"FROM {source} WHERE {where.sql()} GROUP BY b"
    )
    rows = await db.execute_fetchall(sql, [*missed_params, *abandoned_params, *where.params])
    days: dict[dt.date, list[float]] = {}
    for bucket, *sums in rows:
        day = dt.datetime.fromtimestamp(bucket * BUCKET_S, tz).date()
        acc = days.setdefault(day, [0, 0, 0, 0, 0.0])
        for i, value in enumerate(sums):
            acc[i] += value or 0
    return [
        {
            "day": day.isoformat(),
            "count": int(acc[0]),
            "answered": int(acc[1]),
            "missed": int(acc[2]),
            "abandoned": int(acc[3]),
            "talk_s": round(float(acc[4]), 3),
        }
        for day, acc in sorted(days.items())
    ]
