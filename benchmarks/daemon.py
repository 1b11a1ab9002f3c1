"""The whole daemon over real TCP: how many calls per second `pbxlink run` keeps up with.

Why this shape: the tracker benchmark times parsing and tracking in one process; a daemon also
pays for sockets, the event loop, the call log in SQLite, its journal lines and /metrics, and
it must never fall behind, because Asterisk drops a reader whose writes time out. So here the
built-in AMI simulator plays recorded calls in its own process, pinned to one core, and the
daemon (`pbxlink run --config FILE`, [ami] mode = "asterisk") reads them over loopback in
another process, pinned to the other core, at rising call rates. In the same run, at the same
rates, on the same stream, the baseline: a bare panoramisk 1.4 `Manager` (stock protocol, one
`register_event('*', ...)` callback that counts) in the daemon's place.

Two streams: everything the simulator plays (`read = all`, no filter) and what Asterisk sends
with the manager.conf `eventfilter` lines README.md recommends (`AmiSimulator(eventfilter=)`).

Each measurement starts a fresh consumer (the daemon with an empty state directory) while the
simulator idles, lets it log in, then raises the rate: the calls in progress build up while it
listens, as on a PBX in the morning (`--connect-busy` logs in at full rate instead, as after a
restart: the CoreShowChannels resync of a thousand calls comes on top). The window starts once
the longest recorded call has had time to play at the new rate.

What "keeps up" means, per rate, over the measured window: the consumer reads as fast as the
simulator writes (the bytes queued between them, in the simulator's buffer and both kernel
socket buffers, do not grow and stay under a second of traffic), nobody was dropped or
reconnected, and for the daemon the call log's queue does not grow. The consumer's read rate
comes from the kernel (`ss`: bytes received less those still unread), so both consumers are
measured the same way whatever they count themselves.

On a shared machine other processes' work on the consumer's core spoils everything: before
each measurement the harness waits for both cores to be quiet, reports what others took of the
consumer's core during the window (`other%`) and measures a failed rate again when that share
was large.

Run: `python benchmarks/daemon.py [--rates 50,100,...] [--duration S]`; docs/benchmarks.md has
results. Linux only (/proc, `ss`, CPU affinity). `--smoke` (CI) measures each consumer once at
20 calls/s: it proves the script works, and fails only on what is wrong at any speed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from machine import core_busy_s, cpu_model, cpu_seconds, free_port, git_commit, metrics

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

DEFAULT_RATES = (50, 100, 200, 300, 500, 700, 1000, 1500, 2000)
#: the shipped scenarios last 17.3 s on average (0.3 s to 52.5 s): at 17x a call lasts about
#: one second, so the calls in progress number about the call rate (2,000 at 2,000 calls/s)
DEFAULT_SPEED = 17.0
#: the issue's goal: this many calls/s on one core, with the README's filter, no backlog
GOAL_CALLS_S = 1000
SECRET = "bench-secret"
USER = "pbxlink"

STREAMS = ("all", "filtered")
CONSUMERS = ("daemon", "panoramisk")

# A rate is sustained when all of these hold over the window:
#: the bytes queued between simulator and consumer grew (least-squares slope over the samples)
#: by less than this share of the bytes sent: the consumer read at least 98 % of the stream
MAX_GROWTH_SHARE = 0.02
#: ... and at the end stood below this much traffic (the consumer lags by less than this)
MAX_BACKLOG_S = 1.0
#: the call log's queue at the end: below a second of calls (or this many, if more)
MAX_STORE_QUEUE = 1000
#: the simulator sent at least this share of the calls asked for (else it is the limit)
MIN_SIM_SHARE = 0.95
#: other processes busy on the consumer's core beyond this (%): a failure is measured again
DISTURBED_PCT = 10.0
#: before each measurement, wait until no core is busier than this (%) with others' work
QUIET_PCT = 10.0
#: the rate while a consumer starts and logs in (calls/s)
IDLE_CALLS_S = 1.0


# -- child: the simulator --------------------------------------------------------------------


def sim_main(args: argparse.Namespace) -> int:
    """The AMI simulator in its own process; one JSON line on stdout per `stats` on stdin."""
    import structlog

    from pbxlink.sim.eventfilter import EventFilter
    from pbxlink.sim.scenario import load_scenarios
    from pbxlink.sim.server import AmiSimulator

    seen: Counter[str] = Counter()

    def count(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        """The simulator's log: counted; a dropped client is also written to its log file."""
        seen[event["event"]] += 1
        if event["event"] == "sim.client_too_slow":
            print(f"{time.time():.3f} sim: dropped a slow client: {event}", file=sys.stderr)
        raise structlog.DropEvent

    structlog.configure(processors=[count])

    class BenchSimulator(AmiSimulator):
        """Counts what it broadcasts while a client is connected (the benchmark's stream)."""

        sent_bytes = 0
        sent_events = 0

        def _broadcast(self, data: bytes) -> None:
            if self.clients:
                self.sent_bytes += len(data)
                self.sent_events += data.count(b"\r\n\r\n")
            super()._broadcast(data)

        def write_buffer(self) -> int:
            return sum(
                s.transport.get_write_buffer_size()
                for s in self._sessions
                if s.transport is not None
            )

    lines = EventFilter.from_text(README.read_text()).lines if args.stream == "filtered" else ()

    async def run() -> None:
        sim = BenchSimulator(
            load_scenarios(),
            username=USER,
            secret=SECRET,
            calls_per_s=args.rate,
            max_calls=10**9,
            speed=args.speed,
            timestamps=False,
            pbx_timezone=dt.UTC,
            eventfilter=lines,
        )
        finished = 0
        await sim.start()
        print(json.dumps({"port": sim.port}), flush=True)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        pending = b""

        def stats() -> dict[str, Any]:
            nonlocal finished
            finished += len(sim.finished)
            sim.finished.clear()  # only counted: a long run would keep millions
            cpu = os.times()
            return {
                "t": time.time(),
                "sent_bytes": sim.sent_bytes,
                "sent_events": sim.sent_events,
                "filtered": sim.filtered,
                "finished": finished,
                "active": sim.active_calls,
                "clients": sim.clients,
                "write_buffer": sim.write_buffer(),
                "drops": seen["sim.client_too_slow"],
                "logins": seen["sim.client_logged_in"],
                "cpu_s": cpu.user + cpu.system,
            }

        def on_stdin() -> None:
            nonlocal pending
            data = os.read(sys.stdin.fileno(), 4096)
            if not data:
                _set_result(done)
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                words = line.decode().split()
                if words[:1] == ["rate"]:
                    sim.calls_per_s = float(words[1])
                    print(json.dumps({"rate": sim.calls_per_s}), flush=True)
                elif words[:1] == ["stats"]:
                    print(json.dumps(stats()), flush=True)
                elif words[:1] == ["quit"]:
                    _set_result(done)

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        try:
            await done
        finally:
            loop.remove_reader(sys.stdin.fileno())
            await sim.close()

    asyncio.run(run())
    return 0


