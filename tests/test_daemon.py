"""The daemon against the simulator over real TCP: drops, silence, restarts, kills, signals.

Each test plays recorded calls sped up 20x, so a minute of PBX traffic takes seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from pbxlink.calllog import CallLogStore
from pbxlink.calls import CallRecord
from pbxlink.config import Config, parse
from pbxlink.daemon import Daemon
from pbxlink.sim.scenario import load_scenarios
from pbxlink.sim.server import AmiSimulator, FinishedCall

from conftest import logged

SECRET = "s3cret-for-tests"
SPEED = 20.0
PING_S = 0.5


def simulator(**kw: object) -> AmiSimulator:
    defaults: dict[str, object] = dict(
        secret=SECRET, calls_per_s=0, speed=SPEED, timestamps=False, pbx_timezone=dt.UTC
    )
    return AmiSimulator(load_scenarios(), **{**defaults, **kw})  # type: ignore[arg-type]


def raw_config(state: Path, port: int, **ami: object) -> dict:
    return {
        "ami": {
            "mode": "asterisk",
            "host": "127.0.0.1",
            "port": port,
            "username": "pbxlink",
            "secret": SECRET,
            "ping_interval_s": PING_S,
            "ping_timeout_s": PING_S,
            "connect_timeout_s": 1,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            **ami,
        },
        "storage": {"state_dir": str(state)},
        "web": {"port": 0},
        "hub": {"port": 0},  # 8081 by default: two test runs at once would collide there
        "calls": {"pbx_timezone": "UTC"},
    }


def config(state: Path, port: int, **ami: object) -> Config:
    return parse(raw_config(state, port, **ami))


async def until(
    check: Callable[[], bool], timeout: float = 10.0, what: str | Callable[[], str] = ""
) -> float:
    """Wait (bounded) until `check()` holds; returns how long it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {said or check}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def stored(state: Path) -> dict[str, CallRecord]:
    store = CallLogStore(state / "pbxlink.sqlite3")
    await store.open()
    try:
        return {r.call_id: r for r in await logged(store)}
    finally:
        await store.close()


async def play(
    sim: AmiSimulator, daemon: Daemon, disturb: Callable[[], object] | None = None
) -> list[FinishedCall]:
    """Every shipped scenario once; `disturb()` half a second in; wait until all are stored."""
    seqs = sim.play_once(interval_s=0.05)
    if disturb is not None:
        await asyncio.sleep(0.5)
        disturb()
    played = await asyncio.wait_for(sim.wait_played(seqs), 30)
    await until(
        lambda: daemon.tracker.active_calls == 0,
        what=lambda: f"every call ended; open: {_open_calls(daemon)}",
    )
    await until(lambda: daemon.store.queue_depth == 0, what="the store flushed")
    return played


def _open_calls(daemon: Daemon) -> list:
    return [
        (c.call_id, c.phase, [ch.name for ch in c.channels.values()])
        for c in daemon.tracker._engine.calls.values()  # what is open, when a check fails
    ]


def comparable(r: CallRecord) -> tuple:
    return (
        r.direction,
        r.caller_number,
        r.caller_name,
        r.called_number,
        r.status,
        tuple(sorted(r.extensions_rung)),
        r.answered_by,
        r.queue,
        r.ivr_digits,
        tuple(r.transferred_to),
        bool(r.recording),
    )


async def run_daemon(cfg: Config, body: Callable[[Daemon], object]) -> Daemon:
    daemon = Daemon(cfg)
    task = asyncio.create_task(daemon.run())
    try:
        await until(lambda: daemon.ami_state == "up" or task.done(), what="the AMI link up")
        assert not task.done(), "the daemon stopped at start-up"
        await body(daemon)  # type: ignore[misc]
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    return daemon


