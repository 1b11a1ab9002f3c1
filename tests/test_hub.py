"""The popup hub over real WebSockets on 127.0.0.1: who gets which popup, reloads, late cards,
client edits, the page's /api/hub, and the daemon end to end with the simulator.

Every frame a test page receives is validated against the protocol's JSON Schemas
(pbxlink/hub/schemas), so a message that drifts from docs/popup-protocol.md fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from desk_hub import Popups
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pbxlink.calls import (
    Answered,
    CallEnded,
    CallRecord,
    CallStarted,
    CallUpdate,
    RingEnded,
    Ringing,
    Transferred,
)
from pbxlink.clients.directory import Directory
from pbxlink.clients.model import Client, Order
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.clients.sources import CardFields
from pbxlink.config import Config, parse
from pbxlink.desk import CardCompleted, Tick
from pbxlink.desk.card import CallCard, build_card, operator_names
from pbxlink.hub import schemagen
from pbxlink.hub.settings import HubConfig
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, make_app
from pbxlink.web.hub import add_routes

from conftest import FakeStatus, served

T0 = 1_714_555_800.0
ORIGIN = "http://127.0.0.1:8080"
TOKENS = {
    "101": "tok-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "102": "tok-102-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "sup": "tok-sup-cccccccccccccccccccccccccccccccccccc",
    "admin": "tok-adm-dddddddddddddddddddddddddddddddddddd",
}
OPERATORS = [
    Operator("Nino", ("101",), "operator", hash_token(TOKENS["101"])),
    Operator("Giorgi", ("102",), "operator", hash_token(TOKENS["102"])),
    Operator("Sandro", ("200",), "supervisor", hash_token(TOKENS["sup"])),
    Operator("Ana", (), "admin", hash_token(TOKENS["admin"])),
]


# -- the schemas: every frame a test page receives must match ----------------------------------


def _schemas() -> dict[str, dict[str, Any]]:
    folder = resources.files("pbxlink.hub") / "schemas"
    return {
        p.name.removesuffix(".json"): json.loads(p.read_text(encoding="utf-8"))
        for p in folder.iterdir()
        if p.name.endswith(".json")
    }


SCHEMAS = _schemas()
REGISTRY = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values()
)


def test_the_schemas_are_generated_from_the_messages_structs() -> None:
    """pbxlink/hub/schemas/ is what `python -m pbxlink.hub.schemagen` makes of the Structs the
    desk builds and the hub decodes: a message changed without its schema fails here."""
    folder = resources.files("pbxlink.hub") / "schemas"
    generated = schemagen.schemas()
    again = "run python -m pbxlink.hub.schemagen"
    assert set(SCHEMAS) == set(generated), again
    for name, schema in generated.items():
        committed = (folder / f"{name}.json").read_text(encoding="utf-8")
        assert committed == schemagen.text(schema), f"{name}.json: {again}"


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        SCHEMAS[name], registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


VALIDATORS = {name: validator(name) for name in SCHEMAS}


def check_message(message: dict[str, Any]) -> None:
    """Valid as "any server message" and against its own type's schema."""
    for name in ("server", message.get("type")):
        errors = [e.message for e in VALIDATORS[str(name)].iter_errors(message)]
        assert not errors, f"{message.get('type')} breaks schema {name}: {errors}"


# -- a test page -------------------------------------------------------------------------------


class Page:
    """One connected client; every frame it reads is schema-checked."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, str), "the hub sends text frames"
        message = json.loads(raw)
        check_message(message)
        return message

    async def until_barrier(self, timeout: float = 3.0) -> list[dict[str, Any]]:
        """Everything received before the next barrier call (see `barrier`)."""
        out = []
        while True:
            message = await self.recv(timeout)
            if message["call_id"].startswith("barrier"):
                return out
            out.append(message)


async def hello(ws: ClientConnection, who: str) -> None:
    message = {"type": "hello", "v": 1, "token": TOKENS[who]}
    VALIDATORS["hello"].validate(message)  # the page's side of the schemas, too
    await ws.send(json.dumps(message))


@contextlib.asynccontextmanager
async def page(hub: Popups, who: str, **kw: Any) -> AsyncIterator[Page]:
    async with connect(f"ws://127.0.0.1:{hub.port}/", origin=ORIGIN, **kw) as ws:  # type: ignore[arg-type]
        await hello(ws, who)
        p = Page(ws)
        p.welcome = await p.recv()
        assert p.welcome["type"] == "welcome"
        yield p


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the connection closes; the code the server sent."""

    async def read() -> int | None:
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    return await asyncio.wait_for(read(), timeout)


