"""The live AMI link: one panoramisk `Manager` session at a time, kept alive.

panoramisk connects, logs in and dispatches; everything else a daemon needs is here:
- a refused login is an `AuthError` naming host, port and user (at start-up the daemon exits
  non-zero with it; after the link has once been up it is retried with backoff);
- reconnects back off exponentially with jitter, capped, and are logged once per state
  change, not once per attempt (at start-up too: `ami.connecting`, then one
  `ami.connect_failed` however many attempts fail, then `ami.connected`);
- a lost link says who ended it: Asterisk (it closed the socket), the network (a reset), or
  pbxlink itself (no Pong in time; an error while reading the stream). Only the first is
  logged as "closed by Asterisk";
- an Asterisk restart is logged as such (`ami.asterisk_restarted`): FullyBooted's Uptime puts
  the boot at another moment, by the tracker's own rule (`BOOT_TOLERANCE_S`). The link only
  logs it: FullyBooted goes to `on_event` like any event, and the tracker decides what becomes
  of the calls in progress (a restart ends them as partial);
- a Ping every `ping_interval_s` must be answered within `ping_timeout_s`, else the peer is
  dead (a half-open socket) and the link is closed and made again;
- after every login, `FullyBooted` calls `on_up(at)`, goes to `on_event`, and a
  `CoreShowChannels` list is requested; its items arrive through `on_event` in stream order,
  so the tracker can resynchronise;
- what the framing counted as malformed (invalid UTF-8, a line or a message over its limit)
  is logged here (`ami.invalid_utf8`, once a session; `ami.line_too_long`,
  `ami.message_too_long`): the framing itself never logs;
- the reader never waits: `on_event` is called synchronously from `data_received` and must
  only do CPU work and hand off (Asterisk drops readers that stall).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import math
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
from panoramisk import Manager

from pbxlink.ami.framing import Message, Subscription
from pbxlink.ami.protocol import FramedAMIProtocol
from pbxlink.ami.settings import AmiConfig
from pbxlink.calls.record import iso_utc
from pbxlink.calls.tracker import BOOT_TOLERANCE_S

log = structlog.get_logger("pbxlink.ami")


class LinkState(enum.StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    AUTH_FAILED = "auth_failed"


class AuthError(RuntimeError):
    """Asterisk refused our login: wrong secret, unknown user, or an ACL (`permit=`)."""


class LinkLost(ConnectionError):
    pass


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager without its own reconnect and its Pong-blind pinger."""

    def __init__(self, on_lost: Callable[[Exception | None], None], **config: Any) -> None:
        super().__init__(**config)
        self._on_lost = on_lost

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # the link sees the error where it awaits the connect, and decides
        super().connection_made(f)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self._on_lost(exc)

    def ping(self) -> None:
        """The link runs its own pinger, which checks the answer."""


