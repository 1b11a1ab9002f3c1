"""What the popup hub does with clients that misbehave or fail: the documented close codes,
one bad socket never costing the others, no leaks over many connections, a stalled client
dropped without delaying anybody, and wss:// with a certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from desk_hub import Popups
from test_hub import (
    OPERATORS,
    ORIGIN,
    T0,
    TOKENS,
    VALIDATORS,
    Page,
    barrier,
    client,
    close_code,
    hello,
    hub_config,
    page,
    record,
    running,
)
from test_link_tls import make_cert
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage

from pbxlink.calls import Ringing
from pbxlink.config import ConfigError
from pbxlink.desk.card import CallCard
from pbxlink.loglimit import RATE
from pbxlink.operators import Operator
from pbxlink.web import Metrics

UNKNOWN = {"type": "hello", "v": 1, "token": "not-anybodys-token-xxxxxxxxxxxxxxxxxx"}


def url(hub: Popups) -> str:
    return f"ws://127.0.0.1:{hub.port}/"


@pytest.fixture
async def hub() -> Any:
    h = Popups(hub_config(), origins=[ORIGIN], hello_timeout_s=0.3)
    async with running(h):
        yield h


async def test_no_hello_is_closed_4001(hub: Popups) -> None:
    async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        assert await close_code(ws) == 4001
        assert ws.close_reason == "no hello within 0.3 s"  # the hello timeout, not the heartbeat
    assert hub.auth_failed == 1 and hub.clients == 0


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (UNKNOWN, 4001),
        ({"type": "hello", "v": 1, "token": ""}, 4001),
        ({"type": "hello", "v": 1, "token": 12345}, 4001),
        ({"type": "hello", "v": 1}, 4001),
        ({"type": "hello", "v": 1, "token": "x" * 600}, 4001),
        ({"type": "hello", "v": 2, "token": TOKENS["101"]}, 4400),
        ({"type": "hello", "v": True, "token": TOKENS["101"]}, 4400),
        ({"type": "subscribe", "v": 1, "token": TOKENS["101"]}, 4400),
        ({"type": "hello", "v": 1, "token": TOKENS["101"], "extensions": ["102"]}, 4400),
        ({"v": 1, "token": TOKENS["101"]}, 4400),  # no type: a decoder may take it as implied
        ({"token": "", "v": 2, "type": "hello"}, 4400),  # a wrong v, whatever the key order
        (["hello", 1, TOKENS["101"]], 4400),
        ("not json {", 4400),
        (b"\xff\xfe\x00", 4400),  # not UTF-8, in a binary frame
        (json.dumps({"type": "hello", "v": 1, "token": TOKENS["101"]}).encode(), 4400),  # binary
    ],
)
async def test_a_bad_hello_gets_the_documented_close_code(
    hub: Popups, message: object, code: int
) -> None:
    async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
        assert await close_code(ws) == code
    assert hub.clients == 0
    # hello.json refuses the same messages (only an unknown token needs the server to tell)
    if not isinstance(message, str | bytes):
        assert VALIDATORS["hello"].is_valid(message) == (message is UNKNOWN)


async def test_strangers_are_logged_a_few_a_minute_and_every_one_counted(hub: Popups) -> None:
    """Bad tokens, foreign origins and garbage cost a stranger nothing: the hub's log lines
    for them stop at the rate; its counters (and /metrics) count every one."""
    allowed = int(RATE.split("/")[0])
    with structlog.testing.capture_logs() as logs:
        for i in range(allowed + 5):
            async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps(UNKNOWN))
                assert await close_code(ws) == 4001
            async with connect(url(hub), origin="http://evil.example") as ws:  # type: ignore[arg-type]
                assert await close_code(ws) == 4003
            if i < 3:
                async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
                    await ws.send("garbage")
                    assert await close_code(ws) == 4400
    events = [e["event"] for e in logs]
    assert events.count("hub.auth_failed") == events.count("hub.origin_refused") == allowed
    assert events.count("hub.protocol_error") == 3
    assert hub.auth_failed == allowed + 5
    assert hub.log_limit.seen == {
        "hub.auth_failed": allowed + 5, "hub.origin_refused": allowed + 5, "hub.protocol_error": 3
    }  # fmt: skip
    assert hub.log_limit.suppressed["hub.auth_failed"] == 5
    metrics = Metrics()
    metrics.bind_hub(hub)
    text = metrics.render().decode()
    assert f'\npbxlink_refused_total{{event="hub.auth_failed"}} {allowed + 5}.0\n' in text
    assert '\npbxlink_log_suppressed_total{event="hub.origin_refused"} 5.0\n' in text


async def test_a_foreign_origin_is_closed_4003_and_no_origin_may_pass(hub: Popups) -> None:
    async with connect(url(hub), origin="http://evil.example.com") as ws:  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionClosed):  # it may be closed already
            await hello(ws, "101")  # even with a good token
        assert await close_code(ws) == 4003
    async with connect(url(hub), origin="http://127.0.0.1:8081") as ws:  # type: ignore[arg-type]
        assert await close_code(ws) == 4003  # the hub's own port is not the page
    async with connect(url(hub)) as ws:  # a script: no Origin header, the token decides
        await hello(ws, "sup")
        assert json.loads(await ws.recv())["type"] == "welcome"


@pytest.mark.parametrize(
    ("send", "code"),
    [
        ("x" * 5000, 1009),  # over the 4 KiB limit
        (json.dumps({"type": "hello", "v": 1, "token": TOKENS["101"]}), 4400),  # a second hello
        ("{]", 4400),
    ],
)
async def test_a_bad_message_closes_that_socket_only(hub: Popups, send: str, code: int) -> None:
    async with page(hub, "101") as bad, page(hub, "102") as good, page(hub, "sup") as sup:
        await bad.ws.send(send)
        assert await close_code(bad.ws) == code
        hub.on_update(Ringing(T0, record("after"), "102"))
        assert (await good.recv())["call_id"] == "after"
        assert (await sup.recv())["call_id"] == "after"
        assert hub.clients == 2


async def test_an_oversized_hello_is_refused_before_it_is_read(hub: Popups) -> None:
    async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        token = "t" * 5000
        await ws.send(json.dumps({"type": "hello", "v": 1, "token": token}))
        assert await close_code(ws) == 1009


async def test_a_removed_operator_is_closed_4002_and_a_changed_one_rebound(hub: Popups) -> None:
    async with page(hub, "101") as p101, page(hub, "102") as p102:
        moved = Operator("Giorgi", ("103",), "operator", OPERATORS[1].token_hash)
        hub.set_operators([op for op in OPERATORS if op.name not in ("Nino", "Giorgi")] + [moved])
        assert await close_code(p101.ws) == 4002
        hub.on_update(Ringing(T0, record("to-102"), "102"))  # 102 is nobody's now
        hub.on_update(Ringing(T0, record("to-103"), "103"))
        assert (await p102.recv())["call_id"] == "to-103"
    async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
        await hello(ws, "101")  # the removed token cannot come back
        assert await close_code(ws) == 4001


def open_sockets() -> int:
    """This process's open sockets, as the kernel lists them."""
    fds = Path("/proc/self/fd")
    return sum(os.readlink(fd).startswith("socket:") for fd in fds.iterdir() if fd.exists())