_barriers = iter(range(1_000_000))


def barrier(hub: Popups, *extensions: str) -> None:
    """A fresh call ringing each extension: the last thing each page receives in a test."""
    for ext in extensions:
        hub.on_update(Ringing(T0, record(f"barrier-{next(_barriers)}"), ext))


def hub_config(**hub: Any) -> Config:
    return Config(company="ACME", operators=list(OPERATORS), hub=HubConfig(**{"port": 0, **hub}))


@contextlib.asynccontextmanager
async def running(hub: Popups) -> AsyncIterator[Popups]:
    """The hub started, and closed after the block whatever happens in it."""
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()


@pytest.fixture
async def hub() -> AsyncIterator[Popups]:
    h = Popups(hub_config(), origins=[ORIGIN], hello_timeout_s=0.5)
    async with running(h):
        yield h


# -- calls and cards ---------------------------------------------------------------------------


def record(call_id: str, **kw: Any) -> CallRecord:
    fields: dict[str, Any] = dict(
        call_id=call_id,
        started_at=T0,
        direction="inbound",
        caller_number="+995322123456",
        caller_name="GIORGI",
        called_number="+995322000000",
        status="no_answer",
    )
    return CallRecord(**{**fields, **kw})


def client(client_id: int, name: str, **kw: Any) -> Client:
    fields: dict[str, Any] = dict(
        id=client_id,
        name=name,
        company="",
        category="regular",
        category_label="Regular",
        category_color="#607d8b",
        notes="",
        city="",
        country="",
        photo=None,
        responsible="",
        created_at=T0,
        updated_at=T0,
    )
    return Client(**{**fields, **kw})


def feed(hub: Popups, *updates: CallUpdate) -> None:
    for update in updates:
        hub.on_update(update)


def types(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["type"], m.get("extension") or "") for m in messages]


# -- routing -----------------------------------------------------------------------------------


async def test_a_ring_group_call_reaches_its_phones_and_the_wallboards(hub: Popups) -> None:
    async with (
        page(hub, "101") as p101,
        page(hub, "102") as p102,
        page(hub, "sup") as sup,
        page(hub, "admin") as admin,
    ):
        assert p101.welcome["operator"] == {
            "name": "Nino",
            "extensions": ["101"],
            "role": "operator",
        }
        assert p101.welcome["calls"] == [] and p101.welcome["company"] == "ACME"
        c = record("c1")
        answered = record("c1", status="answered", answered_at=T0 + 5, answered_by="102")
        feed(
            hub,
            CallStarted(T0, c),
            Ringing(T0 + 1, c, "101"),
            Ringing(T0 + 1, c, "102"),
            RingEnded(T0 + 5, answered, "101", "answered_elsewhere"),
            RingEnded(T0 + 5, answered, "102", "answered"),
            Answered(T0 + 5, answered, "102"),
            CallEnded(T0 + 65, record("c1", status="answered", answered_by="102", talk_s=60.0)),
        )
        barrier(hub, "101", "102")
        got101, got102 = await p101.until_barrier(), await p102.until_barrier()
        assert types(got101) == [("ringing", "101"), ("answered", "102"), ("ended", "")]
        assert types(got102) == [("ringing", "102"), ("answered", "102"), ("ended", "")]
        for board in (sup, admin):
            assert types(await board.until_barrier()) == [
                ("ringing", "101"),
                ("ringing", "102"),
                ("answered", "102"),
                ("ended", ""),
            ]
        ring = got101[0]
        assert ring["call_id"] == "c1" and ring["at"] == "2024-05-01T09:30:01.000Z"
        assert ring["card"]["extension"] == "101" and ring["card"]["operator_name"] == "Nino"
        assert got101[1]["card"]["answered_by_name"] == "Giorgi"  # 101 closes its popup
        assert got101[2] == {
            "type": "ended",
            "v": 1,
            "call_id": "c1",
            "status": "answered",
            "at": "2024-05-01T09:31:05.000Z",
            "wait_s": 0.0,
            "talk_s": 60.0,
        }


