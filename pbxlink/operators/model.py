"""An operator as the config declares them: a name, their extensions, a role, a token's hash.

`Operator` is also the declaration of an [[operators]] table: the loader checks each key
against its field's annotation (msgspec's `Meta` states what a dataclass cannot).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Annotated, Literal

from msgspec import Meta

Role = Literal["operator", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("operator", "supervisor", "admin")
TOKEN_PREFIX = "sha256:"
TokenHash = Annotated[
    str,
    Meta(
        pattern=rf"\A{TOKEN_PREFIX}[0-9a-f]{{64}}\Z",
        description="'sha256:' and 64 hex digits (make one with `pbxlink token`)",
        extra={"echo": False},  # 71 characters: the message says what to do instead
    ),
]


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough: nothing to brute-force."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True, frozen=True)
class Operator:
    name: Annotated[str, Meta(pattern=r"\S")]
    extensions: tuple[str, ...]
    role: Role
    token_hash: TokenHash = field(repr=False)

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, hash_token(token))
