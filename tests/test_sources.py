"""External sources against real servers: an aiohttp CRM on 127.0.0.1, and the machine's
PostgreSQL and MariaDB (a table with a unique name per test, dropped after it).

The database tests skip with a message when a server is absent (PBXLINK_STRICT=1: fail).
Their DSNs can be moved with PBXLINK_TEST_PG_DSN and PBXLINK_TEST_MYSQL_DSN.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
import asyncpg
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.clients.sources import (
    CardFields,
    HttpSource,
    LookupChain,
    SqlSource,
    compile_path,
    merge,
    number_value,
    source_from_dict,
)
from pbxlink.clients.sources.base import MISS, BadArgument, Source, TtlCache
from pbxlink.clients.sources.sql import prepare
from pbxlink.config import ConfigError

from conftest import need

GE = PhoneNumbers("GE")
NINO = GE.normalize("+995 32 212 34 56")  # known to the CRM
GIORGI = GE.normalize("555 12 34 56")  # known, with no orders
STRANGER = GE.normalize("+995 577 65 43 21")  # known to nobody
assert NINO and GIORGI and STRANGER
PG_DSN = os.environ.get("PBXLINK_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MY_DSN = os.environ.get("PBXLINK_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
CLOSED_PORT = 9  # discard: nothing listens on it here


def failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "sources.failed"]


@asynccontextmanager
async def closing(source: Source) -> AsyncIterator[Source]:
    """The source, closed after the block whatever happens in it."""
    try:
        yield source
    finally:
        await source.close()


# -- the CRM: a real HTTP server ---------------------------------------------------------------

CUSTOMERS: dict[str, dict[str, Any]] = {
    "+995322123456": {
        "customer": {"name": "Nino Beridze", "company": "Kartuli Ltd", "tags": ["vip"]},
        "address": {"items": [{"city": "Tbilisi", "country": "GE"}]},
        "manager": {"full name": "Levan"},
        "orders": [
            {"id": "A-1", "stage": "shipped", "total_due": 12.5, "is_open": True},
            {"id": "A-2", "stage": "closed", "total_due": "0", "is_open": "no"},
            {"id": "A-3"},
        ],
    },
    "+995555123456": {"customer": {"name": "Giorgi", "company": ""}, "orders": []},
}
CRM_FIELDS = {
    "name": "customer.name",
    "company": "$.customer.company",
    "category": "customer.tags[0]",
    "city": "address.items[0].city",
    "country": "address.items[-1].country",
    "responsible": 'manager["full name"]',
    "orders.number": "orders[*].id",
    "orders.stage": "orders[*].stage",
    "orders.debt": "orders[*].total_due",
    "orders.open": "orders[*].is_open",
}


class Crm:
    """Answers like a CRM's API; each route misbehaves in one way. Counts the requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.base = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/customers/{number}", self.customer)
        app.router.add_get("/slow/{seconds}/{number}", self.slow)
        app.router.add_get("/status/{code}/{number}", self.status)
        app.router.add_get("/badjson/{number}", self.bad_json)
        app.router.add_get("/html/{number}", self.html)
        app.router.add_get("/big/{number}", self.big)
        app.router.add_get("/moved/{number}", self.moved)
        return app

    def seen(self, request: web.Request) -> None:
        self.requests.append((request.match_info["number"], dict(request.headers)))

    def paths(self) -> list[str]:
        return [number for number, _ in self.requests]

    async def customer(self, request: web.Request) -> web.Response:
        self.seen(request)
        found = CUSTOMERS.get(request.match_info["number"])
        if found is None:
            return web.json_response({"error": "no such customer"}, status=404)
        return web.json_response(found)

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return await self.customer(request)

    async def status(self, request: web.Request) -> web.Response:
        self.seen(request)
        return web.json_response({"error": "boom"}, status=int(request.match_info["code"]))

    async def bad_json(self, request: web.Request) -> web.Response:
        self.seen(request)
        return web.Response(body=b'{"customer": {"name": "Ni', content_type="application/json")

    async def html(self, request: web.Request) -> web.Response:
        self.seen(request)
        return web.Response(text="<html>login page</html>", content_type="text/html")

    async def big(self, request: web.Request) -> web.StreamResponse:
        self.seen(request)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()  # no Content-Length: the limit must hold while reading
        await resp.prepare(request)
        await resp.write(b'{"customer": {"name": "' + b"x" * 200_000)
        await resp.write(b'"}}')
        return resp

    async def moved(self, request: web.Request) -> web.Response:
        self.seen(request)
        raise web.HTTPFound(f"/api/customers/{request.match_info['number']}")


