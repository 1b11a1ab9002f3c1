"""What pbxlink knows of a call's client while the call goes on: the popup's source."""

from __future__ import annotations

from dataclasses import dataclass

from pbxlink.calls.record import CallRecord
from pbxlink.clients.model import Client
from pbxlink.clients.sources import CardFields


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
