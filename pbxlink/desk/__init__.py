"""Owns what people are told about calls: cards, who sees which call, missed notices, the
welcome replay, too-long alerts, the operators' sessions (sans-IO: updates in, commands out).
Never imports I/O, a clock or logging, nor any part of pbxlink but calls/ and value types."""

from pbxlink.desk.desk import Desk
from pbxlink.desk.events import (
    Alert,
    CardCompleted,
    ClientsChanged,
    Close,
    Command,
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

__all__ = [
    "Alert",
    "CardCompleted",
    "ClientsChanged",
    "Close",
    "Command",
    "Desk",
    "LinkClient",
    "LookedUp",
    "Lookup",
    "Record",
    "Refresh",
    "Refreshed",
    "RosterChanged",
    "Send",
    "SessionClosed",
    "SessionOpened",
    "Snapshot",
    "Tick",
]
