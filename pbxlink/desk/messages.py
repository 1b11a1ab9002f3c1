"""Every message of the popup protocol, built in one place (docs/popup-protocol.md); the
schemas in `pbxlink/hub/schemas/` are their exact form. The hub encodes each once and sends
the same bytes to everyone the desk names.
"""

from __future__ import annotations

from typing import Any

from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.desk.card import Person

VERSION = 1

# close codes
BAD_TOKEN = 4001
TOKEN_REVOKED = 4002
ORIGIN_REFUSED = 4003
TOO_SLOW = 4008
PROTOCOL_ERROR = 4400

Message = dict[str, Any]


def welcome(operator: Person, company: str, calls: list[Message]) -> Message:
    return {
        "type": "welcome",
        "v": VERSION,
        "operator": {
            "name": operator.name,
            "extensions": list(operator.extensions),
            "role": operator.role,
        },
        "company": company,
        "calls": calls,
    }


def ringing(call_id: str, extension: str, at: float, card: Message) -> Message:
    return _with_card("ringing", call_id, at, card, extension=extension)


def answered(call_id: str, extension: str | None, at: float, card: Message) -> Message:
    return _with_card("answered", call_id, at, card, extension=extension)


def transferred(call_id: str, extension: str, kind: str, at: float, card: Message) -> Message:
    return _with_card("transferred", call_id, at, card, extension=extension, kind=kind)


def missed(call_id: str, extension: str, at: float, card: Message) -> Message:
    return _with_card("missed", call_id, at, card, extension=extension)


def too_long(call_id: str, at: float, talk_s: float, threshold_s: float, card: Message) -> Message:
    return _with_card("too_long", call_id, at, card, talk_s=talk_s, threshold_s=threshold_s)


def ended(call: CallRecord, at: float) -> Message:
    return {
        "type": "ended",
        "v": VERSION,
        "call_id": call.call_id,
        "status": call.status,
        "at": iso_utc(at),
        "wait_s": call.wait_s,
        "talk_s": call.talk_s,
    }


def client_updated(call_id: str, card: Message) -> Message:
    return {"type": "client_updated", "v": VERSION, "call_id": call_id, "card": card}


def _with_card(type_: str, call_id: str, at: float, card: Message, **fields: Any) -> Message:
    return {
        "type": type_,
        "v": VERSION,
        "call_id": call_id,
        **fields,
        "at": iso_utc(at),
        "card": card,
    }
