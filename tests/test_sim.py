"""The AMI simulator over real TCP: the protocol as Asterisk speaks it, calls that a tracker
reports exactly as it reports the recordings they were copied from, and misbehaviour on demand."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from pbxlink.ami.framing import AmiParser, Banner, Frame, Message
from pbxlink.calls.updates import Answered, CallEnded, CallStarted, CallUpdate, Ringing
from pbxlink.replay import StreamDriver, finished_calls, replay
from pbxlink.sim import scenarios as shipped_files
from pbxlink.sim.eventfilter import EventFilter, eventfilter_lines
from pbxlink.sim.scenario import Scenario, ScenarioError, load_scenarios
from pbxlink.sim.server import AmiSimulator

from conftest import ROOT, TRUTH, lab_tracker
from truth_match import match_multiset

SCENARIOS = load_scenarios()
BY_NAME = {s.name: s for s in SCENARIOS}
#: fields that do not depend on when the call was played
TIMELESS = (
    "direction",
    "caller_number",
    "caller_name",
    "called_number",
    "extensions_rung",
    "answered_by",
    "status",
    "hangup_cause",
    "queue",
    "ivr_digits",
    "transferred_to",
    "partial",
)


def recorded_records() -> dict[str, dict]:
    """What `pbxlink replay` reports for each shipped file: one call each."""
    out = {}
    for source in shipped_files():
        records = [
            u.call.to_dict() for u in finished_calls(replay([source.read_bytes()], lab_tracker()))
        ]
        assert len(records) == 1, source.name
        out[source.name.removesuffix(".ami")] = records[0]
    return out


RECORDED = recorded_records()


def simulator(**kwargs: object) -> AmiSimulator:
    options: dict[str, object] = {"calls_per_s": 0, "pbx_timezone": dt.UTC}
    options.update(kwargs)
    return AmiSimulator(SCENARIOS, **options)  # type: ignore[arg-type]


@dataclass
class Client:
    """A test AMI client: pbxlink's parser, and a tracker fed as the live link would feed it."""

    port: int
    driver: StreamDriver = field(default_factory=lambda: StreamDriver(lab_tracker()))
    updates: list[CallUpdate] = field(default_factory=list)
    frames: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    on_frame: Callable[[Frame], None] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    at: float = 0.0
    _writer: asyncio.StreamWriter | None = None
    _task: asyncio.Task[None] | None = None
    _ids: int = 0

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = AmiParser()
        try:
            while data := await reader.read(65536):
                for frame in parser.feed(data):
                    if isinstance(frame, Message) and "Timestamp" in frame and "Event" in frame:
                        self.at = float(frame["Timestamp"])
                    if self.on_frame is not None:
                        self.on_frame(frame)
                    self.updates += self.driver.frame(frame, self.at)
                    self.frames.put_nowait(frame)
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    async def expect(self, match: Callable[[Frame], bool], timeout: float = 3.0) -> Frame:
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                if match(frame):
                    return frame

    async def until(self, condition: Callable[[], bool], timeout: float = 4.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.005)

    def send(self, action: str, **headers: str) -> str:
        assert self._writer is not None
        self._ids += 1
        action_id = f"t-{self._ids}"
        lines = [f"Action: {action}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return action_id

    async def action(self, action: str, **headers: str) -> Message:
        action_id = self.send(action, **headers)
        frame = await self.expect(lambda f: isinstance(f, Message) and _answers(f, action_id))
        assert isinstance(frame, Message)
        return frame

    async def login(self, secret: str = "pbxlink") -> Message:
        """Connect, log in; the FullyBooted event that follows."""
        await self.connect()
        action_id = self.send("Login", Username="pbxlink", Secret=secret, Events="on")
        # the banner line has no blank line after it: the parser yields it with the reply
        assert isinstance(await self.expect(lambda f: isinstance(f, Banner)), Banner)
        response = await self.expect(lambda f: isinstance(f, Message) and _answers(f, action_id))
        assert isinstance(response, Message)
        assert response["Response"] == "Success", response
        booted = await self.expect(lambda f: isinstance(f, Message) and _event(f, "FullyBooted"))
        assert isinstance(booted, Message)
        return booted

    async def core_show_channels(self) -> list[Message]:
        action_id = self.send("CoreShowChannels")
        items = []
        while True:
            frame = await self.expect(
                lambda f: isinstance(f, Message) and f.get("ActionID") == action_id
            )
            assert isinstance(frame, Message)
            if frame.get("Event") == "CoreShowChannel":
                items.append(frame)
            elif frame.get("Event") == "CoreShowChannelsComplete" or "Event" not in frame:
                assert frame.get("Response", "Success") == "Success", frame
                if "Event" not in frame:
                    continue
                assert int(frame["ListItems"]) == len(items)
                return items

    def ended(self) -> list[CallEnded]:
        return [u for u in self.updates if isinstance(u, CallEnded)]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            await self._task


def _answers(msg: Message, action_id: str) -> bool:
    return msg.get("ActionID") == action_id and ("Response" in msg or "EventList" in msg)


def _event(msg: Message, name: str) -> bool:
    return msg.get("Event") == name


def timeless(record: dict) -> dict:
    return {k: sorted(record[k]) if isinstance(record[k], list) else record[k] for k in TIMELESS}


# -- the protocol -------------------------------------------------------------------------------


async def test_banner_login_and_fully_booted() -> None:
    async with simulator() as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        assert await reader.readexactly(30) == b"Asterisk Call Manager/11.0.0\r\n"
        with pytest.raises(TimeoutError):  # no blank line after the banner, as Asterisk
            async with asyncio.timeout(0.1):
                await reader.read(1)
        writer.write(
            b"Action: Login\r\nActionID: a1\r\nUsername: pbxlink\r\nSecret: pbxlink\r\n\r\n"
        )
        reply = await reader.readuntil(b"\r\n\r\n")
        assert reply == (
            b"Response: Success\r\nActionID: a1\r\nMessage: Authentication accepted\r\n\r\n"
        )
        booted = await reader.readuntil(b"\r\n\r\n")
        assert re.fullmatch(
            rb"Event: FullyBooted\r\nPrivilege: system,all\r\nTimestamp: \d+\.\d{6}\r\n"
            rb"Uptime: \d+\r\nLastReload: \d+\r\nStatus: Fully Booted\r\n\r\n",
            booted,
        )
        writer.close()


@pytest.mark.parametrize(("user", "secret"), [("pbxlink", "wrong"), ("intruder", "pbxlink")])
async def test_bad_login_is_refused_and_closed(user: str, secret: str) -> None:
    async with simulator() as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        await reader.readexactly(30)
        login = f"Action: Login\r\nActionID: x9\r\nUsername: {user}\r\nSecret: {secret}\r\n"
        writer.write(login.encode() + b"\r\n")
        async with asyncio.timeout(2):
            rest = await reader.read()  # until the simulator closes the connection
        assert rest == b"Response: Error\r\nActionID: x9\r\nMessage: Authentication failed\r\n\r\n"
        writer.close()


async def test_ping_unknown_action_permission_and_logoff() -> None:
    async with simulator() as sim:
        client = Client(sim.port)
        await client.connect()
        denied = await client.action("Ping")
        assert (denied["Response"], denied["Message"]) == ("Error", "Permission denied")
        response = await client.action("Login", Username="pbxlink", Secret="pbxlink")
        assert response["Response"] == "Success"
        pong = await client.action("Ping")
        assert (pong["Response"], pong["Ping"]) == ("Success", "Pong")
        assert abs(float(pong["Timestamp"]) - time.time()) < 2
        unknown = await client.action("Frobnicate")
        assert unknown["Response"] == "Error"
        assert unknown["Message"].startswith("Invalid/unknown command: Frobnicate.")
        bye = await client.action("Logoff")
        assert (bye["Response"], bye["Message"]) == ("Goodbye", "Thanks for all the fish.")
        async with asyncio.timeout(2):
            await client.closed.wait()


async def test_events_carry_no_timestamp_when_it_is_off() -> None:
    async with simulator(timestamps=False, speed=20) as sim:
        client = Client(sim.port)
        booted = await client.login()
        assert "Timestamp" not in booted
        sim.play_once(["04_in_direct_busy"])
        first = await client.expect(lambda f: isinstance(f, Message) and _event(f, "Newchannel"))
        assert isinstance(first, Message) and "Timestamp" not in first
        await client.close()


# -- scenarios ----------------------------------------------------------------------------------

_UID = re.compile(rb"(?<![\d.])\d{9,10}\.\d+(?!\d)")
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SUFFIX = re.compile(rb"(?<=-)[0-9a-f]{8}(?=;[12]|[^0-9a-f]|$)")
_DATES = re.compile(
    rb"\d{4}-\d\d-\d\d[ T][\d:.+]+|(?<!\d)\d{8}-\d{6}(?!\d)|(?<![\d.])1\d{9}(?![\d.])"
)


def canonical(stream: bytes) -> bytes:
    """The stream with every id numbered in order of appearance and times removed."""
    stream = re.sub(rb"Timestamp: [\d.]+\r\n", b"", stream)
    stream = _DATES.sub(b"<time>", stream)
    for pattern, tag in ((_UUID, b"B"), (_UID, b"U"), (_SUFFIX, b"C")):
        seen: dict[bytes, bytes] = {}
        stream = pattern.sub(
            lambda m, s=seen, t=tag: s.setdefault(m[0], t + b"%d" % len(s)), stream
        )
    return stream


def ids_of(stream: bytes) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"uniqueid": set(), "channel": set(), "bridge": set()}
    for frame in AmiParser().feed(stream):
        assert isinstance(frame, Message)
        for key, value in frame.items():
            if key.lower().endswith(("uniqueid", "linkedid")) and "Bridge" not in key:
                out["uniqueid"].add(value)
            elif key.endswith("Channel") and value:
                out["channel"].add(value)
            elif key.endswith(("BridgeUniqueid", "BridgeId")):
                out["bridge"].add(value)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_copies_get_fresh_ids_and_keep_everything_else(scenario: Scenario) -> None:
    recorded = b"".join(e.data for e in scenario.events)
    start = 1_800_000_000.25
    copies = [scenario.instantiate(seq, start, speed=4) for seq in (0, 1, 977)]
    streams = [b"".join(data for _, data in copy) for copy in copies]
    for copy, stream in zip(copies, streams, strict=True):
        assert canonical(stream) == canonical(recorded)  # same bytes but for ids and times
        assert [at for at, _ in copy] == [start + e.offset / 4 for e in scenario.events]
        stamps = [float(m) for m in re.findall(rb"\r\nTimestamp: ([\d.]+)\r\n", stream)]
        assert stamps == pytest.approx([at for at, _ in copy], abs=1e-6)
        assert all(
            data.endswith(b"\r\n\r\n") and b"\n" not in data.replace(b"\r\n", b"")
            for _, data in copy
        )
    original = ids_of(recorded)
    a, b, c = (ids_of(s) for s in streams)
    for kind in original:
        assert len(a[kind]) == len(b[kind]) == len(original[kind]), kind
        assert not a[kind] & b[kind] and not a[kind] & c[kind] and not b[kind] & c[kind]
    quiet = scenario.instantiate(0, start, timestamps=False)
    assert b"Timestamp" not in b"".join(data for _, data in quiet)


