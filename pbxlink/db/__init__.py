"""Owns the database file: connecting, every migration in the order deployed databases applied
them, which part owns (alone writes) each table, and the [storage] settings (settings.py).
Imports no other part of pbxlink."""

from pbxlink.db.connect import connect
from pbxlink.db.migrate import SchemaError, migrate, statements
from pbxlink.db.migrations import HISTORY, MIGRATIONS, Migration
from pbxlink.db.owners import OWNERS, RelinkCalls, Statement

__all__ = [
    "HISTORY",
    "MIGRATIONS",
    "OWNERS",
    "Migration",
    "RelinkCalls",
    "SchemaError",
    "Statement",
    "connect",
    "migrate",
    "statements",
]
