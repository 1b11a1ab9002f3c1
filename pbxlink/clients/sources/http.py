"""An HTTP JSON source: the CRM's REST API, asked with a GET per number.

The number goes into the URL template URL-quoted (`+` becomes `%2B`), so a template may put
it in the path or the query string. Only a 200 with a JSON body is an answer; 404 is the
normal "no such client" and is not logged as an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp

from pbxlink.clients.cardfields import CARD_FIELDS, ORDER_KEYS, ORDER_PREFIX, CardFields, build
from pbxlink.clients.sources.base import (
    BadArgument,
    NumberForm,
    Source,
    SourceError,
    TtlCache,
    check_base,
    check_count,
    check_fields,
    from_table,
)
from pbxlink.clients.sources.paths import JsonPath, compile_path

PLACEHOLDER = "{number}"
MAX_BODY_BYTES = 1 << 20  # a client card, not a data export: 1 MiB is generous


def _user_agent() -> str:
    try:
        return f"pbxlink/{metadata.version('pbxlink')}"
    except metadata.PackageNotFoundError:
        return "pbxlink"


@dataclass(slots=True, eq=False)
class HttpSource(Source):
    """GET `url_template` with the number in it; `fields` maps card fields to JSON paths.

    `fields` keys: the card fields (`name`, `company`, ...) and `orders.number`,
    `orders.stage`, `orders.responsible`, `orders.debt`, `orders.open`, whose paths usually
    contain `[*]` (one order per list element, lined up by position). `headers` are sent
    with every request (an API key, say) and never logged.
    """

    kind: ClassVar[str] = "http"
    name: str
    url_template: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    fields: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 2.0
    cache_ttl_s: float = 300.0
    number_form: NumberForm = "e164"
    cache_size: int = 10_000
    max_body_bytes: int = MAX_BODY_BYTES
    max_connections: int = 10
    _paths: dict[str, JsonPath] = field(init=False, repr=False)
    _cache: TtlCache = field(init=False, repr=False)
    _inflight: dict[str, Any] = field(init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        check_base(self.name, self.timeout_s, self.cache_ttl_s, self.cache_size, self.number_form)
        _check_url(self.url_template)
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise BadArgument("headers", "expected a table of strings")
        check_count("max_body_bytes", self.max_body_bytes)
        check_count("max_connections", self.max_connections)
        self.fields = check_fields(self.fields)
        self._paths = {}
        for key, text in self.fields.items():
            try:
                self._paths[key] = compile_path(text)
            except ValueError as exc:
                raise BadArgument(f"fields.{key}", str(exc)) from None
        self._cache = TtlCache(self.cache_ttl_s, self.cache_size)
        self._inflight = {}

    def url_for(self, value: str) -> str:
        return self.url_template.replace(PLACEHOLDER, quote(value, safe=""))

    def _client(self) -> aiohttp.ClientSession:
        """One session per source, made on first use (it must be made inside the loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                headers={"Accept": "application/json", "User-Agent": _user_agent()},
                trust_env=False,
            )
        return self._session

    async def _fetch(self, value: str) -> CardFields | None:
        client = self._client()
        url = self.url_for(value)
        async with client.get(url, headers=self.headers, allow_redirects=False) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise SourceError(f"HTTP {resp.status}")
            ctype = resp.content_type
            if not (ctype == "application/json" or ctype.endswith("+json")):
                raise SourceError(f"not JSON: content type {ctype!r}")
            if resp.content_length is not None and resp.content_length > self.max_body_bytes:
                raise SourceError(f"body over {self.max_body_bytes} bytes")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self.max_body_bytes:
                    raise SourceError(f"body over {self.max_body_bytes} bytes")
        try:
            data = json.loads(bytes(body))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise SourceError(f"bad JSON: {exc}") from None
        return self.card_from(data)

    def card_from(self, data: Any) -> CardFields | None:
        """Apply the field paths to a decoded answer."""
        scalars: dict[str, Any] = {}
        for name in CARD_FIELDS:
            path = self._paths.get(name)
            if path is not None:
                value = path.get(data)
                if path.many:  # a list where one value is wanted: the first there is
                    value = next((v for v in value if v is not None), None)
                scalars[name] = value
        columns = {
            key: self._paths[ORDER_PREFIX + key].get(data)
            for key in ORDER_KEYS
            if ORDER_PREFIX + key in self._paths
        }
        lists = {k: v if isinstance(v, list) else [v] for k, v in columns.items()}
        count = max((len(v) for v in lists.values()), default=0)
        orders = [{k: v[i] if i < len(v) else None for k, v in lists.items()} for i in range(count)]
        return build(scalars, orders)

    async def close(self) -> None:
        await Source.close(self)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @classmethod
    def from_dict(cls, where: str, table: dict[str, Any]) -> HttpSource:
        """A source from its config table; ConfigError names `where` and the key.

        Keys: type = "http", name, url (with {number}), headers, fields, timeout_s,
        cache_ttl_s, cache_size, number_form, max_body_bytes, max_connections.
        """
        return from_table(cls, where, table, {"url": "url_template"}, required=("name", "url"))


def _check_url(template: Any) -> None:
    if not isinstance(template, str) or PLACEHOLDER not in template:
        raise BadArgument("url", f"expected a URL with {PLACEHOLDER} in it, got {template!r}")
    parts = urlsplit(template.replace(PLACEHOLDER, "1"))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadArgument("url", f"expected an http:// or https:// URL, got {template!r}")
