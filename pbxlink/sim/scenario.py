"""A recorded call, ready to be played again and again with fresh Asterisk ids.

A scenario is the call events of one recorded AMI session (banner, login, `FullyBooted` and
the other session parts dropped), each with its offset from the first one. Every copy of a
call must look like a new call to a CTI client: new Uniqueids and Linkedids, channel name
suffixes, bridge ids, recording file names and wall-clock times; the rest stays byte for byte
what Asterisk sent. The ids are found once per scenario and turned into a `bytes %` template,
so a copy costs one dict of values and one formatting per event (the benchmarks play many).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pbxlink.ami.framing import BANNER_PREFIX, AmiParser, Message
from pbxlink.sim import scenarios as shipped

#: ids of one copy are numbered `seq * STRIDE + k`: copies never share one
STRIDE = 4096
#: a date in the recording further than this from its first event is data, not a clock
TIME_WINDOW_S = 2 * 86400.0
#: session parts of a recording, not part of any call
SESSION_EVENTS = frozenset({"FullyBooted", "CoreShowChannel", "CoreShowChannelsComplete"})
#: what a CoreShowChannel item carries, in Asterisk's order (Duration is computed)
CHANNEL_FIELDS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)

_TECHS = (
    rb"PJSIP|SIP|IAX2|DAHDI|Local|Motif|UnicastRTP|MulticastRTP|Console|Bridge|Recorder"
    rb"|CBAnn|CBRec|Announcer|Surrogate|Snoop|WebSocket|AudioSocket|Message"
)
#: every value a copy must change; `%` is escaped before this runs, so no match contains one
_TOKENS = re.compile(
    rb"(?P<uuid>(?<![0-9a-f-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    rb"(?![0-9a-f]))"
    rb"|(?P<chan>\b(?:" + _TECHS + rb")/[^\s\",;&|]+-)(?P<hex>[0-9a-f]{8})(?![0-9a-f])"
    rb"|(?P<tv>(?<!\d)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4})"
    rb"|(?P<dt>(?<!\d)\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?!\d))"
    rb"|(?P<compact>(?<!\d)\d{8}-\d{6}(?!\d))"
    rb"|(?P<uid>(?<![\d.])\d{9,10}\.\d+(?!\d))"
    rb"|(?P<epre>^(?:LoginTime: |LastCall: |Variable: (?:MEMBERLASTCALL|QUEUEJOINTIME)\r\nValue: ))"
    rb"(?P<epoch>\d{10})(?=\r\n)",
    re.M,
)
_ID = re.compile(r"\d{9,10}\.\d+")
_ID_KEY = re.compile(r"(?i).*(uniqueid|linkedid)")
_TIME_FORMATS = {"dt": "%Y-%m-%d %H:%M:%S", "compact": "%Y%m%d-%H%M%S"}
_SALT = os.urandom(8).hex().encode()  # bridge ids differ between runs of the simulator


class ScenarioError(ValueError):
    """A recording that cannot be played as a scenario; the message names the file."""


class Source(Protocol):
    """A file to load: a `Path` or an `importlib.resources` Traversable."""

    @property
    def name(self) -> str: ...

    def read_bytes(self) -> bytes: ...


@dataclass(slots=True, frozen=True)
class ScenarioEvent:
    offset: float  # seconds after the scenario's first call event
    name: str
    data: bytes  # the block as recorded, `\r\n\r\n` included


@dataclass(slots=True)
class ChannelSnapshot:
    """A live channel as CoreShowChannels lists it, in the recording's own ids."""

    fields: dict[str, str]
    created: int  # index of its Newchannel event

    def item(self, action_id: str | None, duration_s: float) -> bytes:
        s = int(max(duration_s, 0.0))
        lines = ["Event: CoreShowChannel"]
        if action_id:
            lines.append(f"ActionID: {action_id}")
        lines += [f"{k}: {self.fields.get(k, '')}" for k in CHANNEL_FIELDS]
        lines.append(f"Application: {self.fields.get('Application', '')}")
        lines.append(f"ApplicationData: {self.fields.get('ApplicationData', '')}")
        lines.append(f"Duration: {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}")
        lines.append(f"BridgeId: {self.fields.get('BridgeId', '')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


Op = tuple[str, str, object]


@dataclass(slots=True, eq=False)
class Scenario:
    name: str
    events: list[ScenarioEvent]
    recorded_tz: dt.tzinfo = dt.UTC
    _t0: float = 0.0
    _offsets: list[float] = field(default_factory=list, repr=False)
    _templates: list[bytes] = field(default_factory=list, repr=False)
    _ids: set[bytes] = field(default_factory=set, repr=False)
    _keys: dict[tuple[str, bytes], bytes] = field(default_factory=dict, repr=False)
    _uids: list[tuple[bytes, int]] = field(default_factory=list, repr=False)
    _chans: list[bytes] = field(default_factory=list, repr=False)
    _uuids: list[bytes] = field(default_factory=list, repr=False)
    _times: list[tuple[bytes, str, float]] = field(default_factory=list, repr=False)
    _ops: list[tuple[Op, ...]] = field(default_factory=list, repr=False)
    _linkedid: bytes = b""
    _snapshots: dict[int, list[ChannelSnapshot]] = field(default_factory=dict, repr=False)

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: Source | str | Path | bytes,
        name: str | None = None,
        *,
        recorded_tz: dt.tzinfo = dt.UTC,
    ) -> Scenario:
        """A file (path or package resource), or its bytes with `name`."""
        if isinstance(source, bytes):
            return cls.from_bytes(name or "scenario", source, recorded_tz=recorded_tz)
        src: Source = Path(source) if isinstance(source, str | Path) else source
        try:
            data = src.read_bytes()
        except OSError as exc:
            raise ScenarioError(f"{src.name}: cannot read: {exc.strerror}") from exc
        return cls.from_bytes(name or src.name, data, recorded_tz=recorded_tz)

    @classmethod
    def from_bytes(cls, name: str, data: bytes, *, recorded_tz: dt.tzinfo = dt.UTC) -> Scenario:
        """Keep the call events of one recorded session (`timestampevents = yes`)."""
        name = name.removesuffix(".ami")
        if b"\r\n" not in data:
            data = data.replace(b"\n", b"\r\n")
        events: list[ScenarioEvent] = []
        messages: list[Message] = []
        banners = 0
        after_boot = False
        for block in data.split(b"\r\n\r\n"):
            if block.startswith(BANNER_PREFIX):
                banners += 1
                if banners > 1:
                    raise ScenarioError(
                        f"{name}: more than one AMI session (a reconnect): the events of the"
                        " gap are missing, so it cannot be played as whole calls"
                    )
                block = block.partition(b"\r\n")[2]
            if not block.strip():
                continue
            frames = AmiParser().feed(block + b"\r\n\r\n")
            msg = frames[0] if frames and isinstance(frames[0], Message) else None
            event = msg.get("Event") if msg is not None else None
            if msg is None or event is None or event in SESSION_EVENTS:
                after_boot = event == "FullyBooted"
                continue
            if event == "SuccessfulAuth" and after_boot:
                after_boot = False  # the recorder's own login
                continue
            after_boot = False
            try:
                stamp = float(msg["Timestamp"])
            except (KeyError, ValueError):
                raise ScenarioError(
                    f"{name}: event {event} has no Timestamp (record with timestampevents = yes)"
                ) from None
            events.append(ScenarioEvent(stamp, event, block + b"\r\n\r\n"))
            messages.append(msg)
        if not events:
            raise ScenarioError(f"{name}: no call events")
        scenario = cls(name, [], recorded_tz=recorded_tz, _t0=events[0].offset)
        scenario._compile(events, messages)
        return scenario

    def _compile(self, recorded: list[ScenarioEvent], messages: list[Message]) -> None:
        last = 0.0
        for ev in recorded:
            last = max(last, ev.offset - self._t0)  # keep the recorded order
            self.events.append(ScenarioEvent(last, ev.name, ev.data))
            self._offsets.append(last)
        for msg in messages:
            for key, value in msg.items():
                if _ID_KEY.fullmatch(key) and _ID.fullmatch(value):
                    self._ids.add(value.encode())
        for ev in self.events:
            self._templates.append(self._template(ev.data))
        self._ops = [_ops_of(msg) for msg in messages]
        for msg in messages:
            if msg.get("Event") == "Newchannel":
                self._linkedid = self._keys.get(("u", msg.get("Linkedid", "").encode()), b"")
                break
        for kind, values in (("uid", self._uids), ("channel", self._chans), ("id", self._uuids)):
            if len(values) >= STRIDE:
                raise ScenarioError(f"{self.name}: more than {STRIDE} {kind}s in one scenario")

    def _template(self, block: bytes) -> bytes:
        """The block as a `bytes %` template; its Timestamp line becomes `%(ts)s`."""
        start = block.find(b"\r\nTimestamp: ")
        if start < 0:
            return self._tokenize(block)
        end = block.index(b"\r\n", start + 2)
        return self._tokenize(block[: start + 2]) + b"%(ts)s" + self._tokenize(block[end + 2 :])

    def _tokenize(self, text: bytes, *, frozen: bool = False) -> bytes:
        def slot(kind: str, value: bytes) -> bytes | None:
            key = self._keys.get((kind, value))
            if key is None and not frozen:
                key = self._register(kind, value)
            return None if key is None else b"%(" + key + b")s"

        def sub(m: re.Match[bytes]) -> bytes:
            group = m.lastgroup
            if group == "uuid":
                return slot("b", m[0]) or m[0]
            if group == "hex":
                return m["chan"] + (slot("c", m["hex"]) or m["hex"])
            if group == "uid":
                return (slot("u", m[0]) if m[0] in self._ids else None) or m[0]
            if group == "epoch":
                return m["epre"] + (slot("epoch", m["epoch"]) or m["epoch"])
            assert group is not None
            return slot(group, m[0]) or m[0]

        return _TOKENS.sub(sub, text.replace(b"%", b"%%"))

    def _register(self, kind: str, value: bytes) -> bytes | None:
        if kind == "u":
            key = b"u%d" % len(self._uids)
            self._uids.append((key, int(value.partition(b".")[0])))
        elif kind == "c":
            key = b"c%d" % len(self._chans)
            self._chans.append(key)
        elif kind == "b":
            key = b"b%d" % len(self._uuids)
            self._uuids.append(key)
        else:
            at = _parse_time(kind, value.decode(), self.recorded_tz)
            if at is None or abs(at - self._t0) > TIME_WINDOW_S:
                return None  # a number that only looks like a date
            key = b"t%d" % len(self._times)
            self._times.append((key, kind, at))
        self._keys[(kind, value)] = key
        return key

    # -- playing --------------------------------------------------------------------------------

    @property
    def duration(self) -> float:
        return self._offsets[-1]

    def copy(
        self,
        seq: int,
        start_at: float,
        *,
        speed: float = 1.0,
        timestamps: bool = True,
        tz: dt.tzinfo = dt.UTC,
    ) -> ScenarioCopy:
        """Copy number `seq` of the call, its first event at `start_at` (epoch seconds).

        Recorded offsets are divided by `speed`; dates are written in the PBX zone `tz`.
        """
        base = seq * STRIDE
        t0 = self._t0

        def live(recorded: float) -> float:
            return start_at + (recorded - t0) / speed

        values: dict[bytes, bytes] = {b"ts": b""}
        for k, (key, epoch) in enumerate(self._uids):
            values[key] = b"%d.%d" % (int(live(epoch)), base + k)
        for k, key in enumerate(self._chans):
            values[key] = b"%08x" % ((base + k) & 0xFFFFFFFF)
        for k, key in enumerate(self._uuids):
            h = _SALT + b"%012x%04x" % (seq & 0xFFFFFFFFFFFF, k)
            values[key] = b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))
        for key, kind, recorded in self._times:
            values[key] = _format_time(kind, live(recorded), tz).encode()
        return ScenarioCopy(self, seq, start_at, speed, timestamps, values)

    def instantiate(
        self,
        seq: int,
        start_at: float,
        *,
        speed: float = 1.0,
        timestamps: bool = True,
        tz: dt.tzinfo = dt.UTC,
    ) -> list[tuple[float, bytes]]:
        """Every event of copy `seq` with the moment it is due, stamped with that moment."""
        copy = self.copy(seq, start_at, speed=speed, timestamps=timestamps, tz=tz)
        return [(copy.at(i), copy.render(i)) for i in range(len(self._templates))]

    def channels_at(self, index: int) -> list[ChannelSnapshot]:
        """The channels alive once the first `index` events were sent (recorded ids)."""
        cached = self._snapshots.get(index)
        if cached is not None:
            return cached
        live: dict[str, ChannelSnapshot] = {}
        for i, ops in enumerate(self._ops[:index]):
            for op, uid, arg in ops:
                _apply(live, i, op, uid, arg)
        out = [ChannelSnapshot(dict(c.fields), c.created) for c in live.values()]
        if len(self._snapshots) < 4096:
            self._snapshots[index] = out
        return out


