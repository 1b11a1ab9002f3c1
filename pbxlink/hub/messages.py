"""The popup socket's own side of the protocol: the hello a client opens with, the close codes
it may hear, and the encoding of what the desk says (`pbxlink/desk/messages.py` builds every
message; `schemas/` are their exact form). Frames are encoded once and sent to everyone.
"""

from __future__ import annotations

import json

from pbxlink.desk.messages import (
    BAD_TOKEN,
    ORIGIN_REFUSED,
    PROTOCOL_ERROR,
    TOKEN_REVOKED,
    TOO_SLOW,
    VERSION,
    Message,
)

__all__ = [
    "BAD_TOKEN",
    "MAX_TOKEN_CHARS",
    "ORIGIN_REFUSED",
    "PROTOCOL_ERROR",
    "TOKEN_REVOKED",
    "TOO_SLOW",
    "VERSION",
    "CloseWith",
    "Message",
    "encode",
    "parse_hello",
]

MAX_TOKEN_CHARS = 512


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
