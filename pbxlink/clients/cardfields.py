"""What an external source may add to a client card, and how several answers merge.

Every field is optional: a CRM that knows only the company still helps. Values are cleaned
on the way in (strings trimmed, numbers and dates turned to text, empty strings dropped) so
that "has a value" means the same for every source, which the merge rule depends on.

Plain values and pure functions, outside `sources/` (whose package imports the HTTP and SQL
clients): the call card and the desk hold these answers without importing any I/O.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

CARD_FIELDS = (
    "name",
    "company",
    "category",
    "notes",
    "city",
    "country",
    "responsible",
    "photo_url",
)
ORDER_KEYS = ("number", "stage", "responsible", "debt", "open")
ORDER_PREFIX = "orders."
# what a source's `fields` table may map: a card field, or one key of every order
MAPPABLE = (*CARD_FIELDS, *(ORDER_PREFIX + key for key in ORDER_KEYS))
_TRUE = frozenset({"true", "t", "yes", "y", "1", "open"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "closed"})


@dataclass(slots=True)
class CardFields:
    """A source's answer, or several merged. `source`: who answered (merged: "a, b")."""

    name: str | None = None
    company: str | None = None
    category: str | None = None
    notes: str | None = None
    city: str | None = None
    country: str | None = None
    responsible: str | None = None
    photo_url: str | None = None
    orders: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None

    def empty(self) -> bool:
        return not self.orders and all(getattr(self, name) is None for name in CARD_FIELDS)

    def copy(self) -> CardFields:
        """Cached answers are handed out as copies: a caller editing its card edits only it."""
        out = CardFields(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.orders = [dict(order) for order in self.orders]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def merge(cards: Iterable[CardFields | None]) -> CardFields:
    """Chain order wins per field: each field comes from the first card that has a value.

    `orders` is one field: the first card with any orders gives all of them (lists from two
    systems cannot be told apart or de-duplicated reliably). `source` names every card that
    gave at least one field, in chain order.
    """
    out = CardFields()
    names: list[str] = []
    for card in cards:
        if card is None:
            continue
        gave = False
        for name in CARD_FIELDS:
            value = getattr(card, name)
            if value is not None and getattr(out, name) is None:
                setattr(out, name, value)
                gave = True
        if card.orders and not out.orders:
            out.orders = [dict(order) for order in card.orders]
            gave = True
        if gave and card.source:
            names.append(card.source)
    out.source = ", ".join(names) or None
    return out


def text(value: Any) -> str | None:
    """A card field's value as text; None for nothing, empty, or a structure (not a field)."""
    if value is None or isinstance(value, bytes | bytearray | dict | list | tuple):
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        value = format(value, "f")
    out = str(value).strip()
    return out or None


def order_value(key: str, value: Any) -> Any:
    """`debt` a number, `open` a bool, the rest text; what cannot be read is None."""
    if key == "debt":
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return value
        if isinstance(value, decimal.Decimal):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip().replace(",", "."))
            except ValueError:
                return None
        return None
    if key == "open":
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str):
            word = value.strip().lower()
            return True if word in _TRUE else False if word in _FALSE else None
        return None
    return text(value)


def build(scalars: dict[str, Any], orders: list[dict[str, Any]]) -> CardFields | None:
    """A card from raw values (field -> value, order rows of key -> value); None if empty."""
    card = CardFields()
    for name in CARD_FIELDS:
        setattr(card, name, text(scalars.get(name)))
    for raw in orders:
        order = {key: order_value(key, raw.get(key)) for key in ORDER_KEYS}
        if any(v is not None for v in order.values()):
            card.orders.append(order)
    return None if card.empty() else card
