"""One declaration per route: `Route` mounts the handler and is what the OpenAPI document says.

A route names its method and path, its role, its query and body models (msgspec Structs) and
its answers; `mount` adds it to the app wrapped so that its query and JSON body arrive already
checked (`query_of`, `body_of`), and records it for pbxlink.web.openapi, which builds the
document from these declarations alone. A request the models refuse is the API's one 400
shape, naming the field or parameter at fault (`invalid`). Answers are encoded with msgspec
(`respond`): the same JSON as the json module, several times faster.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from aiohttp import web

from pbxlink.web.auth import ACCESS_ATTR, Access
from pbxlink.web.errors import ApiError, read_object

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

# request[...] keys: the checked query and body of the request, for the handler
QUERY: Any = web.RequestKey("query", object) if hasattr(web, "RequestKey") else "spec.query"
BODY: Any = web.RequestKey("body", object) if hasattr(web, "RequestKey") else "spec.body"
ROUTES = web.AppKey("routes", list)  # the Routes mounted on an app, in order
# aiohttp's `{name:regex}` -> OpenAPI's `{name}`; `\d+` is the one regex routes use (an id)
_PATH_VAR = re.compile(r"\{(\w+)(?::([^{}]*(?:\{[^{}]*\}[^{}]*)*))?\}")
_AT = re.compile(r" - at `\$(.*)`$")
_NAMED = re.compile(r"Object (missing required|contains unknown) field `([^`]*)`")


class NoQuery(msgspec.Struct, forbid_unknown_fields=True):
    """A route that takes no query parameter: any is a 400 (a typo silently ignored would
    answer another question)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented response: a JSON `model`, or raw `content` (media type -> OpenAPI)."""

    description: str
    model: Any = None
    content: Mapping[str, Any] | None = None
    headers: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A route: mounted by `mount`, documented by pbxlink.web.openapi from this alone.

    `role` is who may call it (web/auth.py reads it from the mounted handler, which needs no
    `@public` or `@requires` of its own); `path` is aiohttp's (`{id:\\d+}`: an integer id,
    documented as one); `query` a Struct whose fields are the query parameters (checked
    before the handler runs unless `check_query` is False: the call log's filters have a
    parser of their own, which answers in the same shape); `body` a Struct the JSON body must
    match, or raw media (media type -> schema); `errors` the error statuses and when (401 and
    a role's 403 are added)."""

    method: str
    path: str
    op_id: str
    summary: str
    tag: str
    ok: Mapping[int, Answer]
    errors: Mapping[int, str] = field(default_factory=dict)
    role: Access = "operator"
    query: type[msgspec.Struct] | None = None
    check_query: bool = True
    body: type[msgspec.Struct] | Mapping[str, Any] | None = None
    description: str | None = None
    handler: Handler | None = None
    extra_params: tuple[dict[str, Any], ...] = ()
    components: tuple[Any, ...] = ()  # models referred to by hand (`$ref`) in another's schema

    @property
    def openapi_path(self) -> str:
        return _PATH_VAR.sub(r"{\1}", self.path)

    def path_params(self) -> list[tuple[str, bool]]:
        """(name, is an integer id) of each path variable, in order."""
        return [(m[1], m[2] == r"\d+") for m in _PATH_VAR.finditer(self.path)]


def mount(
    app: web.Application, routes: list[Route], handlers: Mapping[str, Handler] | None = None
) -> None:
    """Add `routes` to `app` in order; a route without a handler takes `handlers[op_id]`."""
    if ROUTES not in app:
        app[ROUTES] = []
    for route in routes:
        handler = route.handler or (handlers or {}).get(route.op_id)
        if handler is None:
            raise ValueError(f"{route.op_id}: no handler to mount")
        checked = _checked(route, handler)
        if route.method == "GET":  # and HEAD, as aiohttp's add_get does
            app.router.add_get(route.path, checked)
        else:
            app.router.add_route(route.method, route.path, checked)
        app[ROUTES].append(route)


def _checked(route: Route, handler: Handler) -> Handler:
    query, body = route.query, route.body

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if query is not None and route.check_query:
            request[QUERY] = parse_query(request, query)
        if isinstance(body, type):
            request[BODY] = convert(await read_object(request), body, "field")
        return await handler(request)

    marked = getattr(handler, ACCESS_ATTR, route.role)
    if marked != route.role:  # the declaration is the one place a route's role is said
        raise ValueError(f"{route.op_id}: declared {route.role!r}, its handler says {marked!r}")
    setattr(wrapper, ACCESS_ATTR, route.role)
    return wrapper


