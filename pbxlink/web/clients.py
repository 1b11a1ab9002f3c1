"""The client directory's REST API, under /api/clients. JSON in and out, UTF-8.

Operators read and edit clients (cards, phones, orders, photos); admins also delete clients
and orders, merge clients and add categories. An operator closes an order rather than
deleting it, so what the business owes stays on record. The routes, their bodies and answers
are declared once, in `ROUTES` below and pbxlink.web.cards; GET /api/openapi.json shows them.

The photo is a raw body, not multipart: `curl -T photo.jpg -H 'Content-Type: image/jpeg'` and
the page's `fetch(url, {method: "PUT", body: file})` both send exactly that, and it streams
past the API's 1 MiB JSON limit with a limit of its own. Errors are the API's one shape
(web/errors.py): 400 `bad_request` (and 413/415 for photos, 409 `conflict`) carry `field`, the
query parameter or body field at fault; 404 `not_found` names what was not found in `what`.
"""

from __future__ import annotations

import functools
from typing import Any

import structlog
from aiohttp import web

from pbxlink.calllog import query
from pbxlink.calllog.store import CallLogStore
from pbxlink.clients import photos
from pbxlink.clients.directory import MAX_ID, Directory
from pbxlink.clients.model import (
    Conflict,
    NotFound,
    PhotoTooLarge,
    UnsupportedPhoto,
    ValidationError,
)
from pbxlink.web import cards
from pbxlink.web.auth import call_scope, operator_of
from pbxlink.web.cards import (
    CallsQuery,
    CardFields,
    LookupQuery,
    Merge,
    NewCategory,
    NewClient,
    NewOrder,
    OrderFields,
    OrdersQuery,
    PhoneIn,
    SearchQuery,
)
from pbxlink.web.errors import ApiError
from pbxlink.web.spec import Answer, Handler, NoQuery, Route, body_of, mount, query_of, respond

log = structlog.get_logger("pbxlink.clients")

DIRECTORY = web.AppKey("directory", Directory)
CALL_LOG = web.AppKey("call_log", CallLogStore)
CHUNK = 64 * 1024
# the placeholder is SVG: shown as an image it is inert, opened directly it may run nothing
PHOTO_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


def add_routes(app: web.Application, directory: Directory, store: CallLogStore) -> None:
    """Mount the API on `app` (make_app does, when given a directory): the directory's routes,
    and a client's calls, which the call log (`store`) has."""
    app[DIRECTORY] = directory
    app[CALL_LOG] = store
    mount(app, ROUTES)


