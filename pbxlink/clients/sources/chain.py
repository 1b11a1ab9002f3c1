"""The lookup chain: what the daemon calls when a phone rings.

The popup is never held back by a slow CRM. `lookup` asks the local directory and every
source at once and returns after `budget_s` (default 50 ms) at the latest, with whatever
has answered by then; what answers later (each source within its own `timeout_s`) comes as
one update. Merge rule: chain order wins per field (see `cards.merge`).

    result = await chain.lookup(number, local=lambda: directory.lookup(number.raw))
    send_popup(result.local, result.fields)             # within the budget, always
    if result.pending is not None:                      # a slow source is still working
        later = await result.pending                    # (in a task of its own)
        if later is not None:                           # it added something
            send_update(later.local, later.fields)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from pbxlink.clients.cardfields import CardFields, merge
from pbxlink.clients.numbers import Number
from pbxlink.clients.sources.base import BadArgument, Miss, Source
from pbxlink.clients.sources.http import HttpSource
from pbxlink.clients.sources.sql import SqlSource
from pbxlink.settings import ConfigError

log = structlog.get_logger("pbxlink.clients")

L = TypeVar("L")
T = TypeVar("T")
DEFAULT_BUDGET_S = 0.05


@dataclass(slots=True)
class LookupResult(Generic[L]):
    """What is known about a caller.

    `local`: the local directory's answer (None if it had none, failed, or was not ready
    within the budget). `fields`: the sources' answers so far, merged in chain order.
    `pending`: None when everything has answered; else a task that completes once every late
    part has answered or given up, with the full result (its own `pending` None), or with
    None when the late parts added nothing (no update to send). It never raises; the chain
    cancels it on close().
    """

    local: L | None = None
    fields: CardFields = field(default_factory=CardFields)
    pending: asyncio.Task[LookupResult[L] | None] | None = None


class LookupChain:
    """The configured sources, asked concurrently; results merged in configuration order."""

    __slots__ = ("_tasks", "budget_s", "sources")

    def __init__(self, sources: Sequence[Source] = (), budget_s: float = DEFAULT_BUDGET_S) -> None:
        if isinstance(budget_s, bool) or not isinstance(budget_s, int | float) or budget_s < 0:
            raise BadArgument("budget_s", f"expected a number of seconds, got {budget_s!r}")
        names = [s.name for s in sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise BadArgument("sources", f"two sources named {twice[0]!r}")
        self.sources = tuple(sources)
        self.budget_s = float(budget_s)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def lookup(
        self,
        number: Number | None,
        local: Callable[[], Awaitable[L]] | Awaitable[L] | L | None = None,
    ) -> LookupResult[L]:
        """Within `budget_s`: the local answer and the sources that answered in time.

        `local` is the local directory's answer, an awaitable of it, or a function returning
        one; it runs under the same budget (late, it arrives in the update). A number that
        normalised to None (anonymous) asks no source. Never raises but for cancellation.
        """
        started = time.monotonic()
        local_task: asyncio.Task[L | None] | None = None
        local_now: L | None = None
        given: Any = self._call_local(local) if callable(local) else local
        if inspect.isawaitable(given):
            local_task = self._spawn(self._await_local(given), "lookup local")
        else:
            local_now = given
        source_tasks: list[asyncio.Future[CardFields | None]] = []
        if number is not None:
            loop = asyncio.get_running_loop()
            for source in self.sources:
                hit = source.cached(number)  # no task, no wait: a cache hit is always in time
                if isinstance(hit, Miss):
                    source_tasks.append(self._spawn(source.lookup(number), f"lookup {source.name}"))
                else:
                    answered: asyncio.Future[CardFields | None] = loop.create_future()
                    answered.set_result(hit)
                    source_tasks.append(answered)
        waiting: list[asyncio.Future[Any]] = [t for t in source_tasks if not t.done()]
        if local_task is not None:
            waiting.append(local_task)
        late: set[asyncio.Future[Any]] = set()
        if waiting:
            try:
                _, late = await asyncio.wait(waiting, timeout=self.budget_s)
            except asyncio.CancelledError:
                for task in waiting:
                    task.cancel()  # a source's own request goes on and fills its cache
                raise
        now = self._result(local_now, local_task, source_tasks)
        if late:
            now.pending = self._spawn(
                self._later(now, local_now, local_task, source_tasks, late, started),
                "lookup update",
            )
        return now

    def _spawn(self, coro: Awaitable[T], name: str) -> asyncio.Task[T]:
        task: asyncio.Task[T] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _call_local(local: Callable[[], Any]) -> Any:
        try:
            return local()
        except Exception as exc:
            log.warning("sources.failed", source="local", reason=type(exc).__name__, error=str(exc))
            return None

    @staticmethod
    async def _await_local(awaitable: Awaitable[L]) -> L | None:
        try:
            return await awaitable
        except Exception as exc:
            log.warning("sources.failed", source="local", reason=type(exc).__name__, error=str(exc))
            return None

    @staticmethod
    def _result(
        local_now: L | None,
        local_task: asyncio.Task[L | None] | None,
        source_tasks: list[asyncio.Future[CardFields | None]],
    ) -> LookupResult[L]:
        local = local_now
        if local_task is not None and local_task.done() and not local_task.cancelled():
            local = local_task.result()
        cards = [t.result() if t.done() and not t.cancelled() else None for t in source_tasks]
        return LookupResult(local, merge(cards))

    async def _later(
        self,
        now: LookupResult[L],
        local_now: L | None,
        local_task: asyncio.Task[L | None] | None,
        source_tasks: list[asyncio.Future[CardFields | None]],
        late: set[asyncio.Future[Any]],
        started: float,
    ) -> LookupResult[L] | None:
        """Wait for the late parts (each bounded by its own timeout), then the full result."""
        await asyncio.wait(late)
        final = self._result(local_now, local_task, source_tasks)
        changed = final.fields != now.fields or (local_task in late and final.local is not None)
        log.debug(
            "sources.update",
            changed=changed,
            source=final.fields.source,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return final if changed else None

    async def close(self) -> None:
        """Cancel lookups and updates in flight, close every source's connections."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for source in self.sources:
            try:
                await source.close()
            except Exception as exc:
                log.warning("sources.close_failed", source=source.name, error=str(exc))

    async def __aenter__(self) -> LookupChain:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @classmethod
    def from_dict(cls, where: str, table: dict[str, Any]) -> LookupChain:
        """Keys: budget_s (default 0.05), sources (a list of source tables, in chain order)."""
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table")
        known = ("budget_s", "sources")
        for key in table:
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(known)})")
        raw_sources = table.get("sources", [])
        if not isinstance(raw_sources, list) or not all(isinstance(t, dict) for t in raw_sources):
            raise ConfigError(f"{where}.sources: expected a list of tables")
        sources = [source_from_dict(f"{where}.sources[{i}]", t) for i, t in enumerate(raw_sources)]
        try:
            return cls(sources, table.get("budget_s", DEFAULT_BUDGET_S))
        except BadArgument as exc:
            raise ConfigError(f"{where}.{exc.key}: {exc.message}") from None


def source_from_dict(where: str, table: dict[str, Any]) -> Source:
    """An HttpSource or SqlSource from a config table, by its `type` key."""
    kinds: dict[str, Any] = {"http": HttpSource, "sql": SqlSource}
    kind = table.get("type")
    if kind not in kinds:
        raise ConfigError(f'{where}.type: expected "http" or "sql", got {kind!r}')
    source: Source = kinds[kind].from_dict(where, table)
    return source
