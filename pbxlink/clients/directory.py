"""The client directory: who is calling, in the SQLite file it shares with the call log.

Lookups are on the way to a popup, so they are one indexed query (two for a number nobody
has) on a read-only connection, and warm ones never leave memory: a cache keyed by the
normalised number, emptied on every write this directory makes. A lookup that raced a write
does not refill the cache (the generation check), so the cache never serves a card older than
the last commit. Writes (all of them go through this class) are short BEGIN IMMEDIATE
transactions on a second connection, serialised by a lock; in WAL mode they never block reads.

The directory writes its own tables only (db/owners.py). Its calls are the call log's: a merge
moves them with the call log's `relink_calls`, which the composition root passes in, and a
client's call history is read by the call log (`calllog.query.client_calls`).

A number matches on its E.164 form; only when nothing has it does the last-N-digits key
decide (numbers normalisation could not save). Every client holding a number comes back,
ordered by id: a shared number shows all its clients, never a random one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
import structlog

from pbxlink.clients import photos
from pbxlink.clients.model import (
    DEFAULT_CATEGORY,
    PHONE_LABEL_MAX,
    POTENTIAL,
    Category,
    Client,
    Conflict,
    NotFound,
    Order,
    Phone,
    ValidationError,
    category_fields,
    client_fields,
    fold,
    order_fields,
    search_key,
    text,
)
from pbxlink.clients.numbers import MIN_DIGITS, Number, PhoneNumbers
from pbxlink.db import RelinkCalls, SchemaError, Statement, connect, migrate

if TYPE_CHECKING:
    from pbxlink.clients.settings import Config

log = structlog.get_logger("pbxlink.clients")

MAX_LIMIT = 500
MAX_ID = (1 << 63) - 1  # SQLite's INTEGER: beyond it no row can exist
_CLIENT_COLUMNS = (
    "c.id, c.name, c.company, c.category, k.label, k.color, c.notes, c.city, c.country, "
    "c.photo, c.responsible, c.created_at, c.updated_at"
)
_ORDER_COLUMNS = "id, client_id, number, stage, responsible, debt, open, created_at, updated_at"
_TEXT_COLUMNS = ("name", "company", "notes", "city", "country", "responsible")
# e164 first; rows stored without a valid e164 still match on their tail
_MATCH_E164 = (
    "SELECT client_id FROM client_phones WHERE e164 = ? "
    "UNION SELECT client_id FROM client_phones WHERE tail = ? AND e164 IS NULL ORDER BY 1"
)
_MATCH_TAIL = "SELECT DISTINCT client_id FROM client_phones WHERE tail = ? ORDER BY 1"
# a potential client nobody has touched: only a number, which a real client may absorb
_BLANK_POTENTIAL = (
    "SELECT 1 FROM clients AS c WHERE id = ? AND category = ? "
    + "".join(f"AND {col} = '' " for col in _TEXT_COLUMNS)
    + "AND photo IS NULL AND NOT EXISTS (SELECT 1 FROM orders WHERE client_id = c.id) "
    "AND (SELECT count(*) FROM client_phones WHERE client_id = c.id) <= 1"
)


@dataclass(slots=True, frozen=True)
class PhoneAdded:
    """The client after `add_phone`, the new phone, and the potential clients merged into it."""

    client: Client
    phone: Phone
    merged: tuple[int, ...]


class Directory:
    """The client directory. `await open()`, use it, `await close()` (or `async with`)."""

    def __init__(
        self,
        path: Path,
        numbers: PhoneNumbers,
        *,
        photos_dir: Path,
        register_unknown: bool = True,
        max_photo_bytes: int = photos.MAX_PHOTO_BYTES,
        cache_size: int = 100_000,
        busy_timeout_s: float = 5.0,
        relink_calls: RelinkCalls | None = None,
    ) -> None:
        """`relink_calls`: the call log's (`pbxlink.calllog.relink_calls`), so a merge moves
        the merged client's calls; a directory without it (one that only checks numbers, as
        the CSV import's workers make) cannot merge clients."""
        self.path = Path(path)
        self.numbers = numbers
        self.photos_dir = Path(photos_dir)
        self.auto_register = register_unknown
        self.max_photo_bytes = max_photo_bytes
        self.cache_size = cache_size
        self.busy_timeout_s = busy_timeout_s
        self.relink_calls = relink_calls
        self._cache: dict[str, tuple[Client, ...]] = {}
        self._generation = 0  # bumped on every write: a lookup that saw an older one won't cache
        self._lock = asyncio.Lock()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        #: called after every committed change a person made (not register_unknown): the popup
        #: hub re-reads the cards of calls in progress
        self.listeners: list[Callable[[], None]] = []

    @classmethod
    def from_config(cls, config: Config, *, relink_calls: RelinkCalls | None = None) -> Directory:
        """The directory as the config sets it up: its database, number rules and photos;
        `relink_calls` as in the constructor (the composition root has the call log's)."""
        return cls(
            config.storage.database_path,
            PhoneNumbers.from_config(config.clients),
            photos_dir=config.storage.state_dir / "photos",
            register_unknown=config.clients.register_unknown,
            relink_calls=relink_calls,
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and migrate (db/: the same migrations as the call log, whichever opens
        first)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await migrate(self._writer, self.path)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only=ON")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise SchemaError(f"{self.path}: cannot open the client directory: {exc}") from exc
            raise
        log.info("clients.opened", path=str(self.path), photos=str(self.photos_dir))

    async def _connect(self) -> aiosqlite.Connection:
        return await connect(self.path, self.busy_timeout_s)

    async def close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        self._writer = self._reader = None
        self._invalidate()

    async def __aenter__(self) -> Directory:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def reader(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError(f"{self.path}: the client directory is not open")
        return self._reader

    @contextlib.asynccontextmanager
    async def _transaction(self, *, quiet: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; the lookup cache is dropped whatever happens."""
        async with self._lock:
            db = self._writer
            if db is None:
                raise RuntimeError(f"{self.path}: the client directory is not open")
            self._invalidate()
            try:
                # inside the try: a task cancelled while BEGIN waits for the write lock (a
                # lookup at shutdown) must still queue the ROLLBACK. aiosqlite runs the BEGIN
                # anyway, and without it the lock stayed held and the call log could not write
                await db.execute("BEGIN IMMEDIATE")
                yield db
                await db.execute("COMMIT")
                for listener in () if quiet else self.listeners:
                    listener()
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise
            finally:
                self._invalidate()

    def _invalidate(self) -> None:
        self._cache.clear()
        self._generation += 1

    # -- lookups ---------------------------------------------------------------------------------

    async def lookup(self, raw_number: str) -> list[Client]:
        """Every client holding this number (any form of it), by id; [] for none or no number."""
        number = self.numbers.normalize(raw_number)
        if number is None or len(number.tail) < MIN_DIGITS:
            return []
        key = number.e164 or "#" + number.tail
        hit = self._cache.get(key)
        if hit is not None:
            return list(hit)
        generation = self._generation
        db = self.reader
        clients = tuple(await self._load(db, await self._match(db, number)))
        if generation == self._generation:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]  # oldest first: cheap, good enough
            self._cache[key] = clients
        return list(clients)

    async def _match(self, db: aiosqlite.Connection, number: Number) -> list[int]:
        if number.e164 is not None:
            rows = await db.execute_fetchall(_MATCH_E164, (number.e164, number.tail))
            if rows:
                return [int(r[0]) for r in rows]
        rows = await db.execute_fetchall(_MATCH_TAIL, (number.tail,))
        return [int(r[0]) for r in rows]

    async def register_unknown(self, raw_number: str) -> Client | None:
        """The client of a caller: a new `potential` one for a number nobody has.

        Idempotent: a known number returns its client (the lowest id if several hold it; the
        card comes from `lookup`). None for what is no number (anonymous, an extension), and
        for an unknown number when registering is switched off.
        """
        known = await self.lookup(raw_number)
        if known:
            return known[0]
        number = self.numbers.normalize(raw_number)
        if number is None or len(number.tail) < MIN_DIGITS or not self.auto_register:
            return None
        async with self._transaction(quiet=True) as db:
            ids = await self._match(db, number)  # again, under the write lock: no twin
            if ids:
                return (await self._load(db, ids[:1]))[0]
            client_id = await self._insert_client(db, {"category": POTENTIAL})
            await self._insert_phone(db, client_id, number, "")
            client = (await self._load(db, [client_id]))[0]
        log.info("clients.registered_unknown", client_id=client_id, e164=number.e164)
        return client

    async def get(self, client_id: int) -> Client:
        clients = await self._load(self.reader, [client_id])
        if not clients:
            raise NotFound("client", client_id)
        return clients[0]

    async def search(self, q: str, limit: int = 20) -> list[Client]:
        """Clients whose name or company contains `q` (any case, any script), or who have the
        number `q` in any form (or its digits within a number); no `q`: the latest changed.

        A whole number that matches is the answer; otherwise numbers containing the digits,
        then names starting with `q` (the index), then names containing it (a scan: about
        0.2 s on a million clients, fine for a person typing, never on the popup path).
        """
        q = text("q", q, 200)
        limit = checked_limit("limit", limit)
        db = self.reader
        if not q:
            rows = await db.execute_fetchall(
                "SELECT id FROM clients ORDER BY updated_at DESC, id DESC LIMIT ?", (limit,)
            )
            return await self._load(db, [int(r[0]) for r in rows])
        ids: dict[int, None] = {}
        digits = "".join(ch for ch in q if ch.isdigit() and ch.isascii())
        if digits and all(ch.isdigit() or ch in "+-()./ " for ch in q):
            number = self.numbers.normalize(q)
            if number is not None and len(number.tail) >= MIN_DIGITS:
                ids.update(dict.fromkeys(await self._match(db, number)))
                if ids:  # a whole number that matched: that is the answer, skip the scans
                    return await self._load(db, list(ids)[:limit])
            if 3 <= len(digits) <= self.numbers.last_digits and len(ids) < limit:
                rows = await db.execute_fetchall(
                    "SELECT DISTINCT client_id FROM client_phones WHERE instr(tail, ?) > 0 "
                    "ORDER BY client_id LIMIT ?",
                    (digits, limit),
                )
                ids.update(dict.fromkeys(int(r[0]) for r in rows))
        key = fold(q)
        if len(ids) < limit:
            rows = await db.execute_fetchall(
                "SELECT id FROM clients WHERE search >= ? AND search < ? ORDER BY search LIMIT ?",
                (key, key + "\U0010ffff", limit),
            )
            ids.update(dict.fromkeys(int(r[0]) for r in rows))
        if len(ids) < limit:
            rows = await db.execute_fetchall(
                "SELECT id FROM clients WHERE instr(search, ?) > 0 ORDER BY search LIMIT ?",
                (key, limit),
            )
            ids.update(dict.fromkeys(int(r[0]) for r in rows))
        return await self._load(db, list(ids)[:limit])

    async def _load(self, db: aiosqlite.Connection, ids: Sequence[int]) -> list[Client]:
        """The cards of `ids`, in that order (missing ones left out): three indexed queries."""
        ids = [i for i in ids if 0 < i <= MAX_ID]
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        rows = await db.execute_fetchall(
            f"SELECT {_CLIENT_COLUMNS} FROM clients AS c JOIN categories AS k "
            f"ON k.name = c.category WHERE c.id IN ({marks})",
            ids,
        )
        phones: dict[int, list[Phone]] = {}
        for r in await db.execute_fetchall(
            "SELECT id, client_id, raw, e164, tail, label FROM client_phones "
            f"WHERE client_id IN ({marks}) ORDER BY id",
            ids,
        ):
            phones.setdefault(int(r[1]), []).append(Phone(*r))
        orders: dict[int, list[Order]] = {}
        for r in await db.execute_fetchall(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE client_id IN ({marks}) AND open = 1 "
            "ORDER BY created_at, id",
            ids,
        ):
            orders.setdefault(int(r[1]), []).append(_order(r))
        by_id = {
            int(r[0]): Client(
                *r,  # type: ignore[arg-type]
                phones=tuple(phones.get(int(r[0]), ())),
                open_orders=tuple(orders.get(int(r[0]), ())),
            )
            for r in rows
        }
        return [by_id[i] for i in dict.fromkeys(ids) if i in by_id]

    # -- clients ---------------------------------------------------------------------------------

    async def create(self, fields: Mapping[str, Any]) -> Client:
        """A new client from card fields, plus `phones`: numbers or {"number", "label"}.

        A phone held by an untouched potential client absorbs it (see `add_phone`).
        """
        values = client_fields(fields, extra=frozenset({"phones"}))
        numbers = self._phones_of(fields.get("phones", []))
        if not (values.get("name") or values.get("company") or numbers):
            raise ValidationError("name", "a client needs a name, a company or a phone number")
        async with self._transaction() as db:
            await self._check_category(db, values.get("category", DEFAULT_CATEGORY))
            client_id = await self._insert_client(db, values)
            merged: list[int] = []
            stale: list[str | None] = []
            for number, label in numbers:
                merged += await self._attach(db, client_id, number, label, stale)
            client = (await self._load(db, [client_id]))[0]
        self._remove_photos(stale)
        log.info("clients.created", client_id=client_id, merged=merged)
        return client

    async def update(self, client_id: int, fields: Mapping[str, Any]) -> Client:
        """Change card fields (the ones given; `photo` has its own methods)."""
        values = client_fields(fields)
        async with self._transaction() as db:
            current = await self._row(db, client_id)
            if values:
                if "category" in values:
                    await self._check_category(db, values["category"])
                await self._set(db, client_id, current, values)
            client = (await self._load(db, [client_id]))[0]
        if values:
            log.info("clients.updated", client_id=client_id, fields=sorted(values))
        return client

    async def delete(self, client_id: int) -> None:
        """Delete a client with its phones and orders; its calls stay in the log, unlinked."""
        async with self._transaction() as db:
            current = await self._row(db, client_id)
            await db.execute("DELETE FROM clients WHERE id = ?", (client_id,))
        self._remove_photos([current["photo"]])
        log.info("clients.deleted", client_id=client_id)

    async def merge(self, keep_id: int, gone_id: int) -> Client:
        """Move `gone`'s phones, orders and calls to `keep` and delete `gone`, atomically.

        Fields `keep` lacks are taken from `gone`; notes are joined, never dropped (the
        operator must see them); a `potential` keep takes gone's category.
        """
        if keep_id == gone_id:
            raise ValidationError("gone_id", "a client cannot be merged into itself")
        stale: list[str | None] = []
        async with self._transaction() as db:
            await self._row(db, keep_id)
            calls = await self._merge(db, keep_id, gone_id, stale)
            client = (await self._load(db, [keep_id]))[0]
        self._remove_photos(stale)
        log.info("clients.merged", keep=keep_id, gone=gone_id, calls=calls)
        return client

    async def _merge(
        self, db: aiosqlite.Connection, keep_id: int, gone_id: int, stale: list[str | None]
    ) -> int:
        """Merge inside the open transaction; returns how many calls moved."""
        keep = await self._row(db, keep_id)
        gone = await self._row(db, gone_id)
        values: dict[str, Any] = {}
        for col in ("name", "company", "city", "country", "responsible"):
            if not keep[col] and gone[col]:
                values[col] = gone[col]
        if gone["notes"] and gone["notes"] != keep["notes"]:
            joined = f"{keep['notes']}\n\n{gone['notes']}"
            values["notes"] = joined if keep["notes"] else gone["notes"]
        if keep["category"] == POTENTIAL and gone["category"] != POTENTIAL:
            values["category"] = gone["category"]
        if gone["photo"] and not keep["photo"]:
            values["photo"] = gone["photo"]
        else:
            stale.append(gone["photo"])
        await db.execute(
            "UPDATE client_phones SET client_id = ? WHERE client_id = ? AND tail NOT IN "
            "(SELECT tail FROM client_phones WHERE client_id = ?)",
            (keep_id, gone_id, keep_id),
        )
        await db.execute("UPDATE orders SET client_id = ? WHERE client_id = ?", (keep_id, gone_id))
        cursor = await db.execute(*self.relink(gone_id, keep_id))
        calls = cursor.rowcount
        await db.execute("DELETE FROM clients WHERE id = ?", (gone_id,))
        await self._set(db, keep_id, keep, values)
        return calls

    # -- phones ----------------------------------------------------------------------------------

    async def add_phone(self, client_id: int, raw: str, label: str = "") -> PhoneAdded:
        """Add a number to a client, e.g. a known client calling from a new one.

        If an untouched `potential` client holds the number (the card made for this very
        call), it is merged into this client with its call history: one client, not two.
        """
        number = self._phone("number", raw)
        label = text("label", label, PHONE_LABEL_MAX)
        stale: list[str | None] = []
        async with self._transaction() as db:
            await self._row(db, client_id)
            merged = await self._attach(db, client_id, number, label, stale)
            rows = await db.execute_fetchall(
                "SELECT id, client_id, raw, e164, tail, label FROM client_phones "
                "WHERE client_id = ? AND tail = ?",
                (client_id, number.tail),
            )
            phone = Phone(*next(iter(rows)))
            client = (await self._load(db, [client_id]))[0]
        self._remove_photos(stale)
        log.info("clients.phone_added", client_id=client_id, phone_id=phone.id, merged=merged)
        return PhoneAdded(client, phone, tuple(merged))

    async def _attach(
        self,
        db: aiosqlite.Connection,
        client_id: int,
        number: Number,
        label: str,
        stale: list[str | None],
    ) -> list[int]:
        """Give the client this number, absorbing untouched potential clients holding it."""
        found = await db.execute_fetchall(
            "SELECT 1 FROM client_phones WHERE client_id = ? AND tail = ?",
            (client_id, number.tail),
        )
        if found:
            raise Conflict("number", f"{number.raw!r} is already a number of client {client_id}")
        merged: list[int] = []
        for other in await self._match(db, number):
            if other == client_id:
                continue
            if await db.execute_fetchall(_BLANK_POTENTIAL, (other, POTENTIAL)):
                await self._merge(db, client_id, other, stale)
                merged.append(other)
                log.info("clients.merged", keep=client_id, gone=other, reason="number_added")
        if merged:  # the potential's phone moved here: it becomes the number as typed now
            await db.execute(
                "UPDATE client_phones SET raw = ?, e164 = ?, label = ? "
                "WHERE client_id = ? AND tail = ?",
                (number.raw, number.e164, label, client_id, number.tail),
            )
        else:
            await self._insert_phone(db, client_id, number, label)
        return merged

    async def remove_phone(self, client_id: int, phone_id: int) -> Client:
        async with self._transaction() as db:
            await self._row(db, client_id)
            cursor = await db.execute(
                "DELETE FROM client_phones WHERE id = ? AND client_id = ?",
                (_id(phone_id), client_id),
            )
            if cursor.rowcount == 0:
                raise NotFound("phone", phone_id)
            client = (await self._load(db, [client_id]))[0]
        log.info("clients.phone_removed", client_id=client_id, phone_id=phone_id)
        return client

    def _phone(self, field: str, raw: Any) -> Number:
        raw = text(field, raw, 64)
        number = self.numbers.normalize(raw)
        if number is None or len(number.tail) < MIN_DIGITS:
            raise ValidationError(field, f"{raw!r} is not a phone number")
        return number

    def _phones_of(self, value: Any) -> list[tuple[Number, str]]:
        if not isinstance(value, list):
            raise ValidationError("phones", "expected a list of numbers")
        out: list[tuple[Number, str]] = []
        for i, item in enumerate(value):
            field = f"phones[{i}]"
            if isinstance(item, dict):
                unknown = set(item) - {"number", "label"}
                if unknown:
                    raise ValidationError(f"{field}.{min(unknown)}", "unknown field")
                number = self._phone(f"{field}.number", item.get("number"))
                label = text(f"{field}.label", item.get("label", ""), PHONE_LABEL_MAX)
            else:
                number, label = self._phone(field, item), ""
            if any(n.tail == number.tail for n, _ in out):
                raise ValidationError(field, "the same number twice")
            out.append((number, label))
        return out

    # -- orders ----------------------------------------------------------------------------------

    async def orders(self, client_id: int, *, open: bool | None = None) -> list[Order]:
        """A client's orders, open ones first, newest first."""
        await self.get(client_id)
        where, params = "client_id = ?", [client_id]
        if open is not None:
            where, params = where + " AND open = ?", [*params, int(open)]
        rows = await self.reader.execute_fetchall(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {where} "
            "ORDER BY open DESC, created_at DESC, id DESC",
            params,
        )
        return [_order(r) for r in rows]

    async def add_order(self, client_id: int, fields: Mapping[str, Any]) -> Order:
        values = {"stage": "", "responsible": "", "debt": 0.0, "open": True}
        values.update(order_fields(fields, creating=True))
        now = time.time()
        async with self._transaction() as db:
            await self._row(db, client_id)
            cursor = await db.execute(
                "INSERT INTO orders (client_id, number, stage, responsible, debt, open, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    client_id,
                    values["number"],
                    values["stage"],
                    values["responsible"],
                    values["debt"],
                    int(values["open"]),
                    now,
                    now,
                ),
            )
            order = await self._order_row(db, client_id, int(cursor.lastrowid or 0))
        log.info("clients.order_added", client_id=client_id, order_id=order.id)
        return order

    async def update_order(self, client_id: int, order_id: int, fields: Mapping[str, Any]) -> Order:
        values = order_fields(fields, creating=False)
        async with self._transaction() as db:
            await self._order_row(db, client_id, order_id)
            if values:
                if "open" in values:
                    values["open"] = int(values["open"])
                sets = ", ".join(f"{col} = ?" for col in values)
                await db.execute(
                    f"UPDATE orders SET {sets}, updated_at = ? WHERE id = ?",
                    (*values.values(), time.time(), order_id),
                )
            order = await self._order_row(db, client_id, order_id)
        if values:
            log.info("clients.order_updated", client_id=client_id, order_id=order_id)
        return order

    async def delete_order(self, client_id: int, order_id: int) -> None:
        async with self._transaction() as db:
            await self._order_row(db, client_id, order_id)
            await db.execute("DELETE FROM orders WHERE id = ?", (order_id,))
        log.info("clients.order_deleted", client_id=client_id, order_id=order_id)

    async def _order_row(self, db: aiosqlite.Connection, client_id: int, order_id: int) -> Order:
        await self._row(db, client_id)
        rows = list(
            await db.execute_fetchall(
                f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = ? AND client_id = ?",
                (_id(order_id), client_id),
            )
        )
        if not rows:
            raise NotFound("order", order_id)
        return _order(rows[0])

    # -- categories ------------------------------------------------------------------------------

    async def categories(self) -> list[Category]:
        rows = await self.reader.execute_fetchall(
            "SELECT name, label, color, builtin FROM categories ORDER BY builtin DESC, name"
        )
        return [Category(str(n), str(label), str(c), bool(b)) for n, label, c, b in rows]

    async def add_category(self, name: Any, label: Any, color: Any) -> Category:
        name, label, color = category_fields(name, label, color)
        async with self._transaction() as db:
            if await db.execute_fetchall("SELECT 1 FROM categories WHERE name = ?", (name,)):
                raise Conflict("name", f"category {name!r} exists")
            await db.execute(
                "INSERT INTO categories (name, label, color, builtin) VALUES (?, ?, ?, 0)",
                (name, label, color),
            )
        log.info("clients.category_added", name=name)
        return Category(name, label, color, False)

    async def _check_category(self, db: aiosqlite.Connection, name: str) -> None:
        if not await db.execute_fetchall("SELECT 1 FROM categories WHERE name = ?", (name,)):
            known = [str(r[0]) for r in await db.execute_fetchall("SELECT name FROM categories")]
            raise ValidationError("category", f"unknown {name!r} (known: {', '.join(known)})")

    # -- photos ----------------------------------------------------------------------------------

    async def set_photo(self, client_id: int, data: bytes, content_type: str | None) -> Client:
        """Store a PNG/JPEG/WebP (checked by its bytes) as the client's photo."""
        ctype = photos.check(data, content_type, self.max_photo_bytes)
        await self.get(client_id)  # before writing a file for nobody
        name = await asyncio.to_thread(photos.write, self.photos_dir, client_id, data, ctype)
        try:
            async with self._transaction() as db:
                old = (await self._row(db, client_id))["photo"]
                await db.execute(
                    "UPDATE clients SET photo = ?, updated_at = ? WHERE id = ?",
                    (name, time.time(), client_id),
                )
                client = (await self._load(db, [client_id]))[0]
        except BaseException:
            self._remove_photos([name])
            raise
        self._remove_photos([old])
        log.info("clients.photo_set", client_id=client_id, bytes=len(data), type=ctype)
        return client

    async def remove_photo(self, client_id: int) -> Client:
        async with self._transaction() as db:
            old = (await self._row(db, client_id))["photo"]
            await db.execute(
                "UPDATE clients SET photo = NULL, updated_at = ? WHERE id = ?",
                (time.time(), client_id),
            )
            client = (await self._load(db, [client_id]))[0]
        self._remove_photos([old])
        return client

    async def photo_path(self, client_id: int) -> Path:
        """The client's photo file; the shipped placeholder when it has none (or it is gone)."""
        name = (await self.get(client_id)).photo
        if name:
            try:
                path = photos.path_of(self.photos_dir, name)
            except ValueError:
                log.warning("clients.bad_photo_name", client_id=client_id, photo=name)
            else:
                if path.is_file():
                    return path
                log.warning("clients.photo_missing", client_id=client_id, path=str(path))
        return photos.PLACEHOLDER

    def _remove_photos(self, names: Iterable[str | None]) -> None:
        for name in names:
            photos.remove(self.photos_dir, name)

    # -- calls -----------------------------------------------------------------------------------

    def relink(self, gone_id: int, keep_id: int) -> Statement:
        """The call log's statement moving `gone`'s calls to `keep`, for the merge's
        transaction (this class's and the CSV import's)."""
        if self.relink_calls is None:
            raise RuntimeError(
                f"{self.path}: this client directory cannot merge clients: it was built "
                "without the call log's relink_calls"
            )
        return self.relink_calls(gone_id, keep_id)

    # -- rows ------------------------------------------------------------------------------------

    async def _row(self, db: aiosqlite.Connection, client_id: int) -> dict[str, Any]:
        cursor = await db.execute("SELECT * FROM clients WHERE id = ?", (_id(client_id),))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound("client", client_id)
        return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}

    async def _insert_client(self, db: aiosqlite.Connection, values: dict[str, Any]) -> int:
        row = {col: values.get(col, "") for col in _TEXT_COLUMNS}
        row["category"] = values.get("category", DEFAULT_CATEGORY)
        now = time.time()
        cursor = await db.execute(
            f"INSERT INTO clients ({', '.join(row)}, search, created_at, updated_at) "
            f"VALUES ({', '.join('?' for _ in row)}, ?, ?, ?)",
            (*row.values(), search_key(row["name"], row["company"]), now, now),
        )
        return int(cursor.lastrowid or 0)

    async def _insert_phone(
        self, db: aiosqlite.Connection, client_id: int, number: Number, label: str
    ) -> None:
        await db.execute(
            "INSERT INTO client_phones (client_id, raw, e164, tail, label) VALUES (?, ?, ?, ?, ?)",
            (client_id, number.raw, number.e164, number.tail, label),
        )

    async def _set(
        self,
        db: aiosqlite.Connection,
        client_id: int,
        current: dict[str, Any],
        values: dict[str, Any],
    ) -> None:
        if not values:
            return
        name = values.get("name", current["name"])
        company = values.get("company", current["company"])
        sets = ", ".join(f"{col} = ?" for col in values)
        await db.execute(
            f"UPDATE clients SET {sets}, search = ?, updated_at = ? WHERE id = ?",
            (*values.values(), search_key(name, company), time.time(), client_id),
        )


def _order(r: Any) -> Order:
    return Order(
        int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), float(r[5]), bool(r[6]),
        float(r[7]), float(r[8]),
    )  # fmt: skip


def _id(value: int) -> int:
    """An id SQLite can hold; a bigger one cannot exist (and would overflow the binding)."""
    return value if 0 < value <= MAX_ID else 0


def checked_limit(field: str, value: Any) -> int:
    """`value` when it is a page size the directory's reads accept (1-MAX_LIMIT); else a
    ValidationError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise ValidationError(field, f"expected a whole number 1-{MAX_LIMIT}, got {value!r}")
    return value