async def test_a_thousand_connections_leave_no_tasks_or_sockets(hub: Popups) -> None:
    """1000 connect/hello/welcome/close cycles leave no task, connection object or socket
    behind. How fast they go and how many bytes they leave: benchmarks/hub_connections.py."""
    whos = ["101", "102", "sup", "admin"]

    async def cycle(who: str) -> None:
        async with connect(url(hub), origin=ORIGIN) as ws:  # type: ignore[arg-type]
            await hello(ws, who)
            assert json.loads(await ws.recv())["calls"]  # welcomed, with the call ringing

    def settled() -> bool:
        return (
            hub.clients == 0
            and len(asyncio.all_tasks()) <= tasks_before
            and open_sockets() <= sockets_before
        )

    async def cycles(n: int) -> None:
        for start in range(0, n, 25):
            await asyncio.gather(*(cycle(whos[i % 4]) for i in range(start, start + 25)))
        for _ in range(1500):  # bounded (30 s): closing takes seconds on a loaded machine
            if settled():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # transports' connection_lost callbacks
        gc.collect()

    def alive() -> int:
        return sum(type(o).__name__ in ("ServerConnection", "_Client") for o in gc.get_objects())

    for ext in ("101", "102"):  # every welcome carries a call
        hub.on_update(Ringing(T0, record("ringing"), ext))
    tasks_before = len(asyncio.all_tasks())
    sockets_before = open_sockets()
    with structlog.testing.capture_logs() as logs:  # cheaper than rendering 2000 lines
        await cycles(1000)
    events = [e["event"] for e in logs]
    assert events.count("hub.connected") == events.count("hub.disconnected") == 1000
    assert len(asyncio.all_tasks()) <= tasks_before
    assert open_sockets() <= sockets_before
    assert hub.clients == 0 and hub.connections == 1000
    assert alive() == 0