def mapped(handler: Handler) -> Handler:
    """The directory's errors as JSON 4xx naming the field; writes logged with who made them."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except PhotoTooLarge as exc:
            raise ApiError(413, "body_too_large", str(exc), field=exc.field) from None
        except UnsupportedPhoto as exc:
            raise ApiError(415, "unsupported_media_type", str(exc), field=exc.field) from None
        except ValidationError as exc:
            raise ApiError(400, "bad_request", str(exc), field=exc.field) from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc), field=exc.field) from None
        except NotFound as exc:
            raise ApiError(404, "not_found", str(exc), what=exc.what) from None
        if request.method not in ("GET", "HEAD"):
            log.info(
                "clients.request",
                operator=operator_of(request).name,
                method=request.method,
                path=request.path,
                status=response.status,
            )
        return response

    return wrapper


def _directory(request: web.Request) -> Directory:
    return request.app[DIRECTORY]


def _path_id(request: web.Request, name: str = "id") -> int:
    value = int(request.match_info[name])
    if not 0 < value <= MAX_ID:
        what = {"id": "client", "phone_id": "phone", "order_id": "order"}[name]
        raise NotFound(what, value)
    return value


# -- clients -----------------------------------------------------------------------------------


@mapped
async def search(request: web.Request) -> web.Response:
    q = query_of(request, SearchQuery)
    clients = await _directory(request).search(q.q, q.limit)
    return respond(cards.ClientList([cards.client(c) for c in clients]))


@mapped
async def lookup(request: web.Request) -> web.Response:
    raw = query_of(request, LookupQuery).number
    directory = _directory(request)
    clients = await directory.lookup(raw)
    number = directory.numbers.normalize(raw)
    return respond(
        cards.Lookup(
            number=raw,
            e164=number.e164 if number else None,
            shared=len(clients) > 1,
            clients=[cards.client(c) for c in clients],
        )
    )


@mapped
async def create(request: web.Request) -> web.Response:
    client = await _directory(request).create(body_of(request, NewClient).given())
    return respond(cards.client(client), 201, {"Location": f"/api/clients/{client.id}"})


@mapped
async def get(request: web.Request) -> web.Response:
    client = await _directory(request).get(_path_id(request))
    return respond(cards.client(client))


@mapped
async def update(request: web.Request) -> web.Response:
    fields = body_of(request, CardFields).given()
    client = await _directory(request).update(_path_id(request), fields)
    return respond(cards.client(client))


@mapped
async def delete(request: web.Request) -> web.Response:
    await _directory(request).delete(_path_id(request))
    return web.Response(status=204)


@mapped
async def merge(request: web.Request) -> web.Response:
    keep = _path_id(request)
    client = await _directory(request).merge(keep, body_of(request, Merge).gone_id)
    return respond(cards.client(client))


# -- phones ------------------------------------------------------------------------------------


@mapped
async def add_phone(request: web.Request) -> web.Response:
    body = body_of(request, PhoneIn)
    label = body.label if isinstance(body.label, str) else ""
    added = await _directory(request).add_phone(_path_id(request), body.number, label)
    view = cards.PhoneAdded(
        cards.client(added.client), cards.phone(added.phone), list(added.merged)
    )
    return respond(view, 201)


@mapped
async def remove_phone(request: web.Request) -> web.Response:
    directory = _directory(request)
    client = await directory.remove_phone(_path_id(request), _path_id(request, "phone_id"))
    return respond(cards.client(client))


# -- orders ------------------------------------------------------------------------------------


@mapped
async def orders(request: web.Request) -> web.Response:
    wanted = query_of(request, OrdersQuery).wanted()
    found = await _directory(request).orders(_path_id(request), open=wanted)
    return respond(cards.Orders([cards.order(o) for o in found]))


@mapped
async def add_order(request: web.Request) -> web.Response:
    fields = body_of(request, NewOrder).given()
    order = await _directory(request).add_order(_path_id(request), fields)
    return respond(cards.order(order), 201)


@mapped
async def update_order(request: web.Request) -> web.Response:
    client_id, order_id = _path_id(request), _path_id(request, "order_id")
    fields = body_of(request, OrderFields).given()
    order = await _directory(request).update_order(client_id, order_id, fields)
    return respond(cards.order(order))


@mapped
async def delete_order(request: web.Request) -> web.Response:
    await _directory(request).delete_order(_path_id(request), _path_id(request, "order_id"))
    return web.Response(status=204)


# -- photo -------------------------------------------------------------------------------------


@mapped
async def get_photo(request: web.Request) -> web.StreamResponse:
    path = await _directory(request).photo_path(_path_id(request))
    headers = {**PHOTO_HEADERS, "Content-Type": photos.content_type(path)}
    return web.FileResponse(path, headers=headers)


@mapped
async def put_photo(request: web.Request) -> web.Response:
    directory = _directory(request)
    client_id = _path_id(request)
    limit = directory.max_photo_bytes
    length = request.content_length
    if length is not None and length > limit:  # refused before a byte is read
        raise PhotoTooLarge("photo", f"at most {limit} bytes, got {length}")
    data = bytearray()
    while chunk := await request.content.read(CHUNK):
        data += chunk
        if len(data) > limit:
            raise PhotoTooLarge("photo", f"at most {limit} bytes")
    content_type = request.headers.get("Content-Type")
    client = await directory.set_photo(client_id, bytes(data), content_type)
    return respond(cards.client(client))


@mapped
async def delete_photo(request: web.Request) -> web.Response:
    client = await _directory(request).remove_photo(_path_id(request))
    return respond(cards.client(client))


# -- calls and categories ----------------------------------------------------------------------


@mapped
async def calls(request: web.Request) -> web.Response:
    """Operators get the client's calls their own extensions took part in (call_scope)."""
    limit = query_of(request, CallsQuery).limit
    client_id = _path_id(request)
    await _directory(request).get(client_id)  # 404 for no such client, not an empty list
    found = await query.client_calls(
        request.app[CALL_LOG].reader, client_id, limit, scope=call_scope(request)
    )
    return respond({"calls": [c.to_dict() for c in found]})  # cards.ClientCalls


@mapped
async def categories(request: web.Request) -> web.Response:
    found = await _directory(request).categories()
    return respond(cards.Categories([cards.category(c) for c in found]))


@mapped
async def add_category(request: web.Request) -> web.Response:
    body = body_of(request, NewCategory)
    category = await _directory(request).add_category(body.name, body.label, body.color)
    return respond(cards.category(category), 201)


# -- the routes --------------------------------------------------------------------------------

ID = r"{id:\d+}"
_INVALID = {400: "a bad field, named in `field`"}
_NOT_FOUND = {404: "no such client (or phone, or order of it)"}
_PHOTO = {"schema": {"type": "string", "format": "binary"}}
_IMAGES = ("image/png", "image/jpeg", "image/webp")
_ONE = Answer("the client", cards.Client)
_DELETED = Answer("deleted")


def _route(method: str, path: str, handler: Handler, op_id: str, summary: str,
           ok: dict[int, Answer], errors: dict[int, str], **kw: Any) -> Route:  # fmt: skip
    """A client route: tagged `clients`, and any query parameter it does not declare is a
    400 (a typo silently ignored would answer another question)."""
    kw.setdefault("query", NoQuery)
    return Route(method, path, op_id, summary, "clients", ok, errors, handler=handler, **kw)


