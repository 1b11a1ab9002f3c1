"""An SQL source: one read-only, parameterised SELECT against the CRM's own database.

PostgreSQL (`postgresql://user:pass@host:5432/db`, through asyncpg) or MariaDB/MySQL
(`mysql://user:pass@host:3306/db`, through aiomysql). The query names the number once or more
as `:number`; it is sent as a bound parameter (`$1` / `%s`), never formatted into the SQL.

Read-only, three times over: the query must be a single SELECT (checked when the config is
read: no `;` chains, no `INTO`, no `FOR UPDATE`), it runs inside a READ ONLY transaction (so
a function with side effects called from the SELECT fails), and the sessions themselves are
read-only (PostgreSQL `default_transaction_read_only`, MariaDB `SET SESSION TRANSACTION READ
ONLY`). The database user should still be one that can
only read: the checks guard against mistakes, the grants against everything.

First row wins: the card fields come from the first row (add ORDER BY where several rows may
match); the `orders.*` columns are read from every row (a customer LEFT JOIN orders query
gives one row per order), at most `max_rows` rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

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

log = structlog.get_logger("pbxlink.clients")

Dialect = Literal["postgresql", "mysql"]
SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
PARAM = "number"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_FORBIDDEN = (
    (re.compile(r"\binto\b", re.I), "SELECT ... INTO writes (a table, a variable, a file)"),
    (
        re.compile(r"\bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b", re.I),
        "FOR UPDATE/SHARE locks the CRM's rows",
    ),
    (re.compile(r"\block\s+in\s+share\s+mode\b", re.I), "LOCK IN SHARE MODE locks rows"),
)

Segment = tuple[Literal["code", "literal", "comment", "param"], str]


def scan(query: str, dialect: Dialect) -> list[Segment]:
    """Cut SQL into code, string literals/quoted names, comments and `:name` parameters.

    Enough of each dialect's lexing that a `:number` or `;` inside a string or a comment is
    not taken for one, and `::text` (a PostgreSQL cast) is not a parameter.
    """
    out: list[Segment] = []
    code: list[str] = []
    i, n = 0, len(query)

    def flush() -> None:
        if code:
            out.append(("code", "".join(code)))
            code.clear()

    while i < n:
        c = query[i]
        two = query[i : i + 2]
        if c in "'\"`":
            escapes = dialect == "mysql" and c != "`"
            if dialect == "postgresql" and c == "'" and i > 0 and query[i - 1] in "eE":
                escapes = not (i > 1 and (query[i - 2].isalnum() or query[i - 2] == "_"))
            end = _quoted_end(query, i, c, escapes)
            flush()
            out.append(("literal", query[i:end]))
            i = end
        elif two == "--" or (c == "#" and dialect == "mysql"):
            end = query.find("\n", i)
            end = n if end < 0 else end + 1
            flush()
            out.append(("comment", query[i:end]))
            i = end
        elif two == "/*":
            end = query.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment")
            flush()
            out.append(("comment", query[i : end + 2]))
            i = end + 2
        elif c == "$" and dialect == "postgresql" and (m := _DOLLAR_TAG.match(query, i)):
            end = query.find(m.group(), m.end())
            if end < 0:
                raise ValueError(f"unterminated {m.group()} string")
            flush()
            out.append(("literal", query[i : end + len(m.group())]))
            i = end + len(m.group())
        elif two == "::":
            code.append(two)
            i += 2
        elif c == ":" and (m := _WORD.match(query, i + 1)):
            flush()
            out.append(("param", m.group()))
            i = m.end()
        else:
            code.append(c)
            i += 1
    flush()
    return out


def _quoted_end(query: str, start: int, quote: str, escapes: bool) -> int:
    i = start + 1
    while i < len(query):
        c = query[i]
        if escapes and c == "\\":
            i += 2
            continue
        if c == quote:
            if query[i + 1 : i + 2] == quote:  # a doubled quote stands for itself
                i += 2
                continue
            return i + 1
        i += 1
    raise ValueError(f"unterminated {quote} quote")


def prepare(query: str, dialect: Dialect) -> tuple[str, int]:
    """Check that `query` is one SELECT with `:number`; give the driver's SQL and its
    number of placeholders. ValueError says why a query is refused."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("expected a SELECT statement")
    segments = scan(query, dialect)
    # a trailing `;` (and comments after it) is harmless: drop it
    while segments and (segments[-1][0] == "comment" or not segments[-1][1].strip()):
        segments.pop()
    if segments and segments[-1][0] == "code" and segments[-1][1].rstrip().endswith(";"):
        segments[-1] = ("code", segments[-1][1].rstrip()[:-1])
    code = " ".join(text for kind, text in segments if kind == "code")
    if not re.match(r"\s*select\b", code, re.I):
        raise ValueError("only a single SELECT statement is allowed")
    if ";" in code:
        raise ValueError("only a single statement is allowed (found ';')")
    for pattern, why in _FORBIDDEN:
        if pattern.search(code):
            raise ValueError(f"not allowed in a lookup: {why}")
    params = [text for kind, text in segments if kind == "param"]
    others = sorted({p for p in params if p != PARAM})
    if others:
        raise ValueError(f"unknown parameter :{others[0]} (the only one is :{PARAM})")
    if not params:
        raise ValueError(f"the query must use :{PARAM} (the caller's number)")
    parts: list[str] = []
    for kind, text in segments:
        if kind == "param":
            parts.append("$1" if dialect == "postgresql" else "%s")
        elif dialect == "mysql":
            parts.append(text.replace("%", "%%"))  # the driver %-formats the whole string
        else:
            parts.append(text)
    return "".join(parts), len(params)


