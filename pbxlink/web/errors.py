"""Every error the web API sends is JSON in one shape, never HTML, plain text or a traceback:

    {"error": "bad_request", "message": "limit: expected ...", "field": "limit"}

Clients (the operator page, scripts, monitoring) branch on `error`, a stable code; `message`
is for people; `field` names the query parameter or body field at fault, whichever route it
is (`needed`: the role a 403 needs; `what`: what a 404 did not find). docs/api.md lists them.
Handlers raise `ApiError` for their own errors; aiohttp's HTTPExceptions (404, 405, 413, ...)
are converted here; anything else is a bug: 500 `internal`, logged with its traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from pbxlink.calllog.params import QueryError

log = structlog.get_logger("pbxlink.web")

# Codes for the statuses aiohttp raises itself; anything else becomes "http_<status>".
CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    431: "headers_too_large",
    500: "internal",
    501: "not_implemented",
    503: "unavailable",
}
# Headers of an aiohttp HTTPException worth keeping (the body headers are rebuilt).
KEEP_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After", "Location")


class ApiError(Exception):
    """An error a handler means to send: status, stable code, message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> web.Response:
        body = {"error": self.code, "message": self.message, **self.extra}
        return web.json_response(body, status=self.status, headers=self.headers)


def bad_request(exc: QueryError) -> ApiError:
    """The 400 every read route answers for a query parameter it cannot use."""
    return ApiError(400, "bad_request", str(exc), field=exc.param)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    default_text = f"{exc.status}: {exc.reason}"
    message = exc.text if exc.text and exc.text != default_text else exc.reason
    headers = {k: exc.headers[k] for k in KEEP_HEADERS if k in exc.headers}
    code = CODES.get(exc.status, f"http_{exc.status}")
    return ApiError(exc.status, code, message, headers=headers).response()


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: turns whatever escapes a handler into a JSON error."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise  # redirects, and errors a handler already made JSON itself
        return _from_http_exception(exc)
    except Exception:
        # The traceback goes to the log, never to the client.
        log.exception("web.request_failed", method=request.method, path=request.path)
        return ApiError(500, "internal", "internal server error").response()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or a 400 `bad_json` that says what is wrong and where.

    Reading is capped by the app's `client_max_size`: a bigger body is a 413, refused before
    reading when its Content-Length already says so.
    """
    limit, length = request.client_max_size, request.content_length
    if limit and length is not None and length > limit:
        raise ApiError(413, "body_too_large", f"request body is {length} bytes, max {limit}")
    body = await request.read()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_json", f"body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise ApiError(400, "bad_json", "empty body, expected JSON")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "bad_json", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # NaN, Infinity
        raise ApiError(400, "bad_json", str(exc)) from None
    except RecursionError:
        raise ApiError(400, "bad_json", "JSON nested too deeply") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    """`read_json` for the usual case: the body must be one JSON object."""
    value = await read_json(request)
    if not isinstance(value, dict):
        raise ApiError(400, "bad_json", f"expected a JSON object, got {type(value).__name__}")
    return value


# -- what aiohttp answers before any middleware ------------------------------------------------

#: what a request aiohttp could not read gets as `message`: never the request's own bytes
UNREADABLE = {
    LineTooLong: "the request line or a header is longer than this server reads",
    HttpProcessingError: "the request could not be read as HTTP",
}


class JsonErrorHandler(RequestHandler):
    """A connection whose unreadable requests are answered in the API's one error shape.

    aiohttp answers a request it cannot parse (a request line or a header past its limits, a
    malformed request) itself, before any middleware can see it: text/plain, with the parser's
    message, which quotes the request. Here that answer is JSON like every other error, and
    says what went wrong without repeating what was sent."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # its log; raises once bytes are out
        text = next(
            (said for kind, said in UNREADABLE.items() if isinstance(exc, kind)), _phrase(status)
        )
        response = ApiError(status, CODES.get(status, f"http_{status}"), text).response()
        response.force_close()
        return response


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        handler.__class__ = JsonErrorHandler  # the same slots: only handle_error differs
        return handler


class JsonErrorRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `JsonErrorHandler`s. aiohttp has no setting for
    the handler class, so the server it builds gets ours; tests/test_web.py sends the
    requests aiohttp refuses and checks the answers, so an aiohttp upgrade cannot undo it."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server
