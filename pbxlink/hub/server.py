"""The popup hub: a WebSocket server, transport only. The desk (pbxlink/desk/) decides who is
told what; the hub authenticates the sockets, tells the desk who came and went, and carries
out its `Send`s and `Close`s.

`send` is called on the AMI read path, so it never awaits: it encodes the message once and
puts the same bytes in the bounded queue of every recipient. Each client has a writer task
draining its queue; a client whose queue is full is closed (4008) on the spot, so a stalled
browser costs a little memory for a moment and never delays anybody else (websockets'
`broadcast()` would instead buffer without bound, or, on a full buffer, drop frames silently).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from pbxlink.desk.events import SessionClosed, SessionOpened
from pbxlink.hub import messages
from pbxlink.hub.messages import CloseWith, Message
from pbxlink.hub.origin import same_host
from pbxlink.hub.settings import Config
from pbxlink.loglimit import LogLimit
from pbxlink.operators import Operator, Operators, hash_token
from pbxlink.settings import ConfigError
from pbxlink.tls import TlsFilesError, server_context

log = structlog.get_logger("pbxlink.hub")

HELLO_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 4096  # a hello is ~100 bytes; nothing else comes from clients
SEND_BUFFER_BYTES = 64 * 1024  # the kernel's share of a stalled client's backlog
WRITE_BUFFER_BYTES = 32 * 1024  # and the process's, before frames wait in the queue
CLOSE_TIMEOUT_S = 5.0
REFUSALS = ("hub.auth_failed", "hub.origin_refused", "hub.protocol_error")


@dataclass(slots=True, eq=False)
class _Client:
    ws: ServerConnection
    operator: Operator
    session: int
    queue: asyncio.Queue[bytes]
    writer: asyncio.Task[None] | None = None
    idle: bool = False  # the writer waits for a frame: nothing of this client is in flight
    closing: bool = False


SessionEvent = SessionOpened | SessionClosed


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Hub:
    """`await start()`; the desk's `Send`s go to `send`, its `Close`s to `close_session`;
    `await close()`. Who connected and left is told to `on_session` (the daemon hands it to
    the desk, whose welcome `Send` then comes back before anything else can)."""

    def __init__(
        self,
        config: Config,
        operators: Operators,
        on_session: Callable[[SessionEvent], None],
        *,
        origins: Iterable[str] | None = None,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        send_buffer_bytes: int = SEND_BUFFER_BYTES,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.operators = operators
        self.on_session = on_session
        #: pages allowed to connect; empty: the page pbxlink serves (hub/origin.py)
        self.origins = frozenset(config.hub.origins if origins is None else origins)
        self.web_port = config.web.port  # the daemon sets the bound one
        self.hello_timeout_s = hello_timeout_s
        self.max_message_bytes = max_message_bytes
        self.send_buffer_bytes = send_buffer_bytes
        self.close_timeout_s = close_timeout_s
        self.port: int | None = None
        self._sessions: dict[int, _Client] = {}
        self._next_session = itertools.count(1)
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # counters for /metrics
        self.connections = 0  # clients that passed hello, ever
        self.frames_sent = 0
        self.dropped_slow = 0
        self.auth_failed = 0
        self.protocol_errors = 0
        #: what strangers can make the hub log, a few lines a minute (counted in /metrics)
        self.log_limit = LogLimit(REFUSALS)


    @property
    def clients(self) -> int:
        return len(self._sessions)

    @property
    def tls(self) -> bool:
        return self.config.hub.tls_cert_file is not None

    def url_for(self, host: str) -> str:
        """What a page loaded from `host` connects to."""
        if self.config.hub.public_url:
            return self.config.hub.public_url
        return f"{'wss' if self.tls else 'ws'}://{_bracket(host)}:{self.port}/"

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        hub = self.config.hub
        context = None
        if hub.tls_cert_file is not None and hub.tls_key_file is not None:
            try:
                context = server_context(hub.tls_cert_file, hub.tls_key_file)
            except TlsFilesError as exc:  # the page's https:// is built the same way
                raise ConfigError(f"[hub] tls_cert_file and tls_key_file: {exc}") from exc
        try:
            self._server = await self._serve(context)
        except OSError as exc:
            raise OSError(
                exc.errno, f"[hub] {hub.host}:{hub.port}: cannot listen: {exc.strerror}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "hub.listening",
            host=hub.host,
            port=self.port,
            tls=self.tls,
            origins=sorted(self.origins),
        )

    async def _serve(self, context: ssl.SSLContext | None) -> Server:
        hub = self.config.hub
        return await serve(
            self._handle,
            hub.host,
            hub.port,
            ssl=context,
            compression=None,  # per-connection compression would undo encode-once
            max_size=self.max_message_bytes,
            ping_interval=hub.heartbeat_s,
            ping_timeout=hub.heartbeat_s,
            close_timeout=self.close_timeout_s,
            write_limit=WRITE_BUFFER_BYTES,
        )

    async def close(self) -> None:
        """Say goodbye (1001) to every client and stop; waits for their handlers."""
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("hub.closed", frames_sent=self.frames_sent, dropped_slow=self.dropped_slow)

    # -- what the desk says (on the AMI read path: never await) --------------------------------

    def send(self, sessions: Iterable[int], message: Message) -> None:
        """Encode once; the same bytes to every one of `sessions` still connected."""
        frame = messages.encode(message)
        for session in sessions:
            client = self._sessions.get(session)
            if client is not None:
                self._push(client, frame)

    def close_session(self, session: int, code: int, reason: str) -> None:
        client = self._sessions.get(session)
        if client is None:
            return
        if code == messages.TOKEN_REVOKED:
            log.info("hub.revoked", operator=client.operator.name)
        self._drop(client, code, reason)

    # -- clients ---------------------------------------------------------------------------------

    def _push(self, client: _Client, frame: bytes) -> None:
        """Straight to the socket while the client keeps up (no task switch: what
        `broadcast()` does); into its queue once the socket pushes back, in order."""
        if client.closing:
            return
        if (
            client.idle
            and client.queue.empty()
            and client.ws.transport.get_write_buffer_size() < WRITE_BUFFER_BYTES
        ):
            broadcast((client.ws,), frame, text=True)
            self.frames_sent += 1
            return
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped_slow += 1
            log.warning(
                "hub.dropped_slow",
                operator=client.operator.name,
                remote=_remote(client.ws),
                queued=client.queue.qsize(),
            )
            self._drop(client, messages.TOO_SLOW, "too slow: fell too many messages behind")

    def _drop(self, client: _Client, code: int, reason: str) -> None:
        """Close without waiting: the writer stops now, the close handshake runs on its own."""
        client.closing = True
        self._forget(client)
        if client.writer is not None:
            client.writer.cancel()
        self._spawn(client.ws.close(code, reason))

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, client: _Client) -> None:
        """The client is gone (or going): no more frames for it; the desk hears of it once."""
        if self._sessions.pop(client.session, None) is not None:
            self.on_session(SessionClosed(client.session))

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """`[hub] origins` when given, else the page pbxlink serves under the name in `host`."""
        if self.origins:
            return origin in self.origins
        return same_host(origin, host, web_port=self.web_port, web_tls=self.config.web.tls)

    async def _handle(self, ws: ServerConnection) -> None:
        remote = _remote(ws)
        origin = ws.request.headers.get("Origin") if ws.request is not None else None
        host = ws.request.headers.get("Host") if ws.request is not None else None
        if origin is not None and not self._origin_allowed(origin, host):
            self.log_limit.warning(log, "hub.origin_refused", origin=origin[:200], remote=remote)
            await ws.close(messages.ORIGIN_REFUSED, "origin not allowed")
            return
        sock = ws.transport.get_extra_info("socket")
        if sock is not None and self.send_buffer_bytes:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
        try:
            operator = await self._hello(ws)
        except CloseWith as exc:
            self._refuse(exc, remote)
            await ws.close(exc.code, exc.reason)
            return
        except ConnectionClosed:
            return
        session = next(self._next_session)
        client = _Client(ws, operator, session, asyncio.Queue(self.config.hub.queue_frames))
        self._sessions[session] = client
        # the desk's welcome is queued now, before any update can be: the page sees the
        # calls, then changes
        self.on_session(SessionOpened(session, operator))
        self.connections += 1
        client.writer = asyncio.get_running_loop().create_task(self._write(client))
        log.info(
            "hub.connected",
            operator=operator.name,
            role=operator.role,
            extensions=list(operator.extensions),
            remote=remote,
            clients=len(self._sessions),
        )
        try:
            async for _ in ws:  # clients send nothing after hello
                if self.operators.by_hash(client.operator.token_hash) is None:
                    raise CloseWith(messages.TOKEN_REVOKED, "token no longer valid")
                raise CloseWith(messages.PROTOCOL_ERROR, "nothing is expected after hello")
        except CloseWith as exc:
            self._refuse(exc, remote)
            client.closing = True
            await ws.close(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        finally:
            self._forget(client)
            if client.writer is not None:
                client.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client.writer
            log.info(
                "hub.disconnected",
                operator=operator.name,
                remote=remote,
                code=ws.close_code,
                clients=len(self._sessions),
            )

    async def _hello(self, ws: ServerConnection) -> Operator:
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            raise CloseWith(
                messages.BAD_TOKEN, f"no hello within {self.hello_timeout_s:g} s"
            ) from None
        operator = self.operators.by_hash(hash_token(messages.parse_hello(raw)))
        if operator is None:
            raise CloseWith(messages.BAD_TOKEN, "invalid token")
        return operator

    def _refuse(self, exc: CloseWith, remote: str | None) -> None:
        if exc.code == messages.PROTOCOL_ERROR:
            self.protocol_errors += 1
            self.log_limit.warning(log, "hub.protocol_error", reason=exc.reason, remote=remote)
        else:
            self.auth_failed += exc.code == messages.BAD_TOKEN
            self.log_limit.warning(
                log, "hub.auth_failed", code=exc.code, reason=exc.reason, remote=remote
            )

    async def _write(self, client: _Client) -> None:
        ws, queue = client.ws, client.queue
        with contextlib.suppress(ConnectionClosed):
            while True:
                client.idle = True
                frame = await queue.get()
                client.idle = False
                await ws.send(frame, text=True)
                self.frames_sent += 1


def _remote(ws: ServerConnection) -> str | None:
    address = ws.remote_address
    return str(address[0]) if address else None