def test_a_reconnect_recording_is_not_a_scenario() -> None:
    data = next(s for s in shipped_files() if s.name.startswith("06")).read_bytes()
    with pytest.raises(ScenarioError, match="more than one AMI session"):
        Scenario.from_bytes("twice", data + data)


# -- the decisive one: what a tracker makes of the played calls ---------------------------------

SPEED = 40.0


async def test_played_calls_give_the_records_of_their_recordings() -> None:
    async with simulator(speed=SPEED) as sim:
        client = Client(sim.port)
        await client.login()
        seqs = sim.play_once(interval_s=0.1)  # every shipped scenario, overlapping
        async with asyncio.timeout(5):
            played = await sim.wait_played(seqs)
        await client.until(lambda: len(client.ended()) >= len(seqs))
        await client.close()
    records = [u.call.to_dict() for u in client.ended()]
    assert sorted(r["call_id"] for r in records) == sorted(p.linkedid for p in played)
    by_call = {p.linkedid: p for p in played}
    for record in records:
        name = by_call[record["call_id"]].scenario
        want = RECORDED[name]
        assert timeless(record) == timeless(want), name
        for key in ("wait_s", "talk_s"):  # the tracker's clock ran `SPEED` times faster
            assert record[key] * SPEED == pytest.approx(want[key], abs=0.1), (name, key)
        assert bool(record["recording"]) == bool(want["recording"])
        if record["recording"]:
            assert record["call_id"] in record["recording"]  # the file named by the copy's id
        truth = TRUTH.get(f"{name}.ami") or TRUTH.get(f"freepbx/{name}.ami")
        if truth is not None:
            scaled = {
                **record,
                "wait_s": record["wait_s"] * SPEED,
                "talk_s": record["talk_s"] * SPEED,
            }
            assert match_multiset(truth, [scaled]) == [], name


