"""Every message of the popup protocol, built in one place (docs/popup-protocol.md); the
schemas in `schemas/` are their exact form. Frames are encoded once and sent to everyone.
"""

from __future__ import annotations

import json
from typing import Any

from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.operators import Operator

VERSION = 1
MAX_TOKEN_CHARS = 512

# close codes
BAD_TOKEN = 4001
TOKEN_REVOKED = 4002
ORIGIN_REFUSED = 4003
TOO_SLOW = 4008
PROTOCOL_ERROR = 4400

Message = dict[str, Any]


class CloseWith(Exception):
    """The client must be closed with this code; the reason is a short sentence for its log."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def encode(message: Message) -> bytes:
    """UTF-8 JSON as sent in a text frame; NaN is refused (a page's JSON.parse would be too)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def parse_hello(raw: str | bytes) -> str:
    """The token of a client's first message; CloseWith tells why there is none. The
    protocol is text frames (docs/popup-protocol.md): a binary frame is refused, whatever
    it holds, rather than guessed at."""
    if not isinstance(raw, str):
        raise CloseWith(PROTOCOL_ERROR, "hello: a binary frame, expected a text frame")
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        raise CloseWith(PROTOCOL_ERROR, "hello: not JSON") from None
    if not isinstance(message, dict) or message.get("type") != "hello":
        raise CloseWith(PROTOCOL_ERROR, 'expected {"type": "hello", "v": 1, "token": ...}')
    if message.get("v") != VERSION or isinstance(message.get("v"), bool):
        raise CloseWith(PROTOCOL_ERROR, f"hello: unsupported v, this hub speaks v{VERSION}")
    unknown = set(message) - {"type", "v", "token"}
    if unknown:
        raise CloseWith(PROTOCOL_ERROR, f"hello: unknown key {min(unknown)!r}")
    token = message.get("token")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise CloseWith(BAD_TOKEN, "hello: token missing or malformed")
    return token


def welcome(operator: Operator, company: str, calls: list[Message]) -> Message:
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
