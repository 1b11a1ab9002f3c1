"""What pbxlink knows of a call's client while the call goes on: the popup's source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pbxlink.calls.record import CallRecord
from pbxlink.clients.cardfields import CardFields
from pbxlink.clients.model import Client

#: why nobody is looked up for a call: a colleague calls, or the caller withheld the number
NoLookup = Literal["internal", "withheld"]


@dataclass(slots=True)
class CallCard:
    """The directory's clients for the number (more than one when they share it), whether
    the number was unknown until this call, and what the CRM sources said (may come later)."""

    clients: list[Client]
    external: CardFields | None = None
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