async def test_core_show_channels_lists_the_live_channels() -> None:
    async with simulator(speed=10) as sim:
        client = Client(sim.port)
        await client.login()
        tracker = client.driver.tracker
        seen: dict[str, tuple[str, str, str | None]] = {}

        def snapshot(frame: Frame) -> None:  # the tracker's view when the list starts
            if isinstance(frame, Message) and frame.get("EventList") == "start":
                seen.update(
                    {u: (c.name, c.linkedid, c.bridge) for u, c in tracker._engine.channels.items()}
                )

        client.on_frame = snapshot
        (seq,) = sim.play_once(["08_ivr_support_queue_103_answers"])
        await client.until(lambda: any(len(m) == 2 for m in tracker._engine.bridges.values()))
        items = await client.core_show_channels()
        (played,) = await sim.wait_played([seq])
        await client.close()
    assert {m["Uniqueid"] for m in items} == set(seen)
    for item in items:
        name, call_linkedid, bridge = seen[item["Uniqueid"]]
        assert (item["Channel"], item["Linkedid"], item["BridgeId"]) == (
            name,
            played.linkedid,
            bridge,
        )
        assert item["ChannelStateDesc"] == "Up"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", item["Duration"])
        assert call_linkedid == played.linkedid
    apps = {m["Channel"].split("-")[0]: (m["Application"], m["ApplicationData"]) for m in items}
    assert apps["PJSIP/trunk"][0] == "Queue"
    assert apps["PJSIP/103"] == ("AppQueue", "(Outgoing Line)")
    assert len({m["BridgeId"] for m in items}) == 1


