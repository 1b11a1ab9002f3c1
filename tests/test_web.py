"""The web skeleton over real TCP on 127.0.0.1: auth by default, roles, JSON errors, health
and metrics. Every route the app has is checked for a 401 without a token, so a route added
later without thinking about auth fails here, not in production.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from pbxlink.config import Config
from pbxlink.loglimit import RATE, LogLimit
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, WebServer, make_app, read_object, requires, serve
from pbxlink.web.auth import route_access

from conftest import FakeStatus, served

TOKENS = {
    "operator": "op-token-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supervisor": "sup-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "admin": "admin-token-cccccccccccccccccccccccccccccccccc",
}
ME = {
    "operator": {"name": "Nino", "extensions": ["101"], "role": "operator"},
    "supervisor": {"name": "Sandro", "extensions": ["200", "201"], "role": "supervisor"},
    "admin": {"name": "Ana", "extensions": [], "role": "admin"},
}
# what anyone may fetch: probes, the API's description and the page (which holds no data)
PUBLIC = {"/healthz", "/metrics", "/api/openapi.json", "/", "/static/{name}"}


def make_config() -> Config:
    operators = [
        Operator(me["name"], tuple(me["extensions"]), me["role"], hash_token(TOKENS[role]))
        for role, me in ME.items()
    ]
    return Config(operators=operators)


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


# -- test-only routes, to reach the role checks and the error paths -------------------------------


@requires("supervisor")
async def for_supervisors(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@requires("admin")
async def for_admins(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail")


async def conflict(request: web.Request) -> web.Response:
    raise web.HTTPConflict(text="already there")


async def echo(request: web.Request) -> web.Response:
    return web.json_response(await read_object(request))


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    return web.json_response({"done": True})


@pytest.fixture
def status() -> FakeStatus:
    return FakeStatus()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def app(status: FakeStatus, metrics: Metrics) -> web.Application:
    app = make_app(make_config(), status, metrics)
    app.router.add_get("/test/supervisor", for_supervisors)
    app.router.add_get("/test/admin", for_admins)
    app.router.add_get("/test/boom", boom)
    app.router.add_get("/test/conflict", conflict)
    app.router.add_post("/test/echo", echo)
    app.router.add_get("/test/slow", slow)
    return app


@pytest.fixture
async def server(app: web.Application) -> AsyncIterator[WebServer]:
    async with served(app) as srv:
        yield srv


@pytest.fixture
async def client(server: WebServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{server.port}") as session:
        yield session


async def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Exact bytes on the wire, for what aiohttp's client refuses to send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def assert_error(resp: aiohttp.ClientResponse, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- authentication: secure by default ------------------------------------------------------------


def test_public_routes_are_exactly_probes_openapi_and_the_page(app: web.Application) -> None:
    public = {r.resource.canonical for r in app.router.routes() if route_access(r) == "public"}
    assert public == PUBLIC


async def test_every_non_public_route_needs_a_token(
    app: web.Application, client: aiohttp.ClientSession
) -> None:
    checked = 0
    for route in app.router.routes():
        path = re.sub(r"\{[^}]+\}", "1", route.resource.canonical)
        if route_access(route) == "public" or route.method == "*":
            continue
        for headers in ({}, {"Authorization": "Bearer not-a-valid-token"}):
            async with client.request(route.method, path, headers=headers) as resp:
                assert resp.status == 401, (route.method, path, headers)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                if route.method != "HEAD":
                    await assert_error(resp, 401, "unauthorized")
            checked += 1
    assert checked >= 2 * 8  # /api/me and the test routes, GET and HEAD


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic " + TOKENS["admin"],
        TOKENS["admin"],
        f"Bearer {TOKENS['admin']} extra",
        f"Bearer\t{TOKENS['admin']}",
        "Bearer " + "a" * 6000,
        "Bearer " + "%00" * 10,
        'Bearer "quoted"',
    ],
    ids=lambda v: repr(v[:20]),
)
async def test_malformed_authorization_is_401(client: aiohttp.ClientSession, value: str) -> None:
    async with client.get("/api/me", headers={"Authorization": value}) as resp:
        body = await assert_error(resp, 401, "unauthorized")
        assert TOKENS["admin"] not in json.dumps(body)


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe\x00garbage",
        b"Bearer \xff\xfe",
        "Bearer токен".encode(),
        b"Bearer " + TOKENS["admin"].encode() + b"\xc3",
        "Bearer é".encode("latin-1"),
    ],
)
async def test_non_ascii_authorization_bytes_never_500(server: WebServer, value: bytes) -> None:
    head = b"GET /api/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
    status, body = await raw_request(server.port, head + value + b"\r\n\r\n")
    assert status in (400, 401), body  # 400: aiohttp's own parser refused the header line
    if status == 401:
        assert json.loads(body)["error"] == "unauthorized"


async def test_header_beyond_aiohttps_line_limit_is_refused_not_500(server: WebServer) -> None:
    head = b"GET /api/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    status, _ = await raw_request(server.port, head + b"Authorization: Bearer " + b"a" * 20_000)
    assert 400 <= status < 500


MARK = b"SECRETTOKENVALUE"  # what the request carried: the answer must not repeat it


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/me?q=" + MARK * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # line too long
        b"GET /api/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + MARK * 1000 + b"\r\n\r\n",
        b"GET /api/me HTTP/1.1\r\nHost: x\r\nX-" + MARK + b": a\x01b\r\n\r\n",  # bad header
        b"GET /api/" + MARK + b" HTTP/9.9\r\nHost: x\r\n\r\n",  # not an HTTP version
        MARK + b"\x00 / HTTP/1.1\r\n\r\n",  # not a method
    ],
)
async def test_what_aiohttp_cannot_read_is_a_json_error_that_echoes_nothing(
    server: WebServer, request_bytes: bytes
) -> None:
    """aiohttp refuses these itself, before any middleware; the answer is still the API's
    JSON error, not text/plain quoting the request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_bytes)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *headers = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in headers)}
    assert status_line.split()[1] == "400", data[:300]
    assert fields["content-type"].startswith("application/json"), fields
    error = json.loads(body)
    assert set(error) == {"error", "message"} and error["error"] == "bad_request", error
    assert MARK not in body and MARK.lower() not in body.lower()