async def records_by_scenario(state: Path, drop: bool) -> dict[str, CallRecord]:
    """Play every shipped scenario once (dropping the link half a second in, if asked)."""
    out: dict[str, CallRecord] = {}
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            played = await play(sim, d, sim.drop_connections if drop else None)
            if drop:
                assert d.link is not None and d.link.reconnects >= 1
            by_id = {p.linkedid: p.scenario for p in played}
            records = await stored(state)
            assert set(records) == set(by_id)  # one record per call, none extra
            out.update({by_id[c]: r for c, r in records.items()})

        await run_daemon(config(state, sim.port), body)
    return out


async def test_dropped_link_mid_call_gives_the_same_records(tmp_path: Path) -> None:
    calm = await records_by_scenario(tmp_path / "calm", drop=False)
    dropped = await records_by_scenario(tmp_path / "dropped", drop=True)
    assert {k: comparable(r) for k, r in dropped.items()} == {
        k: comparable(r) for k, r in calm.items()
    }
    for scenario, r in calm.items():
        d = dropped[scenario]
        assert abs(d.wait_s - r.wait_s) < 0.6 and abs(d.talk_s - r.talk_s) < 0.6, scenario


async def test_a_half_open_link_is_noticed_and_comes_back(tmp_path: Path) -> None:
    """Pings unanswered on an open socket mean a dead peer; how soon (within two pings):
    benchmarks/latencies.py."""
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            await asyncio.sleep(PING_S * 1.5)  # a few Pongs went through
            sim.set_silent(True)
            await until(lambda: d.ami_state != "up", what="the dead peer noticed")
            sim.set_silent(False)
            await until(lambda: d.ami_state == "up", what="the link back up")
            assert d.link is not None and d.link.reconnects == 1
            async with aiohttp.ClientSession() as http:
                got = await http.get(f"http://127.0.0.1:{d.web_port}/metrics")
                assert "pbxlink_ami_reconnects_total 1.0" in await got.text()

        await run_daemon(config(tmp_path, sim.port), body)


async def test_asterisk_restart_ends_calls_as_partial_and_tracks_new_ones(tmp_path: Path) -> None:
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            before = sim.play_once(
                [
                    "07_ivr_sales_noanswer_voicemail",
                    "F02_ivr_queue_local_members_first_offer_timeout",
                ]
            )
            await until(lambda: d.tracker.active_calls == 2, what="two calls in progress")
            await asyncio.sleep(0.3)
            sim.restart()
            vanished = await sim.wait_played(before)
            await until(lambda: d.ami_state == "up" and d.tracker.active_calls == 0)
            after = await sim.wait_played(sim.play_once(["06_ivr_sales_101_noanswer_102_answers"]))
            await until(lambda: d.tracker.active_calls == 0 and d.store.queue_depth == 0)
            records = await stored(tmp_path)
            assert {v.linkedid for v in vanished} | {after[0].linkedid} == set(records)
            assert all(records[v.linkedid].partial for v in vanished)
            fresh = records[after[0].linkedid]
            assert not fresh.partial and fresh.answered_by == "102"

        await run_daemon(config(tmp_path, sim.port), body)


async def test_healthz_follows_the_link(tmp_path: Path) -> None:
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            url = f"http://127.0.0.1:{d.web_port}/healthz"
            async with aiohttp.ClientSession() as http:
                up = await http.get(url)
                assert up.status == 200 and (await up.json())["ami"]["state"] == "up"
                await sim.close()  # Asterisk goes away
                await until(lambda: d.ami_state != "up")
                down = await http.get(url)
                assert down.status == 503 and (await down.json())["status"] == "degraded"

        await run_daemon(config(tmp_path, sim.port), body)


# -- the daemon as a process, as systemd runs it ----------------------------------------------


STARTED: list[subprocess.Popen[str]] = []


