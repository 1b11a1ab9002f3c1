"""Faulted AMI streams made from real traces, the way a real reconnect looks.

A trace is cut after message `cut`; the link stays down for `gap_s` seconds of the trace's
own clock (whatever happened in the gap is lost), then comes back as Asterisk really answers a
new login: the banner, the login response, `FullyBooted` with its `Uptime` (grown by the time
that passed for a drop; small for a restart), and the `CoreShowChannel` list of the channels
alive at that moment with their real `Duration` — each item built from the state the trace's
own events gave that channel (the fields a real `CoreShowChannel` carries, nothing more; see
trace 15's list). Then the trace goes on.

Three faults:
- `drop`: only the link was lost (same boot); the calls go on at Asterisk;
- `asterisk_restart`: Asterisk died at the cut: every channel is gone, and after the gap only
  calls that start afresh (channels and Linkedids created after it) exist;
- `daemon_restart`: pbxlink was killed at the cut and starts again after the gap, with only
  what it had stored of the calls in progress (see `StoredSnapshots`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from pbxlink.ami.framing import AmiParser, Message
from pbxlink.sim.scenario import CHANNEL_FIELDS as SHOW_FIELDS  # the simulator's list too

CRLF2 = b"\r\n\r\n"
STAMP = re.compile(rb"\nTimestamp: ([0-9.]+)")
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
#: uniqueid-valued fields: an event naming any of them is about those channels
ID_FIELDS = (
    "Uniqueid",
    "DestUniqueid",
    "UniqueID",
    "TransfereeUniqueid",
    "TransfererUniqueid",
    "OrigTransfererUniqueid",
    "SecondTransfererUniqueid",
    "TransferTargetUniqueid",
    "LocalOneUniqueid",
    "LocalTwoUniqueid",
    "SourceUniqueid",
)


@dataclass(slots=True)
class Msg:
    raw: bytes
    at: float  # its Timestamp, or the last one before it
    fields: dict[str, str]
    stamped: bool

    @property
    def event(self) -> str | None:
        return self.fields.get("Event")

    def ids(self) -> set[str]:
        return {v for k in ID_FIELDS if (v := self.fields.get(k))}


def parse(data: bytes) -> list[Msg]:
    """The whole messages of a trace, each with its time and its fields."""
    parts = data.split(CRLF2)
    tail = parts.pop()
    raws = [p + CRLF2 for p in parts] + ([tail] if tail else [])
    out: list[Msg] = []
    at = 0.0
    for raw in raws:
        found = STAMP.search(raw)
        if found is not None:
            at = float(found.group(1))
        fields: dict[str, str] = {}
        body = raw.split(b"\r\n", 1)[1] if raw.startswith(b"Asterisk Call Manager/") else raw
        for frame in AmiParser().feed(body):
            if isinstance(frame, Message):
                fields = dict(frame)
        out.append(Msg(raw, at, fields, found is not None))
    return out


@dataclass(slots=True)
class LiveChannel:
    fields: dict[str, str]
    created_at: float
    application: str = ""
    app_data: str = ""
    bridge: str = ""


@dataclass
class Alive:
    """The channels Asterisk has, followed through a trace's events."""

    channels: dict[str, LiveChannel] = field(default_factory=dict)
    boot: float | None = None

    def apply(self, msg: Msg) -> None:
        f = msg.fields
        event = msg.event
        if event == "FullyBooted" and "Uptime" in f and self.boot is None:
            self.boot = msg.at - float(f["Uptime"])
        uid = f.get("Uniqueid")
        if event == "Newchannel" and uid:
            self.channels[uid] = LiveChannel({}, msg.at)
        if event == "Hangup" and uid:
            self.channels.pop(uid, None)
            return
        if event in ("CoreShowChannel", "CoreShowChannelsComplete", "Cdr", "CEL"):
            return
        if uid in self.channels and "Channel" in f:
            self._take(self.channels[uid], f, "")
        dest = f.get("DestUniqueid")
        if dest in self.channels and "DestChannel" in f:
            chan = self.channels[dest]
            self._take(chan, f, "Dest")
            if event == "DialBegin":
                chan.application, chan.app_data = "AppDial", "(Outgoing Line)"
        if uid not in self.channels:
            return
        chan = self.channels[uid]
        if event == "Newexten":
            chan.application, chan.app_data = f.get("Application", ""), f.get("AppData", "")
        elif event == "BridgeEnter":
            chan.bridge = f.get("BridgeUniqueid", "")
        elif event == "BridgeLeave" and chan.bridge == f.get("BridgeUniqueid"):
            chan.bridge = ""

    @staticmethod
    def _take(chan: LiveChannel, f: dict[str, str], prefix: str) -> None:
        for name in SHOW_FIELDS:
            value = f.get(prefix + name)
            if value is not None:
                chan.fields[name] = value

    def show(self, at: float, action_id: str) -> bytes:
        """The answer to `CoreShowChannels` at `at`, as Asterisk 22 writes it."""
        out = [
            b"Response: Success\r\nActionID: %s\r\nEventList: start\r\n"
            b"Message: Channels will follow\r\n\r\n" % action_id.encode()
        ]
        for chan in self.channels.values():
            if "Channel" not in chan.fields:
                continue
            lines = [b"Event: CoreShowChannel", b"ActionID: " + action_id.encode()]
            lines += [f"{k}: {chan.fields.get(k, '')}".encode() for k in SHOW_FIELDS]
            age = int(max(at - chan.created_at, 0.0))
            lines += [
                f"Application: {chan.application}".encode(),
                f"ApplicationData: {chan.app_data}".encode(),
                b"Duration: %02d:%02d:%02d" % (age // 3600, age // 60 % 60, age % 60),
                f"BridgeId: {chan.bridge}".encode(),
            ]
            out.append(b"\r\n".join(lines) + CRLF2)
        count = sum(1 for c in self.channels.values() if "Channel" in c.fields)
        out.append(
            b"Event: CoreShowChannelsComplete\r\nActionID: %s\r\nEventList: Complete\r\n"
            b"ListItems: %d\r\n\r\n" % (action_id.encode(), count)
        )
        return b"".join(out)


def login(at: float, uptime: float, session: int) -> bytes:
    """Banner, login response and FullyBooted, as a new AMI session starts."""
    return (
        BANNER
        + b"Response: Success\r\nActionID: fault-%d-1\r\nMessage: Authentication accepted\r\n\r\n"
        % session
        + b"Event: FullyBooted\r\nPrivilege: system,all\r\nTimestamp: %.6f\r\nUptime: %d\r\n"
        b"LastReload: %d\r\nStatus: Fully Booted\r\n\r\n" % (at, int(uptime), int(uptime))
    )


def boot_of(msgs: list[Msg]) -> float:
    """When the Asterisk of the last login in `msgs` booted."""
    for msg in reversed(msgs):
        if msg.event == "FullyBooted" and "Uptime" in msg.fields:
            return msg.at - float(msg.fields["Uptime"])
    raise ValueError("trace has no FullyBooted with Uptime")


@dataclass(slots=True)
class Fault:
    """A faulted stream: `before` is what pbxlink saw up to the cut; `after` what it sees from
    the reconnect on (for a drop or an Asterisk restart, simply the next bytes of the stream)."""

    kind: str
    cut: int
    gap_s: float
    down_at: float  # the last event before the cut
    up_at: float  # the reconnect
    before: bytes
    after: bytes
    lost: int  # events that happened in the gap

    @property
    def stream(self) -> bytes:
        return self.before + self.after


def _resume(msgs: list[Msg], cut: int, gap_s: float) -> tuple[float, float, int]:
    down_at = msgs[cut - 1].at
    up_at = down_at + gap_s
    resume = cut
    while gap_s > 0 and resume < len(msgs) and msgs[resume].at <= up_at:
        resume += 1
    return down_at, up_at, resume


def drop(msgs: list[Msg], cut: int, gap_s: float) -> Fault:
    """The link lost after message `cut - 1`, back `gap_s` later; Asterisk kept running."""
    down_at, up_at, resume = _resume(msgs, cut, gap_s)
    alive = Alive()
    for msg in msgs[:resume]:
        alive.apply(msg)
    boot = boot_of(msgs[:cut])
    after = login(up_at, math.floor(up_at - boot), 90) + alive.show(up_at, "fault-90-2")
    after += b"".join(m.raw for m in msgs[resume:])
    lost = sum(1 for m in msgs[cut:resume] if m.stamped)
    before = b"".join(m.raw for m in msgs[:cut])
    return Fault("drop", cut, gap_s, down_at, up_at, before, after, lost)


def asterisk_restart(msgs: list[Msg], cut: int, gap_s: float) -> Fault:
    """Asterisk died after message `cut - 1` and booted again: only calls that start afresh
    after the gap exist (every channel of theirs, Linkedid included, is new)."""
    down_at, up_at, resume = _resume(msgs, cut, gap_s)
    born = {m.fields.get("Uniqueid") for m in msgs[resume:] if m.event == "Newchannel"}
    fresh = {
        m.fields["Uniqueid"]
        for m in msgs[resume:]
        if m.event == "Newchannel" and m.fields.get("Linkedid", m.fields.get("Uniqueid")) in born
    }
    uptime = max(gap_s / 2, 1.0)
    after = login(up_at, uptime, 91) + Alive().show(up_at, "fault-91-2")
    kept = [
        m.raw
        for m in msgs[resume:]
        if m.stamped and m.event not in ("FullyBooted", "SuccessfulAuth") and (ids := m.ids())
        and ids <= fresh
    ]
    after += b"".join(kept)
    before = b"".join(m.raw for m in msgs[:cut])
    lost = sum(1 for m in msgs[cut:] if m.stamped) - len(kept)
    return Fault("asterisk_restart", cut, gap_s, down_at, up_at, before, after, lost)


def daemon_restart(msgs: list[Msg], cut: int, gap_s: float) -> Fault:
    """pbxlink killed after message `cut - 1`; started again `gap_s` later, it logs in anew
    (Asterisk kept running): `after` is that new session."""
    fault = drop(msgs, cut, gap_s)
    fault.kind = "daemon_restart"
    return fault
