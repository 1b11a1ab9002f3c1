"""How soon pbxlink does what it promises to do promptly: the waits the unit tests used to bound,
measured here against their goals instead of asserted in `make test`.

Seconds depend on the machine and on what else runs on it, so the unit tests keep what holds at
any speed (a lone call is committed, submit() never waits for SQLite, a lookup gives up at its
timeout, a dead peer is noticed, the daemon stops cleanly) and this script times the same
things, repeats them, and reports the median and the worst against a goal:

- call log: a lone call from submit() to committed (no batch to fill, no delay to wait out);
  100 submit() calls while a batch waits for SQLite's write lock, and how long
  asyncio.sleep(0.01) takes meanwhile (the event loop is not held up by the waiting batch);
- caller lookup: LookupChain.lookup with a source slower than the budget (it returns at the
  budget with what it has; the slow answer comes later, as an update); an HTTP source slower
  than its timeout; closing a chain while a lookup is pending;
- AMI link: a half-open peer (the simulator stops answering, the socket stays open) noticed by
  `pbxlink run` with ping_interval_s = ping_timeout_s = 0.5 s, seen on /healthz;
- the daemon: SIGTERM to exit 0 with calls just played and one still in progress.

The timings that left other unit tests live with their subject: warm and cold directory
lookups and the CSV import in benchmarks/lookup.py, what a stalled popup client does to the
others in benchmarks/popups.py, connection cycles in benchmarks/hub_connections.py.

Run: `python benchmarks/latencies.py [--repeat N] [--pings N] [--stops N]`; it exits 1 when a
worst case misses its goal. `--smoke` (CI) does each thing once with every behaviour check in
force and judges no timing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from pbxlink.calllog import CallLogStore
from pbxlink.calls.record import CallRecord
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.clients.sources import HttpSource, LookupChain
from pbxlink.sim.scenario import load_scenarios
from pbxlink.sim.server import AmiSimulator

from machine import ROOT, cpu_model, free_port, git_commit

T0 = 1_760_000_000.0
GE = PhoneNumbers("GE")
PING_S = 0.5
SECRET = "bench-secret"


class Wrong(AssertionError):
    """Something that is wrong at any speed: the run fails, smoke or not."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Wrong(what)


@dataclass
class Row:
    what: str
    goal_s: float
    times: list[float] = field(default_factory=list)

    def line(self, judged: bool) -> str:
        median, worst = statistics.median(self.times), max(self.times)
        verdict = ("met" if self.met else "NOT met") if judged else "not judged (smoke)"
        return (
            f"| {self.what} | {len(self.times)} | {ms(median)} | {ms(worst)} "
            f"| < {ms(self.goal_s)} | {verdict} |"
        )

    @property
    def met(self) -> bool:
        return max(self.times) < self.goal_s


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def call(call_id: str) -> CallRecord:
    return CallRecord(
        call_id, T0, "inbound", "+995322000000", "", "0322100100", "answered",
        answered_at=T0 + 3, ended_at=T0 + 60, extensions_rung=["101"], answered_by="101",
        wait_s=3.0, talk_s=57.0,
    )  # fmt: skip


async def written(store: CallLogStore, n: int, what: str) -> None:
    """Wait until the store has committed `n` records, polling every 0.5 ms; bounded, so a
    broken run fails instead of hanging."""
    deadline = time.monotonic() + 30
    while store.written < n:
        check(time.monotonic() < deadline, f"{what}: {store.written} of {n} after 30 s")
        await asyncio.sleep(0.0005)


# -- the call log ---------------------------------------------------------------------------------


