"""The popup's client card (docs/popup-protocol.md): one dict per call update, built once and
sent to every recipient of that update.

The directory's client comes first; what it leaves empty, the CRM sources fill in. A number
several clients share shows the first (lowest id) and names the others: pbxlink never
guesses which of them calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pbxlink.calls.record import CallRecord, iso_utc


class Person(Protocol):
    """What the desk reads of an operator (`pbxlink.operators.Operator` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def extensions(self) -> tuple[str, ...]: ...
    @property
    def role(self) -> str: ...
    @property
    def token_hash(self) -> str: ...


class ClientLike(Protocol):
    """What a card shows of a directory client (`pbxlink.clients.model.Client` is one)."""

    id: int
    name: str
    company: str
    notes: str
    city: str
    country: str
    category: str
    category_label: str
    category_color: str
    photo: str | None

    @property
    def open_orders(self) -> Sequence[Any]: ...


class CrmFields(Protocol):
    """What a card shows of the CRM's answer (`pbxlink.clients.cardfields.CardFields`)."""

    name: str
    company: str
    notes: str
    city: str
    country: str
    category: str
    photo_url: str | None
    orders: Sequence[Mapping[str, Any]]

    def empty(self) -> bool: ...



_TEXT_FIELDS = ("name", "company", "notes", "city", "country")
_ORDER_FIELDS = ("number", "stage", "responsible", "debt")


#: why nobody is looked up for a call: a colleague calls, or the caller withheld the number
NoLookup = Literal["internal", "withheld"]


@dataclass(slots=True)
class CallCard:
    """The directory's clients for the number (more than one when they share it), whether
    the number was unknown until this call, and what the CRM sources said (may come later)."""

    clients: list[ClientLike]
    external: CrmFields | None = None
    new_client: bool = False


def client_number(call: CallRecord) -> str:
    """Whose card an operator needs: the caller's inbound, the called party's outbound."""
    if call.direction == "inbound":
        return call.caller_number
    if call.direction == "outbound":
        return call.called_number
    return ""


def no_lookup(call: CallRecord) -> NoLookup | None:
    """Why the call has nobody to look up, or None when it has a number to look up.

    Internal: the caller is a colleague, not a client. Withheld: the number has no digit
    (`anonymous`, `restricted`, empty), which is what the directory cannot normalise either
    (`PhoneNumbers.normalize` gives None exactly then). The card says so from the first
    message on instead of waiting for a lookup that is never made."""
    if call.direction == "internal":
        return "internal"
    if not any(c.isdecimal() for c in client_number(call)):
        return "withheld"
    return None


def operator_names(operators: Iterable[Person]) -> dict[str, str]:
    """extension -> the name shown for it; an operator's own phone wins over a supervisor's."""
    names: dict[str, str] = {}
    for op in sorted(operators, key=lambda o: o.role != "operator"):
        for ext in op.extensions:
            names.setdefault(ext, op.name)
    return names


def card_dict(
    call: CallRecord,
    card: CallCard | None,
    *,
    company: str,
    names: Mapping[str, str],
    extension: str | None,
    final: bool = False,
) -> dict[str, Any]:
    """The card of `call` as the protocol has it; `card` None: the lookup has not answered,
    or, for a call with nobody to look up (`no_lookup`), will never be made. `final`: the
    call has ended (the `missed` card), so its status is the final one."""
    clients = card.clients if card is not None else []
    external = card.external if card is not None else None
    inbound = call.direction == "inbound"
    answered_by = call.answered_by
    why = no_lookup(call)
    colleague = call.caller_number if why == "internal" else ""
    return {
        "company": company,
        "call_id": call.call_id,
        "started_at": iso_utc(call.started_at),
        "direction": call.direction,
        "number": call.caller_number if call.direction != "outbound" else call.called_number,
        "caller_name": call.caller_name,
        "did": (call.called_number or None) if inbound else None,
        "new_client": card.new_client if card is not None else False,
        "pending": card is None and why is None,
        "no_lookup": why,
        "colleague": {"extension": colleague, "name": names.get(colleague)} if colleague else None,
        "client": client_dict(clients[0] if clients else None, external),
        "other_clients": [{"id": c.id, "name": c.name} for c in clients[1:]],
        "extension": extension,
        "operator_name": names.get(extension) if extension else None,
        "answered_by": answered_by,
        "answered_by_name": names.get(answered_by) if answered_by else None,
        "ivr_digits": call.ivr_digits,
        "queue": call.queue,
        "status": shown_status(call, final),
    }


def shown_status(call: CallRecord, final: bool) -> str:
    """What docs/popup-protocol.md promises: while the call goes on, `answered` once answered
    and `no_answer` before (the record's provisional busy, abandoned or voicemail is only
    final when the call ends); the final status once it has ended."""
    if final or call.status == "answered":
        return call.status
    return "no_answer"


def client_dict(client: ClientLike | None, external: CrmFields | None) -> dict[str, Any] | None:
    """The directory's client with its gaps filled from the CRM; None when neither knows."""
    if external is not None and external.empty():
        external = None
    if client is None and external is None:
        return None
    out: dict[str, Any] = {"id": client.id if client else None}
    for name in _TEXT_FIELDS:
        own = getattr(client, name) if client else ""
        out[name] = own or getattr(external, name, "") or ""
    if client is not None:
        out["category"] = client.category
        out["category_label"] = client.category_label
        out["category_color"] = client.category_color
    else:
        assert external is not None  # neither: None was returned above
        out["category"] = out["category_label"] = external.category
        out["category_color"] = None
    crm_photo = _safe_url(external.photo_url if external is not None else None)
    if client is not None and (client.photo or crm_photo is None):
        out["photo_url"] = f"/api/clients/{client.id}/photo"
    else:
        out["photo_url"] = crm_photo
    if client is not None and client.open_orders:
        out["orders"] = [{k: getattr(o, k) for k in _ORDER_FIELDS} for o in client.open_orders]
    else:
        out["orders"] = [
            _crm_order(order)
            for order in (external.orders if external is not None else ())
            if order.get("open") is not False
        ]
    return out


def _crm_order(order: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: order.get(k) for k in _ORDER_FIELDS}
    debt = out["debt"]
    if debt is not None and not math.isfinite(debt):  # "nan" parses as a float: not JSON
        out["debt"] = None
    return out


def _safe_url(url: str | None) -> str | None:
    """A CRM's photo URL only if a browser can load it as an image and nothing else."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None
