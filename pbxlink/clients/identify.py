"""Who is calling: the lookups the desk asks for, carried out against the directory and the
CRM sources. The directory answers first (a millisecond); the CRM sources get the configured
budget, and a slow one's answer comes later. An unknown number becomes a `potential` client."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pbxlink.clients.directory import Directory
from pbxlink.clients.model import Client
from pbxlink.clients.sources import CardFields, LookupChain, LookupResult
from pbxlink.desk.card import CallCard

log = structlog.get_logger("pbxlink.clients")


@dataclass(slots=True)
class Identified:
    card: CallCard
    later: Awaitable[CardFields | None] | None  # a slow source's answer, still to come


class Identifier:
    def __init__(
        self, directory: Directory, sources: LookupChain, observe: Callable[[float], None]
    ) -> None:
        self.directory = directory
        self.sources = sources
        self.observe = observe  # seconds each lookup took (the /metrics histogram)

    async def identify(self, call_id: str, number: str) -> Identified | None:
        """The card for `number`; None when there is nobody to look up, or the directory
        failed (logged: a broken directory must not cost the call its record)."""
        started = time.perf_counter()
        try:
            parsed = self.directory.numbers.normalize(number)
            if parsed is None:
                return None  # anonymous, or an extension: nobody to look up
            clients = await self.directory.lookup(number)
            new_client = False
            if not clients:
                new = await self.directory.register_unknown(number)
                clients = [new] if new is not None else []
                new_client = True
            found = await self.sources.lookup(parsed)
        except Exception:
            log.exception("clients.lookup_failed", call_id=call_id)
            return None
        finally:
            self.observe(time.perf_counter() - started)
        later = _fields_of(found.pending) if found.pending is not None else None
        return Identified(CallCard(clients, found.fields, new_client), later)

    async def clients(self, call_id: str, number: str) -> list[Client] | None:
        """The directory's clients for `number` again (after an edit); None if it failed."""
        try:
            return await self.directory.lookup(number)
        except Exception:
            log.exception("clients.refresh_failed", call_id=call_id)
            return None


async def _fields_of(pending: Awaitable[LookupResult[Any] | None]) -> CardFields | None:
    later = await pending
    return later.fields if later is not None else None