async def test_an_operator_never_gets_a_call_that_did_not_reach_them(hub: Popups) -> None:
    async with page(hub, "101") as p101, page(hub, "102") as p102, page(hub, "sup") as sup:
        c = record("only-102")
        up = record("only-102", status="answered", answered_by="102", answered_at=T0 + 3)
        feed(hub, CallStarted(T0, c), Ringing(T0 + 1, c, "102"), Answered(T0 + 3, up, "102"))
        hub.tell(Tick(T0 + 1900))  # talked too long (1,800 s)
        feed(hub, Transferred(T0 + 1905, up, "200", "blind"), CallEnded(T0 + 1909, up))
        hub.on_card("only-102", CallCard([client(7, "Secret Client")]))
        barrier(hub, "101", "102")
        assert await p101.until_barrier() == []  # before its own barrier: nothing at all
        assert types(await p102.until_barrier()) == [
            ("ringing", "102"),
            ("answered", "102"),
            ("transferred", "200"),
            ("ended", ""),
        ]
        got = types(await sup.until_barrier())
        assert ("too_long", "") in got and ("transferred", "200") in got


async def test_missed_goes_only_to_the_extension_that_missed(hub: Popups) -> None:
    async with page(hub, "101") as p101, page(hub, "102") as p102, page(hub, "sup") as sup:
        # a ring chain nobody answers: 101 no answer, then 102 busy; the caller gives up
        c = record("chain")
        feed(
            hub,
            Ringing(T0 + 1, c, "101"),
            RingEnded(T0 + 21, c, "101", "no_answer"),
            Ringing(T0 + 21, c, "102"),
            RingEnded(T0 + 22, c, "102", "busy"),
            CallEnded(T0 + 30, record("chain", status="abandoned", wait_s=30.0)),
        )
        # a ring group 102 answered: 101 rang while a colleague answered, it missed nothing
        g = record("group")
        up = record("group", status="answered", answered_by="102")
        feed(
            hub,
            Ringing(T0 + 40, g, "101"),
            Ringing(T0 + 40, g, "102"),
            RingEnded(T0 + 42, up, "101", "answered_elsewhere"),
            Answered(T0 + 42, up, "102"),
            CallEnded(T0 + 50, up),
        )
        # 101 did not answer, the chain moved on and 102 did: the caller was served
        s = record("served")
        up = record("served", status="answered", answered_by="102")
        feed(
            hub,
            Ringing(T0 + 60, s, "101"),
            RingEnded(T0 + 80, s, "101", "no_answer"),
            Ringing(T0 + 80, s, "102"),
            Answered(T0 + 82, up, "102"),
            CallEnded(T0 + 90, up),
        )
        barrier(hub, "101", "102")
        got101, got102 = await p101.until_barrier(), await p102.until_barrier()
        missed101 = [m for m in got101 if m["type"] == "missed"]
        missed102 = [m for m in got102 if m["type"] == "missed"]
        assert [(m["call_id"], m["extension"]) for m in missed101] == [("chain", "101")]
        assert [(m["call_id"], m["extension"]) for m in missed102] == [("chain", "102")]
        assert missed101[0]["card"]["number"] == "+995322123456"
        assert missed101[0]["card"]["status"] == "abandoned"
        assert not [m for m in await sup.until_barrier() if m["type"] == "missed"]


