"""Service-level figures from the call log: how fast, and how often, the centre answers.

Every figure is defined in docs/metrics.md. The database sums; this module only cuts the
period into buckets and divides. Buckets are PBX-local days or hours computed here in Python
(so a DST day has its 23 or 25 hours and a half-hour zone its own hour starts), joined to the
calls as a small VALUES table: each bucket is one range of the `calls_offered` index.

Times pbxlink had to estimate (`CallRecord.estimated`) are left out of every figure that
would depend on them, and counted in `estimated_*`: a guessed answer time judged "within
20 s" would be a made-up service level, and a talk time of 0 s or of a whole link outage a
made-up AHT.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

import aiosqlite

from pbxlink.calllog.params import day_start
from pbxlink.calllog.settings import SL_VARIANTS, SlVariant

Group = Literal["day", "hour", "extension", "queue"]
GROUPS: tuple[Group, ...] = ("day", "hour", "extension", "queue")
SECONDS_DIGITS = 3  # waits and talk times: milliseconds, as the call records have them
RATIO_DIGITS = 4  # service levels and rates: fractions, 0.8125 = 81.25 %


@dataclass(slots=True, frozen=True)
class Bucket:
    """A slice of the period: [start, end) in epoch seconds, `key` as the API shows it."""

    key: str | None
    start: float
    end: float


def _local(ts: float, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz)


def day_buckets(start: float, end: float, tz: dt.tzinfo) -> list[Bucket]:
    """The PBX-local days overlapping [start, end), clipped to it; keyed YYYY-MM-DD."""
    out: list[Bucket] = []
    day = _local(start, tz).date()
    while (lo := day_start(day, tz)) < end:
        hi = day_start(day + dt.timedelta(days=1), tz)
        out.append(Bucket(day.isoformat(), max(lo, start), min(hi, end)))
        day += dt.timedelta(days=1)
    return out


def _hour_floor(ts: float, tz: dt.tzinfo) -> float:
    """The instant the local hour holding `ts` began (same offset as `ts`)."""
    local = _local(ts, tz)
    return ts - (local.minute * 60 + local.second + local.microsecond / 1e6)


def hour_buckets(start: float, end: float, tz: dt.tzinfo) -> list[Bucket]:
    """The PBX-local hours overlapping [start, end), clipped; keyed by their local start with
    its offset, so the two 02:00 hours of a DST fall-back day stay apart."""
    out: list[Bucket] = []
    lo = _hour_floor(start, tz)
    while lo < end:
        hi = _hour_floor(lo + 3600, tz)
        if hi <= lo:  # cannot happen with real zones; never loop forever on a strange one
            hi = lo + 3600
        key = _local(lo, tz).isoformat(timespec="minutes")
        out.append(Bucket(key, max(lo, start), min(hi, end)))
        lo = hi
    return out


# -- the sums -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Sums over inbound calls; added up across buckets for a total, divided in `figures`."""

    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    abandoned_within: int = 0
    short_abandoned: int = 0
    not_offered: int = 0
    #: of `answered`, `abandoned` and the other unanswered calls: those whose wait is an
    #: estimate (never within T, never short); of `answered`: those whose talk is one
    estimated_answered: int = 0
    estimated_abandoned: int = 0
    estimated_other: int = 0
    estimated_talk: int = 0
    answered_wait_s: float = 0.0  # over the answered calls whose wait is known
    answered_talk_s: float = 0.0  # over the answered calls whose talk is known
    longest_wait_s: float | None = None  # over the calls whose wait is known

    def add(self, other: Tally) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "longest_wait_s":
                values = [v for v in (mine, theirs) if v is not None]
                setattr(self, f.name, max(values) if values else None)
            else:
                setattr(self, f.name, mine + theirs)


