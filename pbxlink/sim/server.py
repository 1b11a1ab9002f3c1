"""The built-in AMI simulator: a TCP server that speaks AMI as Asterisk 22 does.

It plays copies of recorded calls (`Scenario`) with fresh ids, so the daemon, the integration
tests and the benchmarks run without a PBX. The calls advance whether or not anyone listens,
like a real PBX: a client that connects late, or reconnects after a drop, has missed what
happened meanwhile and must ask `CoreShowChannels`, which is answered from the calls' state.

One scheduler task and one heap drive all traffic: the heap holds the next event of every
live copy and the next call starts. It can also misbehave on demand (`drop_connections`,
`set_silent`, `restart`, `send_garbage`) and drops a client that does not read, as Asterisk
does when a write times out.

`eventfilter` applies manager.conf `eventfilter` lines to the events it broadcasts, as Asterisk
does for its user. Which event of a recording passes is decided once per scenario where that
is sure: copies differ only in ids and times, and a plain-string filter (an event, variable
or application name, as the README's) either occurs in the fixed text of the event or cannot
overlap an id at all (`EventFilter.decide`). Other events, and every filter that is a real
regular expression, are checked on each copy's text. The scheduler visits only the events
that may pass, so a filter that drops 90 % of the stream also saves 90 % of the work.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import heapq
import hmac
import itertools
import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from pbxlink.ami.framing import AmiParser, Message
from pbxlink.sim.eventfilter import EventFilter
from pbxlink.sim.scenario import Scenario, ScenarioCopy, load_scenarios
from pbxlink.sim.settings import SimulatorConfig

log = structlog.get_logger("pbxlink.sim")

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
#: events sent in one go before the scheduler lets the loop breathe
BATCH = 2000
DEFAULT_MAX_WRITE_BUFFER = 4 * 1024 * 1024
LIST_COMMANDS = "Use Action: ListCommands to show available commands."


@dataclass(slots=True, frozen=True)
class FinishedCall:
    """A played copy: what a client's call record can be checked against."""

    seq: int
    scenario: str
    linkedid: str  # the call id a tracker reports for it
    started_at: float
    ended_at: float  # its last event (or, in `vanished`, the restart)


@dataclass(slots=True, frozen=True)
class _Plan:
    """What an event filter leaves of a scenario: the events the scheduler must visit."""

    stops: tuple[int, ...]  # indices of the events that may pass, and always the last one
    send: tuple[bool | None, ...]  # per stop: sent, not sent, or None: ask the filter per copy


@dataclass(slots=True, eq=False)
class _Live:
    copy: ScenarioCopy
    index: int = 0  # events played so far (sent, or dropped by the event filter)
    alive: bool = True
    plan: _Plan | None = None  # with an event filter: the stops to visit
    stop: int = 0  # the next of `plan.stops`


@dataclass(slots=True, eq=False)
class _Start:
    scenario: Scenario | None  # None: the traffic generator picks the next one
    seq: int | None = None


