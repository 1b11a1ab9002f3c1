"""External sources: the CRM the company already has, asked when a phone rings.

A configured chain like FreePBX's CID Superfecta, but out of band: the popup goes out within
a budget with what is known, and a slow source's answer follows as an update.

- `HttpSource`: a GET to the CRM's JSON API; `fields` maps card fields to JSON paths
  (`paths` says the syntax).
- `SqlSource`: one read-only SELECT against the CRM's PostgreSQL or MariaDB/MySQL database.
- `LookupChain`: asks them all concurrently within `budget_s`; chain order wins per field.

Each source has its own `timeout_s` and TTL cache (answers and "not found"s, keyed by the
number as sent); a source that fails or times out is logged (`sources.failed`) and skipped.
"""

from pbxlink.clients.cardfields import CARD_FIELDS, ORDER_KEYS, CardFields, merge
from pbxlink.clients.sources.base import NUMBER_FORMS, BadArgument, Source, number_value
from pbxlink.clients.sources.chain import LookupChain, LookupResult, source_from_dict
from pbxlink.clients.sources.http import HttpSource
from pbxlink.clients.sources.paths import compile_path
from pbxlink.clients.sources.sql import SqlSource

__all__ = [
    "CARD_FIELDS",
    "NUMBER_FORMS",
    "ORDER_KEYS",
    "BadArgument",
    "CardFields",
    "HttpSource",
    "LookupChain",
    "LookupResult",
    "Source",
    "SqlSource",
    "compile_path",
    "merge",
    "number_value",
    "source_from_dict",
]