@dataclass(slots=True, eq=False)
class ScenarioCopy:
    """One copy of a scenario: its ids and times, filled into the scenario's templates."""

    scenario: Scenario
    seq: int
    start_at: float
    speed: float
    timestamps: bool
    values: dict[bytes, bytes]

    def __len__(self) -> int:
        return len(self.scenario._templates)

    def at(self, index: int) -> float:
        return self.start_at + self.scenario._offsets[index] / self.speed

    def render(self, index: int) -> bytes:
        """Event `index`, stamped (if timestamps are on) with the moment it is due."""
        values = self.values
        if self.timestamps:
            values[b"ts"] = b"Timestamp: %.6f\r\n" % self.at(index)
        return self.scenario._templates[index] % values

    @property
    def linkedid(self) -> str:
        """The Linkedid of the copy's first channel: the call id a tracker reports."""
        key = self.scenario._linkedid
        return self.values[key].decode() if key else ""

    def rewrite(self, text: bytes) -> bytes:
        """A text in the recording's ids (a CoreShowChannel item) in this copy's ids."""
        return self.scenario._tokenize(text, frozen=True) % self.values

    def channels(self, index: int, action_id: str | None, now: float) -> list[bytes]:
        """CoreShowChannel items for the channels alive after `index` events."""
        return [
            self.rewrite(c.item(action_id, now - self.at(c.created)))
            for c in self.scenario.channels_at(index)
        ]


