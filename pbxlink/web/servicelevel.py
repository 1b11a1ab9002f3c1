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
from typing import Any, cast

import structlog
from aiohttp import web
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
from pbxlink.calls.record import iso_utc
from pbxlink.settings import SL_VARIANTS, Config
from pbxlink.web.auth import operator_of, requires
from pbxlink.web.errors import bad_request
from pbxlink.web.keys import CONFIG
from pbxlink.web.openapi import BEARER, error, json_body, obj, query_param

log = structlog.get_logger("pbxlink.web")

PATH = "/api/metrics/service-level"
PARAMS = ("from", "until", "day", "group", "queue", "extension")
MAX_DAYS = 366  # a year: longer periods are what exports are for
MAX_HOUR_DAYS = 31  # group=hour: at most 744 groups


def add_routes(app: web.Application, store: CallLogStore) -> None:
    """Mount the route on an app make_app built; it reads through the call log's reader."""
    app.router.add_get(PATH, _ServiceLevel(store, app[CONFIG]).get)


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

    @requires("supervisor")
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
        return web.json_response(
            {
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


# -- OpenAPI ---------------------------------------------------------------------------------------

_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": ["number", "null"], "minimum": 0}
_RATIO = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_WAIT_GUESSED = "whose wait is an estimate (CallRecord.estimated)"
_LEFT_OUT = (
    "calls whose times pbxlink had to estimate (a link or daemon outage), left out of the "
    "figures those times decide (docs/metrics.md)"
)


FIGURES_SCHEMA = obj(
    {
        "no_data": {"type": "boolean", "description": "no offered call: ratios are null"},
        "offered": _COUNT,
        "answered": _COUNT,
        "answered_within_threshold": _COUNT,
        "abandoned": _COUNT,
        "abandoned_within_threshold": _COUNT,
        "unanswered_other": {**_COUNT, "description": "no_answer, busy, voicemail, failed"},
        "short_abandoned": {**_COUNT, "description": "not in offered"},
        "not_offered": {**_COUNT, "description": "hung up before any ring or queue"},
        "service_level": {**_RATIO, "description": "the configured variant's value"},
        "service_levels": obj({variant: _RATIO for variant in SL_VARIANTS}),
        "abandon_rate": _RATIO,
        "asa_s": _SECONDS,
        "aht_s": _SECONDS,
        "longest_wait_s": _SECONDS,
        "estimated_left_out": {
            **obj(
                {
                    "answered": {
                        **_COUNT,
                        "description": f"answered calls {_WAIT_GUESSED}: not judged against "
                        "the threshold; out of service_levels and asa_s",
                    },
                    "abandoned": {
                        **_COUNT,
                        "description": f"abandoned calls {_WAIT_GUESSED}: never short, not "
                        "judged against the threshold; out of service_levels",
                    },
                    "unanswered_other": {
                        **_COUNT,
                        "description": f"other unanswered calls {_WAIT_GUESSED}",
                    },
                    "talk": {
                        **_COUNT,
                        "description": "answered calls whose talk time is an estimate: out "
                        "of aht_s",
                    },
                }
            ),
            "description": f"{_LEFT_OUT}; answered, abandoned and unanswered_other are "
            "left out of longest_wait_s too",
        },
    }
)
EXTENSION_FIGURES_SCHEMA = obj(
    {
        "no_data": {"type": "boolean"},
        "offered": {**_COUNT, "description": "calls that rang the extension"},
        "answered": {**_COUNT, "description": "answered by the extension"},
        "answered_within_threshold": _COUNT,
        "answered_elsewhere": _COUNT,
        "missed": {**_COUNT, "description": "rang it and nobody answered"},
        "short_abandoned": _COUNT,
        "answer_rate": _RATIO,
        "asa_s": _SECONDS,
        "aht_s": _SECONDS,
        "longest_wait_s": _SECONDS,
        "estimated_left_out": {
            **obj(
                {
                    "answered": {
                        **_COUNT,
                        "description": f"calls it answered {_WAIT_GUESSED}: out of "
                        "answered_within_threshold and asa_s",
                    },
                    "answered_elsewhere": _COUNT,
                    "missed": _COUNT,
                    "talk": {
                        **_COUNT,
                        "description": "calls it answered whose talk time is an estimate: "
                        "out of aht_s",
                    },
                }
            ),
            "description": f"{_LEFT_OUT}; answered, answered_elsewhere and missed are "
            "left out of longest_wait_s too",
        },
    }
)
_GROUP_KEYS = obj(
    {
        "key": {
            "type": ["string", "null"],
            "description": "YYYY-MM-DD; the local hour with its offset; the queue (null: "
            "no queue); the extension",
        },
        "from": {"type": "string", "format": "date-time"},
        "until": {"type": "string", "format": "date-time"},
    },
    optional=("from", "until"),
)
REPORT_SCHEMA = obj(
    {
        "threshold_s": {"type": "number"},
        "short_abandon_s": {"type": "number"},
        "variant": {"enum": list(SL_VARIANTS)},
        "period": obj(
            {
                "from": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "timezone": {"type": "string"},
            }
        ),
        "group": {"enum": list(GROUPS)},
        "filters": obj(
            {"queue": {"type": ["string", "null"]}, "extension": {"type": ["string", "null"]}}
        ),
        "total": FIGURES_SCHEMA,
        "groups": {
            "type": "array",
            "items": {
                "allOf": [_GROUP_KEYS],
                "oneOf": [FIGURES_SCHEMA, EXTENSION_FIGURES_SCHEMA],
            },
        },
    }
)


_INSTANT = {"type": "string", "examples": ["2026-11-01", "2026-11-01T09:00:00+04:00"]}

OPENAPI_PATHS: dict[str, Any] = {
    PATH: {
        "get": {
            "operationId": "getServiceLevel",
            "summary": "Service level, ASA, AHT, abandons and missed calls of inbound calls",
            "description": (
                "Supervisors and admins. Figures per PBX-local day or hour, per queue or per "
                "extension, and the total; every figure is defined in docs/metrics.md. "
                "No offered call: ratios and times are null and no_data is true. Times "
                "pbxlink had to estimate (a record's `estimated`) are left out of the "
                "figures they would decide, and counted in estimated_left_out."
            ),
            "tags": ["metrics"],
            "security": BEARER,
            "parameters": [
                query_param("day", "one PBX-local day (default: today)", {"type": "string"}),
                query_param(
                    "from", "a date (its PBX-local start) or a date-time with offset", _INSTANT
                ),
                query_param(
                    "until", "exclusive, same forms as from, after from; default: now", _INSTANT
                ),
                query_param("group", "default day", {"enum": list(GROUPS), "default": "day"}),
                query_param("queue", "only calls through this queue", {"type": "string"}),
                query_param(
                    "extension",
                    "only calls that rang this extension or it answered",
                    {"type": "string"},
                ),
            ],
            "responses": {
                "200": json_body("the figures", REPORT_SCHEMA),
                "400": error("a bad or unknown query parameter (named in `field`)"),
                "401": error("no or an invalid token"),
                "403": error("an operator: this needs the supervisor role"),
            },
        }
    }
}