@pytest.fixture
async def crm() -> AsyncIterator[Crm]:
    crm = Crm()
    runner = web.AppRunner(crm.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    crm.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield crm
    await runner.cleanup()


def http(crm: Crm, route: str = "api/customers", **kwargs: Any) -> HttpSource:
    kwargs.setdefault("fields", CRM_FIELDS)
    kwargs.setdefault("name", "crm")
    return HttpSource(url_template=f"{crm.base}/{route}/{{number}}", **kwargs)


async def test_http_maps_json_paths_to_the_card_and_sends_the_headers(crm: Crm) -> None:
    source = http(crm, headers={"Authorization": "Bearer s3cret", "X-Tenant": "7"})
    async with closing(source):
        card = await source.lookup(NINO)
    assert card == CardFields(
        name="Nino Beridze",
        company="Kartuli Ltd",
        category="vip",
        city="Tbilisi",
        country="GE",
        responsible="Levan",
        orders=[
            {"number": "A-1", "stage": "shipped", "responsible": None, "debt": 12.5, "open": True},
            {"number": "A-2", "stage": "closed", "responsible": None, "debt": 0.0, "open": False},
            {"number": "A-3", "stage": None, "responsible": None, "debt": None, "open": None},
        ],
        source="crm",
    )
    number, headers = crm.requests[0]
    assert number == "+995322123456"  # the + arrived intact: it was sent as %2B
    assert headers["Authorization"] == "Bearer s3cret" and headers["X-Tenant"] == "7"
    assert headers["Accept"] == "application/json"
    assert "s3cret" not in repr(source)


async def test_http_empty_values_are_no_values(crm: Crm) -> None:
    source = http(crm)
    async with closing(source):
        card = await source.lookup(GIORGI)
    assert card is not None and card.name == "Giorgi"
    assert card.company is None and card.orders == []  # "" and [] give nothing to merge


@pytest.mark.parametrize(
    ("form", "sent"),
    [
        ("e164", "+995322123456"),
        ("e164_digits", "995322123456"),
        ("national", "0322123456"),
        ("raw", "+995 32 212 34 56"),
    ],
)
async def test_http_number_forms(crm: Crm, form: str, sent: str) -> None:
    source = http(crm, number_form=form)
    async with closing(source):
        await source.lookup(NINO)
    assert crm.paths() == [sent]


async def test_http_404_is_not_found_and_not_an_error(crm: Crm) -> None:
    source = http(crm)
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(STRANGER) is None
            assert await source.lookup(STRANGER) is None  # "not found" is cached too
    assert failures(logs) == []
    assert len(crm.requests) == 1


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("status/500", "HTTP 500"),
        ("status/403", "HTTP 403"),
        ("badjson", "bad JSON"),
        ("html", "not JSON: content type 'text/html'"),
        ("big", "body over 100000 bytes"),
        ("moved", "HTTP 302"),  # redirects are not followed: the headers may hold a key
    ],
)
async def test_http_failures_are_logged_and_skipped(crm: Crm, route: str, reason: str) -> None:
    source = http(crm, route, max_body_bytes=100_000)
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
            assert await source.lookup(NINO) is None  # failures are not cached: asked again
    failed = failures(logs)
    assert len(failed) == 2 and failed[0]["log_level"] == "warning"
    assert failed[0]["source"] == "crm" and failed[0]["reason"].startswith(reason)
    assert len(crm.requests) == 2


async def test_http_slower_than_its_timeout_is_logged_and_skipped(crm: Crm) -> None:
    source = http(crm, "slow/1", timeout_s=0.2)  # Nino's card, a second late
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
    [failed] = failures(logs)
    assert failed["reason"] == "timeout" and failed["timeout_s"] == 0.2


async def test_http_connection_refused_is_logged_and_skipped() -> None:
    source = HttpSource("down", f"http://127.0.0.1:{CLOSED_PORT}/c/{{number}}", fields=CRM_FIELDS)
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
    [failed] = failures(logs)
    assert failed["source"] == "down" and "Connect" in failed["reason"]