def load_scenarios(paths: Iterable[str | Path] = ()) -> list[Scenario]:
    """The given .ami files, or with none the scenarios shipped with pbxlink."""
    sources: list[Source | str | Path] = list(paths)
    if not sources:
        sources = list(shipped())
    return [Scenario.load(s) for s in sources]


# -- helpers ------------------------------------------------------------------------------------


def _parse_time(kind: str, text: str, tz: dt.tzinfo) -> float | None:
    try:
        if kind == "epoch":
            return float(text)
        if kind == "tv":
            return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        return dt.datetime.strptime(text, _TIME_FORMATS[kind]).replace(tzinfo=tz).timestamp()
    except (ValueError, KeyError):
        return None


def _format_time(kind: str, at: float, tz: dt.tzinfo) -> str:
    if kind == "epoch":
        return str(int(at))
    moment = dt.datetime.fromtimestamp(at, tz)
    if kind == "tv":
        ms = moment.microsecond // 1000
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms:03d}" + moment.strftime("%z")
    return moment.strftime(_TIME_FORMATS[kind])


def _ops_of(msg: Message) -> tuple[Op, ...]:
    """What an event changes in the channel list CoreShowChannels answers from."""
    ops: list[Op] = []
    event = msg.get("Event", "")
    for key in msg:
        if not key.endswith("Uniqueid"):
            continue
        prefix = key[:-8]
        if prefix + "ChannelState" not in msg:
            continue  # not a channel snapshot (SwapUniqueid, CEL, Cdr)
        fields = {f: msg[prefix + f] for f in CHANNEL_FIELDS if prefix + f in msg}
        ops.append(("new" if event == "Newchannel" and not prefix else "set", msg[key], fields))
    uid = msg.get("Uniqueid", "")
    if event == "Newexten":
        ops.append(("app", uid, (msg.get("Application", ""), msg.get("AppData", ""))))
    elif event == "DialBegin":
        ops.append(("dial", msg.get("DestUniqueid", ""), uid))
    elif event == "BridgeEnter":
        ops.append(("enter", uid, msg.get("BridgeUniqueid", "")))
    elif event == "BridgeLeave":
        ops.append(("leave", uid, msg.get("BridgeUniqueid", "")))
    elif event == "Hangup":
        ops.append(("gone", uid, None))
    return tuple(ops)


def _apply(live: dict[str, ChannelSnapshot], index: int, op: str, uid: str, arg: object) -> None:
    if op == "new":
        assert isinstance(arg, dict)
        fields = {**arg, "Application": "", "ApplicationData": "", "BridgeId": ""}
        live[uid] = ChannelSnapshot(fields, index)
        return
    channel = live.get(uid)
    if channel is None:
        return
    fields = channel.fields
    if op == "set":
        assert isinstance(arg, dict)
        fields.update(arg)
    elif op == "app":
        assert isinstance(arg, tuple)
        fields["Application"], fields["ApplicationData"] = arg
    elif op == "dial" and not fields["Application"]:
        dialer = live.get(str(arg))
        queue = dialer is not None and dialer.fields["Application"] == "Queue"
        fields["Application"] = "AppQueue" if queue else "AppDial"
        fields["ApplicationData"] = "(Outgoing Line)"
    elif op == "enter":
        fields["BridgeId"] = str(arg)
    elif op == "leave" and fields["BridgeId"] == arg:
        fields["BridgeId"] = ""
    elif op == "gone":
        del live[uid]
