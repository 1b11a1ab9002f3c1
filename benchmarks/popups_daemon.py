"""The daemon as benchmarks/popups.py runs it: `pbxlink run`, with its garbage collections
timed, and with `--naive` the baseline's naive popup hub in place of pbxlink's.

The naive hub is what a first hub usually looks like: for each frame, `await ws.send(frame)`
to each recipient in turn, from one sender task (on_update cannot await, so frames wait for it
in one unbounded queue, in order). Everything else is pbxlink's: the same routing, the same
messages built and encoded once per update (it only replaces `Hub.send`), the same
connections and welcome. So the two hubs differ in one thing: how a frame gets from the
daemon to the sockets. While every client reads, `send` rarely waits; once one client stops
reading and its buffers fill, every `send` after it waits for it.

Garbage collections that stop the daemon for `GC_LOG_MS` or more are written to stderr as
JSON lines (`bench.gc_pause`, CLOCK_MONOTONIC start), so the harness can put a popup's
latency next to the pauses of its window.

Run: `python benchmarks/popups_daemon.py [--naive] --config FILE` (as `pbxlink run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed

import pbxlink.daemon
from pbxlink.cli import main as pbxlink_main
from pbxlink.hub import Hub, messages
from pbxlink.hub.messages import Message
from pbxlink.hub.server import _Client

GC_LOG_MS = 5.0


class NaiveHub(Hub):
    """pbxlink's hub with the naive send path: one awaited `send` per client, in turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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

    def send(self, sessions: Iterable[int], message: Message) -> None:
        recipients = tuple(c for s in sessions if (c := self._sessions.get(s)) is not None)
        if recipients:
            self._outbox.put_nowait((recipients, messages.encode(message)))

    async def _send_all(self) -> None:
        while True:
            recipients, frame = await self._outbox.get()
            for client in recipients:
                if client.closing:
                    continue
                with contextlib.suppress(ConnectionClosed):
                    await client.ws.send(frame, text=True)
                    self.frames_sent += 1


def log_gc_pauses() -> None:
    started = 0.0

    def timed(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.monotonic()
            return
        ms = (time.monotonic() - started) * 1000
        if ms >= GC_LOG_MS:
            line = {"event": "bench.gc_pause", "generation": info["generation"], "ms": ms}
            print(json.dumps({**line, "at": started}), file=sys.stderr, flush=True)

    gc.callbacks.append(timed)


def main() -> int:
    args = sys.argv[1:]
    if "--naive" in args:
        args.remove("--naive")
        pbxlink.daemon.Hub = NaiveHub  # type: ignore[misc]
    log_gc_pauses()
    return pbxlink_main(["run", *args])


if __name__ == "__main__":
    sys.exit(main())
