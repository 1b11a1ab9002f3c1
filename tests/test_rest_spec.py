"""The route declarations (pbxlink/web/spec.py): what msgspec refuses is the API's one 400
naming the field, a route mounted without a declaration cannot go undocumented, the answers
are what the declared models say, and the client's REST view is built in web/ alone."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from pbxlink.calllog import CallLogStore, query, relink_calls
from pbxlink.clients import model
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.config import Config
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, cards, make_app, models, openapi, urls
from pbxlink.web.auth import public
from pbxlink.web.calls import CallFilters, CsvQuery, PageQuery, beyond_filters
from pbxlink.web.spec import ROUTES, Answer, NoQuery, Route, convert, mount, respond

from conftest import FakeStatus, session_to

ADMIN = "admin-token-cccccccccccccccccccccccccccccccccc"


def refused(value: Any, to: type, noun: str = "field", **kw: Any) -> dict[str, Any]:
    with pytest.raises(Exception) as caught:
        convert(value, to, noun, **kw)
    exc = caught.value
    assert getattr(exc, "status", None) == 400 and exc.code == "bad_request"  # type: ignore[attr-defined]
    return {"message": exc.message, **exc.extra}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": 7}, "name", "expected a string, got a whole number"),
        ({"nick": "x"}, "nick", "unknown field (known: name, company, category"),
        ({"phones": "0555"}, "phones", "expected a list"),
        ({"phones": [{"label": "x"}]}, "phones[0].number", "required"),
        ({"phones": ["1", {"number": "2", "label": 5}]}, "phones[1].label", "expected a string"),
        ({"phones": [{"number": "2", "kind": "x"}]}, "phones[0].kind", "unknown field"),
    ],
)
def test_a_body_msgspec_refuses_is_a_400_naming_the_field(
    body: dict[str, Any], field: str, says: str
) -> None:
    error = refused(body, cards.NewClient)
    assert error["field"] == field
    assert error["message"].startswith(f"{field}: ") and says in error["message"], error


def test_a_query_parameter_msgspec_refuses_is_named_with_what_was_given() -> None:
    error = refused({"open": "maybe"}, cards.OrdersQuery, "parameter", strict=False,
                    given={"open": "maybe"})  # fmt: skip
    assert error == {
        "field": "open",
        "message": "open: expected one of 0, 1, all, false, true, got 'maybe'",
    }
    error = refused({"limit": "501"}, cards.SearchQuery, "parameter", strict=False)
    assert error["field"] == "limit" and "<= 500" in error["message"]
    error = refused({"x": "1"}, NoQuery, "parameter", strict=False)
    assert error == {"field": "x", "message": "x: unknown parameter (known: none)"}


def test_a_change_passes_on_only_the_fields_given() -> None:
    change = convert({"city": "Kutaisi", "notes": ""}, cards.CardFields, "field")
    assert change.given() == {"city": "Kutaisi", "notes": ""}
    new = convert({"phones": ["1", {"number": "2"}]}, cards.NewClient, "field")
    assert new.given() == {"phones": ["1", {"number": "2"}]}


async def _hello(request: web.Request) -> web.Response:
    return respond({"hello": "world"})


def test_a_route_mounted_without_a_declaration_stops_the_document() -> None:
    app = make_app(Config(), FakeStatus(), Metrics())
    app.router.add_get("/api/undeclared", _hello)
    with pytest.raises(ValueError, match="GET /api/undeclared is mounted but not declared"):
        openapi.build(app)


class Hello(msgspec.Struct):
    hello: str


HELLO = Route("GET", "/api/hello/{id:\\d+}", "getHello", "Greets", "test",
              {200: Answer("a greeting", Hello)}, {404: "nobody"}, role="supervisor",
              query=NoQuery, handler=_hello)  # fmt: skip


def test_a_declared_route_is_mounted_with_its_role_and_documented_from_its_models() -> None:
    app = make_app(Config(), FakeStatus(), Metrics())
    mount(app, [HELLO])
    assert app[ROUTES][-1] is HELLO
    [route] = [r for r in app.router.routes() if r.resource.canonical == "/api/hello/{id}"
               and r.method == "GET"]  # fmt: skip
    assert route.handler._pbxlink_access == "supervisor"
    op = openapi.build(app)["paths"]["/api/hello/{id}"]["get"]
    assert op["parameters"] == [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    ]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Hello"
    }
    assert set(op["responses"]) == {"200", "401", "403", "404"}
    assert op["responses"]["403"]["description"] == "this needs the supervisor role"
    assert openapi.build(app)["components"]["schemas"]["Hello"]["required"] == ["hello"]


async def test_answers_are_json_of_the_model_with_the_json_content_type() -> None:
    app = make_app(Config(), FakeStatus(), Metrics())
    async with session_to(app) as http, http.get("/healthz") as resp:
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        body = await resp.json()
    assert msgspec.to_builtins(msgspec.convert(body, models.Health)) == body


def test_the_rest_view_of_a_client_builds_its_photo_url_in_web() -> None:
    client = model.Client(
        id=42, name="Nino", company="", category="vip", category_label="VIP",
        category_color="#d4a017", notes="", city="Tbilisi", country="", photo=None,
        responsible="", created_at=0.0, updated_at=1.5,
        phones=(model.Phone(1, 42, "0555", "+995555", "555", "mobile"),),
    )  # fmt: skip
    assert not hasattr(client, "to_dict")  # the directory's value knows no wire form
    view = msgspec.to_builtins(cards.client(client))
    assert view["photo_url"] == urls.client_photo(42) == "/api/clients/42/photo"
    assert view["category"] == {"name": "vip", "label": "VIP", "color": "#d4a017"}
    assert (view["has_photo"], view["created_at"], view["updated_at"]) == (
        False, "1970-01-01T00:00:00.000Z", "1970-01-01T00:00:01.500Z"
    )  # fmt: skip
    assert view["phones"] == [{"id": 1, "raw": "0555", "e164": "+995555", "label": "mobile"}]
    with pytest.raises(AttributeError):
        client.name = "x"  # type: ignore[misc]  # frozen: lookups share it through the cache


async def test_a_query_parameter_given_twice_is_named(http_clients: aiohttp.ClientSession) -> None:
    async with http_clients.get("/api/clients?limit=1&limit=2") as resp:
        assert resp.status == 400
        assert await resp.json() == {
            "error": "bad_request",
            "message": "limit: given 2 times, expected once",
            "field": "limit",
        }


@pytest.fixture
async def http_clients(store: CallLogStore, tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    config = Config(operators=[Operator("Ana", (), "admin", hash_token(ADMIN))])
    directory = Directory(store.path, PhoneNumbers("GE"), photos_dir=tmp_path / "photos",
                          relink_calls=relink_calls)  # fmt: skip
    async with directory:
        app = make_app(config, FakeStatus(), Metrics(), directory=directory, store=store)
        async with session_to(app) as http:
            http.headers.update({"Authorization": f"Bearer {ADMIN}"})
            yield http


@pytest.mark.parametrize(
    ("limit", "status"),
    [("05", 200), ("5", 200), ("5.0", 400), ("1e2", 400), (" 5", 400), ("9" * 5000, 400)],
)
async def test_a_whole_number_parameter_is_digits_as_people_write_them(
    http_clients: aiohttp.ClientSession, limit: str, status: int
) -> None:
    async with http_clients.get("/api/clients", params={"limit": limit}) as resp:
        body = await resp.json()
        assert resp.status == status, body
    if status == 400:
        assert body["field"] == "limit" and len(body["message"]) < 100


def test_a_handler_marked_otherwise_than_its_declaration_is_refused() -> None:
    app = make_app(Config(), FakeStatus(), Metrics())
    with pytest.raises(ValueError, match=r"getHello: declared 'supervisor'.*'public'"):
        mount(app, [dataclasses.replace(HELLO, handler=public(_greet))])


async def _greet(request: web.Request) -> web.Response:
    return respond(Hello("world"))


def test_the_documented_call_log_parameters_are_the_ones_its_parser_takes() -> None:
    assert CallFilters.__struct_encode_fields__ == query.FILTER_PARAMS
    assert beyond_filters(PageQuery) == query.PAGE_PARAMS
    assert beyond_filters(CsvQuery) == ("sort", "bom")
