"""What the directory hands out (frozen msgspec Structs: lookups share them through the cache,
and they are cheap to build from rows), its errors, and the checks every value passes before it
is written: the tables are not STRICT, so these are what keeps a number out of a name column
and a 5 MB string out of a card.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

import msgspec

POTENTIAL = "potential"  # the category of clients created for unknown callers
DEFAULT_CATEGORY = "regular"

# field -> max length in characters; notes are free text and may span lines
CLIENT_FIELDS: dict[str, int] = {
    "name": 200,
    "company": 200,
    "category": 32,
    "notes": 10_000,
    "city": 100,
    "country": 100,
    "responsible": 100,
}
MULTILINE = frozenset({"notes"})
ORDER_TEXT_FIELDS: dict[str, int] = {"number": 100, "stage": 100, "responsible": 100}
PHONE_LABEL_MAX = 50
CATEGORY_LABEL_MAX = 50
MAX_DEBT = 1e12  # anything beyond is a typo, not a debt
CATEGORY_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class DirectoryError(Exception):
    """Base of the directory's errors; the web layer maps each to a 4xx."""


class ValidationError(DirectoryError):
    """A value that cannot be stored; `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnsupportedPhoto(ValidationError):
    """Not a PNG, JPEG or WebP (by its bytes, whatever it claims to be)."""


class PhotoTooLarge(ValidationError):
    """Bigger than the directory's photo limit."""


class NotFound(DirectoryError):
    """No such client (or phone, or order, of that client)."""

    def __init__(self, what: str, ident: int | str) -> None:
        super().__init__(f"no {what} {ident}")
        self.what = what
        self.ident = ident


class Conflict(DirectoryError):
    """The change clashes with what is stored (a number already on the client, a category)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Phone(msgspec.Struct, frozen=True):
    id: int
    client_id: int
    raw: str
    e164: str | None
    tail: str
    label: str


class Order(msgspec.Struct, frozen=True):
    id: int
    client_id: int
    number: str
    stage: str
    responsible: str
    debt: float
    open: bool
    created_at: float
    updated_at: float


class Category(msgspec.Struct, frozen=True):
    name: str
    label: str
    color: str
    builtin: bool


class Client(msgspec.Struct, frozen=True):
    """A client's card: the client, its category's label and colour, phones, open orders.

    What the directory knows, not how an API shows it: the REST form (a nested category, the
    photo's URL) is pbxlink.web.cards', the popup's is pbxlink.desk.card's, both read from
    these attributes."""

    id: int
    name: str
    company: str
    category: str
    category_label: str
    category_color: str
    notes: str
    city: str
    country: str
    photo: str | None  # file name under the photos directory
    responsible: str
    created_at: float
    updated_at: float
    phones: tuple[Phone, ...] = ()
    open_orders: tuple[Order, ...] = ()


# -- checks ------------------------------------------------------------------------------------


def fold(text: str) -> str:
    """The search key: NFKC, full Unicode case folding, whitespace collapsed.

    casefold() knows every script with case (Cyrillic, Greek, Georgian Mtavruli, ß -> ss);
    NFKC makes typed-in variants (composed or not, Arabic presentation forms) one string.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def search_key(name: str, company: str) -> str:
    return f"{fold(name)}\n{fold(company)}"


def text(field: str, value: Any, max_len: int, *, multiline: bool = False) -> str:
    """A string fit for a column: str, valid Unicode, no control characters, not too long."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "not valid Unicode (a lone surrogate)") from None
    value = value.strip() if not multiline else value.rstrip()
    if len(value) > max_len:
        raise ValidationError(field, f"at most {max_len} characters, got {len(value)}")
    if (_CONTROL_MULTILINE if multiline else _CONTROL).search(value):
        raise ValidationError(field, "must not contain control characters")
    return value


def client_fields(
    fields: Mapping[str, Any], *, extra: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The checked client columns of `fields`; an unknown key is an error, not ignored."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key in extra:
            continue
        if key not in CLIENT_FIELDS:
            raise ValidationError(key, _unknown(key, CLIENT_FIELDS))
        out[key] = text(key, value, CLIENT_FIELDS[key], multiline=key in MULTILINE)
    if "category" in out and not out["category"]:
        raise ValidationError("category", "must not be empty")
    return out


def order_fields(fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in ORDER_TEXT_FIELDS:
            out[key] = text(key, value, ORDER_TEXT_FIELDS[key])
        elif key == "debt":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValidationError(key, f"expected a number, got {type(value).__name__}")
            if not math.isfinite(value) or abs(value) > MAX_DEBT:
                raise ValidationError(key, f"must be a finite number within ±{MAX_DEBT:.0e}")
            out[key] = float(value)
        elif key == "open":
            if not isinstance(value, bool):
                raise ValidationError(key, f"expected true or false, got {value!r}")
            out[key] = value
        else:
            raise ValidationError(key, _unknown(key, (*ORDER_TEXT_FIELDS, "debt", "open")))
    if (creating or "number" in out) and not out.get("number"):
        raise ValidationError("number", "an order needs a number")
    return out


def category_fields(name: Any, label: Any, color: Any) -> tuple[str, str, str]:
    name = text("name", name, 32)
    if not CATEGORY_NAME.fullmatch(name):
        raise ValidationError("name", "1-32 of a-z, 0-9, '_' and '-', starting with a letter/digit")
    label = text("label", label, CATEGORY_LABEL_MAX)
    if not label:
        raise ValidationError("label", "must not be empty")
    color = text("color", color, 7)
    if not COLOR.fullmatch(color):
        raise ValidationError("color", "expected #rrggbb")
    return name, label, color.lower()


def _unknown(key: str, known: Any) -> str:
    return f"unknown field {key!r} (known: {', '.join(known)})"
