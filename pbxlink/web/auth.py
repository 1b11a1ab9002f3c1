"""Token authentication and roles, secure by default.

Every route needs a valid operator token unless its handler is marked `@public`; a route
someone forgets to mark is protected, not open. `@requires("supervisor")` raises the bar;
roles are ordered operator < supervisor < admin, so a higher role may do what a lower one may.
The marks are plain attributes on the handler, read by the middleware from the matched route,
so they work in any decorator order, with `RouteTableDef` and with class-based views.

The token comes from `Authorization: Bearer <token>`, or for the browser page from a `token`
cookie, accepted on GET/HEAD only: a cookie rides along on cross-site requests, so it must
never authorise a write (the page sends the header for those).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pbxlink.loglimit import LogLimit
from pbxlink.operators import ROLES, Operator, Operators, Role
from pbxlink.web.errors import ApiError

log = structlog.get_logger("pbxlink.web")

Access = Role | Literal["public"]
ACCESS_ATTR = "_pbxlink_access"
DEFAULT_ACCESS: Access = "operator"  # unmarked: any authenticated operator
# request[OPERATOR]: the authenticated Operator (handlers use operator_of). A typed RequestKey
# where aiohttp has one (3.14+; a plain str key warns there), the plain key before.
OPERATOR: Any = web.RequestKey("operator", Operator) if hasattr(web, "RequestKey") else "operator"
COOKIE = "token"
COOKIE_METHODS = frozenset({"GET", "HEAD"})
MAX_TOKEN_CHARS = 512  # `pbxlink token` makes 43; anything this long is not ours
# RFC 6750 b64token; checking it first also keeps non-ASCII (surrogate-escaped) bytes from
# ever reaching hash_token's str.encode().
BEARER = re.compile(r"bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE)
CHALLENGE = 'Bearer realm="pbxlink"'

H = TypeVar("H")


def public(handler: H) -> H:
    """Mark a handler as open to anyone (health checks, metrics, the login page)."""
    setattr(handler, ACCESS_ATTR, "public")
    return handler


def requires(role: Role) -> Callable[[H], H]:
    """Mark a handler as needing at least `role`."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}, expected one of {', '.join(ROLES)}")

    def mark(handler: H) -> H:
        setattr(handler, ACCESS_ATTR, role)
        return handler

    return mark


def route_access(route: web.AbstractRoute) -> Access:
    """What a route needs: "public" or the lowest role allowed."""
    return getattr(route.handler, ACCESS_ATTR, DEFAULT_ACCESS)


def allows(operator: Operator, needed: Role) -> bool:
    return ROLES.index(operator.role) >= ROLES.index(needed)


def operator_of(request: web.Request) -> Operator:
    """The authenticated operator, in a handler of a non-public route."""
    operator: Operator = request[OPERATOR]
    return operator


def call_scope(request: web.Request) -> tuple[str, ...] | None:
    """Whose calls the request's operator sees: its own extensions', or (None) every call
    for supervisors and admins. The one rule the call log, its recordings and exports use."""
    op = operator_of(request)
    return None if allows(op, "supervisor") else op.extensions


def _unauthorized(message: str, *, invalid: bool) -> ApiError:
    challenge = f'{CHALLENGE}, error="invalid_token"' if invalid else CHALLENGE
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def _token(request: web.Request) -> str | None:
    """The presented token; raises 401 for a malformed one, None when there is none."""
    header = request.headers.get("Authorization")
    if header is not None:
        match = BEARER.fullmatch(header) if len(header) <= MAX_TOKEN_CHARS + 16 else None
        if match is None:
            raise _unauthorized(
                "malformed Authorization header, expected 'Bearer <token>'", invalid=True
            )
        return match.group(1)
    if request.method in COOKIE_METHODS:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            if len(cookie) > MAX_TOKEN_CHARS or not BEARER.fullmatch("bearer " + cookie):
                raise _unauthorized("malformed token cookie", invalid=True)
            return cookie
    return None


def authenticate(operators: Operators, request: web.Request, limit: LogLimit) -> Operator:
    """The operator whose token the request carries, or a 401. A refused token is logged
    `web.auth_failed` within `limit`'s rate (anyone can send one) and always counted."""
    try:
        token = _token(request)
    except ApiError:
        limit.warning(
            log, "web.auth_failed", reason="malformed", path=request.path, remote=request.remote
        )
        raise
    if token is None:
        raise _unauthorized(
            "this needs a token: send 'Authorization: Bearer <token>'", invalid=False
        )
    operator = operators.by_token(token)
    if operator is None:
        limit.warning(
            log,
            "web.auth_failed",
            reason="unknown token",
            path=request.path,
            remote=request.remote,
        )
        raise _unauthorized("invalid token", invalid=True)
    return operator


def auth_middleware(operators: Operators, limit: LogLimit) -> Middleware:
    """Authenticates every request to a non-public route and checks its role; `limit`
    holds back the log lines of refused tokens past its rate."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        if match.http_exception is not None:
            return await handler(request)  # 404/405: no route, nothing to protect
        needed = route_access(match.route)
        if needed == "public":
            return await handler(request)
        operator = authenticate(operators, request, limit)
        if not allows(operator, needed):
            log.info("web.forbidden", operator=operator.name, needed=needed, path=request.path)
            raise ApiError(403, "forbidden", f"this needs the {needed} role", needed=needed)
        request[OPERATOR] = operator
        return await handler(request)

    return middleware
