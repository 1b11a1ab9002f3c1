"""What every benchmark report names (the machine and the commit the figures came from), and the
helpers the benchmarks share: how busy the machine is, latency series, the daemon's /metrics."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU, for the report: figures mean little without the machine they came from."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The commit measured; `-dirty` when the work tree has changes not in it."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


# -- what else the machine is doing ------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: below this share of the machine busy with others' work, it counts as quiet
QUIET_PCT = 10.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, its threads included (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_busy_s(cpu: int | None = None) -> float:
    """Seconds a core (all of them: None) spent busy (anyone's work, and time stolen by the
    hypervisor)."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        fields = line.split()
        if fields[0] == name:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
            return (user + nice + system + irq + softirq + steal) / CLK_TCK
    return 0.0


def own_cpu_s() -> float:
    """CPU seconds of this process and its finished children (the import's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(slots=True)
class Others:
    """How much of the machine other processes took during a phase: figures taken while
    someone else ran are worth less, and the report says so."""

    wall: float = field(default_factory=time.perf_counter)
    busy: float = field(default_factory=core_busy_s)
    own: float = field(default_factory=own_cpu_s)

    def pct(self) -> float:
        wall = time.perf_counter() - self.wall
        others = (core_busy_s() - self.busy) - (own_cpu_s() - self.own)
        return max(0.0, others / (wall * (os.cpu_count() or 1)) * 100) if wall > 0 else 0.0


def wait_quiet(limit_s: float) -> str:
    """Wait (up to `limit_s`) until other processes leave the machine nearly idle."""
    if limit_s <= 0:  # --smoke, or asked not to: no second spent sampling
        return "not waited for a quiet machine"
    start = time.monotonic()
    while True:
        sample = Others()
        time.sleep(1.0)
        busy = sample.pct()
        waited = time.monotonic() - start
        if busy < QUIET_PCT or waited > limit_s:
            state = "quiet" if busy < QUIET_PCT else f"still {busy:.0f}% busy, going on"
            return f"waited {waited:.0f} s for a quiet machine: {state}"


def size_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 1e6


# -- latencies ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


@dataclass(slots=True)
class Series:
    """Latencies of one kind of operation, in seconds."""

    name: str
    times: list[float] = field(default_factory=list)

    def pct(self, p: float) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def row(self, base: Series | None) -> str:
        p50, p99, top = self.pct(50), self.pct(99), max(self.times)
        ratio = f"{base.pct(50) / p50:>10,.0f}x" if base is not None and base is not self else ""
        return (
            f"{self.name:<44} {len(self.times):>7,} {ms(p50):>9} {ms(p99):>9} {ms(top):>9} "
            f"{ms(statistics.fmean(self.times)):>9} {ratio}"
        )


# -- the daemon under test ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int, timeout: float = 5.0) -> dict[str, float]:
    """The daemon's /metrics, summed by metric name (labels dropped)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out
