"""The call record: what one finished (or still running) call looks like to the rest of pbxlink."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Direction = Literal["inbound", "outbound", "internal"]
Status = Literal["answered", "no_answer", "busy", "abandoned", "voicemail", "failed"]
#: the times a record may have had to guess (`CallRecord.estimated` names them)
Estimated = Literal["answered_at", "ended_at"]
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)
STATUSES: tuple[Status, ...] = get_args(Status)

#: the field names of `pbxlink replay --json`, in output order
RECORD_FIELDS = (
    "call_id",
    "started_at",
    "offered_at",
    "answered_at",
    "ended_at",
    "direction",
    "caller_number",
    "caller_name",
    "called_number",
    "extensions_rung",
    "answered_by",
    "status",
    "wait_s",
    "talk_s",
    "hangup_cause",
    "queue",
    "ivr_digits",
    "transferred_to",
    "recording",
    "partial",
    "estimated",
)

_TIME_FIELDS = ("started_at", "offered_at", "answered_at", "ended_at")


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds, the form every API of pbxlink uses."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class CallRecord:
    """A call as pbxlink reports it. Times are epoch seconds here, ISO-8601 UTC in `to_dict`."""

    call_id: str
    started_at: float
    direction: Direction
    caller_number: str
    caller_name: str
    called_number: str
    status: Status
    #: when the call first rang an operator's phone or joined a queue: where the caller
    #: starts waiting for a person (IVR time before it is not waiting); None: never offered
    offered_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    extensions_rung: list[str] = field(default_factory=list)
    answered_by: str | None = None
    wait_s: float = 0.0
    talk_s: float = 0.0
    hangup_cause: int | None = None
    queue: str | None = None
    ivr_digits: str = ""
    transferred_to: list[str] = field(default_factory=list)
    recording: str | None = None
    partial: bool = False
    #: the times pbxlink had to estimate because nothing Asterisk said afterwards told the
    #: truth (an answer or an end while the link or the daemon was down); `wait_s`/`talk_s`
    #: derived from them are estimates too. Always a subset of `partial` records.
    estimated: list[Estimated] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        for key in _TIME_FIELDS:
            raw[key] = iso_utc(raw[key])
        return {key: raw[key] for key in RECORD_FIELDS}
