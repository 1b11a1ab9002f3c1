"""GET /api/metrics/service-level: how well the centre answers, for supervisors and admins.

    ?day=2026-11-01                       one PBX-local day (default: today)
    ?from=2026-11-01&until=2026-11-08     a date is that day's PBX-local start; or an ISO
                                          date-time with its offset (Z, +04:00); until exclusive
    &group=day|hour|extension|queue       (default day)
    &queue=sales  &extension=101          only those calls

Every figure is defined in docs/metrics.md. A bad or unknown parameter is a 400 `bad_request`
whose `field` names it: a typo (`grop=hour`) silently ignored would show the wrong figures.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, cast

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType
from multidict import MultiMapping

from pbxlink.calllog import CallLogStore
from pbxlink.calllog.params import QueryError, date, day_bounds, instant, one
from pbxlink.calllog.servicelevel import (
    GROUPS,
    ExtensionTally,
    Group,
    Query,
    extension_figures,
    figures,
    service_level,
)
from pbxlink.calllog.settings import SL_VARIANTS
from pbxlink.calls.record import iso_utc
from pbxlink.web.auth import operator_of
from pbxlink.web.errors import bad_request
from pbxlink.web.keys import CONFIG
from pbxlink.web.models import Time
from pbxlink.web.settings import Config
from pbxlink.web.spec import Answer, Route, mount, respond

log = structlog.get_logger("pbxlink.web")

PATH = "/api/metrics/service-level"
MAX_DAYS = 366  # a year: longer periods are what exports are for
MAX_HOUR_DAYS = 31  # group=hour: at most 744 groups


def add_routes(app: web.Application, store: CallLogStore) -> None:
    """Mount the route on an app make_app built; it reads through the call log's reader."""
    mount(app, ROUTES, {"getServiceLevel": _ServiceLevel(store, app[CONFIG]).get})


def period(query: MultiMapping[str], tz: dt.tzinfo, now: float) -> tuple[float, float]:
    """[start, end) from day, or from/until (until defaults to now); default: today."""
    day, since, until = (one(query, k) for k in ("day", "from", "until"))
    if day is not None:
        if since is not None or until is not None:
            raise QueryError("day", "give either day or from/until, not both")
        return day_bounds(date("day", day), tz)
    if since is None:
        if until is not None:
            raise QueryError("from", "needed with until")
        return day_bounds(dt.datetime.fromtimestamp(now, tz).date(), tz)
    start = instant("from", since, tz)
    end = instant("until", until, tz) if until is not None else now
    if end <= start:
        if until is None:
            raise QueryError("from", "is in the future (until defaults to now)")
        raise QueryError("until", "must be after from")
    if end - start > MAX_DAYS * 86400 + 3600:  # + an hour: a year across a DST change
        raise QueryError("until", f"the period may span at most {MAX_DAYS} days")
    return start, end


def parse(query: MultiMapping[str], config: Config, now: float) -> Query:
    """The request's Query; raises a 400 ApiError naming the first bad parameter."""
    for key in query:
        if key not in PARAMS:
            raise QueryError(key, f"unknown parameter (known: {', '.join(PARAMS)})")
    tz = config.tracker.pbx_timezone
    start, end = period(query, tz, now)
    group = one(query, "group") or "day"
    if group not in GROUPS:
        raise QueryError("group", f"expected one of {', '.join(GROUPS)}, got {group!r}")
    if group == "hour" and end - start > MAX_HOUR_DAYS * 86400 + 3600:
        raise QueryError("group", f"group=hour covers at most {MAX_HOUR_DAYS} days")
    t = config.thresholds
    return Query(
        start=start,
        end=end,
        tz=tz,
        group=cast(Group, group),  # checked against GROUPS above
        threshold_s=t.service_level_s,
        short_abandon_s=t.short_abandon_s,
        queue=one(query, "queue"),
        extension=one(query, "extension"),
    )


def _zone_name(tz: dt.tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)


