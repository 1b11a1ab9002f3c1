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
from typing import Annotated, Any, Literal

import msgspec
import structlog
from aiohttp import web
from msgspec import UNSET, Meta, UnsetType

from pbxlink.calllog import export, query
from pbxlink.calllog.params import QueryError, flag
from pbxlink.calllog.store import CallLogStore
from pbxlink.clients.directory import Directory
from pbxlink.clients.model import NotFound
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.web import cards, models
from pbxlink.web.auth import call_scope, operator_of
from pbxlink.web.errors import ApiError, bad_request
from pbxlink.web.keys import CONFIG
from pbxlink.web.models import CallPage, Date, Days, Seconds, Totals
from pbxlink.web.spec import Answer, Route, mount, respond

log = structlog.get_logger("pbxlink.web")


def add_routes(app: web.Application, store: CallLogStore, directory: Directory | None) -> None:
    """Mount the call log API on an app make_app built (make_app does, given a store)."""
    config = app[CONFIG]
    numbers = (
        directory.numbers if directory is not None else PhoneNumbers.from_config(config.clients)
    )
    calls = _Calls(store, directory, numbers, config.tracker.pbx_timezone)
    handlers = {"listCalls": calls.list, "callTotals": calls.totals, "callsByDay": calls.by_day,
                "exportCalls": calls.csv, "getCall": calls.get}  # fmt: skip
    mount(app, ROUTES, handlers)


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
        f, scope = self._filter(request, beyond_filters(PageQuery))
        try:
            sort, limit, cursor = query.parse_page(request.query)
            page = await query.page(
                self.store.reader, f, scope=scope, sort=sort, limit=limit, cursor=cursor
            )
        except QueryError as exc:
            raise bad_request(exc) from None
        return respond({"items": page.items, "next_cursor": page.next_cursor})  # CallPage

    async def totals(self, request: web.Request) -> web.Response:
        f, scope = self._filter(request)
        return respond(await query.totals(self.store.reader, f, scope=scope))  # Totals

    async def by_day(self, request: web.Request) -> web.Response:
        f, scope = self._filter(request)
        days = await query.by_day(self.store.reader, f, scope=scope, tz=self.tz)
        return respond({"days": days})  # Days

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
                client = cards.client(await self.directory.get(found["client_id"]))
            except NotFound:
                client = None  # deleted since: the trigger unlinks it, this read came first
        accesses = await self.store.recording_accesses(call_id)
        return respond({**found, "client": client, "recording_accesses": accesses})  # CallDetail

    async def csv(self, request: web.Request) -> web.StreamResponse:
        """Streamed in batches: a year of calls never sits in memory. A failure after the
        first byte cuts the connection, so the client sees a broken download, not a short
        file that looks complete."""
        f, scope = self._filter(request, beyond_filters(CsvQuery))
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


# -- the routes ----------------------------------------------------------------------------------

_CSV_LIST = "one value, several comma-separated, or the parameter repeated"
Instant = Annotated[str, Meta(examples=["2024-03-01", "2024-03-01T09:00:00+04:00"])]
Flag = Literal["true", "false", "1", "0"]


def _doc(text: str) -> Meta:
    return Meta(description=text)