@dataclass(slots=True)
class ExtensionTally:
    """Sums over the inbound calls that rang one extension (or that it answered)."""

    offered: int = 0
    answered: int = 0  # by this extension
    answered_within: int = 0
    answered_elsewhere: int = 0
    missed: int = 0
    short_abandoned: int = 0
    #: of `answered`, `answered_elsewhere` and `missed`: those whose wait is an estimate;
    #: of `answered`: those whose talk is one
    estimated_answered: int = 0
    estimated_elsewhere: int = 0
    estimated_missed: int = 0
    estimated_talk: int = 0
    answered_wait_s: float = 0.0
    answered_talk_s: float = 0.0
    longest_wait_s: float | None = None


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, RATIO_DIGITS) if whole else None


def _mean(total: float, count: int) -> float | None:
    return round(total / count, SECONDS_DIGITS) if count else None


def service_levels(t: Tally) -> dict[SlVariant, float | None]:
    """The three industry variants; None where the divisor is zero (never a made-up 100 %).

    Answered and abandoned calls whose wait is an estimate cannot be judged against T (nor
    as short), so they leave the divisors as well as the numerators: counted as failures
    they would lower the level for a link outage, not for a slow answer. An other
    unanswered call fails whatever its wait, so it stays."""
    judged = t.offered - t.estimated_answered - t.estimated_abandoned
    return {
        "abandons_against": _ratio(t.answered_within, judged),
        "abandons_ignored": _ratio(t.answered_within, t.answered - t.estimated_answered),
        "quick_abandons_succeed": _ratio(t.answered_within + t.abandoned_within, judged),
    }


def figures(t: Tally, variant: SlVariant) -> dict[str, Any]:
    """The JSON figures of one group (or the total), as docs/metrics.md defines them."""
    if variant not in SL_VARIANTS:
        raise ValueError(f"service_level_variant: expected one of {SL_VARIANTS}, got {variant!r}")
    no_data = t.offered == 0
    levels = service_levels(t)
    longest = t.longest_wait_s
    return {
        "no_data": no_data,
        "offered": t.offered,
        "answered": t.answered,
        "answered_within_threshold": t.answered_within,
        "abandoned": t.abandoned,
        "abandoned_within_threshold": t.abandoned_within,
        "unanswered_other": t.offered - t.answered - t.abandoned,
        "short_abandoned": t.short_abandoned,
        "not_offered": t.not_offered,
        "service_level": levels[variant],
        "service_levels": levels,
        "abandon_rate": _ratio(t.abandoned, t.offered),
        "asa_s": _mean(t.answered_wait_s, t.answered - t.estimated_answered),
        "aht_s": _mean(t.answered_talk_s, t.answered - t.estimated_talk),
        "longest_wait_s": None if no_data or longest is None else round(longest, SECONDS_DIGITS),
        "estimated_left_out": {
            "answered": t.estimated_answered,
            "abandoned": t.estimated_abandoned,
            "unanswered_other": t.estimated_other,
            "talk": t.estimated_talk,
        },
    }


def extension_figures(t: ExtensionTally) -> dict[str, Any]:
    """The figures of one extension: its offers, its answers, its misses."""
    no_data = t.offered == 0
    longest = t.longest_wait_s
    return {
        "no_data": no_data,
        "offered": t.offered,
        "answered": t.answered,
        "answered_within_threshold": t.answered_within,
        "answered_elsewhere": t.answered_elsewhere,
        "missed": t.missed,
        "short_abandoned": t.short_abandoned,
        "answer_rate": _ratio(t.answered, t.offered),
        "asa_s": _mean(t.answered_wait_s, t.answered - t.estimated_answered),
        "aht_s": _mean(t.answered_talk_s, t.answered - t.estimated_talk),
        "longest_wait_s": None if no_data or longest is None else round(longest, SECONDS_DIGITS),
        "estimated_left_out": {
            "answered": t.estimated_answered,
            "answered_elsewhere": t.estimated_elsewhere,
            "missed": t.estimated_missed,
            "talk": t.estimated_talk,
        },
    }


# -- the queries ----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Query:
    """What to aggregate: inbound calls offered in [start, end), PBX-local buckets in `tz`."""

    start: float
    end: float
    tz: dt.tzinfo
    group: Group = "day"
    threshold_s: float = 20.0
    short_abandon_s: float = 5.0
    queue: str | None = None
    extension: str | None = None