class AmiLink:
    def __init__(
        self,
        config: AmiConfig,
        *,
        subscription: Subscription,
        on_event: Callable[[Message, float], None],
        on_up: Callable[[float], None],
        on_down: Callable[[float], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._subscription = {**subscription, "FullyBooted": None}
        self._on_event = on_event
        self._on_up = on_up
        self._on_down = on_down
        self._clock = clock
        self.state = LinkState.DOWN
        self.last_event_at: float | None = None
        self.reconnects = 0
        self.events = 0
        self._ever_up = False
        self._session_up = False
        #: when the Asterisk we talk to booted (FullyBooted's moment less its Uptime)
        self.booted_at: float | None = None
        self._lost: asyncio.Future[None] | None = None
        self._lost_why = ""  # what ended the session's connection, once it ended
        self._closing = False  # pbxlink is closing the connection itself
        #: what the framing repaired or dropped this session, as logged (`_anomalies`)
        self._session_anomalies: Counter[str] = Counter()
        self._manager: _Manager | None = None
        self._ids = itertools.count(1)

    @property
    def where(self) -> str:
        c = self.config
        return f"{'tls://' if c.tls else ''}{c.host}:{c.port} as user {c.username!r}"

    async def run(self) -> None:
        """Keep a session up until cancelled. Raises AuthError if the very first login fails."""
        attempt = 0
        if not self._ever_up:
            self._set_state(LinkState.CONNECTING)  # once: a failed attempt makes it DOWN
        while True:
            try:
                await self._session()
            except AuthError as exc:
                self._set_state(LinkState.AUTH_FAILED, error=str(exc))
                if not self._ever_up:
                    raise
            except (OSError, LinkLost, TimeoutError) as exc:
                self._set_state(LinkState.DOWN, error=_describe(exc))
            finally:
                if self._session_up:
                    attempt = 0  # it was up: the backoff starts again from the shortest
                self._close()
            delay = self._backoff(attempt)
            attempt += 1
            log.debug("ami.retry", in_s=round(delay, 2), attempt=attempt)
            await asyncio.sleep(delay)

    def close(self) -> None:
        """Shutting down: close the session on purpose (not logged as a lost link)."""
        self._close()
        if self.state is not LinkState.DOWN:
            self.state = LinkState.DOWN
            log.info("ami.closed", where=self.where)

    # -- one session -----------------------------------------------------------------------------

    async def _session(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        self._lost_why, self._closing = "", False
        self._session_anomalies = Counter()
        manager = _Manager(
            self._connection_lost,
            host=cfg.host,
            port=cfg.port,
            username=cfg.username,
            secret=cfg.secret or "",
            ssl=self._ssl_context(),
            protocol_factory=FramedAMIProtocol,
            loop=loop,
            ping_delay=10**9,
            reconnect_timeout=10**9,
        )
        manager.pbxlink_subscription = self._subscription
        manager.pbxlink_sink = self._sink
        manager.pbxlink_anomalies = self._anomalies
        self._manager = manager
        # asyncio.timeout, never wait_for: Python 3.11's wait_for loses a cancel that comes
        # as the awaited thing finishes, and a SIGTERM right after start-up then hung the
        # daemon's shutdown for good (test_startup, a stress loop: 4 hangs in 40 starts)
        async with asyncio.timeout(cfg.connect_timeout_s):
            await manager.connect()
        login = manager.authenticated_future
        if login is None:
            raise LinkLost("connected, but no login was sent")
        async with asyncio.timeout(cfg.connect_timeout_s):
            reply = await self._or_lost(login)
        if not getattr(reply, "success", False):
            message = reply.get("Message", "refused") if hasattr(reply, "get") else "refused"
            raise AuthError(f"AMI login to {self.where} failed: {message}")
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = self._session_up = True
        self._set_state(LinkState.UP)
        await self._pinger()

    async def _pinger(self) -> None:
        """Ping, and treat a missing Pong as a dead peer: panoramisk never looks at it."""
        cfg = self.config
        assert self._lost is not None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.ping_interval_s):
                    await asyncio.shield(self._lost)
            if self._lost.done():
                raise LinkLost(self._lost_why)
            manager = self._manager
            if manager is None or manager.protocol is None:
                raise LinkLost("no connection")
            pong = manager.send_action({"Action": "Ping"})
            try:
                async with asyncio.timeout(cfg.ping_timeout_s):
                    await self._or_lost(pong)
            except TimeoutError:
                raise LinkLost(f"no Pong within {cfg.ping_timeout_s:g} s: peer dead") from None

    async def _or_lost(self, fut: Any) -> Any:
        """Wait for `fut`, but give up at once if the connection drops meanwhile."""
        assert self._lost is not None
        done, _ = await asyncio.wait(
            {asyncio.ensure_future(fut), self._lost}, return_when=asyncio.FIRST_COMPLETED
        )
        if self._lost in done and not (isinstance(fut, asyncio.Future) and fut.done()):
            raise LinkLost(self._lost_why)
        return fut.result()

    def _sink(self, msg: Message) -> None:
        at = self._clock()
        self.last_event_at = at
        self.events += 1
        if msg.get("Event") == "FullyBooted":
            self._booted(at, msg.get("Uptime"))
            self._on_up(at)
            self._on_event(msg, at)  # the tracker's restart check, and the resync's start
            self._request_channels()
            return
        self._on_event(msg, at)

    def _request_channels(self) -> None:
        """Written raw, not through panoramisk's action machinery: the CoreShowChannel items
        then reach the sink in stream order with the events around them."""
        manager = self._manager
        if manager is not None and manager.protocol is not None:
            action_id = f"pbxlink-resync-{next(self._ids)}"
            manager.protocol.transport.write(
                f"Action: CoreShowChannels\r\nActionID: {action_id}\r\n\r\n".encode()
            )

    def _booted(self, at: float, header: str | None) -> None:
        """For the log only, by the tracker's rule (`resync.booted`): a boot moment that moved
        is a restart; without a usable Uptime nothing can be told."""
        try:
            uptime = float(header) if header is not None else math.nan
        except ValueError:
            uptime = math.nan
        if not 0.0 <= uptime < math.inf:
            return
        boot, before = at - uptime, self.booted_at
        self.booted_at = boot
        if before is not None and abs(boot - before) > BOOT_TOLERANCE_S:
            log.warning(
                "ami.asterisk_restarted",
                where=self.where,
                booted_at=iso_utc(boot),
                previously_booted_at=iso_utc(before),
                uptime_s=round(uptime),
            )

    def _anomalies(self, new: Counter[str]) -> None:
        """What the framing repaired or dropped in the last read (`AmiParser.anomalies`)."""
        told = self._session_anomalies
        for kind, count in sorted(new.items()):
            told[kind] += count
            if kind == "invalid_utf8" and told[kind] > count:
                continue  # once a session: a PBX in the wrong charset sends nothing else
            log.warning(f"ami.{kind}", where=self.where, count=count, session_total=told[kind])

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost_why = _why_lost(exc, self._closing)
            self._lost.set_result(None)

    def _close(self) -> None:
        self._closing = True
        manager, self._manager = self._manager, None
        was_up, self._session_up = self._session_up, False
        if manager is not None:
            protocol = manager.protocol
            if protocol is not None and getattr(protocol, "transport", None) is not None:
                protocol.transport.abort()
            manager.protocol = None
        if was_up:
            self._on_down(self._clock())

    def _ssl_context(self) -> ssl.SSLContext | bool:
        cfg = self.config
        if not cfg.tls:
            return False
        ctx = ssl.create_default_context(cafile=str(cfg.tls_ca_file) if cfg.tls_ca_file else None)
        if not cfg.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter so a fleet of daemons does not reconnect in step."""
        cfg = self.config
        ceiling = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _set_state(self, state: LinkState, **details: Any) -> None:
        if state is self.state:
            return
        self.state = state
        event = {
            LinkState.UP: "ami.reconnected" if self.reconnects else "ami.connected",
            LinkState.DOWN: "ami.disconnected" if self._ever_up else "ami.connect_failed",
            LinkState.CONNECTING: "ami.connecting",
            LinkState.AUTH_FAILED: "ami.auth_failed",
        }[state]
        level = log.warning if state in (LinkState.DOWN, LinkState.AUTH_FAILED) else log.info
        level(event, where=self.where, **details)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _why_lost(exc: Exception | None, closing: bool) -> str:
    """Who ended a connection, from what asyncio hands `connection_lost`."""
    if closing:
        return "connection closed by pbxlink"
    if exc is None:  # an orderly end of the stream from the other side
        return "connection closed by Asterisk"
    if isinstance(exc, OSError):  # a reset: the peer or anything on the way
        return f"connection lost: {_describe(exc)}"
    # data_received raised: asyncio closed the socket on our side
    return f"connection closed by pbxlink: reading the stream failed: {_describe(exc)}"