async def call_log(tmp: Path, repeat: int) -> list[Row]:
    commit = Row("call log: a lone call, submit() to committed", 0.5)
    submits = Row("call log: 100 submit() while a batch waits for the lock", 0.05)
    sleep = Row("call log: asyncio.sleep(0.01) while a batch waits for the lock", 0.1)
    path = tmp / "calllog.sqlite3"
    store = CallLogStore(path, busy_timeout_s=30)
    await store.open()
    writer = asyncio.create_task(store.run())
    n = 0
    try:
        store.submit(call("warm-up"))  # the connections' first statements are not the measure
        await written(store, 1, "the warm-up call")
        for _ in range(repeat):
            await asyncio.sleep(0.01)  # the writer is idle again, waiting for the next call
            before = store.written
            started = time.perf_counter()
            store.submit(call(f"lone-{n}"))
            n += 1
            await written(store, before + 1, "a lone call")
            commit.times.append(time.perf_counter() - started)
            check(store.written == before + 1, "one call, one record written")

        for _ in range(repeat):
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            before = store.written
            store.submit(call(f"held-{n}"))
            n += 1
            await asyncio.sleep(0.2)  # the writer is inside its batch, waiting for the lock
            check(store.written == before, "a batch committed through another writer's lock")
            started = time.perf_counter()
            for _ in range(100):  # as the AMI reader calls it: a plain call on the loop
                check(store.submit(call(f"held-{n}")) is None, "submit() returns nothing")
                n += 1
            submits.times.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            sleep.times.append(time.perf_counter() - started)
            check(store.written == before, "the batch waits while another writer holds the lock")
            blocker.rollback()
            blocker.close()
            await written(store, before + 101, "the calls submitted while the lock was held")
    finally:
        await store.close()
        await writer
    check(store.rejected == 0, f"{store.rejected} records refused")
    return [commit, submits, sleep]


# -- caller lookup --------------------------------------------------------------------------------


async def customer(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.match_info["seconds"]))
    return web.json_response({"name": f"Client {request.match_info['number']}", "city": "Tbilisi"})


async def lookups(repeat: int) -> list[Row]:
    budget = Row("lookup: chain with a source slower than the 50 ms budget", 0.2)
    timeout = Row("lookup: HTTP source slower than its 200 ms timeout", 0.6)
    close = Row("lookup: closing a chain with a lookup pending", 0.5)
    app = web.Application()
    app.router.add_get("/{seconds}/{number}", customer)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    numbers = iter(GE.normalize(f"+99532212{i:04d}") for i in range(10_000))  # none cached

    def source(name: str, seconds: float, timeout_s: float = 2.0, **fields: str) -> HttpSource:
        url = f"{base}/{seconds}/{{number}}"
        fields = fields or {"name": "name"}
        return HttpSource(name=name, url_template=url, fields=fields, timeout_s=timeout_s)

    async def local() -> str:
        return "directory"

    try:
        slow, fast = source("erp", 0.3), source("crm", 0.0, city="city")  # each gives a field
        async with LookupChain([slow, fast], budget_s=0.05) as chain:
            for _ in range(repeat):
                started = time.perf_counter()
                now = await chain.lookup(next(numbers), local=local)
                budget.times.append(time.perf_counter() - started)
                # what came within the budget depends on the machine's load; not what comes
                final = now if now.pending is None else await now.pending
                check(
                    final is not None and final.local == "directory"
                    and final.fields.source == "erp, crm",
                    "every source's answer arrives, merged in the configured order",
                )  # fmt: skip

        late = source("late", 1.0, timeout_s=0.2)
        try:
            for _ in range(repeat):
                started = time.perf_counter()
                answer = await late.lookup(next(numbers))
                timeout.times.append(time.perf_counter() - started)
                check(answer is None, "an answer after the timeout is no answer")
        finally:
            await late.close()

        for _ in range(repeat):
            chain = LookupChain([source("stuck", 5.0)], budget_s=0.01)
            now = await chain.lookup(next(numbers))
            check(now.pending is not None, "a 5 s source is pending after the budget")
            started = time.perf_counter()
            await chain.close()
            close.times.append(time.perf_counter() - started)
            check(now.pending.cancelled(), "close() cancels the pending lookup")  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
    return [budget, timeout, close]


# -- the daemon: a dead AMI peer, SIGTERM ---------------------------------------------------------


def daemon_config(state: Path, sim_port: int, web_port: int) -> str:
    return f"""\
[ami]
mode = "asterisk"
host = "127.0.0.1"
port = {sim_port}
username = "pbxlink"
secret = "{SECRET}"
ping_interval_s = {PING_S}
ping_timeout_s = {PING_S}
connect_timeout_s = 1
reconnect_min_s = 0.05
reconnect_max_s = 0.2

[storage]
state_dir = "{state}"

[web]
host = "127.0.0.1"
port = {web_port}

[calls]
pbx_timezone = "UTC"
"""