# -- misbehaviour -------------------------------------------------------------------------------


async def test_answer_during_a_dropped_link_is_recovered() -> None:
    """Trace 15's situation: 102 answers while the link is down; the call ends once, answered."""
    async with simulator(speed=10) as sim:
        client = Client(sim.port)
        await client.login()
        (seq,) = sim.play_once(["06_ivr_sales_101_noanswer_102_answers"])
        await client.until(
            lambda: any(isinstance(u, Ringing) and u.extension == "102" for u in client.updates)
        )
        sim.drop_connections()
        async with asyncio.timeout(2):
            await client.closed.wait()
        await asyncio.sleep(0.4)  # 4 recorded seconds: 102 answers meanwhile
        assert not any(isinstance(u, Answered) for u in client.updates)
        await client.login()  # a new banner: the driver tells the tracker link_down, link_up
        items = await client.core_show_channels()
        assert {m["ChannelStateDesc"] for m in items} == {"Up"} and len(items) == 2
        (played,) = await sim.wait_played([seq])
        await client.until(lambda: len(client.ended()) == 1)
        await client.close()
    started = [u.call_id for u in client.updates if isinstance(u, CallStarted)]
    ended = [u.call.to_dict() for u in client.ended()]
    assert started == [played.linkedid] == [r["call_id"] for r in ended]
    want = RECORDED[played.scenario]
    for key in ("status", "answered_by", "caller_number", "called_number", "ivr_digits"):
        assert ended[0][key] == want[key], key
    assert set(ended[0]["extensions_rung"]) == {"101", "102"}


async def test_drop_and_reconnect_ends_every_call_exactly_once() -> None:
    async with simulator(speed=20) as sim:
        client = Client(sim.port)
        await client.login()
        seqs = sim.play_once(interval_s=0.15)
        await asyncio.sleep(0.8)
        dropped_at = time.time()
        sim.drop_connections()
        await asyncio.sleep(0.3)
        await client.login()
        back_at = time.time()
        await client.core_show_channels()
        async with asyncio.timeout(5):
            played = await sim.wait_played(seqs)
        await client.until(lambda: sim.active_calls == 0)
        await asyncio.sleep(0.05)
        await client.close()
    started = [u.call_id for u in client.updates if isinstance(u, CallStarted)]
    ended = [u.call_id for u in client.ended()]
    assert sorted(started) == sorted(ended) and len(set(ended)) == len(ended)
    assert set(ended) <= {p.linkedid for p in played}
    for call in played:  # a call that lived only while the link was down is never seen
        if call.linkedid not in ended:
            assert call.started_at >= dropped_at - 0.05 and call.ended_at <= back_at + 0.05, call


