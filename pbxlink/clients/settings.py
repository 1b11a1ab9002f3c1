"""The [clients] section: how numbers are read, and the CRM sources asked at ring time; and
`Config`, what the client directory reads of the whole config.

Two keys are more than plain values, each read by the `Reader` of its annotation: `region`
must be a country `phonenumbers` knows, and each [[clients.sources]] table becomes a source
(checked now, connected when first asked).
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

import phonenumbers
from msgspec import Meta

from pbxlink.clients.sources import source_from_dict
from pbxlink.db.settings import StorageConfig
from pbxlink.settings import ConfigError, Count, Positive, Reader, Section, Strings, check


def _region(where: str, value: Any) -> str:
    code = check(where, str, value).upper()
    if phonenumbers.country_code_for_region(code) == 0:
        raise ConfigError(f"{where}: expected {REGION}; got {value!r}")
    return code


def _sources(where: str, value: Any) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{where}: expected [[clients.sources]] tables")
    return tuple(source_from_dict(f"{where}[{i}]", table) for i, table in enumerate(value))


REGION = "a country code such as GE, UA, US"
#: an ISO country code, stored upper-case
Region = Annotated[str, Meta(description=REGION), Reader(_region)]
#: pbxlink.clients.sources.Source objects, in chain order
Sources = Annotated[tuple[Any, ...], Reader(_sources)]


class ClientsConfig(Section):
    region: Region = "GE"  # numbers without a country code are read as this country's
    register_unknown: bool = True  # an unknown caller becomes a `potential` client
    strip_prefixes: Strings = ("9", "0", "8")
    last_digits: Count = 9
    lookup_budget_ms: Positive = 50.0
    sources: Sources = ()


class Config(Protocol):
    """The whole config as the client directory reads it (`pbxlink.config.Config` is the one
    the loader builds)."""

    @property
    def storage(self) -> StorageConfig: ...

    @property
    def clients(self) -> ClientsConfig: ...
