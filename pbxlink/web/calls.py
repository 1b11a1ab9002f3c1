"""The call log API: every call, filtered, paged, summed, by day and as CSV. JSON, UTF-8.

    GET /api/calls?<filters>&sort=&limit=&cursor=   a page: {"items": [...], "next_cursor"}
    GET /api/calls/totals?<filters>                 count, answered, missed, talk_s, wait_avg_s
    GET /api/calls/by-day?<filters>                 {"days": [...]} per PBX-local day
    GET /api/calls.csv?<filters>&sort=&bom=         every matching call, streamed
    GET /api/calls/{call_id}                        one call, with its client's card

Operators see the calls their extensions took part in (placed, rang, answered, transferred
to); asking for another extension is a 403 naming `extension`. Supervisors and admins see
all. A call that does not exist and one the operator may not see are the same 404. Bad or
unknown parameters are a 400 `bad_request` naming the parameter in `field`. The filters and
what they mean: docs/api.md; the queries: pbxlink/calllog/query.py.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from pbxlink.calllog import export, query
from pbxlink.calllog.params import QueryError, flag
from pbxlink.calllog.store import CallLogStore
from pbxlink.clients.directory import Directory
from pbxlink.clients.model import NotFound
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.web.auth import call_scope, operator_of
from pbxlink.web.errors import ApiError, bad_request
from pbxlink.web.keys import CONFIG
from pbxlink.web.openapi import BEARER, error, json_body, obj, query_param

log = structlog.get_logger("pbxlink.web")

CSV_PARAMS = ("sort", "bom")


def add_routes(app: web.Application, store: CallLogStore, directory: Directory | None) -> None:
    """Mount the call log API on an app make_app built (make_app does, given a store)."""
    config = app[CONFIG]
    numbers = (
        directory.numbers if directory is not None else PhoneNumbers.from_config(config.clients)
    )
    calls = _Calls(store, directory, numbers, config.tracker.pbx_timezone)
    # the fixed paths first: /api/calls/{call_id} would take them
    app.router.add_get("/api/calls", calls.list)
    app.router.add_get("/api/calls/totals", calls.totals)
    app.router.add_get("/api/calls/by-day", calls.by_day)
    app.router.add_get("/api/calls.csv", calls.csv)
    app.router.add_get("/api/calls/{call_id}", calls.get)


@dataclass(slots=True)
class _Calls:
    store: CallLogStore
    directory: Directory | None
    numbers: PhoneNumbers
    tz: dt.tzinfo

    def _filter(
        self, request: web.Request, extra: tuple[str, ...] = ()
    ) -> tuple[query.CallFilter, tuple[str, ...] | None]:
        """The request's filter and the operator's scope (None: every call)."""
        try:
            f = query.parse_filter(request.query, numbers=self.numbers, tz=self.tz, extra=extra)
        except QueryError as exc:
            raise bad_request(exc) from None
        scope = call_scope(request)
        for extension in f.extensions:
            if scope is not None and extension not in scope:
                raise ApiError(
                    403,
                    "forbidden",
                    f"extension {extension} is not one of yours ({', '.join(scope)})",
                    field="extension",
                )
        return f, scope

    async def list(self, request: web.Request) -> web.Response:
        f, scope = self._filter(request, query.PAGE_PARAMS)
        try:
            sort, limit, cursor = query.parse_page(request.query)
            page = await query.page(
                self.store.reader, f, scope=scope, sort=sort, limit=limit, cursor=cursor
            )
        except QueryError as exc:
            raise bad_request(exc) from None
        return web.json_response({"items": page.items, "next_cursor": page.next_cursor})

    async def totals(self, request: web.Request) -> web.Response:
        f, scope = self._filter(request)
        return web.json_response(await query.totals(self.store.reader, f, scope=scope))

    async def by_day(self, request: web.Request) -> web.Response:
        f, scope = self._filter(request)
        days = await query.by_day(self.store.reader, f, scope=scope, tz=self.tz)
        return web.json_response({"days": days})

    async def get(self, request: web.Request) -> web.Response:
        for key in request.query:
            raise ApiError(400, "bad_request", f"{key}: unknown parameter (none known)", field=key)
        call_id = request.match_info["call_id"]
        found = await query.get(self.store.reader, call_id, call_scope(request))
        if found is None:
            raise ApiError(404, "not_found", f"no call {call_id}", what="call")
        client = None
        if found["client_id"] is not None and self.directory is not None:
            try:
                client = (await self.directory.get(found["client_id"])).to_dict()
            except NotFound:
                client = None  # deleted since: the trigger unlinks it, this read came first
        accesses = await self.store.recording_accesses(call_id)
        return web.json_response({**found, "client": client, "recording_accesses": accesses})

    async def csv(self, request: web.Request) -> web.StreamResponse:
        """Streamed in batches: a year of calls never sits in memory. A failure after the
        first byte cuts the connection, so the client sees a broken download, not a short
        file that looks complete."""
        f, scope = self._filter(request, CSV_PARAMS)
        try:
            sort = query.parse_page(request.query)[0]  # limit and cursor are refused above
            bom = bool(flag(request.query, "bom"))
        except QueryError as exc:
            raise bad_request(exc) from None
        started = time.perf_counter()
        stamp = dt.datetime.now(self.tz).strftime("%Y%m%d-%H%M")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="calls-{stamp}.csv"',
            }
        )
        await response.prepare(request)
        sent = 0
        try:
            async for chunk in export.iter_csv(
                self.store.reader, f, scope=scope, bom=bom, sort=sort
            ):
                await response.write(chunk)
                sent += len(chunk)
        except ConnectionError:
            log.info("calls.csv_aborted", operator=operator_of(request).name, bytes=sent)
            return response
        except Exception:
            log.exception("calls.csv_failed", operator=operator_of(request).name, bytes=sent)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        ms = round((time.perf_counter() - started) * 1000)
        log.info("calls.csv_exported", operator=operator_of(request).name, bytes=sent, ms=ms)
        return response


# -- OpenAPI ---------------------------------------------------------------------------------------

_COUNT = {"type": "integer", "minimum": 0}
_ITEM = {
    "allOf": [
        {"$ref": "#/components/schemas/CallRecord"},
        obj(
            {
                "client_id": {"type": ["integer", "null"]},
                "too_long": {"type": "boolean", "description": "talk time past the threshold"},
                "client_name": {"type": ["string", "null"]},
                "client_category": {"type": ["string", "null"]},
            }
        ),
    ]
}
_CSV_LIST = "one value, several comma-separated, or the parameter repeated"


_INSTANT = {"type": "string", "examples": ["2024-03-01", "2024-03-01T09:00:00+04:00"]}
_SECONDS = {"type": "number", "minimum": 0}
_BOOL = {"type": "string", "enum": ["true", "false", "1", "0"]}
FILTERS = [
    query_param("from", "a date (that day's start in the PBX time zone) or a date-time with "
                "offset; inclusive", _INSTANT),
    query_param("until", "same forms as from; exclusive; after from (else a 400)", _INSTANT),
    query_param("day", "one whole PBX-local day, YYYY-MM-DD (not with from/until)",
                {"type": "string", "format": "date"}),
    query_param("direction", f"inbound, outbound, internal; {_CSV_LIST}", {"type": "string"}),
    query_param("status", "answered, no_answer, busy, abandoned, voicemail, failed, missed (the "
                f"four unanswered ones; with extension: calls that rang it); {_CSV_LIST}",
                {"type": "string"}),
    query_param("extension", "calls it placed, rang, answered or was transferred to; "
                f"{_CSV_LIST}", {"type": "string"}),
    query_param("number", "the caller's or the called number, in any written form",
                {"type": "string"}),
    query_param("client", "the client's id", {"type": "integer", "minimum": 1}),
    query_param("category", "the client's category name", {"type": "string"}),
    query_param("queue", "the queue the call joined", {"type": "string"}),
    query_param("talk_min_s", "talk time at least", _SECONDS),
    query_param("talk_max_s", "talk time at most", _SECONDS),
    query_param("wait_min_s", "wait time at least", _SECONDS),
    query_param("wait_max_s", "wait time at most", _SECONDS),
    query_param("too_long", "talk time past the configured threshold, or not", _BOOL),
    query_param("recorded", "has a recording, or not", _BOOL),
]  # fmt: skip
_SORT = query_param("sort", "the order; ties in call_id order", {"enum": list(query.SORTS)})
_ERRORS = {
    "400": error("a bad or unknown query parameter, named in `field`"),
    "401": error("no or an invalid token"),
    "403": error("an operator asked for another operator's extension (`field`: extension)"),
}


def _operation(op_id: str, summary: str, params: list[Any], ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "description": "Operators: calls of their own extensions; supervisors, admins: all.",
            "tags": ["calls"],
            "security": BEARER,
            "parameters": params,
            "responses": {"200": ok, **_ERRORS},
        }
    }


OPENAPI_PATHS: dict[str, Any] = {
    "/api/calls": _operation(
        "listCalls",
        "A page of calls, newest first unless sorted otherwise",
        [
            *FILTERS,
            _SORT,
            query_param(
                "limit",
                "calls per page",
                {"type": "integer", "minimum": 1, "maximum": query.MAX_LIMIT, "default": 50},
            ),
            query_param("cursor", "next_cursor of the previous page", {"type": "string"}),
        ],
        json_body(
            "the page; next_cursor is null on the last one",
            obj(
                {
                    "items": {"type": "array", "items": _ITEM},
                    "next_cursor": {"type": ["string", "null"]},
                }
            ),
        ),
    ),
    "/api/calls/totals": _operation(
        "callTotals",
        "Totals of the filtered calls",
        FILTERS,
        json_body(
            "the totals; wait_avg_s is null when no call matches",
            obj(
                {
                    "count": _COUNT,
                    "answered": _COUNT,
                    "missed": _COUNT,
                    "talk_s": _SECONDS,
                    "wait_avg_s": {"type": ["number", "null"], "minimum": 0},
                }
            ),
        ),
    ),
    "/api/calls/by-day": _operation(
        "callsByDay",
        "The filtered calls per PBX-local day (days with calls only)",
        FILTERS,
        json_body(
            "the days, oldest first",
            obj(
                {
                    "days": {
                        "type": "array",
                        "items": obj(
                            {
                                "day": {"type": "string", "format": "date"},
                                "count": _COUNT,
                                "answered": _COUNT,
                                "missed": _COUNT,
                                "abandoned": _COUNT,
                                "talk_s": _SECONDS,
                            }
                        ),
                    }
                }
            ),
        ),
    ),
    "/api/calls.csv": _operation(
        "exportCalls",
        "Every filtered call as CSV (UTF-8, CRLF), streamed",
        [*FILTERS, _SORT, query_param("bom", "true: a UTF-8 BOM first, for Excel", _BOOL)],
        {
            "description": "the calls; cells a spreadsheet would run start with '",
            "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
            "content": {"text/csv": {"schema": {"type": "string"}}},
        },
    ),
    "/api/calls/{call_id}": {
        "get": {
            **_operation("getCall", "One call with its client's card", [], {})["get"],
            "parameters": [
                {
                    "name": "call_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                },
            ],
            "responses": {
                "200": json_body(
                    "the call",
                    {
                        "allOf": [
                            _ITEM,
                            obj(
                                {
                                    "client": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Client"},
                                            {"type": "null"},
                                        ]
                                    },
                                    "recording_accesses": {
                                        "description": "who listened to or downloaded the "
                                        "recording, and when, oldest first",
                                        "type": "array",
                                        "items": obj(
                                            {
                                                "operator": {"type": "string"},
                                                "action": {"enum": ["listened", "downloaded"]},
                                                "at": {"type": "string", "format": "date-time"},
                                            }
                                        ),
                                    },
                                }
                            ),
                        ]
                    },
                ),
                "401": _ERRORS["401"],
                "404": error("no such call, or not one of the operator's"),
            },
        }
    },
}