class _ServiceLevel:
    def __init__(self, store: CallLogStore, config: Config) -> None:
        self.store = store
        self.config = config

    async def get(self, request: web.Request) -> web.Response:
        try:
            q = parse(request.query, self.config, time.time())
        except QueryError as exc:
            raise bad_request(exc) from None
        started = time.perf_counter()
        report = await service_level(self.store.reader, q)
        variant = self.config.thresholds.service_level_variant
        groups: list[dict[str, Any]] = []
        for bucket, tally in report.groups:
            row: dict[str, Any] = {"key": bucket.key}
            if q.group in ("day", "hour"):
                row |= {"from": iso_utc(bucket.start), "until": iso_utc(bucket.end)}
            if isinstance(tally, ExtensionTally):
                row |= extension_figures(tally)
            else:
                row |= figures(tally, variant)
            groups.append(row)
        log.debug(
            "servicelevel.report",
            operator=operator_of(request).name,
            group=q.group,
            groups=len(groups),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        when = {"from": iso_utc(q.start), "until": iso_utc(q.end), "timezone": _zone_name(q.tz)}
        return respond(
            {  # Report
                "threshold_s": q.threshold_s,
                "short_abandon_s": q.short_abandon_s,
                "variant": variant,
                "period": when,
                "group": q.group,
                "filters": {"queue": q.queue, "extension": q.extension},
                "total": figures(report.total, variant),
                "groups": groups,
            }
        )


# -- the route and its answer ----------------------------------------------------------------------

Count = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)] | None
Ratio = Annotated[float, Meta(ge=0, le=1)] | None
_WAIT_GUESSED = "whose wait is an estimate (CallRecord.estimated)"
_LEFT_OUT = (
    "calls whose times pbxlink had to estimate (a link or daemon outage), left out of the "
    "figures those times decide (docs/metrics.md)"
)


def _doc(text: str) -> Meta:
    return Meta(description=text)


#: each variant's service level (the configured one is also `service_level`)
ServiceLevels = msgspec.defstruct("ServiceLevels", [(v, Ratio) for v in SL_VARIANTS])


class EstimatedLeftOut(msgspec.Struct):
    answered: Annotated[
        Count,
        _doc(
            f"answered calls {_WAIT_GUESSED}: not judged against the "
            "threshold; out of service_levels and asa_s"
        ),
    ]
    abandoned: Annotated[
        Count,
        _doc(
            f"abandoned calls {_WAIT_GUESSED}: never short, not "
            "judged against the threshold; out of service_levels"
        ),
    ]
    unanswered_other: Annotated[Count, _doc(f"other unanswered calls {_WAIT_GUESSED}")]
    talk: Annotated[Count, _doc("answered calls whose talk time is an estimate: out of aht_s")]


class Figures(msgspec.Struct):
    """The figures of a period, a day, an hour or a queue (docs/metrics.md)."""

    no_data: Annotated[bool, _doc("no offered call: ratios are null")]
    offered: Count
    answered: Count
    answered_within_threshold: Count
    abandoned: Count
    abandoned_within_threshold: Count
    unanswered_other: Annotated[Count, _doc("no_answer, busy, voicemail, failed")]
    short_abandoned: Annotated[Count, _doc("not in offered")]
    not_offered: Annotated[Count, _doc("hung up before any ring or queue")]
    service_level: Annotated[Ratio, _doc("the configured variant's value")]
    service_levels: ServiceLevels  # type: ignore[valid-type]  # built from SL_VARIANTS
    abandon_rate: Ratio
    asa_s: Seconds
    aht_s: Seconds
    longest_wait_s: Seconds
    estimated_left_out: Annotated[
        EstimatedLeftOut,
        _doc(
            f"{_LEFT_OUT}; answered, abandoned and unanswered_other are left out of "
            "longest_wait_s too"
        ),
    ]


