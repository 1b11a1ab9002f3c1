"""The popup protocol v1 (docs/popup-protocol.md), declared once: every message and the card
are frozen msgspec Structs. The desk builds them, the hub encodes each once and sends the
same bytes to everyone the desk names, and `pbxlink/hub/schemas/` are generated from them
(`python -m pbxlink.hub.schemagen`), so the wire, the code and the schemas cannot drift.

The field order is the order on the wire: `type` (the tag), `v`, then the fields as written.
The hub writes every field, null ones included: no default is ever left out.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

VERSION = 1

# close codes
BAD_TOKEN = 4001
TOKEN_REVOKED = 4002
ORIGIN_REFUSED = 4003
TOO_SLOW = 4008
PROTOCOL_ERROR = 4400

# -- what the messages share (pbxlink/hub/schemas/common.json has them for a page's schemas) --

Version = Literal[1]
Time = Annotated[
    str,
    Meta(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$",
        description="ISO-8601 UTC with milliseconds",
        extra_json_schema={"format": "date-time"},
    ),
]
CallId = Annotated[str, Meta(min_length=1)]
Extension = Annotated[str, Meta(min_length=1)]
Status = Annotated[
    Literal["answered", "no_answer", "busy", "abandoned", "voicemail", "failed"],
    Meta(
        description="While the call goes on: answered once answered, else no_answer; the "
        "final status in `ended` and in `missed`'s card"
    ),
]
Seconds = Annotated[float, Meta(ge=0)]
ClientId = Annotated[int, Meta(ge=1)]
Color = Annotated[str, Meta(pattern="^#[0-9a-fA-F]{6}$")]

# -- the card ----------------------------------------------------------------------------------


class Part(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every object of the protocol is: a frozen value, built by keyword, and strict in
    its schema (`additionalProperties: false`)."""


class CardOrder(Part):
    """An open order; any value may be null when a CRM source did not give it."""

    number: str | None
    stage: str | None
    responsible: str | None
    debt: float | None


class CardClient(Part):
    """The client on the card: the directory's, with what it lacks filled in by the CRM
    sources. The popup's flat form of the same client the REST API nests."""

    id: Annotated[ClientId | None, Meta(description="null: known only to a CRM source")]
    name: str
    company: str
    notes: Annotated[
        str, Meta(description="what the operator must see; may span lines: text, never HTML")
    ]
    city: str
    country: str
    category: str | None
    category_label: str | None
    category_color: Color | None
    photo_url: Annotated[
        str | None,
        Meta(
            description="the API's photo of the client (a placeholder when there is none; "
            "send the token), or an http(s) URL a CRM source gave"
        ),
    ]
    orders: Annotated[tuple[CardOrder, ...], Meta(description="open orders")]


class OtherClient(Part):
    """A further client holding the same number: pbxlink never guesses which one calls."""

    id: ClientId
    name: str


class Colleague(Part):
    """An internal call's caller: the extension, and the configured operator owning it (name
    null when nobody does)."""

    extension: Extension
    name: str | None


class Card(Part):
    """The client card of a call: what the operator sees when the phone rings. Built once per
    update and sent to everybody that update concerns."""

    company: Annotated[str, Meta(description="config `company`: whose PBX this is")]
    call_id: CallId
    started_at: Time
    direction: Literal["inbound", "outbound", "internal"]
    number: Annotated[
        str,
        Meta(
            description="inbound: the caller's number; outbound: the number called; internal: "
            "the calling extension; may be empty (anonymous)"
        ),
    ]
    caller_name: Annotated[str, Meta(description="the caller ID name the PBX gave (may be empty)")]
    did: Annotated[
        str | None, Meta(description="inbound: the number the caller dialled; else null")
    ]
    new_client: Annotated[bool, Meta(description="the number was unknown until this call")]
    pending: Annotated[
        bool,
        Meta(
            description="the directory lookup has not answered yet: a client_updated follows; "
            "never with no_lookup"
        ),
    ]
    no_lookup: Annotated[
        Literal["internal", "withheld"] | None,
        Meta(
            description="why nobody is looked up for this call (the card is final at once, "
            "client null): internal, a colleague calls (see colleague); withheld, the number is "
            "anonymous, empty or has no digit. null: the number is looked up"
        ),
    ]
    colleague: Colleague | None
    client: CardClient | None
    other_clients: tuple[OtherClient, ...]
    extension: Annotated[
        str | None,
        Meta(
            description="the extension this message is about: ringing/missed that one, "
            "transferred the target, otherwise who holds the call"
        ),
    ]
    operator_name: Annotated[
        str | None, Meta(description="the configured operator owning extension")
    ]
    answered_by: str | None
    answered_by_name: str | None
    ivr_digits: str
    queue: str | None
    status: Status


# -- the messages ------------------------------------------------------------------------------


class Message(Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """What every server message starts with: its `type` (the Struct's tag) and `v`. Each
    subclass is keyword-only, so its fields follow `v` on the wire."""

    v: Version = VERSION


class Ringing(Message, kw_only=True, tag="ringing"):
    """A phone of the call rings: open the popup. A ring group ringing several extensions
    sends one per extension."""

    call_id: CallId
    extension: Extension
    at: Time
    card: Card


class Answered(Message, kw_only=True, tag="answered"):
    """Someone answered: extension is who (null: the far end of an outbound call). Sent to
    everybody who was shown the call, so the phones that rang with it can close their popup."""

    call_id: CallId
    extension: str | None
    at: Time
    card: Card


class Transferred(Message, kw_only=True, tag="transferred"):
    """The call was transferred to extension, which gets the card now."""

    call_id: CallId
    extension: Extension
    kind: Literal["blind", "attended"]
    at: Time
    card: Card


class Ended(Message, kw_only=True, tag="ended"):
    """The call is over: close its popup. Sent to everybody who was shown the call."""

    call_id: CallId
    status: Status
    at: Time
    wait_s: Seconds
    talk_s: Seconds


class Missed(Message, kw_only=True, tag="missed"):
    """The call rang this extension (no_answer or busy) and nobody answered it. Follows the
    call's ended."""

    call_id: CallId
    extension: Extension
    at: Time
    card: Card


class TooLong(Message, kw_only=True, tag="too_long"):
    """Supervisors and admins only: an answered call talks longer than its threshold."""

    call_id: CallId
    talk_s: Seconds
    threshold_s: Seconds
    at: Time
    card: Card


class ClientUpdated(Message, kw_only=True, tag="client_updated"):
    """The card of a call being shown changed: the lookup answered, a CRM source completed
    it, or someone edited the client. Replace the card."""

    call_id: CallId
    card: Card


class WelcomeOperator(Part):
    """Who the page signed in as."""

    name: str
    extensions: tuple[Extension, ...]
    role: Literal["operator", "supervisor", "admin"]


class Welcome(Message, kw_only=True, tag="welcome"):
    """The answer to a good hello: who you are, and the calls in progress this page should
    show right now, each as the ringing or answered message it would get if it had just
    happened."""

    operator: WelcomeOperator
    company: str
    calls: tuple[Ringing | Answered, ...]


#: any message the hub sends (v1); a page must ignore types it does not know
ServerMessage = (
    Welcome | Ringing | Answered | Transferred | Ended | Missed | TooLong | ClientUpdated
)
