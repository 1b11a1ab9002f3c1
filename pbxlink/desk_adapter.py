"""Carries out the desk's commands: the desk decides, this touches the world. A `Send` or a
`Close` goes to the popup hub, a `Snapshot` and a `Record` to the call log, a `Lookup` runs
through the client directory and the CRM (its answers go back to the desk), a `Refresh` re-reads
the directory after an edit (edits within REFRESH_DELAY_S refresh once), an `Alert` is logged
and counted. Everything the desk is told goes through `tell`, on the event loop's thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from pbxlink.calllog import CallLogStore
from pbxlink.calls import CallRecord, TooLong
from pbxlink.clients.identify import Identifier
from pbxlink.desk import (
    Alert,
    CardCompleted,
    ClientsChanged,
    Close,
    Desk,
    LinkClient,
    LookedUp,
    Lookup,
    Record,
    Refresh,
    Refreshed,
    Send,
    Snapshot,
)
from pbxlink.hub import Hub
from pbxlink.web import Metrics

log = structlog.get_logger("pbxlink.desk")

REFRESH_DELAY_S = 0.2  # client edits within this long refresh the cards once


class DeskAdapter:
    def __init__(
        self, desk: Desk, hub: Hub, store: CallLogStore, identifier: Identifier, metrics: Metrics
    ) -> None:
        self.desk = desk
        self.hub = hub
        self.store = store
        self.identifier = identifier
        self.metrics = metrics
        self._commands: dict[type, Callable[[Any], None]] = {
            Send: lambda c: hub.send(c.sessions, c.message),
            Close: lambda c: hub.close_session(c.session, c.code, c.reason),
            Snapshot: lambda c: store.note_open(c.call, c.at),
            Record: self._record,
            LinkClient: lambda c: store.set_client(c.call_id, c.client_id),
            Lookup: lambda c: self._spawn(self._lookup(c.call_id, c.number)),
            Refresh: lambda c: self._spawn(self._refresh(c.calls)),
            Alert: self._alert,
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._stale = False  # the directory changed: cards of calls in progress to re-read
        self._refreshing: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Lookups and refreshes still running are cancelled (the calls keep their records)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def tell(self, event: object) -> None:
        """One input for the desk (a call update, a lookup's answer, a session, a roster, time);
        its commands carried out at once, in order. On the AMI read path: nothing waits."""
        for command in self.desk.handle(event):
            try:
                self._commands[type(command)](command)
            except Exception:  # a consumer's bug must not stop the AMI reader
                log.exception("desk.command_failed", command=type(command).__name__)

    def _record(self, c: Record) -> None:
        self.store.submit(c.call, client_id=c.client_id)
        self.metrics.call_ended(c.call.status)
        _log_ended(c.call)

    def _alert(self, c: Alert) -> None:
        self.metrics.calls_too_long += 1
        _log_too_long(c.update)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, call_id: str, number: str) -> None:
        found = await self.identifier.identify(call_id, number)
        if found is not None:
            self.tell(LookedUp(call_id, found.card))
            if found.later is not None and (fields := await found.later) is not None:
                self.tell(CardCompleted(call_id, fields))

    def clients_changed(self) -> None:
        """The directory committed a write: edits within REFRESH_DELAY_S re-read cards once."""
        self._stale = True
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._debounce())
            self._tasks.add(self._refreshing)
            self._refreshing.add_done_callback(self._tasks.discard)

    async def _debounce(self) -> None:
        while self._stale:
            await asyncio.sleep(REFRESH_DELAY_S)
            self._stale = False
            self.tell(ClientsChanged())

    async def _refresh(self, calls: tuple[tuple[str, str], ...]) -> None:
        for call_id, number in calls:
            clients = await self.identifier.clients(call_id, number)
            if clients is None:
                return
            self.tell(Refreshed(call_id, tuple(clients)))


def _log_ended(r: CallRecord) -> None:
    """One journal line per call: enough to follow the PBX with `journalctl -f`."""
    log.info(
        "call.ended",
        call_id=r.call_id,
        direction=r.direction,
        caller=r.caller_number,
        called=r.called_number,
        status=r.status,
        answered_by=r.answered_by,
        rung=r.extensions_rung,
        wait_s=r.wait_s,
        talk_s=r.talk_s,
        partial=r.partial,
    )


def _log_too_long(u: TooLong) -> None:
    r = u.call
    log.info(
        "call.too_long",
        call_id=r.call_id,
        direction=r.direction,
        caller=r.caller_number,
        answered_by=r.answered_by,
        talk_s=u.talk_s,
        threshold_s=u.threshold_s,
    )
