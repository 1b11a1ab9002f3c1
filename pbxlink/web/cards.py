"""The client API's JSON forms, in and out, as msgspec Structs.

Out: the REST view of a directory value (`client()` etc.): times as ISO-8601 UTC, the category
nested, whether there is a photo and where it is served (pbxlink.web.urls). The directory's
values (pbxlink.clients.model) know nothing of URLs or JSON. In: the bodies and queries the
routes accept; msgspec checks types, required and unknown fields, the directory checks the
rest (lengths, control characters, numbers that are numbers) and names the field either way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from pbxlink.calls.record import iso_utc
from pbxlink.clients import model
from pbxlink.clients.directory import MAX_ID, MAX_LIMIT
from pbxlink.web import urls
from pbxlink.web.models import CallRecord, Time

# -- out ---------------------------------------------------------------------------------------


class Phone(msgspec.Struct):
    id: int
    raw: str
    e164: str | None
    label: str


class Order(msgspec.Struct):
    id: int
    client_id: int
    number: str
    stage: str
    responsible: str
    debt: float
    open: bool
    created_at: Time
    updated_at: Time


class Category(msgspec.Struct):
    name: str
    label: str
    color: Annotated[str, Meta(pattern="^#[0-9a-fA-F]{6}$")]
    builtin: bool


class CategoryRef(msgspec.Struct):
    """A client's category as its card shows it."""

    name: str
    label: str
    color: str


class Client(msgspec.Struct):
    id: int
    name: str
    company: str
    category: CategoryRef
    notes: str
    city: str
    country: str
    has_photo: bool
    photo_url: str
    responsible: str
    created_at: Time
    updated_at: Time
    phones: list[Phone]
    open_orders: list[Order]


def _time(ts: float) -> str:
    return iso_utc(ts) or ""  # never empty: a stored time is a number


def phone(p: model.Phone) -> Phone:
    return Phone(p.id, p.raw, p.e164, p.label)


def order(o: model.Order) -> Order:
    return Order(
        o.id, o.client_id, o.number, o.stage, o.responsible, o.debt, o.open,
        _time(o.created_at), _time(o.updated_at),
    )  # fmt: skip


def category(c: model.Category) -> Category:
    return Category(c.name, c.label, c.color, c.builtin)


def client(c: model.Client) -> Client:
    return Client(
        id=c.id,
        name=c.name,
        company=c.company,
        category=CategoryRef(c.category, c.category_label, c.category_color),
        notes=c.notes,
        city=c.city,
        country=c.country,
        has_photo=c.photo is not None,
        photo_url=urls.client_photo(c.id),
        responsible=c.responsible,
        created_at=_time(c.created_at),
        updated_at=_time(c.updated_at),
        phones=[phone(p) for p in c.phones],
        open_orders=[order(o) for o in c.open_orders],
    )


class ClientList(msgspec.Struct):
    clients: list[Client]


class Lookup(msgspec.Struct):
    number: str
    e164: str | None
    shared: bool
    clients: list[Client]


class Categories(msgspec.Struct):
    categories: list[Category]


class Orders(msgspec.Struct):
    orders: list[Order]


class PhoneAdded(msgspec.Struct):
    client: Client
    phone: Phone
    merged: list[int]


class ClientCalls(msgspec.Struct):
    calls: list[CallRecord]


# -- in ----------------------------------------------------------------------------------------


class _In(msgspec.Struct, forbid_unknown_fields=True):
    def given(self) -> dict[str, Any]:
        """The fields the request gave, as the directory takes them (nested Structs too)."""
        out = msgspec.to_builtins(self)
        assert isinstance(out, dict)
        return out


class PhoneIn(_In):
    number: str
    label: str | UnsetType = UNSET


class CardFields(_In):
    name: str | UnsetType = UNSET
    company: str | UnsetType = UNSET
    category: str | UnsetType = UNSET
    notes: str | UnsetType = UNSET
    city: str | UnsetType = UNSET
    country: str | UnsetType = UNSET
    responsible: str | UnsetType = UNSET


class NewClient(CardFields):
    phones: list[str | PhoneIn] | UnsetType = UNSET


class OrderFields(_In):
    number: str | UnsetType = UNSET
    stage: str | UnsetType = UNSET
    responsible: str | UnsetType = UNSET
    debt: float | UnsetType = UNSET
    open: bool | UnsetType = UNSET


class NewOrder(OrderFields):
    number: str  # type: ignore[assignment]  # required here, optional in a change


class Merge(_In):
    gone_id: Annotated[int, Meta(ge=1, le=MAX_ID)]


class NewCategory(_In):
    name: str
    label: str
    color: str


Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT)]
# what model.text accepts: any whitespace around, no control character within, 200 at most
_STRIPPED = "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f ]*"
QueryText = Annotated[
    str, Meta(max_length=200, pattern=f"^{_STRIPPED}[^\\x00-\\x1f\\x7f]*{_STRIPPED}$")
]


class SearchQuery(msgspec.Struct, forbid_unknown_fields=True):
    q: QueryText = ""
    limit: Limit = 20


class LookupQuery(msgspec.Struct, forbid_unknown_fields=True):
    number: str


class OrdersQuery(msgspec.Struct, forbid_unknown_fields=True):
    open: Literal["true", "false", "1", "0", "all"] = "all"

    def wanted(self) -> bool | None:
        """Open orders (True), closed ones (False), or all (None)."""
        return {"all": None, "true": True, "1": True}.get(self.open, False)


class CallsQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Limit = 50
