"""The web application: health, metrics and the API skeleton later routes are added to.

`make_app` wires the middlewares (JSON errors outermost, then authentication) and the base
routes; `serve` runs it on a TCP socket and hands back a handle the daemon closes on shutdown.
Later modules add routes with `app.router.add_get(...)` on the app make_app returns, and find
the daemon's parts under the AppKeys of `pbxlink.web.keys` (re-exported here).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pbxlink.calllog.store import CallLogStore
from pbxlink.hub import Hub
from pbxlink.operators import Operators
from pbxlink.web import openapi
from pbxlink.web.auth import auth_middleware, operator_of
from pbxlink.web.calls import add_routes as add_call_routes
from pbxlink.web.clients import Directory
from pbxlink.web.clients import add_routes as add_client_routes
from pbxlink.web.errors import JsonErrorRunner, error_middleware
from pbxlink.web.hub import add_routes as add_hub_routes
from pbxlink.web.keys import CONFIG, STATUS, StatusSource
from pbxlink.web.metrics import CONTENT_TYPE, Metrics
from pbxlink.web.models import Ami, Health, Me
from pbxlink.web.page import add_routes as add_page_routes
from pbxlink.web.recordings import add_routes as add_recording_routes
from pbxlink.web.servicelevel import add_routes as add_service_level_routes
from pbxlink.web.settings import Config
from pbxlink.web.spec import Answer, Route, mount, respond

MAX_BODY = 1 << 20  # 1 MiB: JSON for a client card or a filter, never uploads of media
SHUTDOWN_S = 5.0  # how long open requests (later: websockets) get to finish on shutdown


METRICS = web.AppKey("metrics", Metrics)


def make_app(
    config: Config,
    status: StatusSource,
    metrics: Metrics,
    *,
    directory: Directory | None = None,
    store: CallLogStore | None = None,
    hub: Hub | None = None,
    operators: Operators | None = None,
) -> web.Application:
    """The app; it also binds `metrics` to `status`, so /metrics and /healthz agree.

    Always: the operator page at `/`. With a `directory`, the client API under /api/clients
    (it needs the `store` too: a client's calls are the call log's); with a `store`, the call
    log API under /api/calls, its recordings and the service level;
    with a `hub`, /api/hub (where the page finds the popups). /api/openapi.json describes
    whatever is mounted. Tokens are checked against `operators` (the daemon's registry, which
    a reload replaces), else the config's operators.
    """
    if operators is None:
        operators = Operators(config.operators)
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(operators, metrics.log_limit)],
        client_max_size=MAX_BODY,
    )
    app[CONFIG] = config
    app[STATUS] = status
    app[METRICS] = metrics
    metrics.bind(status)
    app.on_response_prepare.append(_default_headers)
    mount(app, BASE_ROUTES, {"getOpenApi": openapi.Document().get})
    if directory is not None:
        if store is None:
            raise ValueError(
                "make_app: the client API (directory=) needs the call log (store=) as well: "
                "a client's calls are read from it"
            )
        add_client_routes(app, directory, store)
    if store is not None:
        add_call_routes(app, store, directory)
        add_recording_routes(app, store, config)
        add_service_level_routes(app, store)
    if hub is not None:
        add_hub_routes(app, hub)
    add_page_routes(app)
    return app


async def _default_headers(request: web.Request, response: web.StreamResponse) -> None:
    """API answers carry tokens' owners' data: no caching, no content sniffing."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def healthz(request: web.Request) -> web.Response:
    """200 while the AMI link is up, 503 otherwise, so a plain HTTP check sees trouble."""
    status = request.app[STATUS]
    up = status.ami_state == "up"
    age = status.last_event_age_s
    body = Health(
        status="ok" if up else "degraded",
        ami=Ami(str(status.ami_state), None if age is None else round(age, 3)),
        calls_active=status.calls_active,
        store_queue_depth=status.store_queue_depth,
        uptime_s=round(max(time.time() - status.started_at, 0.0), 3),
    )
    return respond(body, 200 if up else 503)


async def prometheus(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def me(request: web.Request) -> web.Response:
    """Who the token belongs to: the page shows it, scripts check their token with it."""
    op = operator_of(request)
    return respond(Me(op.name, list(op.extensions), op.role))


BASE_ROUTES = [
    Route("GET", "/healthz", "getHealth", "AMI link state, last event age, calls in progress",
          "daemon", {200: Answer("the AMI link is up", Health),
                     503: Answer("the AMI link is down", Health)},
          role="public", handler=healthz),
    Route("GET", "/metrics", "getMetrics", "Prometheus metrics (text format 0.0.4)", "daemon",
          {200: Answer("the metrics", content={"text/plain": {"schema": {"type": "string"}}})},
          role="public", handler=prometheus),
    Route("GET", "/api/me", "getMe", "Who the token belongs to", "daemon",
          {200: Answer("the token's operator", Me)}, handler=me),
    Route("GET", openapi.PATH, "getOpenApi", "This document", "daemon",
          {200: Answer("the OpenAPI 3.1 document", dict[str, Any])}, role="public"),
]  # fmt: skip


@dataclass(slots=True)
class WebServer:
    """A running server; `close()` (or leaving `async with`) stops it gracefully."""

    runner: web.AppRunner
    host: str
    port: int  # the bound port: the real one when asked for port 0

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> WebServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = SHUTDOWN_S,
    ssl_context: ssl.SSLContext | None = None,
) -> WebServer:
    """Start listening (HTTPS with `ssl_context`); returns once the socket is bound (so a bind
    error raises here)."""
    # aiohttp's access log goes to stdlib logging, which pbxlink does not set up.
    runner = JsonErrorRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return WebServer(runner, host, bound)
