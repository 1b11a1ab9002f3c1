"""The client REST API over real TCP on 127.0.0.1, on a real SQLite file: roles, validation
errors that name the field, photos, merges and the per-client call history."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pbxlink.calllog import CallLogStore, relink_calls
from pbxlink.clients.directory import Directory
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.config import Config
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, make_app
from pbxlink.web.auth import route_access

from conftest import FakeStatus, insert_call, make_record, session_to

TOKENS = {
    "operator": "op-token-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "admin": "admin-token-cccccccccccccccccccccccccccccccccc",
}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 256
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 256
GIF = b"GIF89a" + b"\x00" * 256


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[Directory]:
    d = Directory(
        tmp_path / "pbxlink.sqlite3",
        PhoneNumbers("GE"),
        photos_dir=tmp_path / "photos",
        relink_calls=relink_calls,
    )
    async with d:
        yield d


@pytest.fixture
def app(directory: Directory, store: CallLogStore) -> web.Application:
    """The client API, with the call log it reads a client's calls from (`store`, conftest's:
    the directory's file)."""
    config = Config(
        operators=[
            Operator("Nino", ("101",), "operator", hash_token(TOKENS["operator"])),
            Operator("Ana", (), "admin", hash_token(TOKENS["admin"])),
        ]
    )
    return make_app(config, FakeStatus(), Metrics(), directory=directory, store=store)


@pytest.fixture
async def http(app: web.Application) -> AsyncIterator[aiohttp.ClientSession]:
    async with session_to(app) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    *,
    role: str = "operator",
    expect: int = 200,
    **kwargs: Any,
) -> Any:
    """One request; checks the status and returns the JSON body (None for 204)."""
    if body is not None:
        kwargs["json"] = body
    async with http.request(method, path, headers=auth(role), **kwargs) as resp:
        text = await resp.text()
        assert resp.status == expect, f"{method} {path}: {resp.status} {text}"
        if resp.status == 204:
            return None
        assert resp.content_type == "application/json", text
        return await resp.json()


async def invalid(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, field: str, status: int = 400
) -> dict[str, Any]:
    error = await call(http, method, path, body, role="admin", expect=status)
    assert error["field"] == field, error
    assert field.split("[")[0].split(".")[0] in error["message"], error
    return error


# -- authentication and roles ---------------------------------------------------------------------


async def test_every_client_route_needs_a_token(
    app: web.Application, http: aiohttp.ClientSession
) -> None:
    checked = 0
    for route in app.router.routes():
        path = re.sub(r"\{[^}]+\}", "1", route.resource.canonical)
        if not path.startswith("/api/clients"):
            continue
        assert route_access(route) != "public"
        async with http.request(route.method, path) as resp:
            assert resp.status == 401, (route.method, path)
        checked += 1
    assert checked >= 20


async def test_operators_read_and_edit_admins_delete_and_merge(
    http: aiohttp.ClientSession,
) -> None:
    a = await call(
        http, "POST", "/api/clients", {"name": "A", "phones": ["0555123456"]}, expect=201
    )
    b = await call(http, "POST", "/api/clients", {"name": "B"}, expect=201)
    c = await call(http, "POST", "/api/clients", {"name": "C"}, expect=201)
    order = await call(http, "POST", f"/api/clients/{a['id']}/orders", {"number": "1"}, expect=201)
    await call(http, "GET", f"/api/clients/{a['id']}")
    await call(http, "PATCH", f"/api/clients/{a['id']}", {"city": "Kutaisi"})
    await call(http, "PATCH", f"/api/clients/{a['id']}/orders/{order['id']}", {"open": False})
    await call(http, "GET", "/api/clients/categories")

    gold = {"name": "gold", "label": "Gold", "color": "#ffd700"}
    admin_only = [
        ("DELETE", f"/api/clients/{c['id']}", None, 204),
        ("POST", f"/api/clients/{a['id']}/merge", {"gone_id": b["id"]}, 200),
        ("DELETE", f"/api/clients/{a['id']}/orders/{order['id']}", None, 204),
        ("POST", "/api/clients/categories", gold, 201),
    ]
    for method, path, body, _ in admin_only:
        error = await call(http, method, path, body, expect=403)
        assert error["error"] == "forbidden" and error["needed"] == "admin"
    for method, path, body, status in admin_only:
        await call(http, method, path, body, role="admin", expect=status)
    for gone in (b, c):
        await call(http, "GET", f"/api/clients/{gone['id']}", expect=404)


# -- the card -------------------------------------------------------------------------------------


