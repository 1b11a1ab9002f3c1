"""Every migration of pbxlink's database, numbered as the databases in the field have them.

Migration N is `MIGRATIONS[N - 1]`. Each belongs to the part that owns the tables it creates or
changes (`HISTORY`); the list interleaves the owners in the order the migrations shipped, and
that order is fixed for good: a deployed database records versions, not names. A new one is
appended, whichever part it is for.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbxlink.db import calllog_schema as calllog
from pbxlink.db import clients_schema as clients


@dataclass(slots=True, frozen=True)
class Migration:
    owner: str  # the part (folder under pbxlink/) whose tables it creates or changes
    sql: str


HISTORY: tuple[Migration, ...] = (
    Migration("calllog", calllog.MIGRATION_1),
    Migration("calllog", calllog.MIGRATION_2),
    Migration("clients", clients.MIGRATION_3),
    Migration("calllog", calllog.MIGRATION_4),
    Migration("calllog", calllog.MIGRATION_5),
    Migration("calllog", calllog.MIGRATION_6),
    Migration("clients", clients.MIGRATION_7),
    Migration("calllog", calllog.MIGRATION_8),
)

MIGRATIONS: tuple[str, ...] = tuple(m.sql for m in HISTORY)