async def test_http_cache_hit_sends_no_second_request_and_expires(crm: Crm) -> None:
    source = http(crm, cache_ttl_s=0.3)
    async with closing(source):
        first = await source.lookup(NINO)
        assert first is not None
        first.name = "edited by a caller"  # the cache hands out copies
        second = await source.lookup(GE.normalize("0322123456"))  # same number, other form
        assert second is not None and second.name == "Nino Beridze"
        assert len(crm.requests) == 1
        await asyncio.sleep(0.35)
        assert await source.lookup(NINO) is not None
        assert len(crm.requests) == 2  # expired: asked again


async def test_http_concurrent_lookups_of_one_number_share_one_request(crm: Crm) -> None:
    source = http(crm, "slow/0.1")
    async with closing(source):
        cards = await asyncio.gather(*(source.lookup(NINO) for _ in range(5)))
    assert all(c is not None and c.name == "Nino Beridze" for c in cards)
    assert len(crm.requests) == 1


async def test_extensions_and_anonymous_callers_are_not_looked_up(crm: Crm) -> None:
    source = http(crm)
    chain = LookupChain([source])
    try:
        assert await source.lookup(GE.normalize("101")) is None  # an internal extension
        result = await chain.lookup(GE.normalize("anonymous"), local=["local"])
    finally:
        await chain.close()
    assert result.local == ["local"] and result.fields == CardFields() and result.pending is None
    assert crm.requests == []


# -- the chain: the budget, late answers, merge order -----------------------------------------


async def test_chain_returns_within_budget_and_a_slow_source_arrives_as_update(crm: Crm) -> None:
    """A budget a local answer cannot miss, even on a loaded machine, and a source that cannot
    make it. How close to its budget the chain returns: benchmarks/latencies.py."""
    slow = http(crm, "slow/1", name="erp", timeout_s=2, fields={"name": "customer.name"})
    fast = http(crm, name="crm", fields={"name": "customer.company", "city": CRM_FIELDS["city"]})

    async def directory() -> list[str]:
        return ["client #1"]

    async with LookupChain([slow, fast], budget_s=0.5) as chain:
        started = time.monotonic()
        now = await chain.lookup(NINO, local=directory)
        assert now.local == ["client #1"]
        assert now.fields.name == "Kartuli Ltd" and now.fields.city == "Tbilisi"
        assert now.fields.source == "crm"
        assert now.pending is not None
        later = await now.pending
        assert time.monotonic() - started >= 1.0
    assert later is not None and later.pending is None
    assert later.local == ["client #1"]
    # chain order wins per field: erp is configured first, so its name replaces crm's
    assert later.fields.name == "Nino Beridze" and later.fields.city == "Tbilisi"
    assert later.fields.source == "erp, crm"


async def test_chain_cache_hits_answer_at_once_even_with_no_budget(crm: Crm) -> None:
    slow = http(crm, "slow/0.1", name="erp")
    async with LookupChain([slow], budget_s=0) as chain:
        cold = await chain.lookup(NINO)
        assert cold.fields == CardFields() and cold.pending is not None
        warm = await cold.pending
        assert warm is not None and warm.fields.name == "Nino Beridze"
        again = await chain.lookup(NINO)
    assert again.fields == warm.fields and again.pending is None
    assert len(crm.requests) == 1


async def test_chain_update_is_none_when_the_late_source_adds_nothing(crm: Crm) -> None:
    late = http(crm, "slow/0.15", name="erp")
    async with LookupChain([late], budget_s=0.02) as chain:
        now = await chain.lookup(STRANGER, local=None)
        assert now.pending is not None
        assert await now.pending is None


async def test_chain_a_source_beyond_its_timeout_ends_the_update_empty(crm: Crm) -> None:
    dead = http(crm, "slow/1", name="slow", timeout_s=0.15)
    with capture_logs() as logs:
        async with LookupChain([dead], budget_s=0.02) as chain:
            now = await chain.lookup(NINO)
            assert now.pending is not None
            assert await now.pending is None
    assert [e["reason"] for e in failures(logs)] == ["timeout"]


async def test_chain_failures_never_raise(crm: Crm) -> None:
    sources = [
        http(crm, "status/500", name="broken"),
        HttpSource("down", f"http://127.0.0.1:{CLOSED_PORT}/{{number}}", fields=CRM_FIELDS),
        http(crm, name="crm"),
    ]

    async def directory() -> list[str]:
        raise RuntimeError("directory locked")

    with capture_logs() as logs:
        async with LookupChain(sources, budget_s=1) as chain:
            result = await chain.lookup(NINO, local=directory)
    assert result.local is None and result.pending is None
    assert result.fields.name == "Nino Beridze" and result.fields.source == "crm"
    assert sorted(e["source"] for e in failures(logs)) == ["broken", "down", "local"]