async def test_create_get_update_and_look_up(http: aiohttp.ClientSession) -> None:
    body = {
        "name": "თამარ ჯაფარიძე",
        "company": "Kakheti Wine",
        "category": "vip",
        "notes": "Speaks Georgian and Russian.\nCall after 10.",
        "city": "Telavi",
        "country": "GE",
        "responsible": "Nino",
        "phones": ["+995 32 212 34 56", {"number": "0555123456", "label": "mobile"}],
    }
    async with http.post("/api/clients", json=body, headers=auth("operator")) as resp:
        assert resp.status == 201
        created = await resp.json()
        assert resp.headers["Location"] == f"/api/clients/{created['id']}"
    assert created["name"] == body["name"] and created["notes"] == body["notes"]
    assert created["category"] == {"name": "vip", "label": "VIP", "color": "#ca8a04"}
    assert [(p["e164"], p["label"]) for p in created["phones"]] == [
        ("+995322123456", ""),
        ("+995555123456", "mobile"),
    ]
    assert created["has_photo"] is False and created["open_orders"] == []
    assert created["created_at"].endswith("Z")

    card = await call(http, "GET", f"/api/clients/{created['id']}")
    assert card == created
    updated = await call(http, "PATCH", f"/api/clients/{created['id']}", {"city": "Sighnaghi"})
    assert updated["city"] == "Sighnaghi" and updated["name"] == body["name"]

    for number in ("+995 32 212 34 56", "0322123456", "00995322123456", "322123456"):
        found = await call(http, "GET", "/api/clients/lookup", params={"number": number})
        assert found["e164"] == "+995322123456" and found["shared"] is False
        assert [c["id"] for c in found["clients"]] == [created["id"]]
    for q in ("ჯაფარიძე", "kakheti", "0555123456", "2123"):
        found = await call(http, "GET", "/api/clients", params={"q": q})
        assert [c["id"] for c in found["clients"]] == [created["id"]], q
    anonymous = await call(http, "GET", "/api/clients/lookup", params={"number": "anonymous"})
    assert anonymous == {"number": "anonymous", "e164": None, "shared": False, "clients": []}


async def test_a_shared_number_shows_every_client(http: aiohttp.ClientSession) -> None:
    ids = []
    for name in ("Nino", "Giorgi"):
        client = await call(
            http, "POST", "/api/clients", {"name": name, "phones": ["0555123456"]}, expect=201
        )
        ids.append(client["id"])
    found = await call(http, "GET", "/api/clients/lookup", params={"number": "+995555123456"})
    assert found["shared"] is True and [c["id"] for c in found["clients"]] == ids


async def test_add_number_from_the_live_card_merges_the_potential_and_its_calls(
    http: aiohttp.ClientSession, directory: Directory
) -> None:
    known = await call(http, "POST", "/api/clients", {"name": "Ketevan"}, expect=201)
    potential = await directory.register_unknown("0555123456")
    assert potential is not None
    insert_call(directory.path, make_record(call_id="c1", status="no_answer"), potential.id)

    added = await call(
        http,
        "POST",
        f"/api/clients/{known['id']}/phones",
        {"number": "+995 555 12 34 56", "label": "mobile"},
        expect=201,
    )
    assert added["merged"] == [potential.id]
    assert added["phone"]["e164"] == "+995555123456" and added["phone"]["label"] == "mobile"
    assert [p["id"] for p in added["client"]["phones"]] == [added["phone"]["id"]]
    await call(http, "GET", f"/api/clients/{potential.id}", expect=404)
    calls = await call(http, "GET", f"/api/clients/{known['id']}/calls")
    assert [c["call_id"] for c in calls["calls"]] == ["c1"]
    assert calls["calls"][0]["status"] == "no_answer"

    removed = await call(
        http, "DELETE", f"/api/clients/{known['id']}/phones/{added['phone']['id']}"
    )
    assert removed["phones"] == []


async def test_merge_by_an_admin(http: aiohttp.ClientSession, directory: Directory) -> None:
    keep = await call(http, "POST", "/api/clients", {"name": "Ana"}, expect=201)
    gone = await call(
        http, "POST", "/api/clients", {"name": "Ana 2", "phones": ["0555123456"]}, expect=201
    )
    await call(http, "POST", f"/api/clients/{gone['id']}/orders", {"number": "9"}, expect=201)
    insert_call(directory.path, make_record(call_id="c1", status="no_answer"), gone["id"])
    merged = await call(
        http, "POST", f"/api/clients/{keep['id']}/merge", {"gone_id": gone["id"]}, role="admin"
    )
    assert [p["e164"] for p in merged["phones"]] == ["+995555123456"]
    assert [o["number"] for o in merged["open_orders"]] == ["9"]
    calls = await call(http, "GET", f"/api/clients/{keep['id']}/calls", params={"limit": "1"})
    assert [c["call_id"] for c in calls["calls"]] == ["c1"]
    await call(http, "GET", f"/api/clients/{gone['id']}/calls", expect=404)