async def test_a_stalled_client_is_dropped_4008_and_delays_nobody() -> None:
    """The others get every frame, in order, while one client stalls. How late they get them:
    benchmarks/popups.py (a wallboard that stops reading, at the goal rate)."""
    hub = Popups(hub_config(queue_frames=32), origins=[ORIGIN])
    async with running(hub):
        # a supervisor's tab that stopped reading: a small receive window, and websockets
        # stops reading the socket once 4 messages wait unread
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", hub.port or 0))
        sock.setblocking(False)
        async with (
            connect(url(hub), origin=ORIGIN, sock=sock, max_queue=4) as stalled,  # type: ignore[arg-type]
            page(hub, "101") as p101,
            page(hub, "admin") as admin,
        ):
            await hello(stalled, "sup")
            notes = "Long notes the operator must read. " * 60  # ~2.5 KB frames

            async def read(p: Page, n: int) -> list[str]:
                got = []
                for _ in range(n):  # raw: schema checks here would make the reader the slow one
                    got.append(json.loads(await asyncio.wait_for(p.ws.recv(), 5))["call_id"])
                return got

            calls = 300
            readers = [asyncio.create_task(read(p, 2 * calls)) for p in (p101, admin)]
            for i in range(calls):
                call_id = f"c{i}"
                hub.on_update(Ringing(T0, record(call_id), "101"))
                hub.on_card(call_id, CallCard([client(1, "Big", notes=notes)]))
                if i % 5 == 4:
                    await asyncio.sleep(0.002)  # bursts of 10 frames each, 2500 frames/s
            every = [f"c{i}" for i in range(calls) for _ in ("ringing", "card")]
            assert await asyncio.gather(*readers) == [every, every]
            assert hub.dropped_slow == 1, "the stalled supervisor is dropped, nobody else"
            assert await close_code(stalled) == 4008  # reading again, it learns why
            barrier(hub, "101")
            assert (await p101.recv())["call_id"].startswith("barrier")
            assert hub.clients == 2


async def test_wss_with_a_certificate(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "hub")
    hub = Popups(hub_config(tls_cert_file=cert, tls_key_file=key), origins=[ORIGIN])
    async with running(hub):
        assert hub.url_for("127.0.0.1").startswith("wss://")
        trust = ssl.create_default_context(cafile=str(cert))
        wss = f"wss://127.0.0.1:{hub.port}/"
        async with connect(wss, origin=ORIGIN, ssl=trust) as ws:  # type: ignore[arg-type]
            await hello(ws, "101")
            p = Page(ws)
            assert (await p.recv())["type"] == "welcome"
            hub.on_update(Ringing(T0, record("secure"), "101"))
            assert (await p.recv())["call_id"] == "secure"
        with pytest.raises((InvalidMessage, OSError)):  # plain ws:// to a TLS port: nothing
            async with connect(url(hub), origin=ORIGIN, open_timeout=2) as ws:  # type: ignore[arg-type]
                await hello(ws, "101")
                await ws.recv()


async def test_a_bad_certificate_or_a_taken_port_names_the_config_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    hub = Popups(hub_config(tls_cert_file=missing, tls_key_file=missing), origins=[ORIGIN])
    with pytest.raises(ConfigError, match=r"\[hub\] tls_cert_file .*nope.pem"):
        await hub.start()
    first = Popups(hub_config(), origins=[ORIGIN])
    async with running(first):
        second = Popups(hub_config(port=first.port), origins=[ORIGIN])
        with pytest.raises(OSError, match=rf"\[hub\] 127.0.0.1:{first.port}: cannot listen"):
            await second.start()
