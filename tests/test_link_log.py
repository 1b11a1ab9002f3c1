"""What the AMI link tells the journal, over real TCP against the simulator: one line per
state change (also while Asterisk is down at start-up), an Asterisk restart named as such,
and a connection pbxlink closed itself never blamed on Asterisk."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path
from typing import Any

import structlog

from pbxlink.ami.framing import Message
from pbxlink.ami.link import AmiLink
from pbxlink.daemon import Daemon

from test_daemon import config, run_daemon, simulator, until

#: the link's lines a person reads (ami.retry is debug, one per attempt)
STATE_LINES = (
    "ami.connecting",
    "ami.connect_failed",
    "ami.connected",
    "ami.disconnected",
    "ami.reconnected",
    "ami.auth_failed",
    "ami.asterisk_restarted",
)


def said(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if e["event"] in STATE_LINES]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_asterisk_down_at_start_up_is_one_line_however_many_attempts(
    tmp_path: Path,
) -> None:
    port = unused_port()  # nothing listens there yet: every attempt is refused
    with structlog.testing.capture_logs() as logs:
        daemon = Daemon(config(tmp_path, port))
        task = asyncio.create_task(daemon.run())
        try:
            await until(
                lambda: sum(e["event"] == "ami.retry" for e in logs) >= 4 or task.done(),
                what="four attempts",
            )
            assert not task.done() and daemon.ami_state == "down"
            assert said(logs) == ["ami.connecting", "ami.connect_failed"]
            (failed,) = [e for e in logs if e["event"] == "ami.connect_failed"]
            assert "ConnectionRefusedError" in failed["error"]
            async with simulator(port=port) as sim:  # Asterisk comes up
                await until(lambda: daemon.ami_state == "up", what="the link up")
                assert said(logs) == ["ami.connecting", "ami.connect_failed", "ami.connected"]
                # once up, a lost link is retried at the shortest delay again, not at the
                # backoff the failures at start-up had reached
                assert daemon.link is not None
                sim.drop_connections()
                await until(lambda: daemon.link.reconnects == 1 and daemon.ami_state == "up")
                assert [e["attempt"] for e in logs if e["event"] == "ami.retry"][-1] == 1
                daemon.stop()
                assert await asyncio.wait_for(task, 10) == 0
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 10)


async def test_an_asterisk_restart_is_logged_as_such_a_dropped_link_is_not(
    tmp_path: Path,
) -> None:
    async with simulator(uptime=3600.0) as sim:  # the PBX has been up for an hour

        async def body(d: Daemon) -> None:
            assert d.link is not None
            with structlog.testing.capture_logs() as logs:
                sim.drop_connections()  # the same Asterisk: its Uptime kept growing
                await until(lambda: d.link.reconnects == 1 and d.ami_state == "up")
                await asyncio.sleep(0.2)  # the FullyBooted after the login is in
                assert "ami.asterisk_restarted" not in said(logs)
                sim.restart()  # a new boot: Uptime starts again from 0
                await until(lambda: d.link.reconnects == 2 and d.ami_state == "up")
                await until(lambda: "ami.asterisk_restarted" in said(logs))
            (restart,) = [e for e in logs if e["event"] == "ami.asterisk_restarted"]
            booted = dt.datetime.fromisoformat(restart["booted_at"])
            before = dt.datetime.fromisoformat(restart["previously_booted_at"])
            assert 3590 < (booted - before).total_seconds() < 3700 and restart["uptime_s"] < 60
            assert said(logs).count("ami.disconnected") == 2
            assert said(logs).count("ami.reconnected") == 2

        await run_daemon(config(tmp_path, sim.port), body)


async def test_a_connection_pbxlink_closed_itself_is_not_blamed_on_asterisk(
    tmp_path: Path,
) -> None:
    """An exception on the read path (a tracker bug) makes asyncio close the socket on our
    side; the journal must say so, and a drop by the PBX must not name pbxlink."""
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            assert d.link is not None
            feed, armed = d.tracker.feed, [True]

            def buggy(msg: Message, at: float) -> list:
                if armed:
                    armed.clear()
                    raise RuntimeError("a bug on the read path")
                return feed(msg, at)

            d.tracker.feed = buggy  # type: ignore[method-assign]
            with structlog.testing.capture_logs() as logs:
                sim.play_once(["04_in_direct_busy"])
                await until(lambda: d.link.reconnects == 1 and d.ami_state == "up")
                sim.drop_connections()
                await until(lambda: d.link.reconnects == 2 and d.ami_state == "up")
            ours, theirs = [e["error"] for e in logs if e["event"] == "ami.disconnected"]
            assert "Asterisk" not in ours
            assert "closed by pbxlink: reading the stream failed" in ours
            assert "RuntimeError: a bug on the read path" in ours
            assert "pbxlink" not in theirs

        await run_daemon(config(tmp_path, sim.port), body)


async def test_a_stop_at_any_moment_of_connecting_ends_the_link(tmp_path: Path) -> None:
    """Cancelled at every loop step of its connect and login, the link's task ends. On Python
    3.11 `asyncio.wait_for` drops a cancel that arrives as the awaited connect completes: the
    task then ran on, and a daemon sent SIGTERM just after start-up never stopped (CI saw it;
    a loop of start-then-SIGTERM hung 4 times in 40)."""
    async with simulator() as sim:
        settings = config(tmp_path, sim.port).ami
        ups: list[float] = []
        for steps in range(60):
            link = AmiLink(
                settings,
                subscription={},
                on_event=lambda msg, at: None,
                on_up=ups.append,
                on_down=lambda at: None,
            )
            task = asyncio.create_task(link.run())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=5)
            link.close()
            assert task in done, f"cancelled after {steps} loop steps, the link ran on"
            assert task.cancelled(), f"after {steps} steps: {task}"
        assert ups, "no cancel came after the login: the steps never reached it"