def parse_dsn(dsn: Any) -> tuple[Dialect, dict[str, Any]]:
    """The dialect, and for MySQL the connection arguments (asyncpg takes the DSN itself)."""
    if not isinstance(dsn, str):
        raise ValueError("expected a postgresql:// or mysql:// URL")
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    dialect = SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        raise ValueError(f"expected postgresql:// or mysql://, got {parts.scheme or dsn!r}://")
    if dialect == "postgresql":
        return dialect, {}
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - {"unix_socket", "charset"})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: unix_socket, charset)")
    if not parts.hostname and "unix_socket" not in options:
        raise ValueError("no host (or ?unix_socket=...)")
    return dialect, {
        "host": parts.hostname or "localhost",
        "port": port or 3306,
        "user": unquote(parts.username or "") or None,
        "password": unquote(parts.password or ""),
        "db": unquote(parts.path.lstrip("/")) or None,
        "unix_socket": options.get("unix_socket"),
        "charset": options.get("charset", "utf8mb4"),
    }


def _lost_connection(exc: BaseException) -> bool:
    """An error that a fresh connection would not have: worth one retry."""
    if isinstance(exc, ConnectionError):
        return True
    try:
        import asyncpg
    except ImportError:
        pass
    else:
        lost = (
            asyncpg.ConnectionDoesNotExistError,
            asyncpg.InterfaceError,
            asyncpg.AdminShutdownError,
            # a connection the server just closed, whose close asyncpg has read only halfway:
            # "cannot switch to state 15; another operation (2) is in progress"
            asyncpg.InternalClientError,
        )
        if isinstance(exc, lost):
            return True
    try:
        import pymysql
    except ImportError:
        return False
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    # 2006 server has gone away, 2013 lost connection during query, 4031 idle disconnect
    return isinstance(exc, pymysql.err.OperationalError) and exc.args[:1] in (
        (2006,),
        (2013,),
        (4031,),
    )


