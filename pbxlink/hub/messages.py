"""The popup socket's own side of the protocol: the hello a client opens with, the close codes
it may hear, and the encoding of what the desk says (`pbxlink/desk/messages.py` declares
every server message; `schemas/` are generated from both). Frames are encoded once and sent
to everyone.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from pbxlink.desk.messages import (
    BAD_TOKEN,
    ORIGIN_REFUSED,
    PROTOCOL_ERROR,
    TOKEN_REVOKED,
    TOO_SLOW,
    VERSION,
    ServerMessage,
    Version,
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
    "Hello",
    "Message",
    "encode",
    "parse_hello",
]

MAX_TOKEN_CHARS = 512

#: what the hub sends
Message = ServerMessage


class Hello(Struct, frozen=True, forbid_unknown_fields=True):
    """Client -> server, the first and only message a client sends: who is connecting."""

    type: Literal["hello"]  # a plain field, not a tag: msgspec lets a lone Struct's tag be left out
    v: Version
    token: Annotated[str, Meta(min_length=1, max_length=MAX_TOKEN_CHARS)]


class CloseWith(Exception):
    """The client must be closed with this code; the reason is a short sentence for its log."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# one of each, made once: msgspec's encoder and decoder keep their buffers and type plans
_ENCODER = msgspec.json.Encoder()
_HELLO = msgspec.json.Decoder(Hello)


def encode(message: Message) -> bytes:
    """UTF-8 JSON as sent in a text frame, every field written (nulls included), in the
    declared order. A NaN or infinity is written as null, which a page's JSON.parse takes."""
    return _ENCODER.encode(message)


def parse_hello(raw: str | bytes) -> str:
    """The token of a client's first message; CloseWith tells why there is none. The
    protocol is text frames (docs/popup-protocol.md): a binary frame is refused, whatever
    it holds, rather than guessed at."""
    if not isinstance(raw, str):
        raise CloseWith(PROTOCOL_ERROR, "hello: a binary frame, expected a text frame")
    try:
        return _HELLO.decode(raw).token
    except msgspec.ValidationError:
        pass  # JSON, but not a good hello: _refusal tells which close code it earns
    except (msgspec.DecodeError, RecursionError):
        raise CloseWith(PROTOCOL_ERROR, "hello: not JSON") from None
    try:
        message = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # refused before the bad part was read
        raise CloseWith(PROTOCOL_ERROR, "hello: not JSON") from None
    raise _refusal(message)


def _refusal(message: object) -> CloseWith:
    """Why `Hello` refused a JSON value, as the close code the page must act on: anything
    but a v1 hello is a bug of the page (4400); a v1 hello whose token is wrong asks for the
    token again (4001). Checked in that order, whatever order the keys came in."""
    if not isinstance(message, dict) or message.get("type") != "hello":
        return CloseWith(PROTOCOL_ERROR, 'expected {"type": "hello", "v": 1, "token": ...}')
    v = message.get("v")
    if type(v) is not int or v != VERSION:  # true is not 1, nor is 1.0
        return CloseWith(PROTOCOL_ERROR, f"hello: unsupported v, this hub speaks v{VERSION}")
    unknown = set(message) - set(Hello.__struct_fields__)
    if unknown:
        return CloseWith(PROTOCOL_ERROR, f"hello: unknown key {min(unknown)!r}")
    return CloseWith(BAD_TOKEN, "hello: token missing or malformed")