class CallFilters(msgspec.Struct):
    """The filters of every call log route. Checked by calllog's parser (query.parse_filter),
    which takes lists and repeats: this Struct is what the document says of them."""

    from_: (
        Annotated[
            Instant,
            _doc(
                "a date (that day's start in the PBX time zone) or a "
                "date-time with offset; inclusive"
            ),
        ]
        | UnsetType
    ) = msgspec.field(default=UNSET, name="from")
    until: Annotated[Instant, _doc("same forms as from; exclusive; after from (else a 400)")] | (
        UnsetType
    ) = UNSET
    day: Annotated[Date, _doc("one whole PBX-local day, YYYY-MM-DD (not with from/until)")] | (
        UnsetType
    ) = UNSET
    direction: Annotated[str, _doc(f"inbound, outbound, internal; {_CSV_LIST}")] | UnsetType = UNSET
    status: (
        Annotated[
            str,
            _doc(
                "answered, no_answer, busy, abandoned, voicemail, failed, missed (the four "
                f"unanswered ones; with extension: calls that rang it); {_CSV_LIST}"
            ),
        ]
        | UnsetType
    ) = UNSET
    extension: (
        Annotated[str, _doc(f"calls it placed, rang, answered or was transferred to; {_CSV_LIST}")]
        | UnsetType
    ) = UNSET
    number: Annotated[str, _doc("the caller's or the called number, in any written form")] | (
        UnsetType
    ) = UNSET
    client: Annotated[int, Meta(ge=1, description="the client's id")] | UnsetType = UNSET
    category: Annotated[str, _doc("the client's category name")] | UnsetType = UNSET
    queue: Annotated[str, _doc("the queue the call joined")] | UnsetType = UNSET
    talk_min_s: Annotated[Seconds, _doc("talk time at least")] | UnsetType = UNSET
    talk_max_s: Annotated[Seconds, _doc("talk time at most")] | UnsetType = UNSET
    wait_min_s: Annotated[Seconds, _doc("wait time at least")] | UnsetType = UNSET
    wait_max_s: Annotated[Seconds, _doc("wait time at most")] | UnsetType = UNSET
    too_long: Annotated[Flag, _doc("talk time past the configured threshold, or not")] | (
        UnsetType
    ) = UNSET
    recorded: Annotated[Flag, _doc("has a recording, or not")] | UnsetType = UNSET


Sort = Annotated[str, Meta(description="the order; ties in call_id order",
                           extra_json_schema={"enum": list(query.SORTS)})]  # fmt: skip


class PageQuery(CallFilters):
    sort: Sort | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=query.MAX_LIMIT, description="calls per page")] = 50
    cursor: Annotated[str, _doc("next_cursor of the previous page")] | UnsetType = UNSET


class CsvQuery(CallFilters):
    sort: Sort | UnsetType = UNSET
    bom: Annotated[Flag, _doc("true: a UTF-8 BOM first, for Excel")] | UnsetType = UNSET


def beyond_filters(params: type[CallFilters]) -> tuple[str, ...]:
    """The parameters a route takes besides the filters: the parser is told them from the
    route's declared query, so what is documented is what is accepted."""
    return tuple(n for n in params.__struct_encode_fields__ if n not in FILTER_NAMES)


FILTER_NAMES = frozenset(CallFilters.__struct_encode_fields__)


class CallDetail(models.CallItem):
    client: cards.Client | None
    recording_accesses: Annotated[
        list[models.RecordingAccess],
        Meta(description="who listened to or downloaded the recording, and when, oldest first"),
    ]


_ERRORS = {
    400: "a bad or unknown query parameter, named in `field`",
    403: "an operator asked for another operator's extension (`field`: extension)",
}
_WHO = "Operators: calls of their own extensions; supervisors, admins: all."


def _route(path: str, op_id: str, summary: str, ok: Answer, query: Any) -> Route:
    return Route("GET", path, op_id, summary, "calls", {200: ok}, _ERRORS, query=query,
                 check_query=False, description=_WHO)  # fmt: skip


# the fixed paths first: /api/calls/{call_id} would take them
ROUTES = [
    _route("/api/calls", "listCalls", "A page of calls, newest first unless sorted otherwise",
           Answer("the page; next_cursor is null on the last one", CallPage), PageQuery),
    _route("/api/calls/totals", "callTotals", "Totals of the filtered calls",
           Answer("the totals; wait_avg_s is null when no call matches", Totals), CallFilters),
    _route("/api/calls/by-day", "callsByDay",
           "The filtered calls per PBX-local day (days with calls only)",
           Answer("the days, oldest first", Days), CallFilters),
    _route("/api/calls.csv", "exportCalls", "Every filtered call as CSV (UTF-8, CRLF), streamed",
           Answer("the calls; cells a spreadsheet would run start with '",
                  content={"text/csv": {"schema": {"type": "string"}}},
                  headers={"Content-Disposition": {"schema": {"type": "string"}}}), CsvQuery),
    Route("GET", "/api/calls/{call_id}", "getCall", "One call with its client's card", "calls",
          {200: Answer("the call", CallDetail)},
          {404: "no such call, or not one of the operator's"}, description=_WHO),
]  # fmt: skip