async def test_too_long_goes_to_supervisors_and_admins_only(hub: Popups) -> None:
    async with (
        page(hub, "101") as p101,
        page(hub, "sup") as sup,
        page(hub, "admin") as admin,
    ):
        up = record("long", status="answered", answered_at=T0 + 2, answered_by="101")
        feed(hub, Ringing(T0, record("long"), "101"), Answered(T0 + 2, up, "101"))
        hub.tell(Tick(T0 + 1802.5))  # 1,800.5 s of talk: past the 1,800 s threshold
        barrier(hub, "101")
        assert types(await p101.until_barrier()) == [("ringing", "101"), ("answered", "101")]
        for board in (sup, admin):
            got = await board.until_barrier()
            long = [m for m in got if m["type"] == "too_long"]
            assert len(long) == 1
            assert long[0]["threshold_s"] == 1800.0 and long[0]["talk_s"] == 1800.5
            assert long[0]["card"]["operator_name"] == "Nino"


async def test_the_operator_who_dials_out_gets_the_called_clients_card(hub: Popups) -> None:
    async with page(hub, "101") as p101, page(hub, "102") as p102:
        out = record(
            "out", direction="outbound", caller_number="101", called_number="+995555123456"
        )
        hub.on_update(CallStarted(T0, out))
        hub.on_card("out", CallCard([client(3, "Supplier")]))
        up = record(
            "out",
            direction="outbound",
            caller_number="101",
            called_number="+995555123456",
            status="answered",
        )
        hub.on_update(Answered(T0 + 9, up, None))
        barrier(hub, "101", "102")
        (got,) = await p101.until_barrier()
        assert got["type"] == "answered" and got["extension"] is None
        card = got["card"]
        assert card["number"] == "+995555123456" and card["did"] is None
        assert card["client"]["name"] == "Supplier" and card["extension"] == "101"
        assert await p102.until_barrier() == []


# -- reloads and late cards --------------------------------------------------------------------


async def test_a_reload_mid_ring_shows_the_card_again(hub: Popups) -> None:
    c = record("ring")
    hub.on_update(CallStarted(T0, c))
    hub.on_card("ring", CallCard([client(5, "Giorgi Beridze", notes="VIP: be quick")]))
    feed(hub, Ringing(T0 + 1, c, "101"), Ringing(T0 + 1, c, "102"))
    async with page(hub, "101") as again, page(hub, "sup") as sup, page(hub, "admin") as admin:
        (call,) = again.welcome["calls"]
        assert call["type"] == "ringing" and call["extension"] == "101"
        assert call["card"]["client"]["notes"] == "VIP: be quick"
        assert call["at"] == "2024-05-01T09:30:01.000Z"
        assert [m["call_id"] for m in sup.welcome["calls"]] == ["ring"]
        assert len(admin.welcome["calls"]) == 1
    up = record("ring", status="answered", answered_by="102")
    feed(
        hub,
        RingEnded(T0 + 3, up, "101", "answered_elsewhere"),
        Answered(T0 + 3, up, "102"),
    )
    async with page(hub, "101") as p101, page(hub, "102") as p102:
        assert p101.welcome["calls"] == []  # 102 holds the call now
        (call,) = p102.welcome["calls"]
        assert call["type"] == "answered" and call["extension"] == "102"
        assert call["card"]["client"]["name"] == "Giorgi Beridze"
    feed(hub, Transferred(T0 + 9, up, "101", "blind"))
    async with page(hub, "101") as p101:
        assert [(m["type"], m["extension"]) for m in p101.welcome["calls"]] == [("answered", "101")]
    hub.on_update(CallEnded(T0 + 30, up))
    async with page(hub, "101") as p101, page(hub, "sup") as sup:
        assert p101.welcome["calls"] == [] and sup.welcome["calls"] == []


