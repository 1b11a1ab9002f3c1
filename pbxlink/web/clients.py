"""The client directory's REST API, under /api/clients. JSON in and out, UTF-8.

Operators read and edit clients (cards, phones, orders, photos); admins also delete clients
and orders, merge clients and add categories. An operator closes an order rather than
deleting it, so what the business owes stays on record.

    GET    /api/clients?q=&limit=20          search: name/company (any script, any case) or
                                             any form of a number; no q: latest changed
    GET    /api/clients/lookup?number=       the card(s) for a caller: every client holding
                                             the number, "shared": true when more than one
    POST   /api/clients                      create {name, company, category, notes, city,
                                             country, responsible, phones: [str|{number,label}]}
    GET    /api/clients/categories           categories; POST (admin) {name, label, color}
    GET    /api/clients/{id}                 the card (open orders only)
    PATCH  /api/clients/{id}                 change the fields given
    DELETE /api/clients/{id}                 admin; its calls stay in the log, unlinked
    POST   /api/clients/{id}/phones          {number, label}: an untouched potential client
                                             holding the number is merged in ("merged": [ids])
    DELETE /api/clients/{id}/phones/{phone_id}
    POST   /api/clients/{id}/merge           admin; {"gone_id": n}: n's phones, orders and
                                             calls move to {id}, n is deleted
    GET    /api/clients/{id}/orders?open=    all, or open=true/false; POST creates {number,
                                             stage, responsible, debt, open}
    PATCH  /api/clients/{id}/orders/{order_id}; DELETE (admin)
    GET    /api/clients/{id}/photo           the photo, or a placeholder SVG when none
    PUT    /api/clients/{id}/photo           raw body, Content-Type image/png, image/jpeg or
                                             image/webp (or application/octet-stream: the bytes
                                             decide); 415 for anything else, 413 above the limit
    DELETE /api/clients/{id}/photo
    GET    /api/clients/{id}/calls?limit=50  the client's calls from the log, newest first
                                             (operators: those of their own extensions); the
                                             call log reads them (`query.client_calls`)

The photo is a raw body, not multipart: `curl -T photo.jpg -H 'Content-Type: image/jpeg'` and
the page's `fetch(url, {method: "PUT", body: file})` both send exactly that, and it streams
past the API's 1 MiB JSON limit with a limit of its own. Errors are the API's one shape
(web/errors.py): 400 `bad_request` (and 413/415 for photos, 409 `conflict`) carry `field`, the
query parameter or body field at fault; 404 `not_found` names what was not found in `what`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from pbxlink.calllog import query
from pbxlink.calllog.store import CallLogStore
from pbxlink.clients import photos
from pbxlink.clients.directory import MAX_ID, MAX_LIMIT, Directory, checked_limit
from pbxlink.clients.model import (
    Conflict,
    NotFound,
    PhotoTooLarge,
    UnsupportedPhoto,
    ValidationError,
)
from pbxlink.web.auth import call_scope, operator_of, requires
from pbxlink.web.errors import ApiError, read_object
from pbxlink.web.openapi import BEARER, error, json_body, obj

log = structlog.get_logger("pbxlink.clients")

DIRECTORY = web.AppKey("directory", Directory)
CALL_LOG = web.AppKey("call_log", CallLogStore)
ID = r"{id:\d+}"
CHUNK = 64 * 1024
# the placeholder is SVG: shown as an image it is inert, opened directly it may run nothing
PHOTO_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, directory: Directory, store: CallLogStore) -> None:
    """Mount the API on `app` (make_app does, when given a directory): the directory's routes,
    and a client's calls, which the call log (`store`) has."""
    app[DIRECTORY] = directory
    app[CALL_LOG] = store
    app.add_routes(routes)


