"""The client directory on real SQLite files: matching, unknown callers, merging, orders,
search in any script, photos, and the lookup cache."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pbxlink.calllog import CallLogStore, query, relink_calls
from pbxlink.clients import photos
from pbxlink.clients.directory import Directory
from pbxlink.clients.model import (
    Client,
    Conflict,
    NotFound,
    PhotoTooLarge,
    UnsupportedPhoto,
    ValidationError,
    fold,
)
from pbxlink.clients.numbers import PhoneNumbers
from pbxlink.db import MIGRATIONS

from conftest import T0, insert_call, make_record

GE = PhoneNumbers("GE")
FORMS = ["+995 32 212 34 56", "0322123456", "00995322123456", "322123456"]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64
GIF = b"GIF89a" + b"\x00" * 64


def open_directory(tmp_path: Path, **kwargs: object) -> Directory:
    return Directory(
        tmp_path / "pbxlink.sqlite3",
        GE,
        photos_dir=tmp_path / "photos",
        relink_calls=relink_calls,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[Directory]:
    async with open_directory(tmp_path) as d:
        yield d


def call_owners(path: Path) -> dict[str, int | None]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT call_id, client_id FROM calls").fetchall())


def client_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM clients").fetchone()[0])


# -- matching -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stored", FORMS)
async def test_every_form_of_a_number_finds_the_one_client(
    directory: Directory, stored: str
) -> None:
    client = await directory.create({"name": "Tamar", "phones": [stored]})
    await directory.create({"name": "Someone else", "phones": ["+995 32 299 99 99"]})
    for form in [*FORMS, "+995 (32) 212-34-56", "995322123456"]:
        found = await directory.lookup(form)
        assert [c.id for c in found] == [client.id], form
        assert found[0].phones[0].e164 == "+995322123456"


async def test_the_last_digits_catch_what_normalisation_cannot(directory: Directory) -> None:
    client = await directory.create({"name": "Dutch", "phones": ["0612345678"]})  # invalid in GE
    assert client.phones[0].e164 is None
    for form in ("0612345678", "+31 6 12345678", "612345678"):
        assert [c.id for c in await directory.lookup(form)] == [client.id], form
    assert await directory.lookup("+995 32 212 34 56") == []


async def test_a_shared_number_returns_every_client_never_one(directory: Directory) -> None:
    a = await directory.create({"name": "Nino", "phones": ["+995 555 12 34 56"]})
    b = await directory.create({"name": "Giorgi", "phones": [{"number": "555123456"}]})
    for _ in range(2):  # cold, then from the cache
        found = await directory.lookup("0555123456")
        assert [c.id for c in found] == [a.id, b.id]


@pytest.mark.parametrize("raw", ["anonymous", "", "Unknown", "101", "12"])
async def test_what_is_no_number_finds_nothing_and_registers_nothing(
    directory: Directory, raw: str
) -> None:
    assert await directory.lookup(raw) == []
    assert await directory.register_unknown(raw) is None
    assert client_count(directory.path) == 0


# -- unknown callers ------------------------------------------------------------------------------


async def test_an_unknown_caller_becomes_one_potential_client(directory: Directory) -> None:
    first = await directory.register_unknown("+995 555 12 34 56")
    assert first is not None
    assert first.category == "potential" and first.category_label == "Potential"
    assert first.name == "" and [p.e164 for p in first.phones] == ["+995555123456"]
    again = await directory.register_unknown("0555123456")  # the next call, another form
    assert again is not None and again.id == first.id
    assert [c.id for c in await directory.lookup("555123456")] == [first.id]
    assert client_count(directory.path) == 1


async def test_concurrent_calls_from_one_unknown_number_make_one_client(
    directory: Directory,
) -> None:
    made = await asyncio.gather(*(directory.register_unknown("0555123456") for _ in range(8)))
    assert len({c.id for c in made if c is not None}) == 1
    assert client_count(directory.path) == 1


async def test_registering_unknown_callers_can_be_switched_off(tmp_path: Path) -> None:
    async with open_directory(tmp_path, register_unknown=False) as directory:
        assert await directory.register_unknown("0555123456") is None
        known = await directory.create({"name": "Known", "phones": ["0555123456"]})
        found = await directory.register_unknown("+995555123456")
        assert found is not None and found.id == known.id
        assert client_count(directory.path) == 1


async def test_the_operator_fills_in_the_potential_card(directory: Directory) -> None:
    potential = await directory.register_unknown("0555123456")
    assert potential is not None
    await directory.update(potential.id, {"name": "Levan", "category": "regular"})
    (card,) = await directory.lookup("+995555123456")
    assert card.name == "Levan" and card.category == "regular"


async def test_a_new_number_of_a_known_client_merges_the_potential_with_its_calls(
    directory: Directory,
) -> None:
    known = await directory.create(
        {"name": "Ketevan", "company": "Tbilisi Bakery", "phones": ["+995 32 212 34 56"]}
    )
    insert_call(directory.path, make_record(call_id="old.1"), known.id)
    potential = await directory.register_unknown("0555123456")  # she calls from her mobile
    assert potential is not None
    insert_call(directory.path, make_record(call_id="new.1", started_at=T0 + 100), potential.id)

    added = await directory.add_phone(known.id, "+995 555 12 34 56", "mobile")

    assert added.merged == (potential.id,)
    assert added.phone.label == "mobile" and added.phone.raw == "+995 555 12 34 56"
    assert [p.e164 for p in added.client.phones] == ["+995322123456", "+995555123456"]
    assert added.client.category == "regular" and added.client.name == "Ketevan"
    with pytest.raises(NotFound):
        await directory.get(potential.id)
    assert [c.id for c in await directory.lookup("0555123456")] == [known.id]
    assert call_owners(directory.path) == {"old.1": known.id, "new.1": known.id}
    assert client_count(directory.path) == 1


async def test_a_potential_client_someone_filled_in_is_not_merged_away(
    directory: Directory,
) -> None:
    known = await directory.create({"name": "Ketevan"})
    potential = await directory.register_unknown("0555123456")
    assert potential is not None
    await directory.update(potential.id, {"notes": "asked for a quote"})
    added = await directory.add_phone(known.id, "0555123456")
    assert added.merged == ()
    assert [c.id for c in await directory.lookup("0555123456")] == [known.id, potential.id]


async def test_a_number_twice_on_one_client_is_a_conflict(directory: Directory) -> None:
    client = await directory.create({"name": "A", "phones": ["0555123456"]})
    with pytest.raises(Conflict) as info:
        await directory.add_phone(client.id, "+995 555 12 34 56")
    assert info.value.field == "number"
    with pytest.raises(ValidationError) as bad:
        await directory.add_phone(client.id, "anonymous")
    assert bad.value.field == "number"


async def test_remove_phone(directory: Directory) -> None:
    client = await directory.create({"name": "A", "phones": ["0555123456", "0322123456"]})
    after = await directory.remove_phone(client.id, client.phones[0].id)
    assert [p.e164 for p in after.phones] == ["+995322123456"]
    assert await directory.lookup("0555123456") == []
    with pytest.raises(NotFound):
        await directory.remove_phone(client.id, client.phones[0].id)
    other = await directory.create({"name": "B"})
    with pytest.raises(NotFound):  # another client's phone
        await directory.remove_phone(other.id, client.phones[1].id)


# -- merge ----------------------------------------------------------------------------------------


async def test_merge_moves_phones_orders_and_calls_in_one_go(directory: Directory) -> None:
    keep = await directory.create(
        {"name": "Ana", "notes": "prefers Georgian", "phones": ["0322123456"]}
    )
    gone = await directory.create(
        {
            "name": "Ana B.",
            "company": "Ana LLC",
            "category": "vip",
            "notes": "owes for the March order",
            "city": "Batumi",
            "phones": ["0555123456", "+995 32 212 34 56"],  # one of them keep already has
        }
    )
    await directory.add_order(gone.id, {"number": "A-1", "debt": 120.5})
    insert_call(directory.path, make_record(call_id="c1"), gone.id)
    insert_call(directory.path, make_record(call_id="c2", started_at=T0 + 50), keep.id)

    merged = await directory.merge(keep.id, gone.id)

    assert merged.name == "Ana" and merged.company == "Ana LLC" and merged.city == "Batumi"
    assert merged.category == "regular"  # keep's own category wins over gone's
    assert merged.notes == "prefers Georgian\n\nowes for the March order"
    assert sorted(p.e164 or "" for p in merged.phones) == ["+995322123456", "+995555123456"]
    assert [o.number for o in merged.open_orders] == ["A-1"]
    assert call_owners(directory.path) == {"c1": keep.id, "c2": keep.id}
    with pytest.raises(NotFound):
        await directory.get(gone.id)
    assert [c.id for c in await directory.lookup("0555123456")] == [keep.id]


async def test_a_failed_merge_changes_nothing(directory: Directory) -> None:
    keep = await directory.create({"name": "Ana", "phones": ["0322123456"]})
    with pytest.raises(NotFound):
        await directory.merge(keep.id, 999)
    with pytest.raises(NotFound):
        await directory.merge(999, keep.id)
    with pytest.raises(ValidationError) as info:
        await directory.merge(keep.id, keep.id)
    assert info.value.field == "gone_id"
    assert await directory.get(keep.id) == keep


async def test_deleting_a_client_keeps_its_calls_unlinked(directory: Directory) -> None:
    client = await directory.create({"name": "Gone", "phones": ["0555123456"]})
    await directory.add_order(client.id, {"number": "1"})
    client = await directory.set_photo(client.id, PNG, "image/png")
    photo = directory.photos_dir / str(client.photo)
    insert_call(directory.path, make_record(call_id="c1"), client.id)
    await directory.delete(client.id)
    assert call_owners(directory.path) == {"c1": None}
    assert not photo.exists()
    assert await directory.lookup("0555123456") == []
    with pytest.raises(NotFound):
        await directory.delete(client.id)


# -- orders ---------------------------------------------------------------------------------------


async def test_orders_crud_and_the_card_shows_open_ones(directory: Directory) -> None:
    client = await directory.create({"name": "Shop"})
    a = await directory.add_order(client.id, {"number": "A-1", "stage": "new", "debt": 10})
    b = await directory.add_order(
        client.id, {"number": "B-2", "responsible": "Nino", "debt": 99.5, "open": True}
    )
    assert a.open and a.debt == 10.0 and a.stage == "new"
    card = await directory.get(client.id)
    assert [o.number for o in card.open_orders] == ["A-1", "B-2"]

    closed = await directory.update_order(client.id, a.id, {"open": False, "stage": "delivered"})
    assert not closed.open and closed.stage == "delivered" and closed.updated_at >= a.updated_at
    (open_one,) = (await directory.get(client.id)).open_orders
    assert open_one.id == b.id
    assert [o.id for o in await directory.orders(client.id)] == [b.id, a.id]
    assert [o.id for o in await directory.orders(client.id, open=False)] == [a.id]

    await directory.delete_order(client.id, b.id)
    assert await directory.orders(client.id, open=True) == []
    other = await directory.create({"name": "Other"})
    with pytest.raises(NotFound):  # an order is reached through its own client only
        await directory.update_order(other.id, a.id, {"stage": "x"})
    with pytest.raises(NotFound):
        await directory.delete_order(client.id, b.id)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "number"),
        ({"number": ""}, "number"),
        ({"number": "1", "debt": "12"}, "debt"),
        ({"number": "1", "debt": True}, "debt"),
        ({"number": "1", "debt": float("nan")}, "debt"),
        ({"number": "1", "open": "yes"}, "open"),
        ({"number": "1", "stage": "x" * 101}, "stage"),
        ({"number": "1", "colour": "red"}, "colour"),
    ],
)
async def test_bad_orders_are_refused_naming_the_field(
    directory: Directory, fields: dict, field: str
) -> None:
    client = await directory.create({"name": "Shop"})
    with pytest.raises(ValidationError) as info:
        await directory.add_order(client.id, fields)
    assert info.value.field == field


# -- search ---------------------------------------------------------------------------------------


async def test_names_in_any_script_are_found_in_any_case(directory: Directory) -> None:
    georgian = await directory.create({"name": "გიორგი ბერიძე", "company": "ბერიძე და ძმები"})
    russian = await directory.create({"name": "Пётр Иванов", "company": "ООО Ромашка"})
    arabic = await directory.create({"name": "محمد العلي"})
    german = await directory.create({"name": "Jürgen Strauß"})
    await directory.create({"name": "Zzz unrelated", "phones": ["0555123456"]})

    cases = {
        "ბერიძე": georgian,
        "ᲒᲘᲝᲠᲒᲘ": georgian,  # Mtavruli capitals fold to Mkhedruli
        "გიორ": georgian,
        "иванов": russian,
        "ПЁТР": russian,
        "ромашка": russian,
        "العلي": arabic,
        "ﻣﺤﻤﺪ": arabic,  # presentation forms, as some keyboards send them
        "STRAUSS": german,
        "jürgen": german,
    }
    for q, client in cases.items():
        assert [c.id for c in await directory.search(q)] == [client.id], q


async def test_search_by_any_number_form_and_by_digits(directory: Directory) -> None:
    client = await directory.create({"name": "Tamar", "phones": ["+995 32 212 34 56"]})
    await directory.create({"name": "Other", "phones": ["0555123456"]})
    for q in [*FORMS, "2123"]:
        assert [c.id for c in await directory.search(q)] == [client.id], q


async def test_search_orders_name_starts_first_and_respects_the_limit(
    directory: Directory,
) -> None:
    inside = await directory.create({"name": "Big Nino"})
    starts = await directory.create({"name": "Nino"})
    found = await directory.search("nino")
    assert [c.id for c in found] == [starts.id, inside.id]
    assert [c.id for c in await directory.search("nino", limit=1)] == [starts.id]
    latest = await directory.search("")
    assert [c.id for c in latest] == [starts.id, inside.id]
    with pytest.raises(ValidationError) as info:
        await directory.search("nino", limit=0)
    assert info.value.field == "limit"


def test_fold() -> None:
    assert fold("  ПЁТР\tИванов ") == "пётр иванов"
    assert fold("ᲑᲔᲠᲘᲫᲔ") == fold("ბერიძე")
    assert fold("STRASSE") == fold("Straße")


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "a\ud800"}, "name"),
        ({"name": "A", "category": "nope"}, "category"),
        ({"name": "A", "category": ""}, "category"),
        ({"name": "A", "notes": "x" * 10_001}, "notes"),
        ({"name": "A", "photo": "x.png"}, "photo"),
        ({"name": "A", "id": 5}, "id"),
        ({"name": "A", "phones": "0555123456"}, "phones"),
        ({"name": "A", "phones": ["anonymous"]}, "phones[0]"),
        ({"name": "A", "phones": [{"number": "0555123456", "x": 1}]}, "phones[0].x"),
        ({"name": "A", "phones": [{"label": "home"}]}, "phones[0].number"),
        ({"name": "A", "phones": ["0555123456", "555123456"]}, "phones[1]"),
    ],
)
async def test_bad_clients_are_refused_naming_the_field(
    directory: Directory, fields: dict, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await directory.create(fields)
    assert info.value.field == field
    assert client_count(directory.path) == 0


async def test_update_checks_and_keeps_what_is_not_given(directory: Directory) -> None:
    client = await directory.create({"name": "Ana", "city": "Tbilisi"})
    updated = await directory.update(
        client.id, {"category": "vip", "notes": "line 1\nline 2\n", "company": " Ana LLC "}
    )
    assert updated.city == "Tbilisi" and updated.company == "Ana LLC"
    assert updated.notes == "line 1\nline 2"
    assert (updated.category, updated.category_label, updated.category_color) == (
        "vip",
        "VIP",
        "#ca8a04",
    )
    with pytest.raises(ValidationError) as info:
        await directory.update(client.id, {"category": "gold"})
    assert info.value.field == "category" and "vip" in info.value.message
    with pytest.raises(NotFound):
        await directory.update(10**30, {"name": "x"})
    assert await directory.update(client.id, {}) == updated


async def test_categories(directory: Directory) -> None:
    names = [c.name for c in await directory.categories()]
    assert names == ["potential", "problem", "regular", "vip"]
    gold = await directory.add_category("gold", "Gold", "#FFD700")
    assert gold.color == "#ffd700" and not gold.builtin
    client = await directory.create({"name": "A", "category": "gold"})
    assert client.category_label == "Gold"
    with pytest.raises(Conflict):
        await directory.add_category("gold", "Gold", "#ffd700")
    for args, field in (
        (("Bad Name", "x", "#000000"), "name"),
        (("ok", "", "#000000"), "label"),
        (("ok", "x", "red"), "color"),
    ):
        with pytest.raises(ValidationError) as info:
            await directory.add_category(*args)
        assert info.value.field == field


# -- photos ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "ctype"), [(PNG, "image/png"), (JPEG, None), (WEBP, "")], ids=["png", "jpeg", "webp"]
)
async def test_photos_are_stored_and_replaced(
    directory: Directory, data: bytes, ctype: str | None
) -> None:
    client = await directory.create({"name": "A"})
    assert await directory.photo_path(client.id) == photos.PLACEHOLDER
    first = await directory.set_photo(client.id, data, ctype)
    path = await directory.photo_path(client.id)
    assert path.parent == directory.photos_dir and path.read_bytes() == data
    assert path.name.startswith(f"{client.id}-") and first.photo == path.name
    second = await directory.set_photo(client.id, PNG, "image/png")
    assert not path.exists() and (await directory.photo_path(client.id)).suffix == ".png"
    assert second.photo != first.photo
    await directory.remove_photo(client.id)
    assert await directory.photo_path(client.id) == photos.PLACEHOLDER
    assert list(directory.photos_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "ctype", "error"),
    [
        (GIF, "image/gif", UnsupportedPhoto),
        (GIF, None, UnsupportedPhoto),
        (b"hello", "text/plain", UnsupportedPhoto),
        (JPEG, "image/png", UnsupportedPhoto),  # the bytes decide, and they disagree
        (b"", "image/png", ValidationError),
        (PNG + b"\x00" * (2 << 20), "image/png", PhotoTooLarge),
    ],
    ids=["gif", "gif-undeclared", "text", "jpeg-as-png", "empty", "too-large"],
)
async def test_bad_photos_are_refused(
    directory: Directory, data: bytes, ctype: str | None, error: type[Exception]
) -> None:
    client = await directory.create({"name": "A"})
    with pytest.raises(error) as info:
        await directory.set_photo(client.id, data, ctype)
    assert info.value.field == "photo"  # type: ignore[attr-defined]
    assert not directory.photos_dir.exists() or list(directory.photos_dir.iterdir()) == []


async def test_a_lost_photo_file_shows_the_placeholder(directory: Directory) -> None:
    client = await directory.set_photo((await directory.create({"name": "A"})).id, PNG, None)
    (directory.photos_dir / str(client.photo)).unlink()
    assert await directory.photo_path(client.id) == photos.PLACEHOLDER
    with pytest.raises(NotFound):
        await directory.photo_path(404)


# -- the database ---------------------------------------------------------------------------------


async def test_directory_and_call_log_share_one_database(tmp_path: Path) -> None:
    path = tmp_path / "pbxlink.sqlite3"
    store = CallLogStore(path)
    await store.open()
    try:
        async with open_directory(tmp_path) as directory:
            client = await directory.create({"name": "A"})
            store.submit(make_record(call_id="c1", status="busy"))
            await store.flush()
            with sqlite3.connect(path) as db:
                db.execute("UPDATE calls SET client_id = ? WHERE call_id = 'c1'", (client.id,))
            found = await query.client_calls(store.reader, client.id, 50, scope=None)
            assert [c.call_id for c in found] == ["c1"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_version")]
        assert versions == list(range(1, len(MIGRATIONS) + 1))
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_the_lookup_queries_use_the_indexes(directory: Directory) -> None:
    from pbxlink.clients.directory import _MATCH_E164, _MATCH_TAIL

    with sqlite3.connect(directory.path) as db:
        plan = " ".join(
            str(row[3])
            for sql, params in (
                (_MATCH_E164, ("+995555123456", "555123456")),
                (_MATCH_TAIL, ("1",)),
            )
            for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)
        )
    assert "client_phones_e164" in plan and "client_phones_tail" in plan
    assert "SCAN client_phones" not in plan.replace("SCAN client_phones USING", "")


async def test_a_clients_calls_are_newest_first_and_limited(directory: Directory) -> None:
    """The card's history: the call log reads it (query.client_calls), by the client's id."""
    client = await directory.create({"name": "A"})
    for i in range(5):
        insert_call(directory.path, make_record(call_id=f"c{i}", started_at=T0 + i), client.id)
    insert_call(directory.path, make_record(call_id="other", started_at=T0 + 100), None)
    store = CallLogStore(directory.path)
    await store.open()
    try:
        calls = await query.client_calls(store.reader, client.id, 3, scope=None)
        assert await query.client_calls(store.reader, 999, 3, scope=None) == []
    finally:
        await store.close()
    assert [c.call_id for c in calls] == ["c4", "c3", "c2"]


# -- the cache ------------------------------------------------------------------------------------


async def test_every_write_refreshes_the_cards_a_lookup_returns(directory: Directory) -> None:
    client = await directory.create({"name": "Old", "phones": ["0555123456"]})
    assert (await directory.lookup("0555123456"))[0].name == "Old"
    await directory.update(client.id, {"name": "New"})
    assert (await directory.lookup("0555123456"))[0].name == "New"
    await directory.add_order(client.id, {"number": "7"})
    assert [o.number for o in (await directory.lookup("555123456"))[0].open_orders] == ["7"]
    assert await directory.lookup("0322123456") == []  # a miss is cached too...
    other = await directory.create({"name": "B", "phones": ["0322123456"]})
    assert [c.id for c in await directory.lookup("0322123456")] == [other.id]  # ...until a write


async def test_a_lookup_racing_a_write_does_not_cache_the_old_card(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await directory.create({"name": "Old", "phones": ["0555123456"]})
    read, release = asyncio.Event(), asyncio.Event()
    load = directory._load

    async def slow_load(db: object, ids: list[int]) -> list[Client]:
        cards = await load(db, ids)  # type: ignore[arg-type]
        read.set()
        await release.wait()  # the old card is read; a write commits before it returns
        return cards

    monkeypatch.setattr(directory, "_load", slow_load)
    racing = asyncio.ensure_future(directory.lookup("0555123456"))
    await read.wait()
    monkeypatch.setattr(directory, "_load", load)
    await directory.update(client.id, {"name": "New"})
    release.set()
    assert (await racing)[0].name == "Old"  # it answered with what it read...
    assert (await directory.lookup("0555123456"))[0].name == "New"  # ...but did not cache it


async def test_a_warm_lookup_never_touches_sqlite(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number looked up before, in any form, comes from the cache, so its time does not
    depend on the table size: benchmarks/lookup.py times it (p99 < 1 ms on 1M clients)."""
    ids = [
        (await directory.create({"name": f"Client {i}", "phones": [f"+995555{i:06d}"]})).id
        for i in range(1, 21)
    ]  # every write empties the cache: first all of them
    cold = {i: await directory.lookup(f"0555{i:06d}") for i in range(1, 21)}
    assert [[c.id for c in found] for found in cold.values()] == [[i] for i in ids]

    async def no_sqlite(*args: object) -> None:
        raise AssertionError("a warm lookup went to SQLite")

    monkeypatch.setattr(directory, "_match", no_sqlite)
    monkeypatch.setattr(directory, "_load", no_sqlite)
    for i, found in cold.items():
        for form in (f"0555{i:06d}", f"+995 555 {i:06d}", f"00995555{i:06d}", f"555{i:06d}"):
            assert await directory.lookup(form) == found, form