@dataclass(slots=True)
class Report:
    total: Tally
    #: (bucket, sums) in key order; ExtensionTally sums when grouped by extension
    groups: list[tuple[Bucket, Tally | ExtensionTally]] = field(default_factory=list)


# A call's wait: the clock starts when it is offered and stops at the answer, or the end. The
# exact text of the `calls_offered` index expression (db/calllog_schema.py), so SQLite reads it
# from there.
WAIT_SQL = "max(coalesce(c.answered_at, c.ended_at) - c.offered_at, 0.0)"
# Which of a call's times are estimates (CallRecord.estimated), as two bits: its talk (the
# answer or the end is one) and its wait (the time WAIT_SQL stops at is one). The exact text
# of the `calls_offered` index expression (db/calllog_schema.py, migration 6), like WAIT_SQL.
TALK_ESTIMATED, WAIT_ESTIMATED = 1, 2
ESTIMATE_SQL = (
    "CASE WHEN c.estimated = '[]' THEN 0 WHEN instr(c.estimated, CASE WHEN c.answered_at IS NULL"
    f" THEN '\"ended_at\"' ELSE '\"answered_at\"' END) THEN {TALK_ESTIMATED | WAIT_ESTIMATED}"
    f" ELSE {TALK_ESTIMATED} END"
)
# The wait and the talk time where they are known; NULL, an unknown, where they are estimates
_KNOWN_WAIT = f"CASE WHEN ({ESTIMATE_SQL}) & {WAIT_ESTIMATED} THEN NULL ELSE {WAIT_SQL} END"
_KNOWN_TALK = f"CASE WHEN ({ESTIMATE_SQL}) & {TALK_ESTIMATED} THEN NULL ELSE c.talk_s END"
# What each offered call counts as; `fast`: its wait is known and within the threshold. A
# call whose wait is an estimate (w NULL) is never a short abandon: that too is a test of it.
OTHER, ANSWERED, ABANDONED, SHORT = 0, 1, 2, 3
_KIND = (
    f"CASE st WHEN 'answered' THEN {ANSWERED} WHEN 'abandoned' THEN "
    f"CASE WHEN w < :short THEN {SHORT} ELSE {ABANDONED} END ELSE {OTHER} END"
)
# An extension "had" a call when it rang, or answered without ringing (a pickup): once per call.
_HAD = (
    "(e.role = 'rang' OR (e.role = 'answered' AND NOT EXISTS (SELECT 1 FROM call_extensions AS r"
    " WHERE r.call_id = e.call_id AND r.extension = e.extension AND r.role = 'rang')))"
)
_FILTER_EXTENSION = (
    " AND EXISTS (SELECT 1 FROM call_extensions AS f WHERE f.call_id = c.call_id"
    " AND f.extension = :extension AND f.role IN ('rang', 'answered'))"
)


def _values(buckets: list[Bucket]) -> str:
    """The buckets as SQL VALUES: numbers this module computed, so literals are safe."""
    rows = ", ".join(f"({i}, {float(b.start)!r}, {float(b.end)!r})" for i, b in enumerate(buckets))
    return f"b(i, lo, hi) AS (VALUES {rows})"


def _filters(q: Query, *, by_extension: bool = False) -> str:
    sql = " AND c.queue = :queue" if q.queue is not None else ""
    if q.extension is not None and not by_extension:
        sql += _FILTER_EXTENSION
    return sql