async def test_a_card_found_after_the_ring_follows_as_client_updated(hub: Popups) -> None:
    async with page(hub, "101") as p101, page(hub, "102") as p102, page(hub, "sup") as sup:
        c = record("late")
        feed(hub, CallStarted(T0, c), Ringing(T0 + 1, c, "101"))
        card = CallCard([client(9, "Late Client")], new_client=False)
        hub.on_card("late", card)
        hub.tell(CardCompleted("late", CardFields(city="Batumi", source="crm")))  # a slow CRM
        # a card found before the ring travels with the ringing message
        early = record("early")
        hub.on_update(CallStarted(T0, early))
        hub.on_card("early", CallCard([client(4, "Early")], new_client=True))
        hub.on_update(Ringing(T0 + 2, early, "101"))
        barrier(hub, "101", "102")
        got = await p101.until_barrier()
        assert types(got) == [
            ("ringing", "101"),
            ("client_updated", ""),
            ("client_updated", ""),
            ("ringing", "101"),
        ]
        first, found, completed, ring = got
        assert first["card"]["pending"] is True and first["card"]["client"] is None
        assert found["card"]["pending"] is False
        assert found["card"]["client"]["name"] == "Late Client"
        assert found["card"]["extension"] == "101"  # still ringing there
        assert completed["card"]["client"]["city"] == "Batumi"
        assert ring["card"]["client"]["name"] == "Early" and ring["card"]["new_client"] is True
        assert await p102.until_barrier() == []
        assert [m["type"] for m in await sup.until_barrier()].count("client_updated") == 2


async def test_editing_the_client_during_the_call_updates_the_card(
    hub: Popups, tmp_path: Path
) -> None:
    async with Directory(
        tmp_path / "db.sqlite3", PhoneNumbers("GE"), photos_dir=tmp_path / "photos"
    ) as directory:
        hub.directory = directory
        directory.listeners.append(hub.on_clients_changed)
        known = await directory.create({"name": "Old Name", "phones": ["+995322123456"]})
        other = await directory.create({"name": "Somebody Else"})
        async with page(hub, "101") as p101:
            c = record("edit")
            hub.on_update(CallStarted(T0, c))
            card = CallCard(await directory.lookup(c.caller_number))
            hub.on_card("edit", card)
            hub.on_update(Ringing(T0 + 1, c, "101"))
            assert (await p101.recv())["card"]["client"]["name"] == "Old Name"
            await directory.update(known.id, {"name": "New Name", "notes": "Owes 100"})
            await directory.update(other.id, {"name": "Unrelated"})  # same refresh, no change
            got = await p101.recv(timeout=3)
            assert got["type"] == "client_updated"
            assert got["card"]["client"]["name"] == "New Name"
            assert got["card"]["client"]["notes"] == "Owes 100"
            assert card.clients[0].name == "New Name"  # the daemon's card: the log links it
            # the caller's number added to a second client: the card says it is shared
            await directory.add_phone(other.id, "+995 32 212 34 56")
            got = await p101.recv(timeout=3)
            assert got["card"]["other_clients"] == [{"id": other.id, "name": "Unrelated"}]
            barrier(hub, "101")
            assert await p101.until_barrier() == []  # one update per change, no echoes


# -- the card ----------------------------------------------------------------------------------


def photo_url(client_id: int) -> str:
    return f"/photos/{client_id}"


def test_the_card_takes_the_directory_first_and_fills_gaps_from_the_crm() -> None:
    names = operator_names(OPERATORS)
    c = record("c", ivr_digits="2", queue="support", answered_by="102", status="answered")
    known = client(
        17,
        "Giorgi",
        city="",
        category="vip",
        category_label="VIP",
        category_color="#d4a017",
        open_orders=(Order(1, 17, "A-1", "shipped", "Nino", 120.5, True, T0, T0),),
    )
    crm = CardFields(name="CRM Name", city="Tbilisi", photo_url="javascript:alert(1)")

    def card_of(found: CallCard | None, extension: str | None) -> dict[str, Any]:
        """The card as a page reads it, checked against card.json."""
        built = build_card(
            c, found, company="ACME", names=names, extension=extension, photo_url=photo_url
        )
        card: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(built))
        VALIDATORS["card"].validate(card)
        return card

    card = card_of(CallCard([known, client(31, "Office")], crm), "101")
    assert card["client"] == {
        "id": 17,
        "name": "Giorgi",  # the directory wins
        "company": "",
        "category": "vip",
        "category_label": "VIP",
        "category_color": "#d4a017",
        "notes": "",
        "city": "Tbilisi",  # the CRM fills the gap
        "country": "",
        "photo_url": "/photos/17",  # the URL the desk was handed; never a javascript: URL
        "orders": [{"number": "A-1", "stage": "shipped", "responsible": "Nino", "debt": 120.5}],
    }
    assert card["other_clients"] == [{"id": 31, "name": "Office"}]
    assert (card["operator_name"], card["answered_by_name"]) == ("Nino", "Giorgi")
    assert (card["ivr_digits"], card["queue"], card["did"]) == ("2", "support", "+995322000000")

    only_crm = CardFields(
        name="From CRM",
        category="gold",
        photo_url="https://crm.example.com/p/1.jpg",
        orders=[
            {"number": "X", "stage": None, "responsible": None, "debt": math.nan, "open": None},
            {"number": "closed", "stage": None, "responsible": None, "debt": 1.0, "open": False},
        ],
    )
    card = card_of(CallCard([], only_crm), None)
    assert card["client"]["id"] is None and card["client"]["name"] == "From CRM"
    assert card["client"]["photo_url"] == "https://crm.example.com/p/1.jpg"
    assert card["client"]["orders"] == [
        {"number": "X", "stage": None, "responsible": None, "debt": None}
    ]
    nobody = card_of(CallCard([]), None)
    assert nobody["client"] is None and nobody["pending"] is False
    pending = card_of(None, "101")
    assert pending["client"] is None and pending["pending"] is True


