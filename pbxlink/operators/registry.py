"""The one list of operators the running daemon honours.

Before, the web app's auth read `config.operators` (mutated in place on a reload) and the hub
kept its own copy: two sources of truth. Now both, and the desk, ask this registry; a reload
replaces the whole roster at once (`replace`) and tells every listener, so a removed token
stops working everywhere in the same step.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable

from pbxlink.operators.model import Operator, hash_token

Listener = Callable[[tuple[Operator, ...]], None]


class Operators:
    def __init__(self, operators: Iterable[Operator] = ()) -> None:
        self._all: tuple[Operator, ...] = ()
        self._by_hash: dict[str, Operator] = {}
        self.listeners: list[Listener] = []
        self._set(operators)

    @property
    def all(self) -> tuple[Operator, ...]:
        return self._all

    def __len__(self) -> int:
        return len(self._all)

    def by_token(self, token: str) -> Operator | None:
        return self.by_hash(hash_token(token))

    def by_hash(self, token_hash: str) -> Operator | None:
        """The operator whose token hashes to `token_hash` (compared in constant time)."""
        found = self._by_hash.get(token_hash)
        if found is not None and hmac.compare_digest(found.token_hash, token_hash):
            return found
        return None

    def replace(self, operators: Iterable[Operator]) -> None:
        """A reload: the new roster, whole; then every listener hears it."""
        self._set(operators)
        for listener in self.listeners:
            listener(self._all)

    def _set(self, operators: Iterable[Operator]) -> None:
        self._all = tuple(operators)
        self._by_hash = {op.token_hash: op for op in self._all}