async def test_chain_a_slow_local_directory_arrives_in_the_update() -> None:
    async def directory() -> str:
        await asyncio.sleep(0.1)
        return "client #1"

    async with LookupChain([], budget_s=0.02) as chain:
        now = await chain.lookup(NINO, local=directory())
        assert now.local is None and now.pending is not None
        later = await now.pending
    assert later is not None and later.local == "client #1"


async def test_chain_close_cancels_pending_updates(crm: Crm) -> None:
    chain = LookupChain([http(crm, "slow/5")], budget_s=0.01)
    now = await chain.lookup(NINO)
    assert now.pending is not None
    await chain.close()
    assert now.pending.cancelled()  # not waited for: the CRM answers after 5 s


def test_merge_first_configured_value_wins_per_field() -> None:
    a = CardFields(name="A", orders=[], source="a")
    b = CardFields(name="B", city="Batumi", orders=[{"number": "1"}], source="b")
    c = CardFields(name="C", company="Co", orders=[{"number": "2"}], source="c")
    merged = merge([None, a, b, c])
    assert (merged.name, merged.city, merged.company) == ("A", "Batumi", "Co")
    assert merged.orders == [{"number": "1"}] and merged.source == "a, b, c"
    assert merge([CardFields(name="X", source="x"), CardFields(name="Y", source="y")]).source == "x"


# -- JSON paths, number forms, the cache -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("customer.name", "Nino"),
        ("$.customer.name", "Nino"),
        ("customer.missing", None),
        ("customer.name.deeper", None),
        ("orders[0].stage", "new"),
        ("orders[-1].stage", "done"),
        ("orders[5].stage", None),
        ("orders[*].stage", ["new", None, "done"]),
        ("orders[*]", [{"stage": "new"}, {}, {"stage": "done"}]),
        ('["odd.key"]', 1),
        ("customer[0]", None),
        ("$", {"customer": {"name": "Nino"}}),
        ("customer[*]", ["Nino"]),
    ],
)
def test_json_paths(path: str, expected: Any) -> None:
    data: Any = {
        "customer": {"name": "Nino"},
        "orders": [{"stage": "new"}, {}, {"stage": "done"}],
        "odd.key": 1,
    }
    if path == "$":
        data = {"customer": {"name": "Nino"}}
    assert compile_path(path).get(data) == expected


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a[x]", "a[*].b[*]", "a b", "a[", "$."])
def test_bad_json_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        compile_path(path)


def test_number_forms_of_an_unusual_number() -> None:
    odd = GE.normalize("12345678")  # digits no rule makes valid: sent as they are
    assert odd is not None and odd.e164 is None
    assert number_value(odd, "e164") == "12345678"
    assert number_value(odd, "national") == "12345678"
    us = GE.normalize("+1 202 555 0123")
    assert us is not None and number_value(us, "national") == "2025550123"


def test_ttl_cache_is_bounded_and_expires() -> None:
    now = [0.0]
    cache = TtlCache(ttl_s=10, max_size=2, clock=lambda: now[0])
    cache.put("a", CardFields(name="A"))
    cache.put("b", None)  # "not found" is cached too
    assert cache.get("b") is None
    cache.get("a")  # a is now the most recent
    cache.put("c", CardFields(name="C"))
    assert cache.get("b") is MISS  # the least recent went out
    assert cache.get("a") == CardFields(name="A")
    now[0] = 10.0
    assert cache.get("a") is MISS and cache.get("c") is MISS
    assert len(cache) == 0


# -- config: strict, naming where and the key --------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "ftp", "name": "x"}, 'src[0].type: expected "http" or "sql"'),
        ({"type": "http", "name": "x", "fields": {"name": "a"}}, "src[0].url: missing"),
        (
            {"type": "http", "name": "x", "url": "http://crm/a", "fields": {"name": "a"}},
            "src[0].url: expected a URL with {number}",
        ),
        (
            {"type": "http", "name": "x", "url": "ftp://crm/{number}", "fields": {"name": "a"}},
            "src[0].url: expected an http:// or https:// URL",
        ),
        (
            {"type": "http", "name": "x", "url": "http://c/{number}", "fields": {"nam": "a"}},
            "src[0].fields: unknown card field 'nam'",
        ),
        (
            {"type": "http", "name": "x", "url": "http://c/{number}", "fields": {"name": "a..b"}},
            "src[0].fields.name: 'a..b'",
        ),
        (
            {
                "type": "http",
                "name": "x",
                "url": "http://c/{number}",
                "fields": {"name": "a"},
                "timeout": 1,
            },
            "src[0].timeout: unknown key (known: type, cache_size, cache_ttl_s, fields",
        ),
        (
            {
                "type": "http",
                "name": "x",
                "url": "http://c/{number}",
                "fields": {"name": "a"},
                "timeout_s": 0,
            },
            "src[0].timeout_s: expected a positive number",
        ),
        (
            {
                "type": "http",
                "name": "x",
                "url": "http://c/{number}",
                "fields": {"name": "a"},
                "number_form": "E164",
            },
            "src[0].number_form: expected one of e164, e164_digits, national, raw",
        ),
        (
            {
                "type": "sql",
                "name": "x",
                "dsn": "oracle://db/x",
                "query": "select 1",
                "fields": {"name": "a"},
            },
            "src[0].dsn: expected postgresql:// or mysql://",
        ),
        (
            {
                "type": "sql",
                "name": "x",
                "dsn": PG_DSN,
                "query": "delete from t where p = :number",
                "fields": {"name": "a"},
            },
            "src[0].query: only a single SELECT statement is allowed",
        ),
        (
            {"type": "sql", "name": "x", "dsn": PG_DSN, "fields": {"name": "a"}},
            "src[0].query: missing",
        ),
    ],
)
def test_source_config_errors_name_where_and_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        source_from_dict("pbxlink.toml:12: src[0]", table)
    assert str(err.value).startswith("pbxlink.toml:12: " + message), str(err.value)