async def test_orders(http: aiohttp.ClientSession) -> None:
    client = await call(http, "POST", "/api/clients", {"name": "Shop"}, expect=201)
    base = f"/api/clients/{client['id']}/orders"
    a = await call(http, "POST", base, {"number": "A-1", "debt": 12.5, "stage": "new"}, expect=201)
    b = await call(http, "POST", base, {"number": "B-2", "responsible": "Nino"}, expect=201)
    assert a["open"] is True and a["debt"] == 12.5
    closed = await call(http, "PATCH", f"{base}/{a['id']}", {"open": False, "stage": "paid"})
    assert closed["open"] is False and closed["stage"] == "paid"
    card = await call(http, "GET", f"/api/clients/{client['id']}")
    assert [o["id"] for o in card["open_orders"]] == [b["id"]]
    everything = await call(http, "GET", base)
    assert [o["id"] for o in everything["orders"]] == [b["id"], a["id"]]
    closed_only = await call(http, "GET", base, params={"open": "false"})
    assert [o["id"] for o in closed_only["orders"]] == [a["id"]]
    await call(http, "DELETE", f"{base}/{a['id']}", role="admin", expect=204)
    await call(http, "PATCH", f"{base}/{a['id']}", {"stage": "x"}, expect=404)


async def test_categories(http: aiohttp.ClientSession) -> None:
    gold = {"name": "gold", "label": "Gold", "color": "#ffd700"}
    assert await call(http, "POST", "/api/clients/categories", gold, role="admin", expect=201) == {
        **gold,
        "builtin": False,
    }
    found = await call(http, "GET", "/api/clients/categories")
    assert [c["name"] for c in found["categories"]][-1] == "gold"
    error = await call(http, "POST", "/api/clients/categories", gold, role="admin", expect=409)
    assert error["error"] == "conflict" and error["field"] == "name"
    client = await call(http, "POST", "/api/clients", {"name": "A", "category": "gold"}, expect=201)
    assert client["category"]["label"] == "Gold"


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/clients", {}, "name"),
        ("POST", "/api/clients", {"name": 7}, "name"),
        ("POST", "/api/clients", {"name": "A", "category": "gold"}, "category"),
        ("POST", "/api/clients", {"name": "A", "nickname": "x"}, "nickname"),
        ("POST", "/api/clients", {"name": "A", "phones": ["anonymous"]}, "phones[0]"),
        ("PATCH", "/api/clients/{id}", {"notes": ["x"]}, "notes"),
        ("PATCH", "/api/clients/{id}", {"city": "x" * 101}, "city"),
        ("PATCH", "/api/clients/{id}", {"photo": "../../etc/passwd"}, "photo"),
        ("POST", "/api/clients/{id}/phones", {}, "number"),
        ("POST", "/api/clients/{id}/phones", {"number": "anonymous"}, "number"),
        ("POST", "/api/clients/{id}/phones", {"number": "101"}, "number"),
        ("POST", "/api/clients/{id}/phones", {"number": 555123456}, "number"),
        ("POST", "/api/clients/{id}/phones", {"number": "0555123457", "kind": "x"}, "kind"),
        ("POST", "/api/clients/{id}/phones", {"number": "0555123457", "label": 1}, "label"),
        ("POST", "/api/clients/{id}/orders", {"stage": "new"}, "number"),
        ("POST", "/api/clients/{id}/orders", {"number": "1", "debt": "5"}, "debt"),
        ("POST", "/api/clients/{id}/orders", {"number": "1", "open": 1}, "open"),
        ("POST", "/api/clients/{id}/merge", {}, "gone_id"),
        ("POST", "/api/clients/{id}/merge", {"gone_id": "2"}, "gone_id"),
        ("POST", "/api/clients/{id}/merge", {"gone_id": "{id}"}, "gone_id"),
        ("POST", "/api/clients/categories", {"name": "x", "label": "X"}, "color"),
        (
            "POST",
            "/api/clients/categories",
            {"name": "X Y", "label": "X", "color": "#000000"},
            "name",
        ),
        ("GET", "/api/clients?limit=abc", None, "limit"),
        ("GET", "/api/clients?limit=0", None, "limit"),
        ("GET", "/api/clients?q=" + "x" * 201, None, "q"),
        ("GET", "/api/clients/lookup", None, "number"),
        ("GET", "/api/clients/{id}/calls?limit=-1", None, "limit"),
        ("GET", "/api/clients/{id}/orders?open=maybe", None, "open"),
    ],
)
async def test_validation_errors_are_400_naming_the_field(
    http: aiohttp.ClientSession, method: str, path: str, body: Any, field: str
) -> None:
    client = await call(
        http, "POST", "/api/clients", {"name": "A", "phones": ["0555123456"]}, expect=201
    )
    path = path.replace("{id}", str(client["id"]))
    if isinstance(body, dict) and body.get("gone_id") == "{id}":
        body = {"gone_id": client["id"]}
    error = await invalid(http, method, path, body, field)
    assert error["error"] == "bad_request"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/clients/999", None),
        ("GET", "/api/clients/99999999999999999999999999", None),
        ("PATCH", "/api/clients/999", {"name": "x"}),
        ("DELETE", "/api/clients/999", None),
        ("POST", "/api/clients/999/phones", {"number": "0555123456"}),
        ("DELETE", "/api/clients/{id}/phones/999", None),
        ("POST", "/api/clients/{id}/merge", {"gone_id": 999}),
        ("POST", "/api/clients/999/merge", {"gone_id": "{id}"}),
        ("GET", "/api/clients/999/orders", None),
        ("PATCH", "/api/clients/{id}/orders/999", {"stage": "x"}),
        ("GET", "/api/clients/999/photo", None),
        ("PUT", "/api/clients/999/photo", None),
        ("GET", "/api/clients/999/calls", None),
        ("GET", "/api/clients/abc", None),
    ],
)
async def test_unknown_ids_are_404(
    http: aiohttp.ClientSession, method: str, path: str, body: Any
) -> None:
    client = await call(http, "POST", "/api/clients", {"name": "A"}, expect=201)
    path = path.replace("{id}", str(client["id"]))
    if isinstance(body, dict) and body.get("gone_id") == "{id}":
        body = {"gone_id": client["id"]}
    kwargs = {"data": PNG, "headers": {**auth("admin"), "Content-Type": "image/png"}}
    if method == "PUT":
        async with http.put(path, **kwargs) as resp:  # type: ignore[arg-type]
            assert resp.status == 404 and (await resp.json())["error"] == "not_found"
        return
    error = await call(http, method, path, body, role="admin", expect=404)
    assert error["error"] == "not_found"