# -- the page finds the hub --------------------------------------------------------------------


@pytest.mark.parametrize("public_url", ["", "wss://pbx.example.com/popups"])
async def test_api_hub_tells_the_page_where_to_connect(public_url: str) -> None:
    config = hub_config(public_url=public_url)
    hub = Popups(config, origins=[ORIGIN])
    app = make_app(config, FakeStatus(), Metrics())
    add_routes(app, hub)
    async with (
        running(hub),
        served(app) as web,
        aiohttp.ClientSession() as http,
    ):
        url = f"http://127.0.0.1:{web.port}/api/hub"
        async with http.get(url) as resp:
            assert resp.status == 401
        headers = {"Authorization": f"Bearer {TOKENS['101']}"}
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body == {
            "url": public_url or f"ws://127.0.0.1:{hub.port}/",
            "protocol_version": 1,
        }
        if not public_url:  # the URL it gives works
            async with page(hub, "101") as p:
                assert p.welcome["operator"]["name"] == "Nino"


# -- end to end: the daemon, the simulator, a configured operator ------------------------------


async def test_the_daemon_pushes_a_ringing_card_for_a_simulated_call(tmp_path: Path) -> None:
    from pbxlink.daemon import Daemon

    from test_daemon import raw_config, simulator, until

    async with simulator() as sim:
        raw = raw_config(tmp_path, sim.port)
        raw["hub"] = {"port": 0}
        raw["operators"] = [
            {"name": "Nino", "extensions": ["101"], "role": "operator",
             "token_hash": hash_token(TOKENS["101"])},
        ]  # fmt: skip
        daemon = Daemon(parse(raw))
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.ami_state == "up" or task.done(), what="the AMI link up")
            assert not task.done(), "the daemon stopped at start-up"
            origin = f"http://127.0.0.1:{daemon.web_port}"  # the page's own origin
            url = f"ws://127.0.0.1:{daemon.hub.port}/"
            async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                await hello(ws, "101")
                p = Page(ws)
                assert (await p.recv())["type"] == "welcome"
                played = sim.play_once(["06_ivr_sales_101_noanswer_102_answers"])
                ring = await p.recv(timeout=15)
                assert ring["type"] == "ringing" and ring["extension"] == "101"
                card = ring["card"]
                assert card["direction"] == "inbound" and card["number"]
                assert card["operator_name"] == "Nino"
                seen = [ring]
                while seen[-1]["type"] != "ended":  # the call goes on: 102 answers, it ends
                    seen.append(await p.recv(timeout=15))
                assert "answered" in [m["type"] for m in seen]
                cards = [m["card"] for m in seen if "card" in m]
                assert any(c["client"] is not None for c in cards)  # a potential client
                assert "missed" not in [m["type"] for m in seen]  # 102 answered it
                await asyncio.wait_for(sim.wait_played(played), 15)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
