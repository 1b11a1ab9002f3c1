"""Popup clients for benchmarks/popups.py: many raw WebSocket clients in one process.

Why raw, not the websockets client: the benchmark times the hub, not a client library. Here a
frame costs a header, a slice and a regex on its first bytes, so two worker processes keep up
with tens of thousands of frames a second on a core they share, and a frame is stamped with
the moment its bytes were read from the socket, before any parsing. The hub sends unmasked,
unfragmented, uncompressed frames (it negotiates no extension), which is all this parser
reads; pings are answered, so the hub's heartbeat keeps the clients.

Stamps are `time.monotonic()` (CLOCK_MONOTONIC, one clock for every process on the machine),
so they compare with the harness's stamp of the AMI write.

Run by the harness: `python benchmarks/popups_clients.py --port P --tokens FILE`, then one
command a line on stdin (`connect`, `count`, `dump PATH`, `quit`), one JSON line back each.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
#: what the latency is measured on (the AMI write that causes each is stamped)
TIMED = frozenset({"ringing", "answered", "ended"})
#: the hub encodes with json.dumps in the messages' own key order: type, v, call_id, extension
HEAD = re.compile(rb'\{"type":"(\w+)","v":1(?:,"call_id":"([^"]*)")?(?:,"extension":"([^"]*)")?')
CONNECT_AT_ONCE = 200  # handshakes in flight per worker (the hub checks each token in turn)

#: one timed frame: type, call_id, extension ("" when none), received at, client is a wallboard
Record = tuple[str, str, str, float, bool]


class Recorder:
    """What a worker's clients received: timed frames kept, every type counted."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.counts: Counter[str] = Counter()

    def frame(self, client: WsClient, payload: bytes, now: float) -> None:
        m = HEAD.match(payload)
        kind = m[1].decode() if m else "?"
        self.counts[kind] += 1
        if kind in TIMED and m is not None:
            ext = m[3].decode() if m[3] is not None else ""
            self.records.append((kind, m[2].decode(), ext, now, client.wallboard))
        elif kind == "welcome" and not client.welcomed.done():
            client.welcomed.set_result(None)


class WsClient(asyncio.Protocol):
    """One popup page: handshake, hello, then frames to the recorder. `pause()` stops reading,
    as a frozen tab does (its socket buffers fill, then the hub's)."""

    def __init__(self, port: int, token: str, recorder: Recorder, *, wallboard: bool) -> None:
        self.port = port
        self.token = token
        self.recorder = recorder
        self.wallboard = wallboard
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.welcomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None  # the hub's close code; 1006 when the link broke

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.buf
        buf += data
        if not self.upgraded and not self._upgrade():
            return
        pos, size = 0, len(buf)
        while size - pos >= 2:
            length, start = buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                length, start = int.from_bytes(buf[pos + 2 : pos + 4]), pos + 4
            elif length == 127:
                length, start = int.from_bytes(buf[pos + 2 : pos + 10]), pos + 10
            end = start + length
            if end > size:
                break
            self._frame(buf[pos] & 0x0F, bytes(buf[start:end]), now)
            pos = end
        del buf[:pos]

    def _upgrade(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        status = bytes(self.buf[: self.buf.find(b"\r\n")])
        if not status.startswith(b"HTTP/1.1 101"):
            self._fail(f"handshake refused: {status.decode(errors='replace')}")
            return False
        del self.buf[: end + 4]
        self.upgraded = True
        hello = {"type": "hello", "v": 1, "token": self.token}
        self._send(OP_TEXT, json.dumps(hello).encode())
        return True

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == OP_TEXT:
            self.recorder.frame(self, payload, now)
        elif opcode == OP_PING:
            self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
            self._send(OP_CLOSE, payload[:2])
            if self.transport is not None:
                self.transport.close()
            self._fail(f"closed by the hub: {self.close_code} {payload[2:].decode()}")

    def _send(self, opcode: int, payload: bytes) -> None:
        """A masked frame, as every client frame must be (payloads here are < 126 bytes or
        a hello under 600)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode]) + length + mask + masked)

    def pause(self) -> None:
        """The tab freezes: nothing more is read from the socket."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        """The frozen tab wakes up: read what waited (its close frame, if it was dropped)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = 1006
        self.transport = None
        self._fail("connection lost")

    def _fail(self, why: str) -> None:
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(why))


async def connect(
    port: int,
    token: str,
    recorder: Recorder,
    *,
    wallboard: bool,
    rcvbuf: int = 0,
    timeout: float = 60.0,
) -> WsClient:
    """A client that has its welcome. `rcvbuf` shrinks the kernel's receive buffer (a stalled
    client's fills sooner)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    _, client = await loop.create_connection(
        lambda: WsClient(port, token, recorder, wallboard=wallboard), sock=sock
    )
    async with asyncio.timeout(timeout):
        await client.welcomed
    return client


# -- the worker process ------------------------------------------------------------------------


async def serve_commands(args: argparse.Namespace) -> None:
    entries = json.loads(Path(args.tokens).read_text())  # [[token, wallboard], ...]
    recorder = Recorder()
    clients: list[WsClient] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def connect_all() -> dict[str, Any]:
        started = time.monotonic()
        limit = asyncio.Semaphore(CONNECT_AT_ONCE)

        async def one(token: str, wallboard: bool) -> WsClient | str:
            async with limit:
                try:
                    return await connect(args.port, token, recorder, wallboard=wallboard)
                except (OSError, TimeoutError, ConnectionError) as exc:
                    return f"{type(exc).__name__}: {exc}"

        done = await asyncio.gather(*(one(t, w) for t, w in entries))
        clients.extend(c for c in done if isinstance(c, WsClient))
        errors = [c for c in done if isinstance(c, str)]
        return {
            "welcomed": len(clients),
            "errors": errors[:5],
            "failed": len(errors),
            "s": time.monotonic() - started,
        }

    def count() -> dict[str, Any]:
        closed = Counter(str(c.close_code) for c in clients if c.close_code is not None)
        cpu = os.times()
        return {
            "counts": dict(recorder.counts),
            "closed": dict(closed),
            "cpu_s": cpu.user + cpu.system,
        }

    while line := await reader.readline():
        words = line.decode().split()
        if words[:1] == ["connect"]:
            answer = await connect_all()
        elif words[:1] == ["count"]:
            answer = count()
        elif words[:1] == ["dump"]:
            Path(words[1]).write_text(json.dumps(recorder.records))
            answer = {"records": len(recorder.records), **count()}
            recorder.records.clear()
            recorder.counts.clear()
        elif words[:1] == ["quit"]:
            break
        else:
            answer = {"error": f"unknown command {line.decode().strip()!r}"}
        print(json.dumps(answer), flush=True)
    for client in clients:
        client.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--port", type=int, required=True, help="the hub's port")
    ap.add_argument("--tokens", required=True, help="JSON file: [[token, wallboard], ...]")
    asyncio.run(serve_commands(ap.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
