"""The call log's writes that other parts need, one function each: the only way anything but
the call log touches its tables (db/owners.py). The composition root hands them out; the parts
that use them never import the call log.
"""

from __future__ import annotations

from pbxlink.db import Statement


def relink_calls(from_client: int, to_client: int) -> Statement:
    """Move every call of client `from_client` to client `to_client`: the directory's merges
    (a merge by hand, a potential client absorbed by a new number or by a CSV import).

    A statement, not a write: the caller runs it in the transaction that also deletes
    `from_client`, so the calls move exactly when the merge commits; its row count is the
    number of calls moved."""
    return ("UPDATE calls SET client_id = ? WHERE client_id = ?", (to_client, from_client))