class ExtensionLeftOut(msgspec.Struct):
    answered: Annotated[
        Count,
        _doc(f"calls it answered {_WAIT_GUESSED}: out of answered_within_threshold and asa_s"),
    ]
    answered_elsewhere: Count
    missed: Count
    talk: Annotated[Count, _doc("calls it answered whose talk time is an estimate: out of aht_s")]


class ExtensionFigures(msgspec.Struct):
    """The figures of one extension (group=extension)."""

    no_data: bool
    offered: Annotated[Count, _doc("calls that rang the extension")]
    answered: Annotated[Count, _doc("answered by the extension")]
    answered_within_threshold: Count
    answered_elsewhere: Count
    missed: Annotated[Count, _doc("rang it and nobody answered")]
    short_abandoned: Count
    answer_rate: Ratio
    asa_s: Seconds
    aht_s: Seconds
    longest_wait_s: Seconds
    estimated_left_out: Annotated[
        ExtensionLeftOut,
        _doc(
            f"{_LEFT_OUT}; answered, answered_elsewhere and missed are left out of "
            "longest_wait_s too"
        ),
    ]


class GroupKeys(msgspec.Struct):
    """What a group row has besides its figures."""

    key: Annotated[
        str | None,
        _doc(
            "YYYY-MM-DD; the local hour with its offset; the queue (null: no queue); the extension"
        ),
    ]
    from_: Time | UnsetType = msgspec.field(default=UNSET, name="from")
    until: Time | UnsetType = UNSET


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


class Period(msgspec.Struct):
    from_: Time = msgspec.field(name="from")
    until: Time
    timezone: str


class Filters(msgspec.Struct):
    queue: str | None
    extension: str | None


class Report(msgspec.Struct):
    threshold_s: float
    short_abandon_s: float
    variant: Annotated[str, Meta(extra_json_schema={"enum": list(SL_VARIANTS)})]
    period: Period
    group: Group
    filters: Filters
    total: Figures
    groups: Annotated[
        list[Any],
        Meta(
            extra_json_schema={
                "items": {
                    "allOf": [_ref(GroupKeys)],
                    "oneOf": [_ref(Figures), _ref(ExtensionFigures)],
                }
            }
        ),
    ]


_INSTANT = Meta(examples=["2026-11-01", "2026-11-01T09:00:00+04:00"])


class Params(msgspec.Struct):
    """The query; `parse` checks it (a period is more than its parameters' types)."""

    day: Annotated[str, _doc("one PBX-local day (default: today)")] | UnsetType = UNSET
    from_: (
        Annotated[str, _INSTANT, _doc("a date (its PBX-local start) or a date-time with offset")]
        | UnsetType
    ) = msgspec.field(default=UNSET, name="from")
    until: (
        Annotated[str, _INSTANT, _doc("exclusive, same forms as from, after from; default: now")]
        | UnsetType
    ) = UNSET
    group: Annotated[Group, _doc("default day")] = "day"
    queue: Annotated[str, _doc("only calls through this queue")] | UnsetType = UNSET
    extension: Annotated[str, _doc("only calls that rang this extension or it answered")] | (
        UnsetType
    ) = UNSET


PARAMS = Params.__struct_encode_fields__

ROUTES = [
    Route("GET", PATH, "getServiceLevel",
          "Service level, ASA, AHT, abandons and missed calls of inbound calls", "metrics",
          {200: Answer("the figures", Report)},
          {400: "a bad or unknown query parameter (named in `field`)",
           403: "an operator: this needs the supervisor role"},
          role="supervisor", query=Params, check_query=False,
          components=(GroupKeys, ExtensionFigures),
          description=(
              "Supervisors and admins. Figures per PBX-local day or hour, per queue or per "
              "extension, and the total; every figure is defined in docs/metrics.md. "
              "No offered call: ratios and times are null and no_data is true. Times "
              "pbxlink had to estimate (a record's `estimated`) are left out of the "
              "figures they would decide, and counted in estimated_left_out.")),
]  # fmt: skip