async def test_restart_loses_calls_and_boots_again() -> None:
    async with simulator(speed=10, uptime=100) as sim:
        client = Client(sim.port)
        first_boot = await client.login()
        assert int(first_boot["Uptime"]) >= 100
        (seq,) = sim.play_once(["08_ivr_support_queue_103_answers"])
        await client.until(lambda: any(isinstance(u, Answered) for u in client.updates))
        sim.restart()
        async with asyncio.timeout(2):
            await client.closed.wait()
        second_boot = await client.login()
        assert int(second_boot["Uptime"]) < int(first_boot["Uptime"])
        assert await client.core_show_channels() == []
        (gone,) = await sim.wait_played([seq])
        await client.close()
    assert sim.vanished == [gone] and sim.finished == []
    (ended,) = client.ended()  # the tracker saw the new boot: the call ended, as partial
    assert ended.call_id == gone.linkedid and ended.call.partial


async def test_garbage_does_not_break_what_follows() -> None:
    async with simulator(speed=20) as sim:
        client = Client(sim.port)
        await client.login()
        sim.send_garbage(b"\x00\xff\xfe not AMI\r\n\x80\x81: \xc3\r\n\r\n")
        pong = await client.action("Ping")
        assert pong["Ping"] == "Pong"
        (seq,) = sim.play_once(["10_outbound_101_to_5559876"])
        (played,) = await sim.wait_played([seq])
        await client.until(lambda: len(client.ended()) == 1)
        await client.close()
    record = client.ended()[0].call.to_dict()
    assert record["call_id"] == played.linkedid
    assert timeless(record) == timeless(RECORDED["10_outbound_101_to_5559876"])


async def test_half_open_peer_answers_nothing() -> None:
    async with simulator() as sim:
        client = Client(sim.port)
        await client.login()
        sim.set_silent(True)
        client.send("Ping")
        with pytest.raises(TimeoutError):
            await client.expect(lambda f: isinstance(f, Message) and "Response" in f, timeout=0.3)
        sim.set_silent(False)
        assert (await client.action("Ping"))["Ping"] == "Pong"
        await client.close()


async def test_a_client_that_does_not_read_is_dropped() -> None:
    """Asterisk drops a client whose writes time out; memory must not grow without bound."""
    async with simulator(speed=200, calls_per_s=100, max_write_buffer=256 * 1024) as sim:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", sim.port))
        await loop.sock_sendall(
            sock, b"Action: Login\r\nUsername: pbxlink\r\nSecret: pbxlink\r\n\r\n"
        )
        received = b""
        while b"Authentication accepted" not in received:
            received += await loop.sock_recv(sock, 1024)
        assert sim.clients == 1
        with capture_logs() as logs:  # from now on the client reads nothing
            async with asyncio.timeout(4):
                while sim.clients:
                    await asyncio.sleep(0.02)
        assert any(entry["event"] == "sim.client_too_slow" for entry in logs)
        assert sim.active_calls <= sim.max_calls
        sock.close()


async def test_traffic_without_clients_plays_each_scenario_once() -> None:
    async with simulator(speed=50, calls_per_s=50, max_calls=3, loop=False) as sim:
        most = 0
        async with asyncio.timeout(4):
            while len(sim.finished) < len(SCENARIOS):
                most = max(most, sim.active_calls)
                await asyncio.sleep(0.002)
        await asyncio.sleep(0.1)
        assert sim.active_calls == 0 and len(sim.finished) == len(SCENARIOS)
    assert 1 < most <= 3
    assert sorted(f.scenario for f in sim.finished) == sorted(BY_NAME)
    assert len({f.linkedid for f in sim.finished}) == len(SCENARIOS)


# -- manager.conf eventfilter --------------------------------------------------------------------

README_FILTER = eventfilter_lines((ROOT / "README.md").read_text(encoding="utf-8"))
NEWCHANNEL = b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: PJSIP/101-00000001\r\n"
VARSET = b"Event: VarSet\r\nPrivilege: dialplan,all\r\nVariable: FROM_DID\r\nValue: 5551234\r\n"
RTCP = b"Event: RTCPSent\r\nPrivilege: reporting,all\r\nChannel: PJSIP/101-00000001\r\n"