def test_chain_from_dict() -> None:
    chain = LookupChain.from_dict(
        "f.toml: sources",
        {
            "budget_s": 0.08,
            "sources": [
                {
                    "type": "http",
                    "name": "crm",
                    "url": "https://crm/{number}",
                    "fields": {"name": "name"},
                    "headers": {"X-Key": "k"},
                    "cache_ttl_s": 0,
                },
                {
                    "type": "sql",
                    "name": "erp",
                    "dsn": MY_DSN,
                    "fields": {"name": "n"},
                    "query": "SELECT n FROM c WHERE phone = :number;",
                },
            ],
        },
    )
    assert chain.budget_s == 0.08 and [s.name for s in chain.sources] == ["crm", "erp"]
    good = {"type": "http", "name": "a", "url": "https://c/{number}", "fields": {"name": "n"}}
    with pytest.raises(ConfigError, match=r"^f\.toml: sources\.sources\[1\]\.name: expected"):
        LookupChain.from_dict("f.toml: sources", {"sources": [good, good | {"name": "a b"}]})
    with pytest.raises(ConfigError, match=r"sources\.sources: two sources named 'x'"):
        LookupChain.from_dict(
            "f.toml: sources",
            {
                "sources": [
                    {
                        "type": "http",
                        "name": "x",
                        "url": "https://c/{number}",
                        "fields": {"name": "n"},
                    },
                    {
                        "type": "http",
                        "name": "x",
                        "url": "https://d/{number}",
                        "fields": {"name": "n"},
                    },
                ]
            },
        )
    with pytest.raises(ConfigError, match=r"^f\.toml: sources\.budget: unknown key"):
        LookupChain.from_dict("f.toml: sources", {"budget": 1})


# -- SQL: the query check and the placeholders (no server needed) ------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "update c set name = 'x' where phone = :number",
        "select 1 where :number = ''; drop table c",
        "select name into other from c where phone = :number",
        "select name from c where phone = :number for update",
        "select name from c where phone = :number lock in share mode",
        "with d as (delete from c returning *) select * from d where phone = :number",
        "select name from c",  # no :number: every caller would get the same card
        "select name from c where phone = :phone",
        "select name from c where phone = ':number",  # unterminated
    ],
)
def test_queries_that_are_not_one_select_are_refused(query: str) -> None:
    for dsn in (PG_DSN, MY_DSN):
        with pytest.raises(BadArgument) as err:
            SqlSource("erp", dsn, query, {"name": "name"})
        assert err.value.key == "query"


