"""The popup hub: a WebSocket server that pushes client cards to the operators whose phones ring.

Call updates arrive on the AMI read path, so `on_update` and `on_card` never await: they
update the hub's view of the calls in progress, build each message once, encode it once and
put the same bytes in the bounded queue of every recipient. Each client has a writer task
draining its queue; a client whose queue is full is closed (4008) on the spot, so a stalled
browser costs a little memory for a moment and never delays anybody else (websockets'
`broadcast()` would instead buffer without bound, or, on a full buffer, drop frames silently).

Who gets what (docs/popup-protocol.md): operators the calls that rang, reached or were
transferred to one of their extensions; supervisors and admins (wallboards) every call, and
`too_long`. Routing is by extension, through an index, not by asking every client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from pbxlink.calls import (
    Answered,
    CallEnded,
    CallRecord,
    CallUpdate,
    Changed,
    RingEnded,
    Ringing,
    TooLong,
    Transferred,
)
from pbxlink.clients.card import CallCard, client_number
from pbxlink.clients.directory import Directory
from pbxlink.config import Config, ConfigError
from pbxlink.hub import messages
from pbxlink.hub.card import card_dict, operator_names
from pbxlink.hub.messages import CloseWith, Message
from pbxlink.hub.origin import same_host
from pbxlink.loglimit import LogLimit
from pbxlink.operators import Operator, hash_token
from pbxlink.tls import TlsFilesError, server_context

log = structlog.get_logger("pbxlink.hub")

HELLO_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 4096  # a hello is ~100 bytes; nothing else comes from clients
SEND_BUFFER_BYTES = 64 * 1024  # the kernel's share of a stalled client's backlog
WRITE_BUFFER_BYTES = 32 * 1024  # and the process's, before frames wait in the queue
CLOSE_TIMEOUT_S = 5.0
REFRESH_DELAY_S = 0.2  # client edits within this long refresh the cards once
MISSED = frozenset({"no_answer", "busy"})
WALLBOARD_ROLES = frozenset({"supervisor", "admin"})
REFUSALS = ("hub.auth_failed", "hub.origin_refused", "hub.protocol_error")


@dataclass(slots=True, eq=False)
class _Client:
    ws: ServerConnection
    operator: Operator
    queue: asyncio.Queue[bytes]
    writer: asyncio.Task[None] | None = None
    idle: bool = False  # the writer waits for a frame: nothing of this client is in flight
    closing: bool = False

    @property
    def wallboard(self) -> bool:
        return self.operator.role in WALLBOARD_ROLES


@dataclass(slots=True)
class _Live:
    """A call in progress as the hub sees it: enough to route, and to welcome a reload."""

    call: CallRecord
    card: CallCard | None = None
    ringing: dict[str, float] = field(default_factory=dict)  # extension -> ring start
    shown: set[str] = field(default_factory=set)  # extensions that were sent the call
    missed: set[str] = field(default_factory=set)  # rings that ended no_answer/busy
    holder: str | None = None  # the extension holding the answered call
    answered_at: float | None = None
    answer_estimated: bool = False  # answered in an AMI gap: the stored time may come later

    @property
    def announced(self) -> bool:
        """The wallboards were sent the call: it rang or reached someone, or was answered."""
        return bool(self.shown) or self.answered_at is not None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class Hub:
    """`await start()`, feed it `on_update`/`on_card`, `await close()`."""

    def __init__(
        self,
        config: Config,
        *,
        origins: Iterable[str] | None = None,
        directory: Directory | None = None,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        send_buffer_bytes: int = SEND_BUFFER_BYTES,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.config = config
        #: pages allowed to connect; empty: the page pbxlink serves (hub/origin.py)
        self.origins = frozenset(config.hub.origins if origins is None else origins)
        self.web_port = config.web.port  # the daemon sets the bound one
        self.directory = directory
        self.hello_timeout_s = hello_timeout_s
        self.max_message_bytes = max_message_bytes
        self.send_buffer_bytes = send_buffer_bytes
        self.close_timeout_s = close_timeout_s
        self.port: int | None = None
        self._operators = list(config.operators)
        self._names = operator_names(self._operators)
        self._calls: dict[str, _Live] = {}
        self._clients: set[_Client] = set()
        self._by_ext: dict[str, set[_Client]] = {}
        self._wallboards: set[_Client] = set()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresh: asyncio.Task[None] | None = None
        self._stale = False
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
        return len(self._clients)

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
        if self._refresh is not None:
            self._tasks.add(self._refresh)  # cancelled and awaited with the rest below
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._calls.clear()
        log.info("hub.closed", frames_sent=self.frames_sent, dropped_slow=self.dropped_slow)

    # -- inputs from the daemon (on the AMI read path: never await) ------------------------------

    def on_update(self, update: CallUpdate) -> None:
        call = update.call
        live = self._calls.get(call.call_id)
        if isinstance(update, CallEnded):
            if live is not None:
                del self._calls[call.call_id]
                live.call = call
                self._ended(live, update.at)
            return
        if live is None:
            live = self._calls[call.call_id] = _Live(call)
        live.call = call
        if isinstance(update, Ringing):
            ext = update.extension
            live.ringing[ext] = update.at
            live.shown.add(ext)
            self._send(
                self._audience((ext,)),
                lambda: messages.ringing(call.call_id, ext, update.at, self._card(live, ext)),
            )
        elif isinstance(update, RingEnded):
            live.ringing.pop(update.extension, None)
            if update.outcome in MISSED:
                live.missed.add(update.extension)
        elif isinstance(update, Answered):
            who = update.extension
            if who is None and call.direction == "outbound":
                who = call.caller_number or None  # the far end answered the operator's call
            live.holder, live.answered_at = who, update.at
            live.answer_estimated = "answered_at" in call.estimated
            live.ringing.clear()
            if who is not None:
                live.shown.add(who)
            self._send(
                self._audience(live.shown),
                lambda: messages.answered(
                    call.call_id, update.extension, update.at, self._card(live, who)
                ),
            )
        elif isinstance(update, Transferred):
            live.holder = update.extension
            live.shown.add(update.extension)
            self._send(
                self._audience(live.shown),
                lambda: messages.transferred(
                    call.call_id,
                    update.extension,
                    update.kind,
                    update.at,
                    self._card(live, update.extension),
                ),
            )
        elif isinstance(update, Changed):
            # after a restart the tracker adopts what the previous run stored: a reload's
            # welcome then shows the call's real answer time, not the resync's estimate
            if live.answer_estimated and "answered_at" not in call.estimated:
                live.answered_at, live.answer_estimated = call.answered_at, False
        elif isinstance(update, TooLong):
            talk_s, threshold_s = update.talk_s, update.threshold_s
            self._send(
                set(self._wallboards),
                lambda: messages.too_long(
                    call.call_id, update.at, talk_s, threshold_s, self._card(live, live.holder)
                ),
            )

    def on_card(self, call_id: str, card: CallCard) -> None:
        """The call's card was found or completed; a call already shown gets client_updated."""
        live = self._calls.get(call_id)
        if live is not None:
            live.card = card
            self._card_changed(live)

    def on_clients_changed(self) -> None:
        """The directory committed a write: re-read the clients of the calls in progress."""
        self._stale = True
        if self.directory is not None and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._refresh_cards())

    def set_operators(self, operators: Iterable[Operator]) -> None:
        """New operators (a config reload): a removed token is closed with 4002, a changed
        operator keeps its connection with the new extensions and role."""
        self._operators = list(operators)
        self._names = operator_names(self._operators)
        for client in list(self._clients):
            now = self._operator_of(client.operator.token_hash)
            if now is None:
                log.info("hub.revoked", operator=client.operator.name)
                self._drop(client, messages.TOKEN_REVOKED, "token no longer valid")
            elif now != client.operator:
                self._unindex(client)
                client.operator = now
                self._index(client)

    # -- routing ---------------------------------------------------------------------------------

    def _audience(self, extensions: Iterable[str], *, wallboards: bool = True) -> set[_Client]:
        out = set(self._wallboards) if wallboards else set()
        for ext in extensions:
            out.update(self._by_ext.get(ext, ()))
        return out

    def _send(self, recipients: set[_Client], build: Callable[[], Message]) -> None:
        """Build the message only if someone gets it; encode it once for all of them."""
        if not recipients:
            return
        frame = messages.encode(build())
        for client in recipients:
            self._push(client, frame)

    def _card(self, live: _Live, extension: str | None, *, final: bool = False) -> Message:
        return card_dict(
            live.call,
            live.card,
            company=self.config.company,
            names=self._names,
            extension=extension,
            final=final,
        )

    def _card_changed(self, live: _Live) -> None:
        if not live.announced:
            return  # the first message about the call will carry the card
        ext = live.holder or next(reversed(live.ringing), None)
        self._send(
            self._audience(live.shown),
            lambda: messages.client_updated(live.call.call_id, self._card(live, ext)),
        )

    def _ended(self, live: _Live, at: float) -> None:
        call = live.call
        if live.announced:
            self._send(self._audience(live.shown), lambda: messages.ended(call, at))
        if call.status == "answered":
            return
        for ext in sorted(live.missed):
            self._send(
                self._audience((ext,), wallboards=False),
                lambda ext=ext: messages.missed(
                    call.call_id, ext, at, self._card(live, ext, final=True)
                ),
            )

    def _calls_for(self, client: _Client) -> list[Message]:
        """The welcome's calls: what this client's page should be showing right now."""
        mine = set(client.operator.extensions)
        out: list[Message] = []
        for live in self._calls.values():
            cid = live.call.call_id
            # answered, unless its holder's phone still rings (a blind transfer's target)
            if live.answered_at is not None and live.holder not in live.ringing:
                if client.wallboard or live.holder in mine:
                    card = self._card(live, live.holder)
                    out.append(messages.answered(cid, live.holder, live.answered_at, card))
                continue
            ringing = [e for e in live.ringing if client.wallboard or e in mine]
            if ringing:
                ext = ringing[-1]
                out.append(messages.ringing(cid, ext, live.ringing[ext], self._card(live, ext)))
        return out

    async def _refresh_cards(self) -> None:
        """Cards of calls in progress after a client edit. The daemon's CallCard is updated in
        place, so the call log links the call to the client as it is now."""
        assert self.directory is not None
        while self._stale:
            await asyncio.sleep(REFRESH_DELAY_S)
            self._stale = False
            for live in list(self._calls.values()):
                card, call = live.card, live.call
                number = client_number(call)
                if card is None or not number:
                    continue
                try:
                    clients = await self.directory.lookup(number)
                except Exception:
                    log.exception("hub.refresh_failed", call_id=call.call_id)
                    return
                if clients != card.clients and self._calls.get(call.call_id) is live:
                    card.clients = clients
                    self._card_changed(live)

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
        self._unindex(client)
        if client.writer is not None:
            client.writer.cancel()
        self._spawn(client.ws.close(code, reason))

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _index(self, client: _Client) -> None:
        self._clients.add(client)
        if client.wallboard:
            self._wallboards.add(client)
        for ext in client.operator.extensions:
            self._by_ext.setdefault(ext, set()).add(client)

    def _unindex(self, client: _Client) -> None:
        self._clients.discard(client)
        self._wallboards.discard(client)
        for ext in client.operator.extensions:
            owners = self._by_ext.get(ext)
            if owners is not None:
                owners.discard(client)
                if not owners:
                    del self._by_ext[ext]

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """`[hub] origins` when given, else the page pbxlink serves under the name in `host`."""
        if self.origins:
            return origin in self.origins
        return same_host(origin, host, web_port=self.web_port, web_tls=self.config.web.tls)

    def _operator_of(self, token_hash: str) -> Operator | None:
        for op in self._operators:
            if hmac.compare_digest(op.token_hash, token_hash):
                return op
        return None

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
        client = _Client(ws, operator, asyncio.Queue(self.config.hub.queue_frames))
        # welcome is queued before any update can be: the page sees the calls, then changes
        client.queue.put_nowait(
            messages.encode(
                messages.welcome(operator, self.config.company, self._calls_for(client))
            )
        )
        self._index(client)
        self.connections += 1
        client.writer = asyncio.get_running_loop().create_task(self._write(client))
        log.info(
            "hub.connected",
            operator=operator.name,
            role=operator.role,
            extensions=list(operator.extensions),
            remote=remote,
            clients=len(self._clients),
        )
        try:
            async for _ in ws:  # clients send nothing after hello
                if self._operator_of(client.operator.token_hash) is None:
                    raise CloseWith(messages.TOKEN_REVOKED, "token no longer valid")
                raise CloseWith(messages.PROTOCOL_ERROR, "nothing is expected after hello")
        except CloseWith as exc:
            self._refuse(exc, remote)
            client.closing = True
            await ws.close(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        finally:
            self._unindex(client)
            if client.writer is not None:
                client.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await client.writer
            log.info(
                "hub.disconnected",
                operator=operator.name,
                remote=remote,
                code=ws.close_code,
                clients=len(self._clients),
            )

    async def _hello(self, ws: ServerConnection) -> Operator:
        try:
            async with asyncio.timeout(self.hello_timeout_s):
                raw = await ws.recv()
        except TimeoutError:
            raise CloseWith(
                messages.BAD_TOKEN, f"no hello within {self.hello_timeout_s:g} s"
            ) from None
        operator = self._operator_of(hash_token(messages.parse_hello(raw)))
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