async def test_refused_tokens_are_logged_a_few_a_minute_and_every_one_counted(
    client: aiohttp.ClientSession,
) -> None:
    """Anyone can send a bad token: its log lines stop at the rate, /metrics counts all."""
    allowed = int(RATE.split("/")[0])
    bad = [{"Authorization": f"Bearer not-a-token-{i}"} for i in range(allowed + 15)]
    bad[0] = {"Authorization": "Bearer !!malformed"}
    with structlog.testing.capture_logs() as logs:
        for headers in bad:
            async with client.get("/api/me", headers=headers) as resp:
                assert resp.status == 401
    assert [e["event"] for e in logs].count("web.auth_failed") == allowed
    async with client.get("/metrics") as resp:
        text = await resp.text()
    assert f'\npbxlink_refused_total{{event="web.auth_failed"}} {len(bad)}.0\n' in text
    assert '\npbxlink_log_suppressed_total{event="web.auth_failed"} 15.0\n' in text


async def test_scheme_is_case_insensitive(client: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"bEaReR   {TOKENS['operator']}"}
    async with client.get("/api/me", headers=headers) as resp:
        assert resp.status == 200


async def test_bad_token_says_invalid_token(client: aiohttp.ClientSession) -> None:
    async with client.get("/api/me", headers={"Authorization": "Bearer nope"}) as resp:
        await assert_error(resp, 401, "unauthorized")
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_cookie_token_for_reads_only(server: WebServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession(base, cookies={"token": TOKENS["supervisor"]}) as session:
        async with session.get("/api/me") as resp:
            assert resp.status == 200
            assert (await resp.json())["name"] == "Sandro"
        async with session.post("/test/echo", json={"a": 1}) as resp:
            await assert_error(resp, 401, "unauthorized")  # a cookie never authorises a write
    for cookie in ("nope", "ünïcode", "a" * 2000, 'x"; y=z'):
        async with (
            aiohttp.ClientSession(base, cookies={"token": cookie}) as session,
            session.get("/api/me") as resp,
        ):
            await assert_error(resp, 401, "unauthorized")


async def test_header_wins_over_cookie(server: WebServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    async with (
        aiohttp.ClientSession(base, cookies={"token": TOKENS["admin"]}) as session,
        session.get("/api/me", headers=auth("operator")) as resp,
    ):
        assert (await resp.json())["role"] == "operator"


# -- roles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "role", "expected"),
    [
        ("/test/supervisor", "operator", 403),
        ("/test/supervisor", "supervisor", 200),
        ("/test/supervisor", "admin", 200),
        ("/test/admin", "operator", 403),
        ("/test/admin", "supervisor", 403),
        ("/test/admin", "admin", 200),
    ],
)
async def test_roles_are_ordered(
    client: aiohttp.ClientSession, path: str, role: str, expected: int
) -> None:
    async with client.get(path, headers=auth(role)) as resp:
        if expected == 403:
            await assert_error(resp, 403, "forbidden")
        else:
            assert resp.status == 200
            assert await resp.json() == {"ok": True}


@pytest.mark.parametrize("role", list(ME))
async def test_me(client: aiohttp.ClientSession, role: str) -> None:
    async with client.get("/api/me", headers=auth(role)) as resp:
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert await resp.json() == ME[role]


def test_marks_work_in_any_decorator_order_and_on_views() -> None:
    routes = web.RouteTableDef()

    @routes.get("/a")
    @requires("admin")
    async def a(request: web.Request) -> web.Response:
        raise AssertionError

    @requires("supervisor")
    @routes.get("/b")
    async def b(request: web.Request) -> web.Response:
        raise AssertionError

    @routes.view("/c")
    @requires("admin")
    class C(web.View):
        pass

    @routes.get("/d")
    async def d(request: web.Request) -> web.Response:
        raise AssertionError

    app = web.Application()
    app.add_routes(routes)
    access = {r.resource.canonical: route_access(r) for r in app.router.routes()}
    assert access == {"/a": "admin", "/b": "supervisor", "/c": "admin", "/d": "operator"}


def test_requires_rejects_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        requires("root")  # type: ignore[arg-type]


# -- health and metrics ---------------------------------------------------------------------------


async def test_healthz_up(client: aiohttp.ClientSession, status: FakeStatus) -> None:
    status.calls_active, status.store_queue_depth = 4, 2
    status.started_at = 1_000_000_000.0
    async with client.get("/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["ami"] == {"state": "up", "last_event_age_s": 1.5}
    assert body["calls_active"] == 4
    assert body["store_queue_depth"] == 2
    assert body["uptime_s"] > 0


@pytest.mark.parametrize("state", ["connecting", "down", "auth_failed"])
async def test_healthz_degraded_is_503(
    client: aiohttp.ClientSession, status: FakeStatus, state: str
) -> None:
    status.ami_state, status.last_event_age_s = state, None
    async with client.get("/healthz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "degraded"
    assert body["ami"] == {"state": state, "last_event_age_s": None}
    assert set(body) == {"status", "ami", "calls_active", "store_queue_depth", "uptime_s"}
    async with client.head("/healthz") as resp:
        assert resp.status == 503


async def test_metrics(client: aiohttp.ClientSession, status: FakeStatus, metrics: Metrics) -> None:
    metrics.events += 42
    metrics.reconnected()
    metrics.reconnected()
    for final in ("answered", "answered", "answered", "busy"):
        metrics.call_ended(final)
    metrics.observe_lookup(0.003)
    metrics.observe_lookup(0.2)
    status.calls_active, status.store_queue_depth = 7, 3
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("pbxlink_ami_events_total", ())] == 42
    assert samples[("pbxlink_ami_reconnects_total", ())] == 2
    assert samples[("pbxlink_calls_active", ())] == 7
    assert samples[("pbxlink_store_queue_depth", ())] == 3
    assert samples[("pbxlink_ami_link_up", ())] == 1
    assert samples[("pbxlink_calls_ended_total", (("status", "answered"),))] == 3
    assert samples[("pbxlink_calls_ended_total", (("status", "busy"),))] == 1
    assert samples[("pbxlink_calls_ended_total", (("status", "voicemail"),))] == 0
    assert samples[("pbxlink_lookup_latency_seconds_count", ())] == 2
    assert samples[("pbxlink_lookup_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert samples[("pbxlink_lookup_latency_seconds_sum", ())] == pytest.approx(0.203)

    status.ami_state = "down"
    async with client.get("/metrics") as resp:
        assert "\npbxlink_ami_link_up 0.0\n" in await resp.text()


def test_metrics_show_the_hubs_counters() -> None:
    @dataclass
    class Hub:
        clients: int = 3
        connections: int = 10
        frames_sent: int = 250
        dropped_slow: int = 1
        auth_failed: int = 2
        protocol_errors: int = 0
        log_limit: LogLimit = field(default_factory=lambda: LogLimit(["hub.auth_failed"]))

    metrics = Metrics()
    text = metrics.render().decode()
    assert "pbxlink_hub_" not in text  # no hub bound: no made-up zeros
    metrics.bind_hub(Hub())
    text = metrics.render().decode()
    for line in (
        "pbxlink_hub_clients 3.0",
        "pbxlink_hub_connections_total 10.0",
        "pbxlink_hub_frames_sent_total 250.0",
        "pbxlink_hub_dropped_slow_total 1.0",
        "pbxlink_hub_auth_failed_total 2.0",
        "pbxlink_hub_protocol_errors_total 0.0",
        'pbxlink_refused_total{event="hub.auth_failed"} 0.0',
        'pbxlink_refused_total{event="web.auth_failed"} 0.0',
        'pbxlink_log_suppressed_total{event="hub.auth_failed"} 0.0',
    ):
        assert f"\n{line}\n" in text


def test_metrics_registries_are_private() -> None:
    """Two Metrics side by side (two apps in one test run) must not clash or share."""
    a, b = Metrics(), Metrics()
    a.events += 5
    assert b"pbxlink_ami_events_total 5.0" in a.render()
    assert b"pbxlink_ami_events_total 0.0" in b.render()


# -- errors are JSON ------------------------------------------------------------------------------


async def test_handler_exception_is_500_json_and_logged(client: aiohttp.ClientSession) -> None:
    with structlog.testing.capture_logs() as logs:
        async with client.get("/test/boom", headers=auth("operator")) as resp:
            body = await assert_error(resp, 500, "internal")
            text = json.dumps(body)
    assert "Traceback" not in text and "secret internal detail" not in text
    assert "RuntimeError" not in text
    failed = [e for e in logs if e["event"] == "web.request_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert failed[0]["exc_info"] is True
    assert failed[0]["path"] == "/test/boom"


async def test_http_exceptions_become_json(client: aiohttp.ClientSession) -> None:
    async with client.get("/test/conflict", headers=auth("operator")) as resp:
        body = await assert_error(resp, 409, "conflict")
        assert body["message"] == "already there"


async def test_unknown_route_is_404_json(client: aiohttp.ClientSession) -> None:
    for headers in ({}, auth("admin")):
        async with client.get("/no/such/thing", headers=headers) as resp:
            await assert_error(resp, 404, "not_found")


async def test_wrong_method_is_405_json(client: aiohttp.ClientSession) -> None:
    async with client.delete("/api/me", headers=auth("admin")) as resp:
        await assert_error(resp, 405, "method_not_allowed")
        assert "GET" in resp.headers["Allow"]
    async with client.post("/healthz") as resp:
        await assert_error(resp, 405, "method_not_allowed")


async def test_json_body_roundtrip(client: aiohttp.ClientSession) -> None:
    async with client.post("/test/echo", json={"name": "Ნინო"}, headers=auth("operator")) as resp:
        assert resp.status == 200
        assert await resp.json() == {"name": "Ნინო"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"a": 1,', "line 1 column"),
        (b"", "empty"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"a": NaN}', "NaN"),
        (b"[1, 2]", "JSON object"),
        (b"[" * 100_000, "deeply"),
    ],
    ids=["truncated", "empty", "not-utf8", "nan", "not-object", "deep"],
)
async def test_bad_json_is_400_naming_the_problem(
    client: aiohttp.ClientSession, body: bytes, says: str
) -> None:
    headers = {**auth("operator"), "Content-Type": "application/json"}
    async with client.post("/test/echo", data=body, headers=headers) as resp:
        result = await assert_error(resp, 400, "bad_json")
        assert says in result["message"]


async def test_oversized_body_is_413(client: aiohttp.ClientSession) -> None:
    big = io.BytesIO(b'{"a": "' + b"x" * (2 << 20) + b'"}')
    async with client.post("/test/echo", data=big, headers=auth("operator")) as resp:
        await assert_error(resp, 413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(40):
            yield b"x" * 65536

    async with client.post("/test/echo", data=chunks(), headers=auth("operator")) as resp:
        await assert_error(resp, 413, "body_too_large")


async def test_oversized_body_without_token_is_401_unread(client: aiohttp.ClientSession) -> None:
    async with client.post("/test/echo", data=io.BytesIO(b"x" * (2 << 20))) as resp:
        await assert_error(resp, 401, "unauthorized")


# -- serving --------------------------------------------------------------------------------------


async def test_close_lets_requests_in_flight_finish_then_refuses(app: web.Application) -> None:
    srv = await serve(app, "127.0.0.1", 0)
    assert srv.port != 0
    async with aiohttp.ClientSession(f"http://127.0.0.1:{srv.port}") as session:
        request = asyncio.create_task(session.get("/test/slow", headers=auth("operator")))
        await asyncio.sleep(0.1)
        await srv.close()
        resp = await request
        assert resp.status == 200
        assert await resp.json() == {"done": True}
        resp.release()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", srv.port)


async def test_bind_error_raises_from_serve(app: web.Application, server: WebServer) -> None:
    with pytest.raises(OSError):
        await serve(make_app(make_config(), FakeStatus(), Metrics()), "127.0.0.1", server.port)
