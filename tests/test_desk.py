"""The desk on its own: no sockets, no database, no clock. Call updates from real traces and
lookup answers in, commands out; who is told what is read off the `Send` commands."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hub import client, record

from pbxlink.calllog.settings import Thresholds
from pbxlink.calls import (
    Answered,
    CallEnded,
    CallRecord,
    CallStarted,
    CallUpdate,
    Ringing,
    Transferred,
)
from pbxlink.desk import (
    Alert,
    ClientsChanged,
    Close,
    Command,
    Desk,
    LinkClient,
    LookedUp,
    Lookup,
    Record,
    Refresh,
    Refreshed,
    RosterChanged,
    Send,
    SessionClosed,
    SessionOpened,
    Snapshot,
    Tick,
)
from pbxlink.desk.card import CallCard
from pbxlink.desk.messages import ClientUpdated
from pbxlink.operators import Operator, hash_token
from pbxlink.replay import read_chunks, replay
from pbxlink.web.urls import client_photo

from conftest import TRACE_NAMES, TRACES, lab_tracker, need

T0 = 1_800_000_000.0


def op(name: str, *extensions: str, role: str = "operator") -> Operator:
    return Operator(name, extensions, role, hash_token(f"token-{name}"))  # type: ignore[arg-type]


NINO, GIO, SUP = op("Nino", "101"), op("Gio", "102"), op("Sup", role="supervisor")


def desk(*operators: Operator, too_long_s: float = 1800.0) -> Desk:
    return Desk(
        company="ACME",
        operators=operators or (NINO, GIO, SUP),
        too_long=Thresholds(too_long_call_s=too_long_s),
        photo_url=client_photo,
    )


def live(call_id: str, **fields: Any) -> CallRecord:
    """A call in progress, nobody has answered yet."""
    return record(call_id, **fields)


class Room:
    """A desk with people signed in (session ids 1, 2, …); what each person was sent."""

    def __init__(self, d: Desk, *people: Operator) -> None:
        self.desk = d
        self.sessions: dict[int, str] = {}
        self.got: dict[str, list[dict[str, Any]]] = {}
        self.commands: list[Command] = []
        for person in people:
            self.open(person)

    def open(self, person: Operator) -> int:
        session = len(self.sessions) + 1
        self.sessions[session] = person.name
        self.got.setdefault(person.name, [])
        self.run(SessionOpened(session, person))
        return session

    def run(self, *events: object) -> list[Command]:
        out: list[Command] = []
        for event in events:
            for command in self.desk.handle(event):
                out.append(command)
                if isinstance(command, Send):
                    sent = msgspec.json.decode(msgspec.json.encode(command.message))  # JSON
                    for session in command.sessions:
                        self.got[self.sessions[session]].append(sent)
        self.commands += out
        return out

    def types(self, name: str) -> list[tuple[str, str]]:
        return [
            (m["type"], m.get("extension") or "")
            for m in self.got[name]
            if m["type"] != "welcome"
        ]


def of(kind: type, commands: Iterable[Command]) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def test_a_call_is_told_to_the_phones_it_rings_and_the_wallboards_only() -> None:
    room = Room(desk(), NINO, GIO, SUP)
    c = live("c1")
    up = record("c1", status="answered", answered_by="102", answered_at=T0 + 3)
    room.run(CallStarted(T0, c), Ringing(T0 + 1, c, "102"), Answered(T0 + 3, up, "102"))
    room.run(Transferred(T0 + 9, up, "200", "blind"), CallEnded(T0 + 20, up))
    assert room.types("Nino") == []
    told = [("ringing", "102"), ("answered", "102"), ("transferred", "200"), ("ended", "")]
    assert room.types("Gio") == told
    assert room.types("Sup") == room.types("Gio")


def test_each_call_is_looked_up_once_and_its_log_row_gets_the_one_client() -> None:
    room = Room(desk(), NINO)
    c = live("c1", caller_number="+995599123456")
    looks = of(Lookup, room.run(CallStarted(T0, c), Ringing(T0 + 1, c, "101")))
    assert looks == [Lookup("c1", "+995599123456")]  # once, however many updates
    sent = room.run(LookedUp("c1", CallCard([client(7, "Nino's client")])))
    (update,) = of(Send, sent)
    assert isinstance(update.message, ClientUpdated)
    assert update.message.card.client is not None
    assert update.message.card.client.name == "Nino's client"
    (record,) = of(Record, room.run(CallEnded(T0 + 9, c)))
    assert record.client_id == 7


def test_internal_and_withheld_calls_are_never_looked_up() -> None:
    room = Room(desk(), NINO)
    internal = live("i", direction="internal", caller_number="102")
    withheld = live("w", caller_number="anonymous")
    sent = room.run(CallStarted(T0, internal), CallStarted(T0, withheld))
    assert of(Lookup, sent) == [] and len(of(Snapshot, sent)) == 2


def test_a_lookup_answering_after_the_call_ended_links_the_log_row() -> None:
    room = Room(desk(), NINO)
    c = live("c1")
    room.run(CallStarted(T0, c))
    (record,) = of(Record, room.run(CallEnded(T0 + 2, c)))
    assert record.client_id is None
    assert of(LinkClient, room.run(LookedUp("c1", CallCard([client(5, "A")])))) == [
        LinkClient("c1", 5)
    ]
    assert room.run(LookedUp("c1", CallCard([client(5, "A")]))) == []  # once
    shared = CallCard([client(5, "A"), client(6, "B")])  # a shared number: nobody guessed
    room.run(CallStarted(T0, live("c2")), CallEnded(T0 + 1, live("c2")))
    assert room.run(LookedUp("c2", shared)) == []


def test_a_directory_edit_refreshes_the_cards_of_calls_in_progress() -> None:
    room = Room(desk(), NINO)
    c = live("c1", caller_number="+995599000001")
    room.run(CallStarted(T0, c), Ringing(T0 + 1, c, "101"))
    room.run(LookedUp("c1", CallCard([client(1, "Old name")])))
    (refresh,) = of(Refresh, room.run(ClientsChanged()))
    assert refresh.calls == (("c1", "+995599000001"),)
    assert of(Send, room.run(Refreshed("c1", (client(1, "Old name"),)))) == []  # unchanged
    (sent,) = of(Send, room.run(Refreshed("c1", (client(1, "New name"),))))
    assert isinstance(sent.message, ClientUpdated) and sent.message.card.client is not None
    assert sent.message.card.client.name == "New name"
    (record,) = of(Record, room.run(CallEnded(T0 + 5, c)))
    assert record.client_id == 1


def test_a_reload_mid_ring_is_welcomed_with_the_call() -> None:
    room = Room(desk(), SUP)
    c = live("c1")
    room.run(CallStarted(T0, c), Ringing(T0 + 1, c, "101"))
    room.open(NINO)
    (welcome,) = room.got["Nino"]
    assert [(m["type"], m["extension"]) for m in welcome["calls"]] == [("ringing", "101")]
    late = room.open(GIO)
    assert room.got["Gio"][0]["calls"] == []  # not his call
    room.run(SessionClosed(late))
    room.run(Answered(T0 + 2, record("c1", status="answered"), "101"))
    assert room.types("Gio") == []


def test_a_reload_of_the_roster_closes_removed_tokens_and_follows_changed_ones() -> None:
    room = Room(desk(), NINO, GIO)
    nino_now_102 = Operator("Nino", ("102",), "operator", NINO.token_hash)
    closes = of(Close, room.run(RosterChanged((nino_now_102,))))
    assert closes == [Close(2, 4002, "token no longer valid")]  # Gio's session
    c = live("c1")
    room.run(CallStarted(T0, c), Ringing(T0 + 1, c, "102"))
    assert room.types("Nino") == [("ringing", "102")]


def test_too_long_is_told_to_wallboards_once_and_alerted() -> None:
    room = Room(desk(too_long_s=60.0), NINO, SUP)
    up = record("c1", status="answered", answered_by="101", answered_at=T0)
    room.run(Answered(T0, up, "101"))
    assert room.run(Tick(T0 + 59)) == []
    sent = room.run(Tick(T0 + 61))
    (alert,) = of(Alert, sent)
    assert alert.update.talk_s == 61.0
    assert [m["type"] for m in room.got["Sup"][1:]] == ["answered", "too_long"]
    assert all(m["type"] != "too_long" for m in room.got["Nino"])
    assert of(Alert, room.run(Tick(T0 + 120))) == []


# -- every real trace, lookups answering in any order ---------------------------------------


@functools.cache
def trace_updates(name: str) -> tuple[CallUpdate, ...]:
    return tuple(replay(read_chunks(TRACES / name), lab_tracker()))


def reached(updates: Iterable[CallUpdate]) -> dict[str, set[str]]:
    """call_id -> the extensions it rang, reached (answered, held) or was transferred to."""
    out: dict[str, set[str]] = {}
    for u in updates:
        exts = out.setdefault(u.call_id, set())
        if u.call.direction == "outbound":
            exts.add(u.call.caller_number)  # the operator's own call out
        exts.update(u.call.extensions_rung)
        exts.update(x for x in (u.call.answered_by, getattr(u, "extension", None)) if x)
        exts.update(u.call.transferred_to)
    return out


EXTENSIONS = ("101", "102", "103", "104", "105", "200", "2001", "2002", "2003", "2004", "2005")
EVERYONE = tuple(op(f"op{ext}", ext) for ext in EXTENSIONS)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(name=st.sampled_from(TRACE_NAMES), seed=st.integers(0, 2**32), late=st.floats(0, 1))
def test_whatever_the_order_of_lookups_nobody_sees_a_call_not_theirs(
    name: str, seed: int, late: float
) -> None:
    """Lookups answered at random later moments (some after the call ended): an operator is
    never sent a call that did not ring, reach or get transferred to one of their extensions,
    and every call shown to anyone is closed by an `ended`."""
    need((TRACES / name).is_file(), f"real Asterisk trace not found: {TRACES / name}")
    updates = trace_updates(name)
    rnd = random.Random(seed)
    room = Room(desk(*EVERYONE), *EVERYONE)
    waiting: list[str] = []
    for update in updates:
        for command in room.run(update):
            if isinstance(command, Lookup):
                waiting.append(command.call_id)
        while waiting and rnd.random() > late:
            call_id = waiting.pop(rnd.randrange(len(waiting)))
            room.run(LookedUp(call_id, CallCard([client(rnd.randrange(3), "C")])))
    for call_id in waiting:
        room.run(LookedUp(call_id, CallCard([])))
    allowed = reached(updates)
    for person in EVERYONE:
        (mine,) = person.extensions
        shown: set[str] = set()
        for message in room.got[person.name]:
            cid = message.get("call_id")
            if cid is None:
                continue  # the welcome (empty: everyone signed in first)
            assert mine in allowed.get(cid, set()), f"{person.name} got {message['type']} of {cid}"
            if message["type"] == "ended":
                shown.discard(cid)
            elif message["type"] != "missed":
                shown.add(cid)
        assert not shown, f"{person.name}: calls shown and never ended: {sorted(shown)}"
    assert room.desk.calls == 0