def test_the_number_is_bound_never_formatted_in() -> None:
    pg, count = prepare(
        "SELECT name, ':number' AS quoted, $$ :number $$ AS dollar, phone::text -- :number\n"
        "FROM c /* :number; */ WHERE phone = :number OR alt = :number;",
        "postgresql",
    )
    assert pg == (
        "SELECT name, ':number' AS quoted, $$ :number $$ AS dollar, phone::text -- :number\n"
        "FROM c /* :number; */ WHERE phone = $1 OR alt = $1"
    )
    assert count == 2
    my, count = prepare(
        "select name from c where phone = :number and name like '50% \\' :number' # x",
        "mysql",
    )
    assert my == "select name from c where phone = %s and name like '50%% \\' :number'"
    assert count == 1


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
async def pg() -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        conn, error = None, f"{type(exc).__name__}: {exc}"
    need(
        conn is not None,
        f"PostgreSQL not reachable at {PG_DSN} ({error if conn is None else ''}); start it with "
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    )
    assert conn is not None
    t = f"pbx_src_{uuid.uuid4().hex[:12]}"
    await conn.execute(
        f"""
        CREATE TABLE {t} (id int PRIMARY KEY, phone text UNIQUE, name text, company text,
                          city text, slow float NOT NULL DEFAULT 0);
        CREATE TABLE {t}_orders (customer int, number text, stage text, debt numeric,
                                 open boolean);
        CREATE TABLE {t}_audit (phone text);
        INSERT INTO {t} VALUES (1, '+995322123456', 'Nino Beridze', 'Kartuli Ltd', 'Tbilisi', 0),
                               (2, '+995555123456', 'Giorgi', NULL, NULL, 1);
        INSERT INTO {t}_orders VALUES (1, 'A-1', 'shipped', 12.50, true),
                                      (1, 'A-2', 'closed', 0, false);
        CREATE FUNCTION {t}_touch(p text) RETURNS text LANGUAGE sql VOLATILE
            AS $$ INSERT INTO {t}_audit VALUES (p) RETURNING p $$;
        """
    )
    try:
        yield conn, t
    finally:
        await conn.execute(f"DROP FUNCTION {t}_touch(text); DROP TABLE {t}, {t}_orders, {t}_audit")
        await conn.close()


PG_FIELDS = {
    "name": "name",
    "company": "company",
    "city": "city",
    "orders.number": "number",
    "orders.stage": "stage",
    "orders.debt": "debt",
    "orders.open": "open",
}


def joined_source(name: str, dsn: str, t: str, where: str = "") -> SqlSource:
    """Customers LEFT JOIN their orders, a row an order: the query both databases are asked."""
    query = (
        f"SELECT c.name, c.company, c.city, o.number, o.stage, o.debt, o.open "
        f"FROM {t} c LEFT JOIN {t}_orders o ON o.customer = c.id "
        f"WHERE c.phone = :number{where} ORDER BY o.number"
    )
    return SqlSource(name, dsn, query, PG_FIELDS)


NINO_ORDERS = [
    {"number": "A-1", "stage": "shipped", "responsible": None, "debt": 12.5, "open": True},
    {"number": "A-2", "stage": "closed", "responsible": None, "debt": 0.0, "open": False},
]


async def test_pg_maps_columns_first_row_wins_orders_from_every_row(pg: Any) -> None:
    _, t = pg
    source = joined_source("pg", PG_DSN, t)
    with capture_logs() as logs:
        async with closing(source):
            nino = await source.lookup(NINO)
            giorgi = await source.lookup(GIORGI)
            stranger = await source.lookup(STRANGER)
    assert nino == CardFields(
        name="Nino Beridze",
        company="Kartuli Ltd",
        city="Tbilisi",
        orders=NINO_ORDERS,
        source="pg",
    )
    assert giorgi is not None and giorgi.name == "Giorgi" and giorgi.orders == []
    assert stranger is None and failures(logs) == []


async def test_pg_answers_are_cached(pg: Any) -> None:
    conn, t = pg
    source = joined_source("pg", PG_DSN, t)
    async with closing(source):
        assert (await source.lookup(NINO)).name == "Nino Beridze"  # type: ignore[union-attr]
        await conn.execute(f"UPDATE {t} SET name = 'Renamed' WHERE id = 1")
        assert (await source.lookup(NINO)).name == "Nino Beridze"  # type: ignore[union-attr]
        source.clear_cache()
        assert (await source.lookup(NINO)).name == "Renamed"  # type: ignore[union-attr]


