"""The desk and the hub wired as the daemon wires them, for tests that drive popups without an
AMI link: the desk's `Send`s and `Close`s go to the hub; a `Refresh` re-reads the directory
(when one is given); every other command is kept in `commands` for the test to look at."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from pbxlink.calls import CallUpdate
from pbxlink.clients.directory import Directory
from pbxlink.config import Config
from pbxlink.desk import (
    ClientsChanged,
    Close,
    Command,
    Desk,
    LookedUp,
    Refresh,
    Refreshed,
    RosterChanged,
    Send,
)
from pbxlink.desk.card import CallCard
from pbxlink.hub import Hub
from pbxlink.operators import Operator, Operators
from pbxlink.web.urls import client_photo


class Popups:
    def __init__(
        self, config: Config, *, directory: Directory | None = None, **hub: Any
    ) -> None:
        self.operators = Operators(config.operators)
        self.desk = Desk(
            company=config.company,
            operators=config.operators,
            too_long=config.thresholds,
            photo_url=client_photo,
        )
        self.hub = Hub(config, self.operators, self.tell, **hub)
        self.operators.listeners.append(lambda ops: self.tell(RosterChanged(ops)))
        self.directory = directory
        self.commands: list[Command] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def tell(self, event: object) -> None:
        for command in self.desk.handle(event):
            if isinstance(command, Send):
                self.hub.send(command.sessions, command.message)
            elif isinstance(command, Close):
                self.hub.close_session(command.session, command.code, command.reason)
            elif isinstance(command, Refresh) and self.directory is not None:
                task = asyncio.get_running_loop().create_task(self._refresh(command))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self.commands.append(command)

    async def _refresh(self, command: Refresh) -> None:
        assert self.directory is not None
        for call_id, number in command.calls:
            self.tell(Refreshed(call_id, tuple(await self.directory.lookup(number))))

    # -- what the daemon's adapters say, by the names the tests use -----------------------------

    def on_update(self, update: CallUpdate) -> None:
        self.tell(update)

    def on_card(self, call_id: str, card: CallCard) -> None:
        self.tell(LookedUp(call_id, card))

    def on_clients_changed(self) -> None:
        self.tell(ClientsChanged())

    def set_operators(self, operators: Iterable[Operator]) -> None:
        self.operators.replace(operators)

    async def start(self) -> None:
        await self.hub.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hub.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hub, name)  # port, origins, counters, url_for, …