def _calls_sql(buckets: list[Bucket], columns: str, q: Query, *, by_extension: bool) -> str:
    """CTE `y`: one row per offered inbound call in the buckets, with its kind, wait and talk.

    A wait or talk that is an estimate is NULL in `y`, an unknown: the sums, totals and the
    maximum leave it out by themselves, and `w IS NULL` counts it (measured on 800,000
    calls: 20 % more CPU than the sums before estimates existed, most of it the four counts
    of what was left out). `LIMIT -1` keeps SQLite from flattening the subqueries into the
    aggregate, which would evaluate the wait and the kind again for every sum that uses
    them (measured: 2x slower)."""
    return f"""WITH {_values(buckets)},
y AS (SELECT *, {_KIND} AS kind, coalesce(w <= :threshold, 0) AS fast FROM (
    SELECT {columns}, c.status AS st, {_KNOWN_TALK} AS talk, {_KNOWN_WAIT} AS w
    FROM b JOIN calls AS c ON c.direction = 'inbound'
        AND c.offered_at >= b.lo AND c.offered_at < b.hi{_filters(q, by_extension=by_extension)}
    LIMIT -1) LIMIT -1)"""


# (Tally field, its SQL over `y`), in the order the query returns them
_OFFERED_SUMS = (
    ("offered", f"sum(kind <> {SHORT})"),
    ("answered", f"sum(kind = {ANSWERED})"),
    ("answered_within", f"sum(kind = {ANSWERED} AND fast)"),
    ("abandoned", f"sum(kind = {ABANDONED})"),
    ("abandoned_within", f"sum(kind = {ABANDONED} AND fast)"),
    ("short_abandoned", f"sum(kind = {SHORT})"),
    ("estimated_answered", f"sum(kind = {ANSWERED} AND w IS NULL)"),
    ("estimated_abandoned", f"sum(kind = {ABANDONED} AND w IS NULL)"),
    ("estimated_other", f"sum(kind = {OTHER} AND w IS NULL)"),
    ("estimated_talk", f"sum(kind = {ANSWERED} AND talk IS NULL)"),
    ("answered_wait_s", f"total(CASE kind WHEN {ANSWERED} THEN w END)"),
    ("answered_talk_s", f"total(CASE kind WHEN {ANSWERED} THEN talk END)"),
    ("longest_wait_s", f"max(CASE WHEN kind <> {SHORT} THEN w END)"),
)


def _select(sums: tuple[tuple[str, str], ...]) -> str:
    return ",\n    ".join(sql for _, sql in sums)


def _offered_sql(buckets: list[Bucket], key: str, q: Query) -> str:
    return f"""{_calls_sql(buckets, f"{key} AS k", q, by_extension=False)}
SELECT k,
    {_select(_OFFERED_SUMS)}
FROM y GROUP BY k"""


def _not_offered_sql(buckets: list[Bucket], key: str, q: Query) -> str:
    """Inbound calls never offered (hung up in the IVR), by when they started."""
    return f"""WITH {_values(buckets)}
SELECT {key}, count(*)
FROM b JOIN calls AS c ON c.direction = 'inbound' AND c.offered_at IS NULL
    AND c.started_at >= b.lo AND c.started_at < b.hi{_filters(q)}
GROUP BY 1"""


_MINE = f"kind = {ANSWERED} AND ans = e.extension"
_ELSEWHERE = f"kind = {ANSWERED} AND ans IS NOT e.extension"
_MISSED = f"kind IN ({OTHER}, {ABANDONED})"
# (ExtensionTally field, its SQL over `y` joined to the extension), in query order
_EXTENSION_SUMS = (
    ("offered", f"sum(kind <> {SHORT})"),
    ("answered", f"sum({_MINE})"),
    ("answered_within", f"sum({_MINE} AND fast)"),
    ("answered_elsewhere", f"sum({_ELSEWHERE})"),
    ("missed", f"sum({_MISSED})"),
    ("short_abandoned", f"sum(kind = {SHORT})"),
    ("estimated_answered", f"sum({_MINE} AND w IS NULL)"),
    ("estimated_elsewhere", f"sum({_ELSEWHERE} AND w IS NULL)"),
    ("estimated_missed", f"sum({_MISSED} AND w IS NULL)"),
    ("estimated_talk", f"sum({_MINE} AND talk IS NULL)"),
    ("answered_wait_s", f"total(CASE WHEN {_MINE} THEN w END)"),
    ("answered_talk_s", f"total(CASE WHEN {_MINE} THEN talk END)"),
    ("longest_wait_s", f"max(CASE WHEN kind <> {SHORT} THEN w END)"),
)