async def test_pg_timeout_is_logged_and_the_pool_recovers(pg: Any) -> None:
    _, t = pg
    query = f"SELECT c.name FROM {t} c, LATERAL (SELECT pg_sleep(c.slow)) s WHERE c.phone = :number"
    source = SqlSource("pg", PG_DSN, query, {"name": "name"}, timeout_s=0.3, pool_size=1)
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(GIORGI) is None  # slow = 1 s: beyond the timeout
            card = await source.lookup(NINO)  # the one pooled connection was replaced
    assert card is not None and card.name == "Nino Beridze"
    assert [e["reason"] for e in failures(logs)] == ["timeout"]


async def test_pg_writes_through_a_function_are_blocked_by_the_read_only_transaction(
    pg: Any,
) -> None:
    conn, t = pg
    query = f"SELECT {t}_touch(:number) AS name"
    source = SqlSource("pg", PG_DSN, query, {"name": "name"})
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
    [failed] = failures(logs)
    assert failed["reason"] == "ReadOnlySQLTransactionError"
    assert "read-only transaction" in failed["error"]
    assert await conn.fetchval(f"SELECT count(*) FROM {t}_audit") == 0


async def test_pg_reconnects_after_its_connection_was_killed(pg: Any) -> None:
    conn, t = pg
    query = f"SELECT name, pg_backend_pid() AS notes FROM {t} WHERE phone = :number"
    source = SqlSource("pg", PG_DSN, query, {"name": "name", "notes": "notes"}, cache_ttl_s=0)
    with capture_logs() as logs:
        async with closing(source):
            first = await source.lookup(NINO)
            assert first is not None and first.notes is not None
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", int(first.notes))
            card = await source.lookup(NINO)  # at once: usually on the dead one, then retried
    assert card is not None and card.name == "Nino Beridze" and card.notes != first.notes
    assert failures(logs) == []


async def test_pg_connection_refused_is_logged_and_skipped() -> None:
    source = SqlSource(
        "pg",
        f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/test",
        "SELECT :number AS name",
        {"name": "name"},
    )
    with capture_logs() as logs:
        async with LookupChain([source], budget_s=1) as chain:
            result = await chain.lookup(NINO, local="local")
    assert result.local == "local" and result.fields == CardFields() and result.pending is None
    [failed] = failures(logs)
    assert failed["kind"] == "sql" and failed["reason"] == "ConnectionRefusedError"


async def test_pg_missing_column_is_a_logged_failure(pg: Any) -> None:
    _, t = pg
    source = SqlSource(
        "pg",
        PG_DSN,
        f"SELECT name FROM {t} WHERE phone = :number",
        {"name": "name", "city": "town"},
    )
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
    assert failures(logs)[0]["reason"].startswith("column 'town' not in the result")


# -- MariaDB -----------------------------------------------------------------------------------


@pytest.fixture
async def my() -> AsyncIterator[tuple[Any, str]]:
    from pbxlink.clients.sources.sql import parse_dsn

    args = {k: v for k, v in parse_dsn(MY_DSN)[1].items() if v is not None}
    try:
        conn = await asyncio.wait_for(aiomysql.connect(autocommit=True, **args), 3)
    except (OSError, aiomysql.Error, TimeoutError) as exc:
        conn, error = None, f"{type(exc).__name__}: {exc}"
    need(
        conn is not None,
        f"MariaDB not reachable at {MY_DSN} ({error if conn is None else ''}); start it with "
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    )
    assert conn is not None
    t = f"pbx_src_{uuid.uuid4().hex[:12]}"
    async with conn.cursor() as cur:
        for statement in (
            f"CREATE TABLE {t} (id int PRIMARY KEY, phone varchar(32) UNIQUE, name text,"
            " company text, city text, slow float NOT NULL DEFAULT 0) CHARSET utf8mb4",
            f"CREATE TABLE {t}_orders (customer int, number text, stage text,"
            " debt decimal(10,2), open tinyint)",
            f"CREATE TABLE {t}_audit (phone text)",
            f"INSERT INTO {t} VALUES (1, '+995322123456', 'ნინო ბერიძე', 'Kartuli Ltd',"
            " 'Tbilisi', 0), (2, '+995555123456', 'Giorgi', NULL, NULL, 1)",
            f"INSERT INTO {t}_orders VALUES (1, 'A-1', 'shipped', 12.50, 1),"
            " (1, 'A-2', 'closed', 0, 0)",
            f"CREATE FUNCTION {t}_touch(p varchar(32)) RETURNS varchar(32) MODIFIES SQL DATA"
            f" BEGIN INSERT INTO {t}_audit VALUES (p); RETURN p; END",
        ):
            await cur.execute(statement)
    try:
        yield conn, t
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP FUNCTION {t}_touch")
            await cur.execute(f"DROP TABLE {t}, {t}_orders, {t}_audit")
        conn.close()


