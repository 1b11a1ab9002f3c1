"""The OpenAPI 3.1 document of the running app, served at GET /api/openapi.json (public).

It is built from the routes' declarations (pbxlink.web.spec `Route`, which also mounted them)
and the msgspec models they name: each model's JSON Schema is a component, so what a handler
encodes and checks and what the document says are one declaration. It holds the routes mounted
on this app, no more; a route mounted without a declaration is an error here.
tests/test_openapi.py checks that the document and the app's routes match both ways, that
every protected operation declares `bearer`, and lets schemathesis call every operation.
HEAD, which aiohttp answers for every GET, is not listed separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from pbxlink import __version__
from pbxlink.web.models import CallRecord, Error
from pbxlink.web.spec import ROUTES, Answer, Route, respond

PATH = "/api/openapi.json"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
REF = "#/components/schemas/{name}"
ERROR = {"$ref": REF.format(name="Error")}
UNAUTHORIZED = "no or an invalid token"
# what every document has, mounted or not: referred to by the others
ALWAYS = (Error, CallRecord)


def components(models: Iterable[Any]) -> dict[str, Any]:
    """The JSON Schema of each model and of every model within, by name."""
    return msgspec.json.schema_components(list(models), ref_template=REF)[1]


#: the shared schemas (tests read the call record's here)
SCHEMAS: dict[str, Any] = components(ALWAYS)


def _models(route: Route) -> list[Any]:
    out = [answer.model for answer in route.ok.values() if answer.model is not None]
    if isinstance(route.body, type):
        out.append(route.body)
    return [*out, *route.components]


def _schema(model: Any) -> dict[str, Any]:
    return msgspec.json.schema_components([model], ref_template=REF)[0][0]


def _parameters(route: Route) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name, is_id in route.path_params():
        schema = {"type": "integer", "minimum": 1} if is_id else {"type": "string", "minLength": 1}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if route.query is not None:
        schema = msgspec.json.schema(route.query)
        struct = schema["$defs"][schema["$ref"].rsplit("/", 1)[1]]
        for name, prop in struct["properties"].items():
            param: dict[str, Any] = {"name": name, "in": "query",
                                     "required": name in struct.get("required", ())}  # fmt: skip
            if "description" in prop:
                param["description"] = prop.pop("description")
            params.append({**param, "schema": prop})
    return [*params, *route.extra_params]


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.headers:
        out["headers"] = dict(answer.headers)
    if answer.model is not None:
        out["content"] = {"application/json": {"schema": _schema(answer.model)}}
    elif answer.content is not None:
        out["content"] = dict(answer.content)
    return out


def operation(route: Route) -> dict[str, Any]:
    """The route's OpenAPI operation."""
    responses = {str(status): _answer(answer) for status, answer in route.ok.items()}
    errors = dict(route.errors)
    if route.role != "public":
        errors.setdefault(401, UNAUTHORIZED)
        if route.role != "operator":
            errors.setdefault(403, f"this needs the {route.role} role")
    for status, description in sorted(errors.items()):
        responses[str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": ERROR}},
        }
    op: dict[str, Any] = {"operationId": route.op_id, "summary": route.summary}
    if route.description:
        op["description"] = route.description
    op |= {"tags": [route.tag], "security": [] if route.role == "public" else BEARER}
    params = _parameters(route)
    if params or route.role != "public":
        op["parameters"] = params
    if isinstance(route.body, type):
        content = {"application/json": {"schema": _schema(route.body)}}
        op["requestBody"] = {"required": True, "content": content}
    elif route.body is not None:
        op["requestBody"] = {"required": True, "content": dict(route.body)}
    op["responses"] = responses
    return op


def _check_declared(app: web.Application, routes: list[Route]) -> None:
    declared = {(r.method, r.openapi_path) for r in routes}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and (route.method, path) not in declared:
            raise ValueError(f"OpenAPI: {route.method} {path} is mounted but not declared")


def build(app: web.Application) -> dict[str, Any]:
    """The document: every declared route mounted on `app`, the components they use."""
    routes: list[Route] = app.get(ROUTES, [])
    _check_declared(app, routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        item = paths.setdefault(route.openapi_path, {})
        method = route.method.lower()
        if method in item:
            raise ValueError(f"OpenAPI: {route.method} {route.openapi_path} is declared twice")
        item[method] = operation(route)
    schemas = components([*ALWAYS, *(m for r in routes for m in _models(r))])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pbxlink",
            "version": __version__,
            "description": (
                "The REST API of pbxlink, a CTI daemon for Asterisk. Send "
                "`Authorization: Bearer <token>` (`pbxlink token` makes one); errors are "
                "JSON objects with a stable `error` code. Call log filters: docs/api.md."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `pbxlink token`, its hash in the config",
                }
            },
        },
    }


class Document:
    """Built on the first request: by then every part has mounted its routes."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    async def get(self, request: web.Request) -> web.Response:
        if self.body is None:
            self.body = msgspec.json.encode(build(request.app))
        return respond(msgspec.Raw(self.body))


def standalone(model: Any, *also: Any) -> dict[str, Any]:
    """`model`'s JSON Schema with the components it refers to, for a JSON Schema validator."""
    return {
        "$ref": REF.format(name=model.__name__),
        "components": {"schemas": components([model, *also])},
    }