@pytest.mark.parametrize(
    ("lines", "passing"),
    [
        ([], {"newchannel", "varset", "rtcp"}),  # no filters: everything
        (["Event: Newchannel"], {"newchannel"}),  # white only: block all, then the whites
        (["Variable: FROM_DID", "Event: Newchannel"], {"newchannel", "varset"}),
        (["!Event: RTCPSent"], {"newchannel", "varset"}),  # black only: allow all, then blacks
        (["!PJSIP/101"], {"varset"}),  # searched anywhere in the text, not only the first line
        # both: block all, whites, then blacks (a black match wins over a white one)
        (["Privilege: (call|dialplan)", "!Value: 555"], {"newchannel"}),
        (["Event: Newchannel.*PJSIP"], {"newchannel"}),  # `.` crosses lines, as in POSIX
        (["^Privilege"], set()),  # `^` anchors the whole text only
    ],
)
def test_eventfilter_follows_asterisk(lines: list[str], passing: set[str]) -> None:
    flt = EventFilter(lines)
    events = {"newchannel": NEWCHANNEL, "varset": VARSET, "rtcp": RTCP}
    assert {name for name, text in events.items() if flt.passes(text)} == passing
    assert bool(flt) == bool(lines)


def test_eventfilter_lines_are_read_as_manager_conf_has_them() -> None:
    text = (
        "[pbxlink]\nsecret = x\neventfilter = Event: Hangup\n  eventfilter=!Event: VarSet ; no\n"
        "eventfilter => Value: a\\;b\neventfilter =\n; eventfilter = Event: Cdr\n"
    )
    assert eventfilter_lines(text) == ["Event: Hangup", "!Event: VarSet", "Value: a;b"]
    assert len(README_FILTER) >= 15 and "Event: Newchannel" in README_FILTER
    with pytest.raises(ValueError, match="not a regular expression"):
        EventFilter(["Event: (Hangup"])


def test_eventfilter_stream_filters_broadcast_events_only() -> None:
    flt = EventFilter(["Event: Hangup\r\n"])
    stream = (
        b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n\r\n"
        + NEWCHANNEL
        + b"\r\nEvent: CoreShowChannel\r\nActionID: 2\r\nChannel: PJSIP/101-00000001\r\n\r\n"
        + b"Event: Hangup\r\nPrivilege: call,all\r\nCause: 16\r\n\r\n"
    )
    assert flt.stream(stream) == stream.replace(NEWCHANNEL + b"\r\n", b"")
    assert EventFilter().stream(stream) == stream


HANGUP_SHAPE = (
    [b"Event: Hangup\r\nChannel: PJSIP/101-", b"\r\nUniqueid: ", b"\r\n\r\n"],
    [b"0123456789abcdef", b"0123456789."],
)


@pytest.mark.parametrize(
    ("lines", "verdict"),
    [
        ([], True),
        (["Event: Hangup"], True),  # in the fixed text: every copy
        (["Event: Newchannel"], False),  # nowhere, and it cannot overlap an id
        (["Uniqueid: x"], False),  # an `x` never is part of a Uniqueid
        (["Uniqueid: 17"], None),  # some copies' Uniqueids start with 17
        (["PJSIP/101-0000"], None),  # some channel suffixes start with 0000
        (["!Event: VarSet"], True),
        (["Event: Hangup", "!Uniqueid: 17"], None),
        (["Event: Hangup", "!Event: Hangup"], False),
        (["Event: Hang.p"], None),  # a real regular expression: checked on each copy
    ],
)
def test_eventfilter_decides_for_every_copy_only_when_sure(
    lines: list[str], verdict: bool | None
) -> None:
    assert EventFilter(lines).decide(*HANGUP_SHAPE) is verdict


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_readme_filter_decides_the_same_for_every_copy(scenario: Scenario) -> None:
    """What lets the simulator decide once per recorded event: the README's filters read
    event, variable and application names, never the ids and times a copy changes."""
    flt = EventFilter(README_FILTER)
    recorded = [flt.passes(e.data) for e in scenario.events]
    assert any(recorded) and not all(recorded)
    for seq, start, stamps in [
        (0, 1_700_000_000.0, True),
        (1, 1_800_000_000.5, False),
        (4095, 1_765_432_109.875, True),
        (4096, 2_000_000_000.0, True),
        (1_000_003, 1_999_999_999.999, False),
    ]:
        copy = scenario.copy(seq, start, speed=7, timestamps=stamps, tz=dt.UTC)
        assert [flt.passes(copy.render(i)) for i in range(len(copy))] == recorded
    plan = simulator(eventfilter=README_FILTER)._plan(scenario)
    assert None not in plan.send  # decided once: no per-copy check left
    assert sum(plan.send) == sum(recorded)