async def test_mariadb_maps_columns_and_orders(my: Any) -> None:
    _, t = my
    source = joined_source("my", MY_DSN, t, " AND c.name LIKE '%'")  # a literal % beside :number
    with capture_logs() as logs:
        async with closing(source):
            nino = await source.lookup(NINO)
            giorgi = await source.lookup(GIORGI)
            stranger = await source.lookup(STRANGER)
    assert nino == CardFields(
        name="ნინო ბერიძე",
        company="Kartuli Ltd",
        city="Tbilisi",
        orders=NINO_ORDERS,
        source="my",
    )
    assert giorgi is not None and giorgi.name == "Giorgi" and giorgi.orders == []
    assert stranger is None and failures(logs) == []


async def test_mariadb_timeout_is_logged_and_the_pool_recovers(my: Any) -> None:
    _, t = my
    query = f"SELECT name FROM {t} WHERE phone = :number AND SLEEP(slow) = 0"
    source = SqlSource("my", MY_DSN, query, {"name": "name"}, timeout_s=0.3, pool_size=1)
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(GIORGI) is None  # slow = 1 s: beyond the timeout
            card = await source.lookup(NINO)
    assert card is not None and card.name == "ნინო ბერიძე"
    assert [e["reason"] for e in failures(logs)] == ["timeout"]


async def test_mariadb_writes_through_a_function_are_blocked_by_the_read_only_transaction(
    my: Any,
) -> None:
    conn, t = my
    source = SqlSource("my", MY_DSN, f"SELECT {t}_touch(:number) AS name", {"name": "name"})
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
    [failed] = failures(logs)
    assert failed["reason"] == "OperationalError" and "READ ONLY" in failed["error"]
    async with conn.cursor() as cur:
        await cur.execute(f"SELECT count(*) FROM {t}_audit")
        assert await cur.fetchone() == (0,)


async def test_mariadb_reconnects_after_its_connection_was_killed(my: Any) -> None:
    conn, t = my
    query = f"SELECT name, CONNECTION_ID() AS notes FROM {t} WHERE phone = :number"
    source = SqlSource(
        "my", MY_DSN, query, {"name": "name", "notes": "notes"}, cache_ttl_s=0, pool_size=1
    )
    with capture_logs() as logs:
        async with closing(source):
            first = await source.lookup(NINO)
            assert first is not None and first.notes is not None
            async with conn.cursor() as cur:
                await cur.execute(f"KILL {int(first.notes)}")
            card = await source.lookup(NINO)
    assert card is not None and card.name == "ნინო ბერიძე" and card.notes != first.notes
    assert failures(logs) == []


async def test_mariadb_connection_refused_is_logged_and_skipped() -> None:
    source = SqlSource(
        "my",
        f"mysql://root@127.0.0.1:{CLOSED_PORT}/test",
        "SELECT :number AS name",
        {"name": "name"},
    )
    with capture_logs() as logs:
        async with closing(source):
            assert await source.lookup(NINO) is None
    [failed] = failures(logs)
    assert failed["kind"] == "sql" and failed["reason"] == "OperationalError"
    assert "2003" in failed["error"]


async def test_sql_and_http_in_one_chain(pg: Any, crm: Crm) -> None:
    _, t = pg
    # budget 0.5 s (the first query also opens the pool), the CRM answers after 1 s
    sources = [joined_source("erp", PG_DSN, t), http(crm, "slow/1.0", name="crm", timeout_s=3)]
    async with LookupChain(sources, budget_s=0.5) as chain:
        now = await chain.lookup(NINO)
        assert now.fields.source == "erp" and now.pending is not None
        later = await now.pending
    assert later is not None and later.fields.source == "erp, crm"
    assert later.fields.category == "vip" and later.fields.orders[0]["number"] == "A-1"
    assert json.dumps(later.fields.as_dict())  # what the popup sends is plain JSON