def _extension_sql(bucket: Bucket, q: Query) -> str:
    only = " AND e.extension = :extension" if q.extension is not None else ""
    calls = _calls_sql([bucket], "c.call_id AS call_id, c.answered_by AS ans", q, by_extension=True)
    return f"""{calls}
SELECT e.extension,
    {_select(_EXTENSION_SUMS)}
FROM y JOIN call_extensions AS e ON e.call_id = y.call_id AND {_HAD}{only}
GROUP BY e.extension ORDER BY e.extension"""


def _params(q: Query) -> dict[str, object]:
    return {
        "threshold": q.threshold_s,
        "short": q.short_abandon_s,
        "queue": q.queue,
        "extension": q.extension,
    }


_T = TypeVar("_T", Tally, ExtensionTally)


def _from_sums(cls: type[_T], names: tuple[tuple[str, str], ...], sums: list[Any]) -> _T:
    """A tally from a row of the sums SQL: counts, wait and talk totals, the longest wait.

    A count is NULL when every term was (an answered call without `answered_by` makes the
    extension tests unknown): none counted, 0."""
    values: dict[str, Any] = {}
    for (name, _), value in zip(names, sums, strict=True):
        if name == "longest_wait_s":
            values[name] = None if value is None else float(value)
        else:
            values[name] = float(value) if name.endswith("_s") else int(value or 0)
    return cls(**values)


async def _tallies(
    db: aiosqlite.Connection, buckets: list[Bucket], key: str, q: Query
) -> dict[Any, Tally]:
    """Sums per key (bucket index, or queue name), offered and never-offered calls."""
    params = _params(q)
    out: dict[Any, Tally] = {}
    for k, *sums in await db.execute_fetchall(_offered_sql(buckets, key, q), params):
        out[k] = _from_sums(Tally, _OFFERED_SUMS, sums)
    for k, count in await db.execute_fetchall(_not_offered_sql(buckets, key, q), params):
        out.setdefault(k, Tally()).not_offered = int(count)
    return out


def _sum(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for t in tallies:
        total.add(t)
    return total


async def service_level(db: aiosqlite.Connection, q: Query) -> Report:
    """The service-level sums for `q`: the total and one entry per group.

    Days and hours come in time order, every one of the period even when empty (a chart
    needs its gaps); queues and extensions only as they occur, by name (no queue: key None).
    """
    if not q.start < q.end:
        raise ValueError(f"period: start {q.start} must be before end {q.end}")
    whole = Bucket(None, q.start, q.end)
    if q.group in ("day", "hour"):
        cut = day_buckets if q.group == "day" else hour_buckets
        buckets = cut(q.start, q.end, q.tz)
        by_index = await _tallies(db, buckets, "b.i", q)
        groups = [(b, by_index.get(i, Tally())) for i, b in enumerate(buckets)]
        return Report(_sum(t for _, t in groups), list(groups))
    if q.group == "queue":
        by_queue = await _tallies(db, [whole], "c.queue", q)
        ordered = sorted(by_queue, key=lambda k: (k is not None, k or ""))
        groups = [(Bucket(k, q.start, q.end), by_queue[k]) for k in ordered]
        return Report(_sum(by_queue.values()), list(groups))
    if q.group == "extension":
        total = _sum((await _tallies(db, [whole], "0", q)).values())
        rows = await db.execute_fetchall(_extension_sql(whole, q), _params(q))
        ext_groups: list[tuple[Bucket, Tally | ExtensionTally]] = []
        for ext, *sums in rows:
            tally = _from_sums(ExtensionTally, _EXTENSION_SUMS, sums)
            ext_groups.append((Bucket(str(ext), q.start, q.end), tally))
        return Report(total, ext_groups)
    raise ValueError(f"group: expected one of {', '.join(GROUPS)}, got {q.group!r}")
