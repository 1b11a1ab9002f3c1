"""An operator as the config declares them: a name, their extensions, a role, a token's hash."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["operator", "supervisor", "admin"]
ROLES: tuple[Role, ...] = ("operator", "supervisor", "admin")
TOKEN_PREFIX = "sha256:"


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough: nothing to brute-force."""
    return TOKEN_PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True, frozen=True)
class Operator:
    name: str
    extensions: tuple[str, ...]
    role: Role
    token_hash: str = field(repr=False)

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, hash_token(token))
