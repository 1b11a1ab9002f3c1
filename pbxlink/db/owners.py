"""Who owns which table, and the shape of the writes one part makes for another.

A table has one owner: the only part whose code writes it (INSERT, UPDATE, DELETE, in SQL or
in a trigger of the owner's migrations). Others may read it, ideally through what the owner
publishes (the directory's `client_summary` view), and a write they need goes through one
function of the owner, which the composition root hands them: no part imports another for it.
tests/test_db.py checks all of it against the code and the schema.
"""

from __future__ import annotations

from collections.abc import Callable

OWNERS: dict[str, str] = {
    "schema_version": "db",
    # the call log (pbxlink/calllog)
    "calls": "calllog",
    "call_extensions": "calllog",
    "open_calls": "calllog",
    "recording_access": "calllog",
    # the client directory (pbxlink/clients)
    "categories": "clients",
    "clients": "clients",
    "client_phones": "clients",
    "orders": "clients",
    "client_summary": "clients",  # a view: what other parts read of a client
}

#: one write as SQL and its parameters, for the caller to run inside its own transaction: the
#: owner's write commits or rolls back with the caller's (a merge stays atomic), on an
#: aiosqlite connection (the directory) or a sqlite3 one (the CSV import) alike
Statement = tuple[str, tuple[object, ...]]

#: the call log's "move every call of client `from_client` to client `to_client`"
#: (`pbxlink.calllog.links.relink_calls`), which the directory's merges run
RelinkCalls = Callable[[int, int], Statement]