def start_process(cfg_file: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxlink", "run", "--config", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def reap_daemons() -> Iterator[None]:
    """A test that fails half-way must not leave a daemon running on the machine."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def write_config(path: Path, raw: dict) -> Path:
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(state: Path) -> set[str]:
    db = state / "pbxlink.sqlite3"
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return {r[0] for r in conn.execute("SELECT call_id FROM calls")}
        except sqlite3.OperationalError:
            return set()


async def test_wrong_secret_is_a_clear_error_and_a_non_zero_exit(tmp_path: Path) -> None:
    async with simulator() as sim:
        # a generous login timeout: on a busy machine a slow answer is not a refusal
        raw = raw_config(tmp_path, sim.port, secret="not-the-secret-9f2k", connect_timeout_s=10)
        proc = start_process(write_config(tmp_path / "p.toml", raw))
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 78
    assert f"127.0.0.1:{sim.port}" in err and "'pbxlink'" in err
    assert "Authentication failed" in err
    assert "not-the-secret-9f2k" not in err  # the secret is never logged


async def test_broken_config_stops_run_with_file_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[ami]\nmode = 'asterisk'\nsecret = 'x'\nping_interval_s = 'often'\n")
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "pbxlink", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert f"{cfg}:4: ami.ping_interval_s" in proc.stderr and "Traceback" not in proc.stderr


async def test_sigterm_flushes_everything_and_exits_zero(tmp_path: Path) -> None:
    async with simulator() as sim:
        proc = start_process(write_config(tmp_path / "p.toml", raw_config(tmp_path, sim.port)))
        try:
            await until(lambda: sim.clients == 1, timeout=20, what="the daemon logged in")
            played = await asyncio.wait_for(sim.wait_played(sim.play_once(interval_s=0.05)), 30)
            running = sim.play_once(["07_ivr_sales_noanswer_voicemail"])  # still going at stop
            await asyncio.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)  # how soon it exits: benchmarks/latencies.py
            _, err = await asyncio.to_thread(proc.communicate, timeout=15)
        assert proc.returncode == 0, err
        assert {p.linkedid for p in played} <= rows(tmp_path)
        assert '"daemon.stopped"' in err
        # the call still in progress is remembered, to be finished by the next start
        with sqlite3.connect(tmp_path / "pbxlink.sqlite3") as db:
            open_ids = {r[0] for r in db.execute("SELECT call_id FROM open_calls")}
        assert {p.linkedid for p in await sim.wait_played(running)} == open_ids


@pytest.mark.slow
async def test_kill_9_and_restart_mid_traffic_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    async with simulator(calls_per_s=6, max_calls=30) as sim:
        cfg = write_config(tmp_path / "p.toml", raw_config(tmp_path, sim.port))
        proc = start_process(cfg)
        try:
            await until(lambda: sim.clients == 1, timeout=20, what="the daemon logged in")
            logged_in = time.time()
            await until(lambda: len(rows(tmp_path)) >= 8, timeout=30, what="calls stored")
            await asyncio.sleep(0.3)
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            await asyncio.sleep(1.0)  # calls go on, some end, while nobody listens
            proc = start_process(cfg)
            await until(lambda: sim.clients == 1, timeout=20, what="the daemon back")
            sim.stop_traffic()  # let the calls in progress end
            await asyncio.sleep(6.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=15)
        assert proc.returncode == 0, err
        stored_ids = rows(tmp_path)
        everything = [*sim.finished, *sim.vanished]
        # seen starting by the first run (well before the kill), ended before the final stop
        must_have = {
            f.linkedid
            for f in everything
            if logged_in < f.started_at < killed_at - 0.5 and f.ended_at < time.time() - 1
        }
        assert must_have, "the test played nothing worth checking"
        assert must_have <= stored_ids, must_have - stored_ids
        with sqlite3.connect(tmp_path / "pbxlink.sqlite3") as db:
            (count,) = db.execute("SELECT count(*) FROM calls").fetchone()
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert count == len(stored_ids)  # one row per call


async def test_call_that_ended_during_the_gap_ends_once_as_partial(tmp_path: Path) -> None:
    """Its Hangups were never received: only the resync after the reconnect can end it."""
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            (seq,) = sim.play_once(["07_ivr_sales_noanswer_voicemail"])
            await until(
                lambda: any(c.rung for c in d.tracker._engine.calls.values()), what="a ring"
            )
            sim.set_silent(True, events=True)  # the link goes quiet: the events are lost
            (done,) = await sim.wait_played([seq])
            assert d.tracker.active_calls == 1  # nobody told the daemon
            sim.set_silent(False)
            sim.drop_connections()
            await until(lambda: d.tracker.active_calls == 0, what="the resync to end it")
            await until(lambda: d.store.queue_depth == 0)
            (record,) = (await stored(tmp_path)).values()
            assert record.call_id == done.linkedid and record.partial
            assert record.ivr_digits == "1" and record.extensions_rung[:1] == ["101"]

        await run_daemon(config(tmp_path, sim.port), body)


async def test_callers_are_looked_up_registered_and_linked_in_the_log(tmp_path: Path) -> None:
    """The first call from an unknown number creates a potential client; the next finds it;
    both calls in the log point at it. A known client is found by any form of its number."""
    async with simulator() as sim:

        async def body(d: Daemon) -> None:
            known = await d.directory.create({"name": "Nino", "phones": ["+995 599 123 456"]})
            for scenario in (
                "04_in_direct_busy",
                "04_in_direct_busy",
                "F01_ringgroup_georgian_caller_2002_answers",
            ):
                await sim.wait_played(sim.play_once([scenario]))
                await until(lambda: d.tracker.active_calls == 0 and not d.desk_adapter._tasks)
            await d.store.flush()
            with sqlite3.connect(tmp_path / "pbxlink.sqlite3") as db:
                linked = db.execute(
                    "SELECT caller_number, client_id FROM calls ORDER BY started_at"
                ).fetchall()
            (potential,) = await d.directory.lookup("0622222222")
            assert potential.category == "potential"
            assert linked == [
                ("0622222222", potential.id),
                ("0622222222", potential.id),
                ("+995599123456", known.id),
            ]

        await run_daemon(config(tmp_path, sim.port), body)


async def test_crm_source_completes_the_card_while_the_phone_rings(tmp_path: Path) -> None:
    """A configured HTTP source (a real server here) answers; the card a supervisor's popup
    socket receives carries its fields, on a client the unknown number became."""
    from aiohttp import web
    from websockets.asyncio.client import connect

    from pbxlink.operators import hash_token

    asked: list[str] = []

    async def customer(request: web.Request) -> web.Response:
        asked.append(request.match_info["number"])
        return web.json_response({"customer": {"name": "Voicemail Caller Ltd", "city": "Batumi"}})

    app = web.Application()
    app.router.add_get("/customers/{number}", customer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    crm_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = "supervisor-token-" + "s" * 32
    try:
        async with simulator() as sim:
            raw = raw_config(tmp_path, sim.port)
            raw["clients"] = {
                "sources": [
                    {
                        "type": "http",
                        "name": "crm",
                        "number_form": "raw",
                        "url": f"http://127.0.0.1:{crm_port}/customers/{{number}}",
                        "fields": {"name": "customer.name", "city": "customer.city"},
                    }
                ]
            }
            sup = {"name": "Sup", "extensions": [], "role": "supervisor"}
            raw["operators"] = [{**sup, "token_hash": hash_token(token)}]

            async def body(d: Daemon) -> None:
                async with connect(f"ws://127.0.0.1:{d.hub.port}/") as ws:
                    await ws.send(json.dumps({"type": "hello", "v": 1, "token": token}))
                    assert json.loads(await ws.recv())["type"] == "welcome"
                    sim.play_once(["07_ivr_sales_noanswer_voicemail"])
                    async with asyncio.timeout(10):
                        while True:
                            frame = json.loads(await ws.recv())
                            client = frame.get("card", {}).get("client") or {}
                            if client.get("city") == "Batumi":
                                break
                assert client["name"] == "Voicemail Caller Ltd"  # the directory's is empty
                assert client["category"] == "potential"  # the unknown number became a client

            await run_daemon(parse(raw), body)
        assert asked == ["0655555555"]
    finally:
        await runner.cleanup()


def test_the_demo_gets_a_supervisor_only_without_operators_and_only_with_the_simulator(
    tmp_path: Path,
) -> None:
    from pbxlink.config import Config
    from pbxlink.db.settings import StorageConfig

    demo = Daemon(Config(storage=StorageConfig(state_dir=tmp_path)))
    assert demo.demo_token is not None
    who = demo.operators.by_token(demo.demo_token)
    assert who is not None and who.role == "supervisor"

    real = parse(raw_config(tmp_path, 5038))  # mode = "asterisk"
    assert Daemon(real).demo_token is None and real.operators == []
    raw = raw_config(tmp_path, 5038)
    raw["ami"] = {"mode": "simulator"}
    raw["operators"] = [
        {"name": "A", "extensions": ["101"], "role": "operator", "token_hash": "sha256:" + "0" * 64}
    ]
    assert Daemon(parse(raw)).demo_token is None


async def test_sighup_reloads_the_operators_without_a_restart(tmp_path: Path) -> None:
    """`systemctl reload pbxlink`: a removed operator's token stops working at once; a
    broken file changes nothing."""
    from pbxlink.config import load
    from pbxlink.operators import hash_token

    tokens = {"A": "token-of-a-" + "a" * 32, "B": "token-of-b-" + "b" * 32}

    def operator(name: str, ext: str) -> str:
        return (
            f'[[operators]]\nname = "{name}"\nextensions = ["{ext}"]\nrole = "operator"\n'
            f'token_hash = "{hash_token(tokens[name])}"\n'
        )

    async with simulator() as sim:
        path = write_config(tmp_path / "p.toml", raw_config(tmp_path, sim.port))
        base = path.read_text()
        path.write_text(base + operator("A", "101") + operator("B", "102"))

        async def me(d: Daemon, who: str) -> int:
            headers = {"Authorization": f"Bearer {tokens[who]}"}
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{d.web_port}/api/me"
                async with http.get(url, headers=headers) as resp:
                    return resp.status

        async def body(d: Daemon) -> None:
            assert (await me(d, "A"), await me(d, "B")) == (200, 200)
            path.write_text(base + operator("A", "101"))
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: len(d.operators) == 1, what="the reload")
            assert (await me(d, "A"), await me(d, "B")) == (200, 401)
            path.write_text("[web\n")  # a typo while editing
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.sleep(0.2)
            assert await me(d, "A") == 200 and d.ami_state == "up"

        await run_daemon(load(path), body)


async def test_the_running_daemon_merges_clients_and_moves_their_calls(tmp_path: Path) -> None:
    """An admin's merge through the daemon's own API: the directory the composition root
    built can move the gone client's calls (the call log's relink_calls is wired in)."""
    from pbxlink.operators import hash_token

    token = "admin-token-" + "a" * 32
    async with simulator() as sim:
        raw = raw_config(tmp_path, sim.port)
        raw["operators"] = [
            {"name": "Ana", "extensions": [], "role": "admin", "token_hash": hash_token(token)}
        ]

        async def body(d: Daemon) -> None:
            await play(sim, d)  # real calls: every caller became a client with calls
            headers = {"Authorization": f"Bearer {token}"}
            base = f"http://127.0.0.1:{d.web_port}/api/clients"
            async with aiohttp.ClientSession(headers=headers) as http:

                async def calls_of(client_id: int) -> set[str]:
                    async with http.get(f"{base}/{client_id}/calls") as resp:
                        return {c["call_id"] for c in (await resp.json())["calls"]}

                async with http.get(base, params={"limit": "50"}) as resp:
                    ids = [c["id"] for c in (await resp.json())["clients"]]
                with_calls = [i for i in ids if await calls_of(i)]
                assert len(with_calls) >= 2, "real calls made clients with calls"
                keep, gone = with_calls[:2]
                moved = await calls_of(gone)
                merge = f"{base}/{keep}/merge"
                async with http.post(merge, json={"gone_id": gone}) as resp:
                    assert resp.status == 200, await resp.text()
                now = await calls_of(keep)
            assert moved <= now

        await run_daemon(parse(raw), body)