async def healthy(http: aiohttp.ClientSession) -> bool | None:
    """/healthz: True while the AMI link is up, False when down, None when nobody answers."""
    try:
        async with http.get("/healthz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return None


async def wait_health(http: aiohttp.ClientSession, up: bool, what: str) -> float:
    """Poll /healthz every 5 ms until it says `up`; how long that took."""
    started = time.perf_counter()
    deadline = time.monotonic() + 30
    while await healthy(http) is not up:
        check(time.monotonic() < deadline, f"{what}: not after 30 s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def daemon(tmp: Path, pings: int, stops: int) -> list[Row]:
    dead = Row(f"AMI: a half-open peer noticed (ping every {PING_S:g} s)", 2 * PING_S + 0.3)
    stop = Row("daemon: SIGTERM to exit 0, calls just played and one going on", 5.0)
    for k in range(stops):
        state = tmp / f"daemon-{k}"
        state.mkdir()
        sim = AmiSimulator(
            load_scenarios(), secret=SECRET, calls_per_s=0, speed=20.0, timestamps=False,
            pbx_timezone=dt.UTC,
        )  # fmt: skip
        async with sim:
            web_port = free_port()
            config = state / "pbxlink.toml"
            config.write_text(daemon_config(state, sim.port, web_port), encoding="utf-8")
            journal = (state / "daemon.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "pbxlink", "run", "--config", str(config)],
                stdout=journal, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
            try:
                async with aiohttp.ClientSession(f"http://127.0.0.1:{web_port}") as http:
                    await wait_health(http, True, "the daemon's AMI link up")
                    for _ in range(pings if k == 0 else 0):
                        await asyncio.sleep(1.5 * PING_S)  # a few Pongs went through
                        sim.set_silent(True)
                        dead.times.append(await wait_health(http, False, "the dead peer noticed"))
                        sim.set_silent(False)
                        await wait_health(http, True, "the link back up")
                played = await asyncio.wait_for(sim.wait_played(sim.play_once(interval_s=0.05)), 60)
                sim.play_once(["07_ivr_sales_noanswer_voicemail"])  # still going at the stop
                await asyncio.sleep(0.5)
                started = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(proc.wait, 30)
                stop.times.append(time.perf_counter() - started)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                journal.close()
        check(code == 0, f"the daemon exited {code} on SIGTERM (see {state / 'daemon.log'})")
        with sqlite3.connect(state / "pbxlink.sqlite3") as db:
            stored = {r[0] for r in db.execute("SELECT call_id FROM calls")}
        missing = {p.linkedid for p in played} - stored
        check(not missing, f"calls played before the stop missing from the log: {missing}")
    return [dead, stop] if pings else [stop]


# -- the report -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="pbxlink-latencies-") as name:
        tmp = Path(name)
        steps: list[Callable[[], Awaitable[list[Row]]]] = [
            lambda: call_log(tmp, args.repeat),
            lambda: lookups(args.repeat),
            lambda: daemon(tmp, args.pings, args.stops),
        ]
        rows: list[Row] = []
        for step in steps:
            rows += await step()
        return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeat", type=int, default=20, help="runs of each call log and lookup wait")
    ap.add_argument("--pings", type=int, default=5, help="half-open peers to notice")
    ap.add_argument("--stops", type=int, default=3, help="daemons to start and SIGTERM")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="each thing once, every check in force, no timing judged (CI)",
    )
    args = ap.parse_args()
    if args.smoke:
        args.repeat, args.pings, args.stops = 1, 1, 1
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    try:
        rows = asyncio.run(run(args))
    except Wrong as exc:
        print(f"WRONG: {exc}")
        return 1
    judged = not args.smoke
    print(f"machine: {cpu_model()}; commit {git_commit()}")
    print("| what | runs | median | worst | goal (worst) | |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(row.line(judged))
    return 1 if judged and not all(row.met for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