@dataclass(slots=True, eq=False)
class _Session(asyncio.Protocol):
    """One AMI client connection."""

    sim: AmiSimulator
    transport: asyncio.Transport | None = None
    parser: AmiParser = field(default_factory=AmiParser)
    logged_in: bool = False
    events: bool = True
    peer: str = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port, *_ = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{host}:{port}"
        self.sim._sessions.add(self)
        log.info("sim.client_connected", peer=self.peer)
        self.send(BANNER)

    def data_received(self, data: bytes) -> None:
        for frame in self.parser.feed(data):
            if isinstance(frame, Message) and self.transport is not None:
                self.sim._action(self, frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim._sessions.discard(self)
        self.transport = None
        self.logged_in = False
        log.info("sim.client_disconnected", peer=self.peer, error=str(exc) if exc else None)

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.sim.max_write_buffer:
            log.warning(
                "sim.client_too_slow",
                peer=self.peer,
                buffered=transport.get_write_buffer_size(),
            )
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.logged_in = False
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.logged_in = False
            self.transport.close()


class AmiSimulator:
    """An Asterisk manager interface that plays recorded calls. See the module docstring."""

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "pbxlink",
        secret: str = "pbxlink",
        calls_per_s: float = 0.5,
        max_calls: int = 50,
        timestamps: bool = True,
        loop: bool = True,
        speed: float = 1.0,
        uptime: float = 0.0,
        pbx_timezone: dt.tzinfo | None = None,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        eventfilter: Sequence[str] = (),
    ) -> None:
        """`calls_per_s` 0: no traffic of its own, only `play_once`. `speed` divides the
        recorded offsets (tests play a minute-long call in seconds). `uptime` is how long the
        PBX has been up at start. `pbx_timezone` (default: this machine's) is the zone of
        the dates inside events (Cdr AnswerTime, CEL EventTime), as Asterisk writes them.
        `eventfilter`: the values of manager.conf `eventfilter` lines (`"Event: Hangup"`,
        `"!Event: VarSet"`); a bad regular expression is a ValueError."""
        if speed <= 0 or calls_per_s < 0 or max_calls < 1:
            raise ValueError("speed must be > 0, calls_per_s >= 0 and max_calls >= 1")
        self.scenarios = list(scenarios)
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.calls_per_s = calls_per_s
        self.max_calls = max_calls
        self.timestamps = timestamps
        self.loop = loop
        self.speed = speed
        self.tz = pbx_timezone or dt.datetime.now().astimezone().tzinfo or dt.UTC
        self.max_write_buffer = max_write_buffer
        self.eventfilter = EventFilter(eventfilter)
        self.filtered = 0  # events the event filter withheld (from every client)
        self.finished: list[FinishedCall] = []
        self.vanished: list[FinishedCall] = []  # calls that a `restart` cut short
        self._boot = time.time() - uptime
        self._reload = self._boot
        self._sessions: set[_Session] = set()
        self._live: dict[int, _Live] = {}
        self._heap: list[tuple[float, int, _Live | _Start]] = []
        self._order = itertools.count()
        self._next_seq = 0
        self._blocked: deque[tuple[_Start, bool]] = deque()
        self._traffic_left: int | None = None if loop else len(self.scenarios)
        self._traffic_index = 0
        self._waiters: dict[int, asyncio.Future[FinishedCall]] = {}
        self._silent = False
        self._muted = False
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._plans: dict[Scenario, _Plan] = {}

    @classmethod
    def from_config(cls, config: SimulatorConfig, **kwargs: object) -> AmiSimulator:
        """The daemon's simulator; pass `username`/`secret` matching its [ami] section."""
        return cls(
            load_scenarios(config.scenarios),
            host=config.host,
            port=config.port,
            calls_per_s=config.calls_per_s,
            max_calls=max(1, int(config.max_calls)),
            **kwargs,  # type: ignore[arg-type]
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Session(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.calls_per_s > 0 and self.scenarios:
            self._push(time.time(), _Start(None))
        self._task = asyncio.create_task(self._run(), name="pbxlink.sim")
        log.info("sim.started", host=self.host, port=self.port, scenarios=len(self.scenarios))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            self._server.close()
            for session in list(self._sessions):
                session.abort()
            await self._server.wait_closed()
            self._server = None
        for waiter in self._waiters.values():
            waiter.cancel()
        log.info("sim.closed", port=self.port)

    async def __aenter__(self) -> AmiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- traffic --------------------------------------------------------------------------------

    def play_once(
        self,
        scenarios: Iterable[Scenario | str] | None = None,
        *,
        interval_s: float = 0.0,
        delay_s: float = 0.0,
    ) -> list[int]:
        """Play these scenarios (or names; default all) once each, in order, `interval_s` apart.

        Returns the copies' seq numbers; `await wait_played(seqs)` gives their FinishedCalls.
        """
        by_name = {s.name: s for s in self.scenarios}
        wanted = list(self.scenarios if scenarios is None else scenarios)
        unknown = [s for s in wanted if isinstance(s, str) and s not in by_name]
        if unknown:
            raise ValueError(f"unknown scenarios {unknown}; known: {sorted(by_name)}")
        chosen = [by_name[s] if isinstance(s, str) else s for s in wanted]
        loop = asyncio.get_running_loop()
        first = time.time() + delay_s
        seqs = []
        for i, scenario in enumerate(chosen):
            seq = self._take_seq()
            self._waiters[seq] = loop.create_future()
            self._push(first + i * interval_s, _Start(scenario, seq))
            seqs.append(seq)
        self._kick()
        return seqs

    async def wait_played(self, seqs: Iterable[int]) -> list[FinishedCall]:
        """The FinishedCall of each copy from `play_once`, once it finished (or vanished)."""
        return [await asyncio.shield(self._waiters[seq]) for seq in seqs]

    @property
    def active_calls(self) -> int:
        return len(self._live)

    @property
    def clients(self) -> int:
        """Connected clients, logged in or not."""
        return len(self._sessions)

    @property
    def uptime(self) -> int:
        return int(time.time() - self._boot)

    def channels(self, action_id: str | None = None) -> list[bytes]:
        """The CoreShowChannel items Asterisk would list now, from the calls' state."""
        now = time.time()
        return [
            item
            for live in self._live.values()
            for item in live.copy.channels(self._played(live, now), action_id, now)
        ]

    def _played(self, live: _Live, now: float) -> int:
        """Events of a live copy that happened by `now`, for the channel list.

        Without a filter that is the events sent. With one, the events it dropped since the
        last one sent happened too, at their times; but not beyond the next event still to
        be sent, so the list never runs ahead of the stream.
        """
        plan = live.plan
        if plan is None or live.stop >= len(plan.stops):
            return live.index
        copy = live.copy
        due = bisect.bisect_right(range(len(copy)), now, key=copy.at)
        return max(live.index, min(due, plan.stops[live.stop]))

    # -- misbehaviour ---------------------------------------------------------------------------

    def stop_traffic(self) -> None:
        """No new automatic calls from now on; the calls in progress play to their end."""
        self._traffic_left = 0

    def drop_connections(self) -> None:
        """Reset every client connection; whatever happens until they return is lost to them."""
        sessions = list(self._sessions)
        for session in sessions:
            session.abort()
        log.warning("sim.connections_dropped", clients=len(sessions))

    def set_silent(self, silent: bool, *, events: bool = False) -> None:
        """A half-open peer: actions (Ping too) go unanswered; with `events`, no events either.

        The socket stays open and the calls go on; events not sent while muted are lost.
        """
        self._silent = silent
        self._muted = silent and events
        log.warning("sim.silent", silent=silent, events_muted=self._muted)

    def restart(self) -> None:
        """A new boot: calls in progress vanish without a Hangup, every connection drops."""
        now = time.time()
        lost = len(self._live)
        for live in self._live.values():
            live.alive = False
            copy = live.copy
            gone = FinishedCall(copy.seq, copy.scenario.name, copy.linkedid, copy.start_at, now)
            self.vanished.append(gone)
            self._resolve(gone)
        self._live.clear()
        self._boot = self._reload = now
        log.warning("sim.restart", calls_lost=lost)
        self.drop_connections()
        self._release()
        self._kick()

    def send_garbage(self, data: bytes) -> None:
        """Raw bytes to every logged-in client, as a broken proxy or PBX module might send."""
        for session in list(self._sessions):
            if session.logged_in:
                session.send(data)

    # -- the scheduler --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while True:
            now = time.time()
            out: list[bytes] = []
            while heap and heap[0][0] <= now and len(out) < BATCH:
                at, _, item = heapq.heappop(heap)
                if isinstance(item, _Start):
                    self._start(item, at)
                    continue
                if not item.alive:
                    continue
                copy = item.copy
                plan = item.plan
                if plan is None:
                    out.append(copy.render(item.index))
                    item.index += 1
                    if item.index < len(copy):
                        self._push(copy.at(item.index), item)
                    else:
                        self._finish(item, at)
                    continue
                index = plan.stops[item.stop]
                send = plan.send[item.stop]
                self.filtered += index - item.index  # the events dropped since the last stop
                data = copy.render(index) if send is not False else b""
                if send or (data and self.eventfilter.passes(data)):
                    out.append(data)
                else:
                    self.filtered += 1
                item.index = index + 1
                item.stop += 1
                if item.stop < len(plan.stops):
                    self._push(copy.at(plan.stops[item.stop]), item)
                else:
                    self._finish(item, at)
            if out:
                self._broadcast(b"".join(out))
            if heap and heap[0][0] <= time.time():
                await asyncio.sleep(0)
                continue
            self._wake = wake = loop.create_future()
            timer = None
            if heap:
                timer = loop.call_later(heap[0][0] - time.time(), _set, wake)
            try:
                await wake
            finally:
                self._wake = None
                if timer is not None:
                    timer.cancel()

    def _push(self, at: float, item: _Live | _Start) -> None:
        heapq.heappush(self._heap, (at, next(self._order), item))

    def _kick(self) -> None:
        if self._wake is not None:
            _set(self._wake)

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _start(self, start: _Start, at: float) -> None:
        auto = start.scenario is None
        if len(self._live) >= self.max_calls:
            self._blocked.append((start, auto))  # the next auto start waits for this one
            return
        self._begin(start, at)
        if auto:
            self._next_auto(at)

    def _begin(self, start: _Start, at: float) -> None:
        scenario = start.scenario
        if scenario is None:
            scenario = self.scenarios[self._traffic_index % len(self.scenarios)]
            self._traffic_index += 1
        seq = start.seq if start.seq is not None else self._take_seq()
        copy = scenario.copy(seq, at, speed=self.speed, timestamps=self.timestamps, tz=self.tz)
        plan = self._plan(scenario) if self.eventfilter else None
        live = _Live(copy, plan=plan)
        self._live[seq] = live
        self._push(copy.at(plan.stops[0] if plan else 0), live)

    def _plan(self, scenario: Scenario) -> _Plan:
        """Which events of `scenario` the event filter lets through, decided once for all
        copies wherever the ids and times a copy fills in cannot change the answer."""
        plan = self._plans.get(scenario)
        if plan is not None:
            return plan
        last = len(scenario.events) - 1
        stops: list[int] = []
        send: list[bool | None] = []
        for index, template in enumerate(scenario._templates):
            verdict = self.eventfilter.decide(*_shape(template, self.timestamps))
            if verdict is not False or index == last:
                stops.append(index)
                send.append(verdict)
        plan = self._plans[scenario] = _Plan(tuple(stops), tuple(send))
        return plan

    def _next_auto(self, at: float) -> None:
        if self._traffic_left is not None:
            self._traffic_left -= 1
            if self._traffic_left <= 0:
                return
        self._push(at + 1.0 / self.calls_per_s, _Start(None))

    def _finish(self, live: _Live, at: float) -> None:
        copy = live.copy
        del self._live[copy.seq]
        done = FinishedCall(copy.seq, copy.scenario.name, copy.linkedid, copy.start_at, at)
        self.finished.append(done)
        self._resolve(done)
        self._release()

    def _release(self) -> None:
        """Starts that waited for a free slot (`max_calls`) begin now."""
        while self._blocked and len(self._live) < self.max_calls:
            start, auto = self._blocked.popleft()
            now = time.time()
            self._begin(start, now)
            if auto:
                self._next_auto(now)

    def _resolve(self, done: FinishedCall) -> None:
        waiter = self._waiters.get(done.seq)
        if waiter is not None and not waiter.done():
            waiter.set_result(done)

    def _broadcast(self, data: bytes) -> None:
        if self._muted:
            return
        for session in list(self._sessions):
            if session.logged_in and session.events:
                session.send(data)

    # -- actions --------------------------------------------------------------------------------

    def _action(self, session: _Session, msg: Message) -> None:
        if self._silent:
            return
        headers = {k.lower(): v for k, v in msg.items()}
        action = headers.get("action", "").strip()
        action_id = headers.get("actionid") or None
        name = action.lower()
        if not action:
            session.send(_response("Error", action_id, Message="Missing action in request"))
        elif name == "login":
            self._login(session, headers, action_id)
        elif name == "logoff":
            session.send(_response("Goodbye", action_id, Message="Thanks for all the fish."))
            session.close()
        elif not session.logged_in:
            session.send(_response("Error", action_id, Message="Permission denied"))
        elif name == "ping":
            now = time.time()
            session.send(_response("Success", action_id, Ping="Pong", Timestamp=f"{now:.6f}"))
        elif name == "coreshowchannels":
            self._core_show_channels(session, action_id)
        else:
            text = f"Invalid/unknown command: {action}. {LIST_COMMANDS}"
            session.send(_response("Error", action_id, Message=text))

    def _login(self, session: _Session, headers: dict[str, str], action_id: str | None) -> None:
        user, secret = headers.get("username", ""), headers.get("secret", "")
        good = hmac.compare_digest(user.encode(), self.username.encode()) and (
            hmac.compare_digest(secret.encode(), self.secret.encode())
        )
        if not good:
            log.warning("sim.login_failed", peer=session.peer, username=user)
            session.send(_response("Error", action_id, Message="Authentication failed"))
            session.close()
            return
        session.logged_in = True
        session.events = headers.get("events", "on").strip().lower() != "off"
        session.send(_response("Success", action_id, Message="Authentication accepted"))
        now = time.time()
        uptime, reload = int(now - self._boot), int(now - self._reload)
        if session.events:
            session.send(
                self._event(
                    "FullyBooted",
                    "system,all",
                    now,
                    f"Uptime: {uptime}\r\nLastReload: {reload}\r\nStatus: Fully Booted\r\n",
                )
            )
        log.info("sim.client_logged_in", peer=session.peer, username=user, uptime=uptime)
        self._successful_auth(session, now)

    def _successful_auth(self, session: _Session, now: float) -> None:
        """The security event every session with `security` read gets when someone logs in."""
        transport = session.transport
        local = transport.get_extra_info("sockname") if transport else None
        tv = dt.datetime.fromtimestamp(now, self.tz)
        stamp = tv.strftime("%Y-%m-%dT%H:%M:%S.") + f"{tv.microsecond // 1000:03d}"
        stamp += tv.strftime("%z")
        host, port = session.peer.rsplit(":", 1)
        body = (
            f"EventTV: {stamp}\r\nSeverity: Informational\r\nService: AMI\r\nEventVersion: 1\r\n"
            f"AccountID: {self.username}\r\nSessionID: 0x{id(session):x}\r\n"
            f"LocalAddress: IPV4/TCP/{local[0] if local else host}/{local[1] if local else 0}\r\n"
            f"RemoteAddress: IPV4/TCP/{host}/{port}\r\nUsingPassword: 0\r\n"
            f"SessionTV: {stamp}\r\n"
        )
        event = self._event("SuccessfulAuth", "security,all", now, body)
        if not self.eventfilter or self.eventfilter.passes(event):
            self._broadcast(event)
        else:
            self.filtered += 1

    def _core_show_channels(self, session: _Session, action_id: str | None) -> None:
        items = self.channels(action_id)
        aid = f"ActionID: {action_id}\r\n" if action_id else ""
        session.send(
            _response("Success", action_id, EventList="start", Message="Channels will follow")
            + b"".join(items)
            + (
                f"Event: CoreShowChannelsComplete\r\n{aid}EventList: Complete\r\n"
                f"ListItems: {len(items)}\r\n\r\n"
            ).encode()
        )

    def _event(self, name: str, privilege: str, now: float, body: str) -> bytes:
        stamp = f"Timestamp: {now:.6f}\r\n" if self.timestamps else ""
        return f"Event: {name}\r\nPrivilege: {privilege}\r\n{stamp}{body}\r\n".encode()


def _response(kind: str, action_id: str | None, **fields: str) -> bytes:
    """A response block as astman_send_* writes it (ActionID only if the action had one)."""
    lines = [f"Response: {kind}"]
    if action_id:
        lines.append(f"ActionID: {action_id}")
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


#: `%(key)s` slots of a scenario template (see scenario.py) and the `%%` escape
_SLOT = re.compile(rb"%\((\w+)\)s|%%")
#: what a copy can put in a slot, by the first letter of its key (Uniqueids, channel name
#: suffixes, bridge ids, dates and times); an unknown key may hold anything
_SLOT_CHARS = {
    ord("u"): b"0123456789.",
    ord("c"): b"0123456789abcdef",
    ord("b"): b"0123456789abcdef-",
    ord("t"): b"0123456789-: T.+",
}
_ANY = bytes(range(256))


def _shape(template: bytes, timestamps: bool) -> tuple[list[bytes], list[bytes]]:
    """A scenario template as `EventFilter.decide` reads it: the fixed parts, and between
    them the characters each slot's value is made of."""
    fixed, runs = [b""], []
    pos = 0
    for m in _SLOT.finditer(template):
        fixed[-1] += template[pos : m.start()]
        pos = m.end()
        key = m[1]
        if key is None:
            fixed[-1] += b"%"
        elif key == b"ts":
            if timestamps:  # `Timestamp: <epoch>.<micros>\r\n`, the line before the next
                fixed[-1] += b"Timestamp: "
                runs.append(b"0123456789.")
                fixed.append(b"\r\n")
        else:
            runs.append(_SLOT_CHARS.get(key[0], _ANY))
            fixed.append(b"")
    fixed[-1] += template[pos:]
    return fixed, runs


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
