"""What the desk hears and what it asks for: frozen value types, no behaviour.

Inputs (besides the tracker's `CallUpdate`s, which go in as they are):
    LookedUp          the directory (and the CRM within its budget) answered for a call
    CardCompleted     a slow CRM source answered after the budget
    ClientsChanged    the directory committed a write: cards of calls in progress may be stale
    Refreshed         the directory's clients for a call, re-read after ClientsChanged
    RosterChanged     the operators, anew (a config reload)
    SessionOpened     an operator's popup socket passed its hello
    SessionClosed     that socket is gone
    Tick              time passed (too-long calls)

Commands (for the adapters to carry out, in order):
    Lookup            look this call's number up; answer with LookedUp (and CardCompleted)
    Refresh           re-read these calls' clients (debounced by the adapter); answer Refreshed
    Send              this protocol message to these sessions (encode once)
    Close             close this session with this code and reason
    Snapshot          a call in progress changed: store what a restart needs
    Record            a call ended: its final record and the client to link it to
    LinkClient        a call that ended while its lookup ran: link its log row to this client
    Alert             a call talked too long (log and count it; the wallboards got a Send)
"""

from __future__ import annotations

from dataclasses import dataclass

from pbxlink.calls.record import CallRecord
from pbxlink.calls.updates import TooLong
from pbxlink.desk.card import CallCard, ClientLike, CrmFields, Person
from pbxlink.desk.messages import ServerMessage

# -- inputs -----------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class LookedUp:
    call_id: str
    card: CallCard


@dataclass(slots=True, frozen=True)
class CardCompleted:
    call_id: str
    external: CrmFields


@dataclass(slots=True, frozen=True)
class ClientsChanged:
    pass


@dataclass(slots=True, frozen=True)
class Refreshed:
    call_id: str
    clients: tuple[ClientLike, ...]


@dataclass(slots=True, frozen=True)
class RosterChanged:
    operators: tuple[Person, ...]


@dataclass(slots=True, frozen=True)
class SessionOpened:
    session: int
    operator: Person


@dataclass(slots=True, frozen=True)
class SessionClosed:
    session: int


@dataclass(slots=True, frozen=True)
class Tick:
    at: float


# -- commands ---------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Lookup:
    call_id: str
    number: str


@dataclass(slots=True, frozen=True)
class Refresh:
    calls: tuple[tuple[str, str], ...]  # (call_id, number)


@dataclass(slots=True, frozen=True)
class Send:
    sessions: frozenset[int]
    message: ServerMessage


@dataclass(slots=True, frozen=True)
class Close:
    session: int
    code: int
    reason: str


@dataclass(slots=True, frozen=True)
class Snapshot:
    call: CallRecord
    at: float


@dataclass(slots=True, frozen=True)
class Record:
    call: CallRecord
    client_id: int | None


@dataclass(slots=True, frozen=True)
class LinkClient:
    call_id: str
    client_id: int


@dataclass(slots=True, frozen=True)
class Alert:
    update: TooLong


Command = Lookup | Refresh | Send | Close | Snapshot | Record | LinkClient | Alert
