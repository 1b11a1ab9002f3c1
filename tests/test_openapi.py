"""/api/openapi.json: a valid OpenAPI 3.1 document that matches the app's routes both ways,
declares bearer security on every protected operation, and that schemathesis, calling every
operation on a live server on 127.0.0.1 with a supervisor's token, finds true."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from test_calls_api import TOKENS, Log, app_config, opened_log

from pbxlink.calls.record import RECORD_FIELDS
from pbxlink.hub import Hub
from pbxlink.web import Metrics, make_app, openapi, serve
from pbxlink.web.auth import route_access

from conftest import FakeStatus

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def full_app(lg: Log) -> web.Application:
    """make_app with everything it can mount (the hub is built, not started: /api/hub only
    reads its address)."""
    config = app_config()
    return make_app(
        config,
        FakeStatus(),
        Metrics(),
        directory=lg.directory,
        store=lg.store,
        hub=Hub(config, directory=lg.directory),
    )


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[Log]:
    async with opened_log(tmp_path / "pbxlink.sqlite3", 30) as seeded:
        yield seeded


def routed(app: web.Application) -> dict[tuple[str, str], web.AbstractRoute]:
    """(method, path) -> route; the HEAD aiohttp adds to every GET is not a route of its own."""
    routes = {(r.method, r.resource.canonical): r for r in app.router.routes() if r.resource}
    return {k: r for k, r in routes.items() if not (k[0] == "HEAD" and ("GET", k[1]) in routes)}


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


async def test_the_document_is_valid_openapi_3_1(log: Log) -> None:
    doc = openapi.build(full_app(log))
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation


@pytest.mark.parametrize("mounted", ["bare", "calls", "everything"])
async def test_the_document_and_the_routes_match_both_ways(log: Log, mounted: str) -> None:
    if mounted == "bare":
        app = make_app(app_config(), FakeStatus(), Metrics())
    elif mounted == "calls":
        app = make_app(app_config(), FakeStatus(), Metrics(), store=log.store)
    else:
        app = full_app(log)
    doc = openapi.build(app)
    routes = routed(app)
    assert set(operations(doc)) == set(routes)
    assert ("GET", "/api/calls/{call_id}") in routes or mounted == "bare"
    assert any(path.startswith("/api/clients") for _, path in routes) == (mounted == "everything")


async def test_every_protected_operation_declares_bearer_and_401(log: Log) -> None:
    app = full_app(log)
    routes = routed(app)
    checked = 0
    for key, op in operations(openapi.build(app)).items():
        if route_access(routes[key]) == "public":
            assert op["security"] == [], key
        else:
            assert op["security"] == [{"bearer": []}], key
            assert "401" in op["responses"], key
            checked += 1
    assert checked >= 25


def test_the_call_record_schema_has_every_field() -> None:
    schema = openapi.SCHEMAS["CallRecord"]
    assert list(schema["properties"]) == list(RECORD_FIELDS)
    assert schema["required"] == list(RECORD_FIELDS)


async def test_the_document_is_served_to_anyone(log: Log) -> None:
    app = full_app(log)
    async with (
        await serve(app, "127.0.0.1", 0) as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/api/openapi.json") as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == openapi.build(app)


# -- schemathesis against a live server ----------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The full app on 127.0.0.1 in a thread of its own: schemathesis calls it synchronously."""
    path = tmp_path_factory.mktemp("live") / "pbxlink.sqlite3"
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        async with opened_log(path, 60) as lg:
            server = await serve(full_app(lg), "127.0.0.1", 0)
            state["url"] = f"http://127.0.0.1:{server.port}"
            ready.set()
            await state["stop"].wait()
            await server.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(30), "the live server did not start"
    yield state["url"]
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(30)


def test_every_operation_answers_as_the_document_says(live: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live}/api/openapi.json")
    headers = {"Authorization": f"Bearer {TOKENS['supervisor']}"}
    checks = [not_a_server_error, response_schema_conformance]
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=8,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live, headers=headers, checks=checks, timeout=10)

        call()
        tested += 1
    assert tested >= 29  # all but /api/openapi.json itself, which schemathesis leaves out
