"""The API's URLs, built in one place: a path the REST API serves is spelled here, so a card,
a list entry or a popup that points at it cannot drift from the route that answers it."""

from __future__ import annotations


def client_photo(client_id: int) -> str:
    """Where a client's photo is served (GET /api/clients/{id}/photo; a placeholder if none)."""
    return f"/api/clients/{client_id}/photo"