def _events(client: Client) -> list[Message]:
    got: list[Message] = []
    client.on_frame = lambda f: got.append(f) if isinstance(f, Message) and "Event" in f else None
    return got


async def test_readme_eventfilter_sends_what_asterisk_would_and_keeps_every_record() -> None:
    flt = EventFilter(README_FILTER)
    async with simulator(speed=SPEED, eventfilter=README_FILTER) as sim:
        client = Client(sim.port)
        await client.login()
        got = _events(client)
        seqs = sim.play_once(interval_s=0.1)
        async with asyncio.timeout(5):
            played = await sim.wait_played(seqs)
        await client.until(lambda: len(client.ended()) >= len(seqs))
        await client.close()
    want = sum(flt.passes(e.data) for s in SCENARIOS for e in s.events)
    total = sum(len(s.events) for s in SCENARIOS)
    assert len(got) == want and sim.filtered == total - want + 1  # + our own SuccessfulAuth
    assert want < total * 0.25  # the point of the filter
    assert all(flt.passes(_text(m)) for m in got)
    by_call = {p.linkedid: p.scenario for p in played}
    for update in client.ended():
        record = update.call.to_dict()
        assert timeless(record) == timeless(RECORDED[by_call[record["call_id"]]])


def _text(msg: Message) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in msg.items()).encode()


async def test_eventfilter_spares_login_replies_and_lists_but_not_other_events() -> None:
    """FullyBooted after a login and CoreShowChannel items are written to the session
    alone, so no filter holds them back; SuccessfulAuth is broadcast, so it is filtered.
    The channel list reflects events the filter dropped (the Newexten into Queue)."""
    async with simulator(speed=10, eventfilter=["Event: (Hangup|BridgeEnter)\r\n"]) as sim:
        client = Client(sim.port)
        assert (await client.login())["Event"] == "FullyBooted"
        got = _events(client)
        other = Client(sim.port)
        await other.login()  # a SuccessfulAuth to everyone: filtered here
        (seq,) = sim.play_once(["08_ivr_support_queue_103_answers"])
        await client.until(lambda: sum(m["Event"] == "BridgeEnter" for m in got) >= 2)
        items = await client.core_show_channels()
        await sim.wait_played([seq])
        await client.until(lambda: sum(m["Event"] == "Hangup" for m in got) >= 2)
        await client.close()
        await other.close()
    assert {m["Event"] for m in got} == {
        "BridgeEnter",
        "Hangup",
        "CoreShowChannel",
        "CoreShowChannelsComplete",
    }
    assert all("ActionID" in m for m in got if m["Event"].startswith("CoreShow"))
    apps = {m["Channel"].split("-")[0]: m["Application"] for m in items}
    assert apps["PJSIP/trunk"] == "Queue" and apps["PJSIP/103"] == "AppQueue"
    assert len({m["BridgeId"] for m in items}) == 1 and items[0]["BridgeId"]


async def test_a_filter_that_reads_ids_is_checked_on_every_copy() -> None:
    """A pattern on the Uniqueid's last digit passes different events in different copies:
    the simulator cannot decide it once and checks each copy's own text."""
    lines = [r"Event: Newchannel\r\n.*\r\nUniqueid: \d+\.\d*0\r\n"]
    flt = EventFilter(lines)
    name = "F02_ivr_queue_local_members_first_offer_timeout"
    async with simulator(speed=SPEED, eventfilter=lines) as sim:
        assert None in sim._plan(BY_NAME[name]).send
        client = Client(sim.port)
        await client.login()
        got = _events(client)
        seqs = sim.play_once([name] * 4, interval_s=0.05)
        await sim.wait_played(seqs)
        await asyncio.sleep(0.1)
        await client.close()
    want = [
        data
        for seq in seqs
        for _, data in BY_NAME[name].instantiate(seq, 1_800_000_000.0, timestamps=False)
        if flt.passes(data)
    ]
    assert len(want) > 0
    assert sorted(m["Uniqueid"].split(".")[1] for m in got) == sorted(
        re.search(rb"\r\nUniqueid: \d+\.(\d+)\r\n", d)[1].decode() for d in want
    )
