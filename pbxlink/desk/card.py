"""The popup's client card (docs/popup-protocol.md): one `Card` per call update, built once and
sent to every recipient of that update.

The directory's client comes first; what it leaves empty, the CRM sources fill in. A number
several clients share shows the first (lowest id) and names the others: pbxlink never
guesses which of them calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.desk.messages import Card, CardClient, CardOrder, Colleague, OtherClient

#: a client id -> the URL its photo is served at (`pbxlink.web.urls.client_photo`, handed in
#: by the daemon: the URL has one home, in web/, which the desk does not import)
PhotoUrl = Callable[[int], str]


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


def build_card(
    call: CallRecord,
    card: CallCard | None,
    *,
    company: str,
    names: Mapping[str, str],
    extension: str | None,
    photo_url: PhotoUrl,
    final: bool = False,
) -> Card:
    """The card of `call` as the protocol has it; `card` None: the lookup has not answered,
    or, for a call with nobody to look up (`no_lookup`), will never be made. `final`: the
    call has ended (the `missed` card), so its status is the final one."""
    clients = card.clients if card is not None else []
    external = card.external if card is not None else None
    inbound = call.direction == "inbound"
    answered_by = call.answered_by
    why = no_lookup(call)
    colleague = call.caller_number if why == "internal" else ""
    return Card(
        company=company,
        call_id=call.call_id,
        started_at=iso_utc(call.started_at),
        direction=call.direction,
        number=call.caller_number if call.direction != "outbound" else call.called_number,
        caller_name=call.caller_name,
        did=(call.called_number or None) if inbound else None,
        new_client=card.new_client if card is not None else False,
        pending=card is None and why is None,
        no_lookup=why,
        colleague=Colleague(extension=colleague, name=names.get(colleague)) if colleague else None,
        client=build_client(clients[0] if clients else None, external, photo_url),
        other_clients=tuple(OtherClient(id=c.id, name=c.name) for c in clients[1:]),
        extension=extension,
        operator_name=names.get(extension) if extension else None,
        answered_by=answered_by,
        answered_by_name=names.get(answered_by) if answered_by else None,
        ivr_digits=call.ivr_digits,
        queue=call.queue,
        status=shown_status(call, final),
    )


def shown_status(call: CallRecord, final: bool) -> str:
    """What docs/popup-protocol.md promises: while the call goes on, `answered` once answered
    and `no_answer` before (the record's provisional busy, abandoned or voicemail is only
    final when the call ends); the final status once it has ended."""
    if final or call.status == "answered":
        return call.status
    return "no_answer"


def build_client(
    client: ClientLike | None, external: CrmFields | None, photo_url: PhotoUrl
) -> CardClient | None:
    """The directory's client with its gaps filled from the CRM; None when neither knows."""
    if external is not None and external.empty():
        external = None
    if client is None and external is None:
        return None

    def text(name: str) -> str:
        return (getattr(client, name) if client else "") or getattr(external, name, "") or ""

    if client is not None:
        category = (client.category, client.category_label, client.category_color)
    else:
        assert external is not None  # neither: None was returned above
        category = (external.category, external.category, None)
    crm_photo = _safe_url(external.photo_url if external is not None else None)
    if client is not None and (client.photo or crm_photo is None):
        photo = photo_url(client.id)
    else:
        photo = crm_photo
    if client is not None and client.open_orders:
        orders = tuple(
            CardOrder(number=o.number, stage=o.stage, responsible=o.responsible, debt=o.debt)
            for o in client.open_orders
        )
    else:
        orders = tuple(
            _crm_order(order)
            for order in (external.orders if external is not None else ())
            if order.get("open") is not False
        )
    return CardClient(
        id=client.id if client else None,
        name=text("name"),
        company=text("company"),
        notes=text("notes"),
        city=text("city"),
        country=text("country"),
        category=category[0],
        category_label=category[1],
        category_color=category[2],
        photo_url=photo,
        orders=orders,
    )


def _crm_order(order: Mapping[str, Any]) -> CardOrder:
    debt = order.get("debt")
    if debt is not None and not math.isfinite(debt):  # "nan" parses as a float: not JSON
        debt = None
    return CardOrder(
        number=order.get("number"),
        stage=order.get("stage"),
        responsible=order.get("responsible"),
        debt=debt,
    )


def _safe_url(url: str | None) -> str | None:
    """A CRM's photo URL only if a browser can load it as an image and nothing else."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None