async def test_bad_json_is_400(http: aiohttp.ClientSession) -> None:
    headers = {**auth("operator"), "Content-Type": "application/json"}
    for data in (b"{", b"[1]", b""):
        async with http.post("/api/clients", data=data, headers=headers) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "bad_json"


# -- photos ---------------------------------------------------------------------------------------


async def test_photo_upload_and_download(http: aiohttp.ClientSession) -> None:
    client = await call(http, "POST", "/api/clients", {"name": "A"}, expect=201)
    url = f"/api/clients/{client['id']}/photo"
    async with http.get(url, headers=auth("operator")) as resp:
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        assert b"<svg" in await resp.read()
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]

    for data, ctype in ((PNG, "image/png"), (JPEG, "image/jpeg")):
        headers = {**auth("operator"), "Content-Type": ctype}
        async with http.put(url, data=data, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["has_photo"] is True
        async with http.get(url, headers=auth("operator")) as resp:
            assert resp.status == 200 and resp.content_type == ctype
            assert await resp.read() == data

    async with http.delete(url, headers=auth("operator")) as resp:
        assert (await resp.json())["has_photo"] is False
    async with http.get(url, headers=auth("operator")) as resp:
        assert resp.content_type == "image/svg+xml"


@pytest.mark.parametrize(
    ("data", "ctype", "status"),
    [
        (GIF, "image/gif", 415),
        (GIF, "application/octet-stream", 415),
        (b"just some text", "text/plain", 415),
        (b"just some text", "application/octet-stream", 415),
        (JPEG, "image/png", 415),
        (b"", "image/png", 400),
        (PNG + b"\x00" * (3 << 20), "image/png", 413),  # 3 MiB, over the 2 MiB limit
    ],
    ids=["gif", "gif-as-binary", "text", "text-as-binary", "jpeg-as-png", "empty", "3MiB"],
)
async def test_bad_photos_are_refused_naming_the_field(
    http: aiohttp.ClientSession, data: bytes, ctype: str, status: int
) -> None:
    client = await call(http, "POST", "/api/clients", {"name": "A"}, expect=201)
    headers = {**auth("operator"), "Content-Type": ctype}
    async with http.put(f"/api/clients/{client['id']}/photo", data=data, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        error = await resp.json()
    assert error["field"] == "photo" and "photo" in error["message"]
    card = await call(http, "GET", f"/api/clients/{client['id']}")
    assert card["has_photo"] is False


async def test_a_chunked_photo_over_the_limit_is_413(http: aiohttp.ClientSession) -> None:
    """No Content-Length to refuse up front: the limit holds while reading."""
    client = await call(http, "POST", "/api/clients", {"name": "A"}, expect=201)

    async def body() -> AsyncIterator[bytes]:
        yield PNG
        for _ in range(48):
            yield b"\x00" * 65536

    headers = {**auth("operator"), "Content-Type": "image/png"}
    async with http.put(f"/api/clients/{client['id']}/photo", data=body(), headers=headers) as resp:
        assert resp.status == 413
        assert (await resp.json())["field"] == "photo"
