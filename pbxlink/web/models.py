"""The API's shared JSON bodies as msgspec Structs: the error, health, who-am-I, the hub's
address and the call log's records. Their JSON Schema is the OpenAPI document's components
(pbxlink.web.openapi); handlers encode them, or the call log's dicts of the same shape.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from pbxlink.calls.record import Direction, Estimated, Status
from pbxlink.operators import Role

Time = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Date = Annotated[str, Meta(extra_json_schema={"format": "date"})]
Count = Annotated[int, Meta(ge=0)]
Seconds = Annotated[float, Meta(ge=0)]


class Error(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Every error the API sends, in this one shape; clients branch on `error` (docs/api.md
    lists the codes)."""

    error: Annotated[str, Meta(description="stable code: bad_request, ...")]
    message: Annotated[str, Meta(description="for people")]
    field: Annotated[str, Meta(description="the query parameter or body field at fault")] | (
        UnsetType
    ) = UNSET
    needed: Annotated[str, Meta(description="403: the role needed")] | UnsetType = UNSET
    what: Annotated[str, Meta(description="404: what was not found")] | UnsetType = UNSET


class Ami(msgspec.Struct):
    state: str
    last_event_age_s: float | None


class Health(msgspec.Struct):
    status: Literal["ok", "degraded"]
    ami: Ami
    calls_active: int
    store_queue_depth: int
    uptime_s: float


class Me(msgspec.Struct):
    name: str
    extensions: list[str]
    role: Role


class HubInfo(msgspec.Struct):
    url: Annotated[str, Meta(pattern="^wss?://")]
    protocol_version: int


class CallRecord(msgspec.Struct):
    """A call as `pbxlink replay --json` writes it (calls/record.py RECORD_FIELDS)."""

    call_id: str
    started_at: Time
    offered_at: Annotated[Time | None, Meta(description="first ring or queue join")]
    answered_at: Time | None
    ended_at: Time | None
    direction: Direction
    caller_number: str
    caller_name: str
    called_number: str
    extensions_rung: list[str]
    answered_by: str | None
    status: Status
    wait_s: Seconds
    talk_s: Seconds
    hangup_cause: int | None
    queue: str | None
    ivr_digits: str
    transferred_to: list[str]
    recording: str | None
    partial: bool
    estimated: Annotated[
        list[Estimated],
        Meta(description="times pbxlink had to estimate (wait_s/talk_s follow them)"),
    ]


class CallItem(CallRecord):
    """A call of the log: the record, its client (if any) and whether it ran too long."""

    client_id: int | None
    too_long: Annotated[bool, Meta(description="talk time past the threshold")]
    client_name: str | None
    client_category: str | None


class CallPage(msgspec.Struct):
    items: list[CallItem]
    next_cursor: str | None


class Totals(msgspec.Struct):
    count: Count
    answered: Count
    missed: Count
    talk_s: Seconds
    wait_avg_s: Seconds | None


class Day(msgspec.Struct):
    day: Date
    count: Count
    answered: Count
    missed: Count
    abandoned: Count
    talk_s: Seconds


class Days(msgspec.Struct):
    days: list[Day]


class RecordingAccess(msgspec.Struct):
    operator: str
    action: Literal["listened", "downloaded"]
    at: Time
