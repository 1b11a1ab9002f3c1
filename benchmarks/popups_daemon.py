"""The daemon with a naive popup hub, for benchmarks/popups.py's baseline.

What a first hub usually looks like: for each frame, `await ws.send(frame)` to each recipient
in turn, from one sender task (on_update cannot await, so frames wait for it in one unbounded
queue, in order). Everything else is pbxlink's: the same routing, the same messages built and
encoded once per update (it only replaces `Hub._send`), the same connections and welcome. So
the two hubs differ in one thing: how a frame gets from the daemon to the sockets. While every
client reads, `send` rarely waits; one client that stops reading makes every `send` after its
buffers fill wait for it.

Run: `python benchmarks/popups_naive.py --config FILE` (as `pbxlink run --config FILE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed

import pbxlink.daemon
from pbxlink.cli import main as pbxlink_main
from pbxlink.hub import Hub, messages
from pbxlink.hub.messages import Message
from pbxlink.hub.server import _Client


class NaiveHub(Hub):
    """pbxlink's hub with the naive send path: one awaited `send` per client, in turn."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._outbox: asyncio.Queue[tuple[tuple[_Client, ...], bytes]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await super().start()
        self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await super().close()

    def _send(self, recipients: set[_Client], build: Callable[[], Message]) -> None:
        if recipients:
            self._outbox.put_nowait((tuple(recipients), messages.encode(build())))

    async def _send_all(self) -> None:
        while True:
            recipients, frame = await self._outbox.get()
            for client in recipients:
                if client.closing:
                    continue
                with contextlib.suppress(ConnectionClosed):
                    await client.ws.send(frame, text=True)
                    self.frames_sent += 1


def main() -> int:
    pbxlink.daemon.Hub = NaiveHub  # type: ignore[misc]
    return pbxlink_main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