@dataclass(slots=True, eq=False)
class SqlSource(Source):
    """Run `query` with the number as `:number`; `fields` maps card fields to columns."""

    kind: ClassVar[str] = "sql"
    name: str
    dsn: str = field(repr=False)  # may hold a password: never logged
    query: str
    fields: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 2.0
    cache_ttl_s: float = 300.0
    number_form: NumberForm = "e164"
    cache_size: int = 10_000
    pool_size: int = 4
    max_rows: int = 50
    _dialect: Dialect = field(init=False, repr=False)
    _sql: str = field(init=False, repr=False)
    _placeholders: int = field(init=False, repr=False)
    _connect: dict[str, Any] = field(init=False, repr=False)
    _pool: Any = field(init=False, repr=False, default=None)
    _pool_lock: asyncio.Lock = field(init=False, repr=False)
    _ready: weakref.WeakSet[Any] = field(init=False, repr=False)
    _cache: TtlCache = field(init=False, repr=False)
    _inflight: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_base(self.name, self.timeout_s, self.cache_ttl_s, self.cache_size, self.number_form)
        try:
            self._dialect, self._connect = parse_dsn(self.dsn)
        except ValueError as exc:
            raise BadArgument("dsn", str(exc)) from None
        try:
            self._sql, self._placeholders = prepare(self.query, self._dialect)
        except ValueError as exc:
            raise BadArgument("query", str(exc)) from None
        self.fields = check_fields(self.fields)
        check_count("pool_size", self.pool_size)
        check_count("max_rows", self.max_rows)
        self._pool_lock = asyncio.Lock()
        self._ready = weakref.WeakSet()
        self._cache = TtlCache(self.cache_ttl_s, self.cache_size)
        self._inflight = {}

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def _fetch(self, value: str) -> CardFields | None:
        try:
            rows = await self._rows(value)
        except Exception as exc:
            if not _lost_connection(exc):
                raise
            log.info("sources.reconnect", source=self.name, error=type(exc).__name__)
            rows = await self._rows(value)  # a dead pooled connection: once more, on a new one
        return self.card_from(rows)

    def card_from(self, rows: list[dict[str, Any]]) -> CardFields | None:
        if not rows:
            return None
        missing = sorted({c for c in self.fields.values() if c not in rows[0]})
        if missing:
            raise SourceError(f"column {missing[0]!r} not in the result ({', '.join(rows[0])})")
        first = rows[0]
        scalars = {name: first[self.fields[name]] for name in CARD_FIELDS if name in self.fields}
        order_columns = {
            key: self.fields[ORDER_PREFIX + key]
            for key in ORDER_KEYS
            if ORDER_PREFIX + key in self.fields
        }
        orders = (
            [{key: row[col] for key, col in order_columns.items()} for row in rows]
            if order_columns
            else []
        )
        return build(scalars, orders)

    async def _rows(self, value: str) -> list[dict[str, Any]]:
        pool = await self._get_pool()
        if self._dialect == "postgresql":
            return await self._pg_rows(pool, value)
        return await self._mysql_rows(pool, value)

    async def _get_pool(self) -> Any:
        """The pool is made on first use, so a CRM that is down at start-up delays nothing;
        it connects lazily (no connection is opened until a lookup needs one)."""
        async with self._pool_lock:
            if self._pool is None:
                if self._dialect == "postgresql":
                    import asyncpg

                    settings = {
                        "application_name": "pbxlink",  # unless the DSN names it
                        "default_transaction_read_only": "on",
                        # the server stops a query we gave up on
                        "statement_timeout": str(max(1, int(self.timeout_s * 1000))),
                    }
                    if "application_name" in dict(parse_qsl(urlsplit(self.dsn).query)):
                        del settings["application_name"]
                    self._pool = await asyncpg.create_pool(
                        dsn=self.dsn,
                        min_size=0,
                        max_size=self.pool_size,
                        max_inactive_connection_lifetime=60.0,
                        timeout=self.timeout_s,  # connecting
                        server_settings=settings,
                    )
                else:
                    import aiomysql

                    self._pool = await aiomysql.create_pool(
                        minsize=0,
                        maxsize=self.pool_size,
                        pool_recycle=300,
                        autocommit=True,
                        connect_timeout=self.timeout_s,
                        **{k: v for k, v in self._connect.items() if v is not None},
                    )
            return self._pool

    async def _pg_rows(self, pool: Any, value: str) -> list[dict[str, Any]]:
        async with pool.acquire() as conn:
            try:
                async with conn.transaction(readonly=True):  # BEGIN ... READ ONLY
                    cursor = await conn.cursor(self._sql, value)
                    records = await cursor.fetch(self.max_rows)
            except BaseException:
                # cancelled or failed mid-query: its state is unknown, the pool makes a new one
                with contextlib.suppress(Exception):  # already closed: the pool knows
                    conn.terminate()
                raise
        return [dict(record) for record in records]

    async def _mysql_rows(self, pool: Any, value: str) -> list[dict[str, Any]]:
        import aiomysql

        async with pool.acquire() as conn:
            try:
                if conn not in self._ready:
                    async with conn.cursor() as cur:
                        await cur.execute("SET SESSION TRANSACTION READ ONLY")
                    await self._limit_statement_time(conn)
                    self._ready.add(conn)
                async with conn.cursor(aiomysql.DictCursor) as cur:
                    await cur.execute("START TRANSACTION READ ONLY")
                    await cur.execute(self._sql, (value,) * self._placeholders)
                    rows = await cur.fetchmany(self.max_rows)
                    await cur.execute("ROLLBACK")
            except BaseException:
                conn.close()  # its state is unknown: the pool drops it and makes a new one
                raise
        return list(rows)

    async def _limit_statement_time(self, conn: Any) -> None:
        """The server stops a query we gave up on: MariaDB's max_statement_time (seconds),
        else MySQL's max_execution_time (milliseconds). A server with neither still works:
        the query is then left to finish on a connection we closed."""
        seconds, ms = float(self.timeout_s), max(1, int(self.timeout_s * 1000))
        for statement in (
            f"SET SESSION max_statement_time = {seconds!r}",
            f"SET SESSION max_execution_time = {ms}",
        ):
            try:
                async with conn.cursor() as cur:
                    await cur.execute(statement)
                return
            except Exception as exc:
                if _lost_connection(exc):
                    raise

    async def close(self) -> None:
        await Source.close(self)
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._dialect == "postgresql":
            try:
                async with asyncio.timeout(2.0):
                    await pool.close()
            except Exception:  # TimeoutError included
                pool.terminate()
        else:
            pool.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await pool.wait_closed()

    @classmethod
    def from_dict(cls, where: str, table: dict[str, Any]) -> SqlSource:
        """A source from its config table; ConfigError names `where` and the key.

        Keys: type = "sql", name, dsn, query, fields, timeout_s, cache_ttl_s, cache_size,
        number_form, pool_size, max_rows.
        """
        return from_table(cls, where, table, {}, required=("name", "dsn", "query"))