ROUTES = [
    _route("GET", "/api/clients", search, "searchClients",
           "Search by name, company or any form of a number; no q: latest changed",
           {200: Answer("the clients", cards.ClientList)}, _INVALID, query=SearchQuery),
    _route("GET", "/api/clients/lookup", lookup, "lookupClients",
           "The card(s) for a caller: every client holding the number",
           {200: Answer("who holds the number", cards.Lookup)}, _INVALID, query=LookupQuery),
    _route("POST", "/api/clients", create, "createClient",
           "Create a client (its phones: numbers, or {number, label})",
           {201: Answer("the client", cards.Client, headers={"Location": {"schema": {
               "type": "string"}}})},
           {**_INVALID, 409: "a number the client has twice, or an unknown category"},
           body=NewClient),
    _route("GET", f"/api/clients/{ID}", get, "getClient", "The card (open orders only)",
           {200: _ONE}, _NOT_FOUND),
    _route("PATCH", f"/api/clients/{ID}", update, "updateClient", "Change the fields given",
           {200: _ONE}, {**_INVALID, **_NOT_FOUND, 409: "unknown category"}, body=CardFields),
    _route("DELETE", f"/api/clients/{ID}", delete, "deleteClient",
           "Delete a client (admin); its calls stay in the log, unlinked",
           {204: _DELETED}, _NOT_FOUND, role="admin"),
    _route("POST", f"/api/clients/{ID}/merge", merge, "mergeClients",
           "Move gone_id's phones, orders and calls to this client, delete gone_id (admin)",
           {200: _ONE}, {**_INVALID, **_NOT_FOUND, 409: "a client cannot absorb itself"},
           role="admin", body=Merge),
    _route("POST", f"/api/clients/{ID}/phones", add_phone, "addPhone",
           "Add a number; an untouched potential client holding it merges in",
           {201: Answer("the client, the phone, the ids merged in", cards.PhoneAdded)},
           {**_INVALID, **_NOT_FOUND, 409: "the client has the number"}, body=PhoneIn),
    _route("DELETE", f"/api/clients/{ID}/phones/{{phone_id:\\d+}}", remove_phone,
           "removePhone", "Remove a number", {200: _ONE}, _NOT_FOUND),
    _route("GET", f"/api/clients/{ID}/orders", orders, "listOrders",
           "The client's orders, open ones first", {200: Answer("the orders", cards.Orders)},
           {**_INVALID, **_NOT_FOUND}, query=OrdersQuery),
    _route("POST", f"/api/clients/{ID}/orders", add_order, "addOrder", "Add an order",
           {201: Answer("the order", cards.Order)}, {**_INVALID, **_NOT_FOUND}, body=NewOrder),
    _route("PATCH", f"/api/clients/{ID}/orders/{{order_id:\\d+}}", update_order, "updateOrder",
           "Change the order's fields given", {200: Answer("the order", cards.Order)},
           {**_INVALID, **_NOT_FOUND}, body=OrderFields),
    _route("DELETE", f"/api/clients/{ID}/orders/{{order_id:\\d+}}", delete_order,
           "deleteOrder", "Delete an order (admin; operators close orders instead)",
           {204: _DELETED}, _NOT_FOUND, role="admin"),
    _route("GET", f"/api/clients/{ID}/photo", get_photo, "getPhoto",
           "The photo, or a placeholder SVG",
           {200: Answer("the image", content={m: _PHOTO for m in (*_IMAGES, "image/svg+xml")})},
           _NOT_FOUND),
    _route("PUT", f"/api/clients/{ID}/photo", put_photo, "putPhoto",
           "Set the photo: the raw image bytes (PNG, JPEG or WebP; the bytes decide)",
           {200: _ONE},
           {400: "an empty body (`field`: photo)", **_NOT_FOUND,
            413: "larger than the photo limit", 415: "not a PNG, JPEG or WebP image"},
           body={m: _PHOTO for m in (*_IMAGES, "application/octet-stream")}),
    _route("DELETE", f"/api/clients/{ID}/photo", delete_photo, "deletePhoto",
           "Remove the photo", {200: _ONE}, _NOT_FOUND),
    _route("GET", f"/api/clients/{ID}/calls", calls, "clientCalls",
           "The client's calls from the log, newest first; operators: only those their "
           "own extensions took part in (as GET /api/calls)",
           {200: Answer("the calls", cards.ClientCalls)}, {**_INVALID, **_NOT_FOUND},
           query=CallsQuery),
    _route("GET", "/api/clients/categories", categories, "listCategories", "The categories",
           {200: Answer("the categories", cards.Categories)}, {}),
    _route("POST", "/api/clients/categories", add_category, "addCategory",
           "Add a category (admin)", {201: Answer("the category", cards.Category)},
           {**_INVALID, 409: "the category exists"}, role="admin", body=NewCategory),
]  # fmt: skip