def _mapped(handler: Handler) -> Handler:
    """The directory's errors as JSON 4xx naming the field; writes logged with who made them.
    A query parameter the route's OpenAPI operation does not list is a 400, as in the call
    log API: a typo silently ignored would answer another question."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            _known_parameters_only(request)
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


def _known_parameters_only(request: web.Request) -> None:
    path = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
    method = "get" if request.method == "HEAD" else request.method.lower()
    operation = OPENAPI_PATHS.get(path, {}).get(method, {})
    known = [p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"]
    for key in request.query:
        if key not in known:
            raise ValidationError(
                key, f"unknown parameter (known: {', '.join(known) if known else 'none'})"
            )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(
        body, status=status, dumps=functools.partial(json.dumps, ensure_ascii=False)
    )


def _directory(request: web.Request) -> Directory:
    return request.app[DIRECTORY]


def _path_id(request: web.Request, name: str = "id") -> int:
    value = int(request.match_info[name])
    if not 0 < value <= MAX_ID:
        what = {"id": "client", "phone_id": "phone", "order_id": "order"}[name]
        raise NotFound(what, value)
    return value


def _one(request: web.Request, name: str) -> str | None:
    """The query parameter `name` given once, or None; twice is a 400 (which one was meant?)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ValidationError(name, f"given {len(values)} times, expected once")
    return values[0] if values else None