def _set_result(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- child: the panoramisk baseline ----------------------------------------------------------


def panoramisk_main(args: argparse.Namespace) -> int:
    """A bare panoramisk Manager: stock protocol, one '*' callback that counts, nothing else."""
    import logging

    from panoramisk import Manager

    logging.basicConfig(level=logging.WARNING)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        events = 0
        logins = 0

        def on_event(manager: Manager, message: Any) -> None:
            nonlocal events
            events += 1

        def on_login(manager: Manager) -> None:
            nonlocal logins
            logins += 1

        manager = Manager(
            host="127.0.0.1",
            port=args.port,
            username=USER,
            secret=SECRET,
            loop=loop,
            on_login=on_login,
        )
        manager.register_event("*", on_event)
        manager.connect()
        done = loop.create_future()

        def on_stdin() -> None:
            data = os.read(sys.stdin.fileno(), 4096)
            if not data or b"quit" in data:
                _set_result(done)
            for _ in range(data.count(b"stats")):
                cpu = os.times()
                out = {"t": time.time(), "events": events, "logins": logins}
                print(json.dumps({**out, "cpu_s": cpu.user + cpu.system}), flush=True)

        loop.add_reader(sys.stdin.fileno(), on_stdin)
        await done
        manager.close()

    asyncio.run(run())
    return 0


# -- the harness: processes ------------------------------------------------------------------


def _pinned(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class Child:
    """A child process that answers one JSON line per command on its stdin."""

    def __init__(self, argv: list[str], log: Path, cpu: int | None, *, talks: bool) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if talks else subprocess.DEVNULL,
            stdout=subprocess.PIPE if talks else self._log,
            stderr=self._log,
            preexec_fn=_pinned(cpu),
            cwd=ROOT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ask(self, command: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def read(self, timeout: float = 10.0) -> dict[str, Any]:
        out = self.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        line = out.readline() if ready else b""
        if not line:
            raise RuntimeError(f"no answer from {self.proc.args!r}; see {self.log_path}")
        return json.loads(line)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (or `quit` for those that talk), then wait; SIGKILL if it will not go."""
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.write(b"quit\n")
                    self.proc.stdin.flush()
            else:
                self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        self._log.close()
        return code


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass(slots=True)
class Socket:
    """The AMI connection as the kernel sees it: what the consumer read, what still waits."""

    received: int = 0  # bytes that reached the consumer's socket
    unread: int = 0  # of those, not yet read by the consumer (its Recv-Q)
    unsent: int = 0  # bytes in the simulator socket's send queue (Send-Q)

    @property
    def read(self) -> int:
        return self.received - self.unread


_SS_RECEIVED = re.compile(r"\bbytes_received:(\d+)")


def ami_socket(sim_port: int) -> Socket:
    """Both ends of the one established connection to the simulator, from `ss -tin`."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{sim_port} or dport = :{sim_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    sock = Socket()
    for head, info in zip(out[::2], out[1::2], strict=False):
        recv_q, send_q, local, peer = head.split()[:4]
        if peer.endswith(f":{sim_port}"):  # the consumer's end
            sock.unread = int(recv_q)
            found = _SS_RECEIVED.search(info)
            sock.received = int(found[1]) if found else 0
        elif local.endswith(f":{sim_port}"):
            sock.unsent = int(send_q)
    return sock


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs: how fast the backlog grows, through its jitter."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def daemon_config(state: Path, sim_port: int, web_port: int) -> str:
    return f"""\
[ami]
mode = "asterisk"
host = "127.0.0.1"
port = {sim_port}
username = "{USER}"
secret = "{SECRET}"

[storage]
state_dir = "{state}"

[web]
host = "127.0.0.1"
port = {web_port}

[calls]
pbx_timezone = "UTC"
"""


# -- the harness: one measurement ------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    at: float
    sim: dict[str, Any]
    sock: Socket
    consumer: dict[str, float]  # daemon: /metrics; panoramisk: its own counts
    cpu_s: float
    rss: int
    core_s: float  # the consumer's core busy so far, whoever ran there

    @property
    def backlog(self) -> int:
        """Bytes the simulator sent this consumer that it has not read yet, wherever they are."""
        return self.sim["write_buffer"] + self.sock.unsent + self.sock.unread


@dataclass(slots=True)
class Result:
    stream: str
    consumer: str
    rate: int
    seconds: float = 0.0
    calls_s: float = 0.0  # calls the simulator finished per second
    events_s: float = 0.0  # events it sent per second
    mb_s: float = 0.0
    read_events_s: float = 0.0  # what the consumer read, in events/s (bytes / bytes per event)
    counted_s: float = 0.0  # daemon: events delivered to the tracker; panoramisk: callbacks
    ended_s: float = 0.0  # daemon: calls ended per second
    backlog_start: int = 0
    backlog_end: int = 0
    backlog_max: int = 0
    growth: float = 0.0  # backlog growth over the window, as a share of the bytes sent
    drops: int = 0  # the simulator dropped the consumer (too slow)
    reconnects: int = 0  # logins after the first
    store_queue_max: float = 0.0
    store_queue_end: float = 0.0
    active: float = 0.0  # calls in progress in the simulator (mean of samples)
    tracked: float = 0.0  # daemon: calls in progress it tracks (mean)
    cpu: float = 0.0  # % of one core
    rss: int = 0
    sim_cpu: float = 0.0
    others: float = 0.0  # % of the consumer's core used by other processes (or stolen)
    exit_code: int | None = None
    rows: int | None = None  # daemon: rows in the call log after it stopped
    ended_total: int | None = None  # daemon: pbxlink_calls_ended_total at the end
    problems: list[str] = field(default_factory=list)
    #: of the problems, those that are wrong at any speed (a crash, an exit code, ended calls
    #: missing from the log): `--smoke` fails on these and judges nothing else
    broken: list[str] = field(default_factory=list)

    def wrong(self, problem: str) -> None:
        self.problems.append(problem)
        self.broken.append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def disturbed(self) -> bool:
        """Other processes took a share of the consumer's core: a failure may not be its own."""
        return self.others > DISTURBED_PCT

    @property
    def sim_limited(self) -> bool:
        """The simulator fell short of the rate by itself (not while a client reconnected)."""
        short = self.calls_s < self.rate * MIN_SIM_SHARE
        return short and not self.drops and not self.reconnects


class Harness:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        cpus = sorted(os.sched_getaffinity(0))
        self.sim_cpu, self.consumer_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
        if self.sim_cpu is not None:
            os.sched_setaffinity(0, {self.sim_cpu})  # the harness stays off the consumer's core
        self.sim: Child | None = None
        self.sim_port = 0
        self.runs = 0

    def start_sim(self, stream: str, rate: int) -> None:
        argv = [sys.executable, __file__, "--role", "sim", "--stream", stream]
        argv += ["--speed", str(self.args.speed), "--rate", str(rate)]
        self.sim = Child(argv, self.tmp / f"sim-{stream}.log", self.sim_cpu, talks=True)
        self.sim_port = self.sim.read(30)["port"]

    def set_rate(self, rate: float) -> None:
        assert self.sim is not None
        self.sim.ask(f"rate {rate}")

    def stop_sim(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None

    def wait_quiet(self) -> None:
        """Wait (up to --quiet-wait s) until no other process is busy on our two cores.

        The simulator idles meanwhile (1 call/s), so what keeps a core busy is someone else's
        work: on a shared machine a test suite would take the consumer's core and turn its
        figures into nonsense.
        """
        if self.args.quiet_wait <= 0:  # --smoke, or asked not to
            return
        cores = [c for c in (self.sim_cpu, self.consumer_cpu) if c is not None] or [None]
        start = time.monotonic()
        while True:
            before = [core_busy_s(c) for c in cores]
            t0 = time.monotonic()
            time.sleep(0.5)
            dt_s = time.monotonic() - t0
            busy = max(
                (core_busy_s(c) - b) / dt_s * 100 for c, b in zip(cores, before, strict=True)
            )
            waited = time.monotonic() - start
            if busy < QUIET_PCT or waited > self.args.quiet_wait:
                if waited > 1.0:
                    state = "quiet" if busy < QUIET_PCT else f"still {busy:.0f}% busy, going on"
                    print(f"  (waited {waited:.0f} s for other processes to leave: {state})")
                return

    def measure(self, stream: str, consumer: str, rate: int) -> Result:
        assert self.sim is not None
        self.runs += 1
        result = Result(stream, consumer, rate)
        self.set_rate(IDLE_CALLS_S)
        self.wait_quiet()
        if self.args.connect_busy:  # a daemon (re)starting on a busy PBX: resync, then keep up
            self.set_rate(rate)
            time.sleep(self.args.ramp)
        run_dir = self.tmp / f"{self.runs:02d}-{stream}-{consumer}-{rate}"
        run_dir.mkdir()
        web_port = free_port()
        if consumer == "daemon":
            config = run_dir / "pbxlink.toml"
            # the popup hub on a port of its own: 8081, its default, may be taken (a demo)
            hub = '\n[hub]\nhost = "127.0.0.1"\nport = 0\n'
            config.write_text(daemon_config(run_dir / "state", self.sim_port, web_port) + hub)
            argv = [sys.executable, "-m", "pbxlink", "run", "--config", str(config)]
            if self.args.profile is not None:
                out = self.args.profile / f"daemon-{stream}-{rate}.prof"
                argv[1:1] = ["-m", "cProfile", "-o", str(out)]
            child = Child(argv, run_dir / "daemon.log", self.consumer_cpu, talks=False)
        else:
            argv = [sys.executable, __file__, "--role", "panoramisk", "--port", str(self.sim_port)]
            child = Child(argv, run_dir / "panoramisk.log", self.consumer_cpu, talks=True)
        try:
            self._wait_up(child, consumer, web_port)
            login = self._sample(child, consumer, web_port)
            # by default the consumer logged in to a quiet PBX and the calls start now
            self.set_rate(rate)
            time.sleep(self.args.ramp + self.args.warmup)  # the longest call: rate reached
            samples = [self._sample(child, consumer, web_port)]
            start = time.monotonic()
            for i in range(1, self.args.samples + 1):
                time.sleep(
                    max(0.0, start + i * self.args.duration / self.args.samples - time.monotonic())
                )
                samples.append(self._sample(child, consumer, web_port))
        finally:
            code = child.stop()
        result.exit_code = code
        self._summarise(result, samples, login)
        if consumer == "daemon":
            db = run_dir / "state" / "pbxlink.sqlite3"
            with contextlib.closing(sqlite3.connect(db)) as conn:
                result.rows = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
            if result.ended_total is not None and result.rows < result.ended_total:
                result.wrong(f"{result.rows} rows for {result.ended_total} calls ended")
        if code != 0:
            result.wrong(f"{consumer} exited {code}")
        return result

    def _wait_up(self, child: Child, consumer: str, web_port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{consumer} exited at start-up; see {child.log_path}")
            try:
                if consumer == "daemon":
                    if metrics(web_port, 1.0).get("pbxlink_ami_link_up") == 1.0:
                        return
                elif child.ask("stats")["logins"] >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{consumer} did not log in within 30 s; see {child.log_path}")

    def _sample(self, child: Child, consumer: str, web_port: int) -> Sample:
        assert self.sim is not None
        sim = self.sim.ask("stats")
        sock = ami_socket(self.sim_port)
        if consumer == "daemon":
            try:
                got = metrics(web_port)
            except OSError:
                got = {}  # too busy to answer within the timeout: a gap in the gauges
        else:
            got = child.ask("stats")
        return Sample(
            time.time(),
            sim,
            sock,
            got,
            cpu_seconds(child.pid),
            rss_bytes(child.pid),
            core_busy_s(self.consumer_cpu),
        )

    def _summarise(self, r: Result, samples: list[Sample], login: Sample) -> None:
        """Rates over the window (`samples`); drops and reconnects since `login`."""
        first, last = samples[0], samples[-1]
        dt_s = last.sim["t"] - first.sim["t"]
        r.seconds = dt_s
        sent_bytes = last.sim["sent_bytes"] - first.sim["sent_bytes"]
        sent_events = last.sim["sent_events"] - first.sim["sent_events"]
        r.calls_s = (last.sim["finished"] - first.sim["finished"]) / dt_s
        r.events_s = sent_events / dt_s
        r.mb_s = sent_bytes / dt_s / 1e6
        per_event = sent_bytes / sent_events if sent_events else 1.0
        growth_s = slope([s.sim["t"] for s in samples], [s.backlog for s in samples])
        r.growth = growth_s * dt_s / sent_bytes if sent_bytes else 0.0
        r.read_events_s = (sent_bytes / dt_s - growth_s) / per_event
        r.backlog_start, r.backlog_end = first.backlog, last.backlog
        r.backlog_max = max(s.backlog for s in samples)
        r.drops = last.sim["drops"] - login.sim["drops"]
        r.active = sum(s.sim["active"] for s in samples) / len(samples)
        r.cpu = (last.cpu_s - first.cpu_s) / (last.at - first.at) * 100
        r.rss = last.rss
        r.sim_cpu = (last.sim["cpu_s"] - first.sim["cpu_s"]) / dt_s * 100
        wall = last.at - first.at
        r.others = max(0.0, (last.core_s - first.core_s) / wall * 100 - r.cpu)
        c0, c1 = first.consumer, last.consumer
        if r.consumer == "daemon":
            window = last.at - first.at
            if "pbxlink_ami_events_total" in c0 and "pbxlink_ami_events_total" in c1:
                delivered = c1["pbxlink_ami_events_total"] - c0["pbxlink_ami_events_total"]
                r.counted_s = delivered / window
                ended = c1["pbxlink_calls_ended_total"] - c0["pbxlink_calls_ended_total"]
                r.ended_s = ended / window
                r.ended_total = int(c1["pbxlink_calls_ended_total"])
            r.reconnects = int(c1.get("pbxlink_ami_reconnects_total", 0))  # since start
            queues = [s.consumer["pbxlink_store_queue_depth"] for s in samples if s.consumer]
            r.store_queue_max = max(queues, default=0.0)
            r.store_queue_end = queues[-1] if queues else 0.0
            tracked = [s.consumer["pbxlink_calls_active"] for s in samples if s.consumer]
            r.tracked = sum(tracked) / len(tracked) if tracked else 0.0
            if len(queues) < len(samples):
                r.problems.append(f"/metrics unanswered {len(samples) - len(queues)} times")
            if r.store_queue_end > max(MAX_STORE_QUEUE, r.rate):
                r.problems.append(f"call log queue at {r.store_queue_end:,.0f}")
        else:
            r.counted_s = (c1["events"] - c0["events"]) / (c1["t"] - c0["t"])
            r.reconnects = int(c1["logins"]) - 1
        bytes_s = sent_bytes / dt_s if dt_s else 0.0
        if r.drops:
            r.problems.append(f"dropped by the simulator {r.drops}x")
        if r.reconnects:
            r.problems.append(f"{r.reconnects} reconnects")
        if r.growth > MAX_GROWTH_SHARE and growth_s * dt_s > 256 * 1024:
            r.problems.append(f"backlog grows: read {1 - r.growth:.1%} of the stream")
        if last.backlog > max(MAX_BACKLOG_S * bytes_s, 256 * 1024):
            r.problems.append(f"backlog {last.backlog / bytes_s:.1f} s of traffic")
        if r.sim_limited:
            r.problems.append(f"simulator sent {r.calls_s:,.0f} of {r.rate:,} calls/s")


# -- the stream, described -------------------------------------------------------------------


@dataclass(slots=True)
class StreamInfo:
    events_per_call: float
    bytes_per_call: float
    delivered_per_call: float  # of those, what the daemon's subscription hands the tracker
    mean_call_s: float


def describe(stream: str, speed: float) -> StreamInfo:
    """Per call (the simulator plays the scenarios in turn): events, bytes, delivered."""
    from pbxlink.ami.framing import AmiParser, Message
    from pbxlink.calls.tracker import CallTracker
    from pbxlink.sim.eventfilter import EventFilter
    from pbxlink.sim.scenario import load_scenarios

    scenarios = load_scenarios()
    flt = EventFilter.from_text(README.read_text()) if stream == "filtered" else EventFilter()
    events = size = delivered = 0
    subscription = {**CallTracker().subscription(), "FullyBooted": None}
    for scenario in scenarios:
        sent = [e.data for e in scenario.events if flt.passes(e.data)]
        events += len(sent)
        size += sum(len(d) for d in sent)
        frames = AmiParser(subscription).feed(b"".join(sent))
        delivered += sum(isinstance(f, Message) and "Event" in f for f in frames)
    n = len(scenarios)
    mean = sum(s.duration for s in scenarios) / n / speed
    return StreamInfo(events / n, size / n, delivered / n, mean)


# -- report ----------------------------------------------------------------------------------


def header(args: argparse.Namespace, harness: Harness, infos: dict[str, StreamInfo]) -> None:
    print(f"date       {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC")
    print(f"cpu        {cpu_model()}, {os.cpu_count()} cores")
    if harness.sim_cpu is None:
        print("pinning    NONE: fewer than 2 usable cores, simulator and consumer share one")
    else:
        print(
            f"pinning    simulator (and this script) on cpu {harness.sim_cpu}, "
            f"daemon / panoramisk on cpu {harness.consumer_cpu}"
        )
    print(
        f"python     {platform.python_implementation()} {platform.python_version()}, "
        f"panoramisk {version('panoramisk')}, pbxlink {version('pbxlink')} @ {git_commit()}"
    )
    for stream, info in infos.items():
        print(
            f"stream     {stream:<8} {info.events_per_call:6.1f} events/call, "
            f"{info.bytes_per_call / 1000:5.1f} kB/call, {info.delivered_per_call:5.1f} of them "
            "delivered to the daemon's tracker"
        )
    print(
        f"calls      shipped scenarios in turn at speed {args.speed:g}: a call lasts "
        f"{next(iter(infos.values())).mean_call_s:.2f} s on average, the longest "
        f"{args.ramp:.1f} s"
    )
    login = "at full rate (--connect-busy)" if args.connect_busy else "at 1 call/s, then the rise"
    print(
        f"window     {args.duration:g} s, {args.samples} samples; consumer logs in {login}; "
        f"{args.ramp + args.warmup:.1f} s before the window"
    )
    print()


COLUMNS = (
    ("stream", 8, "{r.stream}"),
    ("consumer", 10, "{r.consumer}"),
    ("calls/s", 7, "{r.rate:,}"),
    ("sent c/s", 8, "{r.calls_s:,.0f}"),
    ("sent ev/s", 9, "{r.events_s:,.0f}"),
    ("MB/s", 5, "{r.mb_s:.1f}"),
    ("read ev/s", 9, "{r.read_events_s:,.0f}"),
    ("counted/s", 9, "{r.counted_s:,.0f}"),
    ("ended/s", 7, "{ended}"),
    ("backlog MB", 10, "{backlog}"),
    ("store q", 7, "{store}"),
    ("active", 6, "{r.active:,.0f}"),
    ("CPU%", 5, "{r.cpu:.0f}"),
    ("RSS MB", 6, "{rss:.0f}"),
    ("ms/call", 7, "{ms_call:.2f}"),
    ("CPU%/1k", 7, "{cpu_k:.1f}"),
    ("MB/1k", 6, "{rss_k:.1f}"),
    ("sim CPU%", 8, "{r.sim_cpu:.0f}"),
    ("other%", 6, "{r.others:.0f}"),
)


def table_head() -> None:
    line = " ".join(f"{name:>{width}}" for name, width, _ in COLUMNS) + "  verdict"
    print(line)
    print("-" * len(line))


def table_row(r: Result, *, again: bool = False) -> None:
    daemon = r.consumer == "daemon"
    values = {
        "r": r,
        "ended": f"{r.ended_s:,.0f}" if daemon else "-",
        "backlog": f"{r.backlog_start / 1e6:.1f}>{r.backlog_end / 1e6:.1f}",
        "store": f"{r.store_queue_max:,.0f}" if daemon else "-",
        "rss": r.rss / 1e6,
        "cpu_k": r.cpu / r.active * 1000 if r.active else 0.0,
        "ms_call": r.cpu * 10 / r.calls_s if r.calls_s else 0.0,
        "rss_k": r.rss / 1e6 / r.active * 1000 if r.active else 0.0,
    }
    cells = " ".join(f"{fmt.format(**values):>{width}}" for _, width, fmt in COLUMNS)
    verdict = "ok" if r.ok else "NO: " + "; ".join(r.problems)
    if r.disturbed:
        verdict += " [core shared with other processes]"
    if again:
        verdict += " -> measured again"
    print(f"{cells}  {verdict}", flush=True)


def capacity(r: Result) -> float:
    """Calls/s one whole core would take at this rate's CPU cost per call (an estimate: the
    cost per call falls a little as the rate rises, reads and commits batching better)."""
    return r.calls_s * 100 / r.cpu if r.cpu else 0.0


def summary(
    results: list[Result],
    streams: Sequence[str],
    consumers: Sequence[str],
    infos: dict[str, StreamInfo],
) -> None:
    print()
    print(
        "sustained = read >= 98 % of the stream, backlog under 1 s, nobody dropped or "
        "reconnected, call log keeping up"
    )
    best: dict[tuple[str, str], Result] = {}
    most: dict[tuple[str, str], float] = {}
    for stream in streams:
        per_call = infos[stream].events_per_call
        for consumer in consumers:
            mine = [r for r in results if (r.stream, r.consumer) == (stream, consumer)]
            ok = [r for r in mine if r.ok]
            top = max(ok, key=lambda r: r.rate, default=None)
            above = [r.rate for r in mine if not r.ok and (top is None or r.rate > top.rate)]
            steady = [r.read_events_s for r in mine if not r.drops and not r.reconnects]
            read = max(steady, default=0.0) / per_call
            most[stream, consumer] = read
            line = f"  {stream:<8} {consumer:<10} "
            if top is None:
                line += "sustains none of the rates"
            else:
                best[stream, consumer] = top
                line += f"sustains {top.rate:,} calls/s"
                line += f" (fails at {min(above):,})" if above else " (the highest tried)"
            line += f"; most read without a drop: {read:,.0f} calls/s"
            if top is not None:
                line += f"; at {top.rate:,}: {top.cpu:.0f}% CPU, ~{capacity(top):,.0f}/core"
            print(line)
            fit = [r for r in ok if r.active]
            if len(fit) >= 2:
                per_k = slope([r.active for r in fit], [r.rss for r in fit]) * 1000
                mean_rss = sum(r.rss for r in fit) / len(fit)
                mean_active = sum(r.active for r in fit) / len(fit)
                base = mean_rss - per_k * mean_active / 1000
                print(
                    f"  {'':<19} RSS {base / 1e6:.0f} MB + {per_k / 1e6:.1f} MB per 1,000 calls "
                    "in progress (fit over the sustained rates; rate and calls rise together)"
                )
        d, p = best.get((stream, "daemon")), best.get((stream, "panoramisk"))
        if d and p:
            print(
                f"  {stream:<8} daemon / panoramisk: {d.rate / p.rate:.2f}x highest sustained "
                f"rate, {most[stream, 'daemon'] / most[stream, 'panoramisk']:.2f}x most read, "
                f"{capacity(d) / capacity(p):.2f}x calls per CPU-second at those rates"
            )
    if "filtered" in streams and "daemon" in consumers:
        goal = best.get(("filtered", "daemon"))
        verdict = "met" if goal and goal.rate >= GOAL_CALLS_S else "NOT met"
        got = f"{goal.rate:,} calls/s sustained" if goal else "no rate sustained"
        print(
            f"goal       >= {GOAL_CALLS_S:,} calls/s with the filter on one core: {verdict} ({got})"
        )


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="calls/s, rising")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per rate")
    ap.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="seconds unmeasured once the rate is reached (the longest call after the rise)",
    )
    ap.add_argument("--samples", type=int, default=6, help="samples in the window")
    ap.add_argument("--speed", type=float, default=DEFAULT_SPEED, help="simulator speed")
    ap.add_argument("--streams", default=",".join(STREAMS), help="all, filtered")
    ap.add_argument("--consumers", default=",".join(CONSUMERS), help="daemon, panoramisk")
    ap.add_argument(
        "--all", action="store_true", help="keep measuring a consumer after a rate it failed"
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure a failed rate again this often if other processes shared the core",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, before each measurement, for other processes to leave the cores",
    )
    ap.add_argument(
        "--connect-busy",
        action="store_true",
        help="log in while the calls already run (a restart on a busy PBX: resync first)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="CI: each consumer once at 20 calls/s on the filtered stream, 1 s; fails only on "
        "what is wrong at any speed (an exit code, ended calls missing from the log)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cProfile the daemon: DIR/daemon-STREAM-RATE.prof",
    )
    ap.add_argument("--role", choices=("sim", "panoramisk"), help=argparse.SUPPRESS)
    ap.add_argument("--stream", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "sim":
        return sim_main(args)
    if args.role == "panoramisk":
        return panoramisk_main(args)
    if args.smoke:  # every part of the script once, on a small stream; no timing judged
        args.rates, args.streams, args.duration, args.samples = "20", "filtered", 1.0, 2
        args.speed, args.warmup, args.quiet_wait, args.retries = 100.0, 0.2, 0.0, 0
    rates = [int(r) for r in args.rates.split(",")]
    streams = [s for s in args.streams.split(",") if s]
    consumers = [c for c in args.consumers.split(",") if c]
    if (
        not rates
        or min(rates) <= 0
        or set(streams) - set(STREAMS)
        or set(consumers) - set(CONSUMERS)
    ):
        ap.error("rates must be positive; streams: all, filtered; consumers: daemon, panoramisk")
    infos = {s: describe(s, args.speed) for s in streams}
    from pbxlink.sim.scenario import load_scenarios

    args.ramp = max(s.duration for s in load_scenarios()) / args.speed  # the longest call
    tmp = Path(tempfile.mkdtemp(prefix="pbxlink-bench-"))
    harness = Harness(args, tmp)
    header(args, harness, infos)
    table_head()
    results: list[Result] = []
    try:
        for stream in streams:
            failed: set[str] = set()
            harness.start_sim(stream, rates[0])
            try:
                for rate in rates:
                    todo = [c for c in consumers if args.all or c not in failed]
                    if not todo:
                        break
                    for consumer in todo:
                        for attempt in range(args.retries + 1):
                            try:
                                result = harness.measure(stream, consumer, rate)
                            except RuntimeError as exc:
                                result = Result(stream, consumer, rate)
                                result.wrong(str(exc))
                            again = attempt < args.retries and result.disturbed and not result.ok
                            table_row(result, again=again)
                            if not again:
                                break
                        results.append(result)
                        if not result.ok and not result.sim_limited:
                            failed.add(consumer)
            finally:
                harness.stop_sim()
    finally:
        if args.keep:
            print(f"\nlogs and databases kept in {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    summary(results, streams, consumers, infos)
    if args.smoke:
        wrong = [f"{r.stream} {r.consumer} {r.rate}: {p}" for r in results for p in r.broken]
        wrong += [
            f"{r.stream} daemon {r.rate}: no call counted as ended"
            for r in results
            if r.consumer == "daemon" and not r.ended_total
        ]
        for line in wrong:
            print(f"SMOKE FAILED: {line}")
        return 1 if wrong or not results else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