def query_of(request: web.Request, model: type[T]) -> T:
    """The request's query, checked against the route's `query` model before the handler."""
    value = request[QUERY]
    assert isinstance(value, model)
    return value


def body_of(request: web.Request, model: type[T]) -> T:
    """The request's JSON body, checked against the route's `body` model before the handler."""
    value = request[BODY]
    assert isinstance(value, model)
    return value


def parse_query(request: web.Request, model: type[T]) -> T:
    """The query as `model`: each parameter at most once, known, of its declared type."""
    values: dict[str, str] = {}
    for key in request.query:
        given = request.query.getall(key)
        if len(given) > 1:
            raise ApiError(
                400, "bad_request", f"{key}: given {len(given)} times, expected once", field=key
            )
        values[key] = given[0]
    as_ints = {k: _whole(k, v) for k, v in values.items() if k in _int_fields(model)}
    return convert({**values, **as_ints}, model, "parameter", strict=False, given=values)


_DIGITS = re.compile(r"-?[0-9]+")


def _whole(name: str, raw: str) -> int:
    """A whole-number parameter as people write one (`05` too); msgspec's lax reading would
    also take `5.0` and `1e2`, which no client means as a count."""
    if len(raw) > 19:  # past any int64, and int() of thousands of digits is refused
        raise ApiError(400, "bad_request", f"{name}: not a number this API takes", field=name)
    if not _DIGITS.fullmatch(raw):
        raise ApiError(400, "bad_request", f"{name}: expected a whole number, got {raw!r}",
                       field=name)  # fmt: skip
    return int(raw)


@functools.cache
def _int_fields(model: type[Any]) -> frozenset[str]:
    info = msgspec.inspect.type_info(model)
    return frozenset(
        f.encode_name
        for f in getattr(info, "fields", ())
        if isinstance(f.type, msgspec.inspect.IntType)
    )


def convert(
    value: Any,
    model: type[T],
    noun: str,
    *,
    strict: bool = True,
    given: Mapping[str, Any] | None = None,
) -> T:
    """`value` as `model`, or the 400 naming what msgspec refused (`noun`: field, parameter)."""
    try:
        return msgspec.convert(value, model, strict=strict)
    except msgspec.ValidationError as exc:
        raise invalid(exc, model, noun, given) from None


def invalid(
    exc: msgspec.ValidationError,
    model: type[Any],
    noun: str = "field",
    given: Mapping[str, Any] | None = None,
) -> ApiError:
    """msgspec's "Expected `int`, got `str` - at `$.phones[0].label`" as the API's 400:
    `field` is the path without `$.` (phones[0].label), the message starts with it and says
    what was expected in words (and, for a query parameter, what was `given`)."""
    text = str(exc)
    at = _AT.search(text)
    where, reason = (at[1].lstrip("."), text[: at.start()]) if at else ("", text)
    named = _NAMED.match(reason)
    if named:
        where = f"{where}.{named[2]}" if where else named[2]
        if named[1] == "missing required":
            reason = "required"
        else:
            reason = f"unknown {noun}"
            if not at:
                known = getattr(model, "__struct_encode_fields__", ())
                reason += f" (known: {', '.join(known) or 'none'})"
    else:
        reason = _in_words(reason, model, where, given)
    where = where or "body"
    return ApiError(400, "bad_request", f"{where}: {reason}", field=where)


_TYPE_WORDS = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}
_EXPECTED = re.compile(r"Expected `([^`]*)`(.*?)(?:, got `([^`]*)`)?$")


def _in_words(reason: str, model: type[Any], where: str, given: Mapping[str, Any] | None) -> str:
    got = f", got {given[where]!r}" if given is not None and where in given else None
    if reason.startswith("Invalid enum value"):
        values = _choices(model, where)
        if values:
            return (
                f"expected one of {', '.join(values)}{got or reason[18:].replace(' ', ', got ', 1)}"
            )
    expected = _EXPECTED.match(reason)
    if expected is None:
        return reason[:1].lower() + reason[1:]
    kinds = " or ".join(_TYPE_WORDS.get(k, k) for k in expected[1].split(" | "))
    if got is None:
        got = f", got {_TYPE_WORDS.get(expected[3], expected[3])}" if expected[3] else ""
    return f"expected {kinds}{expected[2]}{got}"


def _choices(model: type[Any], name: str) -> tuple[str, ...]:
    try:
        info = msgspec.inspect.type_info(model)
    except TypeError:
        return ()
    for f in getattr(info, "fields", ()):
        if f.encode_name == name and isinstance(f.type, msgspec.inspect.LiteralType):
            return tuple(str(v) for v in f.type.values)
    return ()


def respond(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """`body` (Structs, dicts, lists) as JSON, encoded by msgspec."""
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