def _query_int(request: web.Request, name: str, default: int) -> int:
    raw = _one(request, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise ValidationError(name, f"expected a whole number 1-{MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _query_bool(request: web.Request, name: str) -> bool | None:
    """true/1, false/0, or all (the default): exactly the values documented."""
    raw = _one(request, name)
    if raw in (None, "all"):
        return None
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise ValidationError(name, f"expected true, false or all, got {raw!r}")


def _only(body: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise ValidationError(key, f"unknown field (known: {', '.join(allowed)})")
    for key in required:
        if key not in body:
            raise ValidationError(key, "required")


# -- clients -----------------------------------------------------------------------------------


@routes.get("/api/clients")
@_mapped
async def search(request: web.Request) -> web.Response:
    q = _one(request, "q") or ""
    clients = await _directory(request).search(q, _query_int(request, "limit", 20))
    return _json({"clients": [c.to_dict() for c in clients]})


@routes.get("/api/clients/lookup")
@_mapped
async def lookup(request: web.Request) -> web.Response:
    raw = _one(request, "number")
    if raw is None:
        raise ValidationError("number", "required")
    directory = _directory(request)
    clients = await directory.lookup(raw)
    number = directory.numbers.normalize(raw)
    return _json(
        {
            "number": raw,
            "e164": number.e164 if number else None,
            "shared": len(clients) > 1,
            "clients": [c.to_dict() for c in clients],
        }
    )


@routes.post("/api/clients")
@_mapped
async def create(request: web.Request) -> web.Response:
    client = await _directory(request).create(await read_object(request))
    response = _json(client.to_dict(), status=201)
    response.headers["Location"] = f"/api/clients/{client.id}"
    return response


@routes.get(f"/api/clients/{ID}")
@_mapped
async def get(request: web.Request) -> web.Response:
    client = await _directory(request).get(_path_id(request))
    return _json(client.to_dict())


@routes.patch(f"/api/clients/{ID}")
@_mapped
async def update(request: web.Request) -> web.Response:
    client = await _directory(request).update(_path_id(request), await read_object(request))
    return _json(client.to_dict())


@routes.delete(f"/api/clients/{ID}")
@requires("admin")
@_mapped
async def delete(request: web.Request) -> web.Response:
    await _directory(request).delete(_path_id(request))
    return web.Response(status=204)


@routes.post(f"/api/clients/{ID}/merge")
@requires("admin")
@_mapped
async def merge(request: web.Request) -> web.Response:
    keep = _path_id(request)
    body = await read_object(request)
    _only(body, ("gone_id",), ("gone_id",))
    gone = body["gone_id"]
    if isinstance(gone, bool) or not isinstance(gone, int) or not 0 < gone <= MAX_ID:
        raise ValidationError("gone_id", f"expected a client id, got {gone!r}")
    client = await _directory(request).merge(keep, gone)
    return _json(client.to_dict())


# -- phones ------------------------------------------------------------------------------------


@routes.post(f"/api/clients/{ID}/phones")
@_mapped
async def add_phone(request: web.Request) -> web.Response:
    body = await read_object(request)
    _only(body, ("number", "label"), ("number",))
    added = await _directory(request).add_phone(
        _path_id(request), body["number"], body.get("label", "")
    )
    body = {"client": added.client.to_dict(), "phone": added.phone.to_dict()}
    return _json({**body, "merged": list(added.merged)}, status=201)


@routes.delete(f"/api/clients/{ID}/phones/{{phone_id:\\d+}}")
@_mapped
async def remove_phone(request: web.Request) -> web.Response:
    directory = _directory(request)
    client = await directory.remove_phone(_path_id(request), _path_id(request, "phone_id"))
    return _json(client.to_dict())


# -- orders ------------------------------------------------------------------------------------


@routes.get(f"/api/clients/{ID}/orders")
@_mapped
async def orders(request: web.Request) -> web.Response:
    found = await _directory(request).orders(_path_id(request), open=_query_bool(request, "open"))
    return _json({"orders": [o.to_dict() for o in found]})


@routes.post(f"/api/clients/{ID}/orders")
@_mapped
async def add_order(request: web.Request) -> web.Response:
    order = await _directory(request).add_order(_path_id(request), await read_object(request))
    return _json(order.to_dict(), status=201)


@routes.patch(f"/api/clients/{ID}/orders/{{order_id:\\d+}}")
@_mapped
async def update_order(request: web.Request) -> web.Response:
    client_id, order_id = _path_id(request), _path_id(request, "order_id")
    order = await _directory(request).update_order(client_id, order_id, await read_object(request))
    return _json(order.to_dict())


@routes.delete(f"/api/clients/{ID}/orders/{{order_id:\\d+}}")
@requires("admin")
@_mapped
async def delete_order(request: web.Request) -> web.Response:
    await _directory(request).delete_order(_path_id(request), _path_id(request, "order_id"))
    return web.Response(status=204)


# -- photo -------------------------------------------------------------------------------------


@routes.get(f"/api/clients/{ID}/photo")
@_mapped
async def get_photo(request: web.Request) -> web.StreamResponse:
    path = await _directory(request).photo_path(_path_id(request))
    headers = {**PHOTO_HEADERS, "Content-Type": photos.content_type(path)}
    return web.FileResponse(path, headers=headers)


@routes.put(f"/api/clients/{ID}/photo")
@_mapped
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
    return _json(client.to_dict())


@routes.delete(f"/api/clients/{ID}/photo")
@_mapped
async def delete_photo(request: web.Request) -> web.Response:
    client = await _directory(request).remove_photo(_path_id(request))
    return _json(client.to_dict())


# -- calls and categories ----------------------------------------------------------------------


@routes.get(f"/api/clients/{ID}/calls")
@_mapped
async def calls(request: web.Request) -> web.Response:
    """Operators get the client's calls their own extensions took part in (call_scope)."""
    limit = _query_int(request, "limit", 50)
    client_id = _path_id(request)
    checked_limit("limit", limit)
    await _directory(request).get(client_id)  # 404 for no such client, not an empty list
    found = await query.client_calls(
        request.app[CALL_LOG].reader, client_id, limit, scope=call_scope(request)
    )
    return _json({"calls": [c.to_dict() for c in found]})


@routes.get("/api/clients/categories")
@_mapped
async def categories(request: web.Request) -> web.Response:
    found = await _directory(request).categories()
    return _json({"categories": [c.to_dict() for c in found]})


@routes.post("/api/clients/categories")
@requires("admin")
@_mapped
async def add_category(request: web.Request) -> web.Response:
    body = await read_object(request)
    _only(body, ("name", "label", "color"), ("name", "label", "color"))
    category = await _directory(request).add_category(body["name"], body["label"], body["color"])
    return _json(category.to_dict(), status=201)


# -- OpenAPI ---------------------------------------------------------------------------------------

_CLIENT = {"$ref": "#/components/schemas/Client"}
_ORDER = {"$ref": "#/components/schemas/Order"}
_CATEGORY = {"$ref": "#/components/schemas/Category"}
_TEXT = {"type": "string"}
_PHONE_IN = {
    "oneOf": [
        _TEXT,
        {
            "type": "object",
            "properties": {"number": _TEXT, "label": _TEXT},
            "required": ["number"],
            "additionalProperties": False,
        },
    ]
}
_CARD_FIELDS = {
    name: _TEXT for name in ("name", "company", "category", "notes", "city", "country")
} | {"responsible": _TEXT}
_ORDER_FIELDS = {
    "number": _TEXT,
    "stage": _TEXT,
    "responsible": _TEXT,
    "debt": {"type": "number"},
    "open": {"type": "boolean"},
}
_INVALID = error("a bad field, named in `field`")
_UNAUTHORIZED = error("no or an invalid token")
_ADMIN = error("this needs the admin role")
_NOT_FOUND = error("no such client (or phone, or order of it)")


def _path(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
        for name in names
    ]


def _body(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(
    op_id: str,
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "tags": ["clients"],
        "security": BEARER,
        "parameters": params or [],
        "responses": {**responses, "401": _UNAUTHORIZED},
    }
    if body is not None:
        out["requestBody"] = body
    return out


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_ONE = json_body("the client", _CLIENT)
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
# what model.text accepts: any whitespace around, no control character within, 200 at most
_STRIPPED = "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f ]*"
_QUERY_TEXT = {
    "type": "string",
    "maxLength": 200,
    "pattern": f"^{_STRIPPED}[^\\x00-\\x1f\\x7f]*{_STRIPPED}$",
}
_PHOTO = {"type": "string", "format": "binary"}
_IMAGES = ("image/png", "image/jpeg", "image/webp")

OPENAPI_PATHS: dict[str, Any] = {
    "/api/clients": {
        "get": _op(
            "searchClients",
            "Search by name, company or any form of a number; no q: latest changed",
            {"200": json_body("the clients", obj({"clients": {"type": "array", "items": _CLIENT}})),
             "400": _INVALID},
            params=[_query("q", _QUERY_TEXT), _query("limit", {**_LIMIT, "default": 20})],
        ),
        "post": _op(
            "createClient",
            "Create a client (its phones: numbers, or {number, label})",
            {"201": {**_ONE, "headers": {"Location": {"schema": _TEXT}}}, "400": _INVALID,
             "409": error("a number the client has twice, or an unknown category")},
            body=_body({**_CARD_FIELDS, "phones": {"type": "array", "items": _PHONE_IN}}),
        ),
    },
    "/api/clients/lookup": {
        "get": _op(
            "lookupClients",
            "The card(s) for a caller: every client holding the number",
            {"200": json_body("who holds the number", obj({
                "number": _TEXT, "e164": {"type": ["string", "null"]},
                "shared": {"type": "boolean"}, "clients": {"type": "array", "items": _CLIENT}})),
             "400": _INVALID},
            params=[_query("number", _TEXT, required=True)],
        )
    },
    "/api/clients/categories": {
        "get": _op(
            "listCategories",
            "The categories",
            {"200": json_body("the categories", obj({
                "categories": {"type": "array", "items": _CATEGORY}}))},
        ),
        "post": _op(
            "addCategory",
            "Add a category (admin)",
            {"201": json_body("the category", _CATEGORY), "400": _INVALID, "403": _ADMIN,
             "409": error("the category exists")},
            body=_body({"name": _TEXT, "label": _TEXT, "color": _TEXT},
                       ("name", "label", "color")),
        ),
    },
    "/api/clients/{id}": {
        "get": _op("getClient", "The card (open orders only)",
                   {"200": _ONE, "404": _NOT_FOUND}, params=_path("id")),
        "patch": _op(
            "updateClient",
            "Change the fields given",
            {"200": _ONE, "400": _INVALID, "404": _NOT_FOUND, "409": error("unknown category")},
            params=_path("id"),
            body=_body(_CARD_FIELDS),
        ),
        "delete": _op(
            "deleteClient",
            "Delete a client (admin); its calls stay in the log, unlinked",
            {"204": {"description": "deleted"}, "403": _ADMIN, "404": _NOT_FOUND},
            params=_path("id"),
        ),
    },
    "/api/clients/{id}/merge": {
        "post": _op(
            "mergeClients",
            "Move gone_id's phones, orders and calls to this client, delete gone_id (admin)",
            {"200": _ONE, "400": _INVALID, "403": _ADMIN, "404": _NOT_FOUND,
             "409": error("a client cannot absorb itself")},
            params=_path("id"),
            body=_body({"gone_id": {"type": "integer", "minimum": 1}}, ("gone_id",)),
        )
    },
    "/api/clients/{id}/phones": {
        "post": _op(
            "addPhone",
            "Add a number; an untouched potential client holding it merges in",
            {"201": json_body("the client, the phone, the ids merged in", obj({
                "client": _CLIENT, "phone": {"$ref": "#/components/schemas/Phone"},
                "merged": {"type": "array", "items": {"type": "integer"}}})),
             "400": _INVALID, "404": _NOT_FOUND, "409": error("the client has the number")},
            params=_path("id"),
            body=_body({"number": _TEXT, "label": _TEXT}, ("number",)),
        )
    },
    "/api/clients/{id}/phones/{phone_id}": {
        "delete": _op("removePhone", "Remove a number", {"200": _ONE, "404": _NOT_FOUND},
                      params=_path("id", "phone_id")),
    },
    "/api/clients/{id}/orders": {
        "get": _op(
            "listOrders",
            "The client's orders, open ones first",
            {"200": json_body("the orders", obj({"orders": {"type": "array", "items": _ORDER}})),
             "400": _INVALID, "404": _NOT_FOUND},
            params=[*_path("id"), _query("open", {"enum": ["true", "false", "1", "0", "all"]})],
        ),
        "post": _op(
            "addOrder",
            "Add an order",
            {"201": json_body("the order", _ORDER), "400": _INVALID, "404": _NOT_FOUND},
            params=_path("id"),
            body=_body(_ORDER_FIELDS, ("number",)),
        ),
    },
    "/api/clients/{id}/orders/{order_id}": {
        "patch": _op(
            "updateOrder",
            "Change the order's fields given",
            {"200": json_body("the order", _ORDER), "400": _INVALID, "404": _NOT_FOUND},
            params=_path("id", "order_id"),
            body=_body(_ORDER_FIELDS),
        ),
        "delete": _op(
            "deleteOrder",
            "Delete an order (admin; operators close orders instead)",
            {"204": {"description": "deleted"}, "403": _ADMIN, "404": _NOT_FOUND},
            params=_path("id", "order_id"),
        ),
    },
    "/api/clients/{id}/photo": {
        "get": _op(
            "getPhoto",
            "The photo, or a placeholder SVG",
            {"200": {"description": "the image", "content": {
                media: {"schema": _PHOTO} for media in (*_IMAGES, "image/svg+xml")}},
             "404": _NOT_FOUND},
            params=_path("id"),
        ),
        "put": _op(
            "putPhoto",
            "Set the photo: the raw image bytes (PNG, JPEG or WebP; the bytes decide)",
            {"200": _ONE, "400": error("an empty body (`field`: photo)"), "404": _NOT_FOUND,
             "413": error("larger than the photo limit"),
             "415": error("not a PNG, JPEG or WebP image")},
            params=_path("id"),
            body={"required": True, "content": {
                media: {"schema": _PHOTO} for media in (*_IMAGES, "application/octet-stream")}},
        ),
        "delete": _op("deletePhoto", "Remove the photo", {"200": _ONE, "404": _NOT_FOUND},
                      params=_path("id")),
    },
    "/api/clients/{id}/calls": {
        "get": _op(
            "clientCalls",
            "The client's calls from the log, newest first; operators: only those their "
            "own extensions took part in (as GET /api/calls)",
            {"200": json_body("the calls", obj({"calls": {"type": "array", "items": {
                "$ref": "#/components/schemas/CallRecord"}}})),
             "400": _INVALID, "404": _NOT_FOUND},
            params=[*_path("id"), _query("limit", {**_LIMIT, "default": 50})],
        )
    },
}  # fmt: skip
