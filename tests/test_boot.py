"""FullyBooted is the tracker's to judge: `pbxlink replay` and the live link feed it like any
event, so both read a stream the same way, a FullyBooted without `Uptime` included (no
restart can be told: the CoreShowChannel list decides which calls survive)."""

from __future__ import annotations

import re
from types import SimpleNamespace

from pbxlink.ami.framing import AmiParser, Banner
from pbxlink.ami.link import AmiLink
from pbxlink.calls.tracker import CallTracker
from pbxlink.calls.updates import CallEnded, CallUpdate
from pbxlink.replay import replay

from conftest import TRACES, lab_tracker, need

RECONNECT = TRACES / "15_ami_reconnect_midcall.ami"


def as_the_daemon_drives_it(data: bytes, tracker: CallTracker) -> list[CallUpdate]:
    """The live path: the AMI link's sink, wired as daemon.py wires it (on_event feeds the
    tracker; a lost session, here a second banner, is `link_down` at the last event)."""
    out: list[CallUpdate] = []
    now = [0.0]
    link = AmiLink(
        SimpleNamespace(tls=False, host="pbx", port=5038, username="pbxlink"),  # type: ignore[arg-type]
        subscription=tracker.subscription(),
        on_event=lambda msg, at: out.extend(tracker.feed(msg, at)),
        on_up=lambda at: None,
        on_down=lambda at: out.extend(tracker.link_down(at)),
        clock=lambda: now[0],
    )
    parser = AmiParser(link._subscription)
    banners = 0
    for frame in parser.feed(data):
        if isinstance(frame, Banner):
            banners += 1
            if banners > 1:
                out.extend(tracker.link_down(now[0]))
            continue
        if "Timestamp" in frame:
            now[0] = float(frame["Timestamp"])
        link._sink(frame)  # no session: the CoreShowChannels request is not written
    out.extend(tracker.tick(float("inf")))
    return out


def records(updates: list[CallUpdate]) -> list[dict]:
    return [u.call.to_dict() for u in updates if isinstance(u, CallEnded)]


def test_a_fully_booted_without_uptime_reads_the_same_live_and_replayed() -> None:
    need(RECONNECT.is_file(), f"real Asterisk traces not found at {TRACES}")
    data = RECONNECT.read_bytes()
    stripped, n = re.subn(
        rb"(Event: FullyBooted\r\n(?:[^\r\n]+\r\n)*?)Uptime: \d+\r\n", rb"\1", data
    )
    assert n == 2 and b"Uptime" not in stripped
    replayed = records(list(replay([stripped], lab_tracker())))
    live = records(as_the_daemon_drives_it(stripped, lab_tracker()))
    assert replayed == live
    # unknown uptime is no restart: the call across the reconnect survives as after a blip,
    # exactly as with the Uptime Asterisk really sent
    assert replayed == records(list(replay([data], lab_tracker())))
    assert replayed and any(r["partial"] for r in replayed)


def test_a_garbled_uptime_is_no_uptime() -> None:
    """A restart needs a boot moment to compare: `Uptime: x` tells none, so the call in
    progress is not ended as if Asterisk had restarted; the resync decides."""
    need(RECONNECT.is_file(), f"real Asterisk traces not found at {TRACES}")
    data = RECONNECT.read_bytes()
    garbled = data.replace(b"Uptime: 372\r\n", b"Uptime: x\r\n")
    assert garbled != data
    assert records(list(replay([garbled], lab_tracker()))) == records(
        list(replay([data], lab_tracker()))
    )


def test_a_restart_ends_calls_the_same_way_live_and_replayed() -> None:
    """With an Uptime that puts the boot elsewhere, both paths end the call as partial."""
    need(RECONNECT.is_file(), f"real Asterisk traces not found at {TRACES}")
    restarted = RECONNECT.read_bytes().replace(b"Uptime: 372\r\n", b"Uptime: 2\r\n")
    replayed = records(list(replay([restarted], lab_tracker())))
    assert replayed == records(as_the_daemon_drives_it(restarted, lab_tracker()))
    (call,) = replayed  # ended when the link went down, not when the resync came
    (blip,) = records(list(replay([RECONNECT.read_bytes()], lab_tracker())))
    assert call["partial"] and call["estimated"] == ["ended_at"] and blip["estimated"] == []
    assert call["ended_at"] < blip["ended_at"]
