"""The OpenAPI 3.1 document of the running app, served at GET /api/openapi.json (public).

Each web module documents its own routes next to them, as `OPENAPI_PATHS` (path -> path
item); the document holds the fragment of every module with a route mounted on this app, so
it describes what this daemon serves, no more. What several modules share lives here: the
Error and CallRecord schemas, the client card, the `bearer` security scheme, `error()`.
tests/test_openapi.py checks that the document and the app's routes match both ways, that
every protected operation declares `bearer`, and lets schemathesis call every operation.
HEAD, which aiohttp answers for every GET, is not listed separately.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web

from pbxlink import __version__
from pbxlink.calls.record import DIRECTIONS, STATUSES
from pbxlink.web.auth import public

PATH = "/api/openapi.json"
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
ERROR = {"$ref": "#/components/schemas/Error"}
# the handlers of these modules are documented by this module's OPENAPI_PATHS
BASE_MODULES = ("pbxlink.web.app", __name__)


def error(description: str) -> dict[str, Any]:
    """A response that is the JSON Error object."""
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


def obj(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema whose properties are all required except `optional`."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "properties": properties, "required": required}


_TIME = {"type": "string", "format": "date-time"}
_MAYBE_TIME = {"type": ["string", "null"], "format": "date-time"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_NULLABLE_TEXT = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        **obj(
            {
                "error": {"type": "string", "description": "stable code: bad_request, ..."},
                "message": {"type": "string", "description": "for people"},
                "field": {
                    "type": "string",
                    "description": "the query parameter or body field at fault",
                },
                "needed": {"type": "string", "description": "403: the role needed"},
                "what": {"type": "string", "description": "404: what was not found"},
            },
            optional=("field", "needed", "what"),
        ),
        "additionalProperties": False,
        "description": "Every error the API sends, in this one shape; clients branch on "
        "`error` (docs/api.md lists the codes).",
    },
    "CallRecord": obj(
        {
            "call_id": {"type": "string"},
            "started_at": _TIME,
            "offered_at": {**_MAYBE_TIME, "description": "first ring or queue join"},
            "answered_at": _MAYBE_TIME,
            "ended_at": _MAYBE_TIME,
            "direction": {"enum": list(DIRECTIONS)},
            "caller_number": {"type": "string"},
            "caller_name": {"type": "string"},
            "called_number": {"type": "string"},
            "extensions_rung": _STRINGS,
            "answered_by": _NULLABLE_TEXT,
            "status": {"enum": list(STATUSES)},
            "wait_s": {"type": "number", "minimum": 0},
            "talk_s": {"type": "number", "minimum": 0},
            "hangup_cause": {"type": ["integer", "null"]},
            "queue": _NULLABLE_TEXT,
            "ivr_digits": {"type": "string"},
            "transferred_to": _STRINGS,
            "recording": _NULLABLE_TEXT,
            "partial": {"type": "boolean"},
            "estimated": {
                "type": "array",
                "items": {"enum": ["answered_at", "ended_at"]},
                "description": "times pbxlink had to estimate (wait_s/talk_s follow them)",
            },
        }
    ),
    "Phone": obj(
        {
            "id": {"type": "integer"},
            "raw": {"type": "string"},
            "e164": _NULLABLE_TEXT,
            "label": {"type": "string"},
        }
    ),
    "Order": obj(
        {
            "id": {"type": "integer"},
            "client_id": {"type": "integer"},
            "number": {"type": "string"},
            "stage": {"type": "string"},
            "responsible": {"type": "string"},
            "debt": {"type": "number"},
            "open": {"type": "boolean"},
            "created_at": _TIME,
            "updated_at": _TIME,
        }
    ),
    "Category": obj(
        {
            "name": {"type": "string"},
            "label": {"type": "string"},
            "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
            "builtin": {"type": "boolean"},
        }
    ),
    "Client": obj(
        {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "company": {"type": "string"},
            "category": obj(
                {
                    "name": {"type": "string"},
                    "label": {"type": "string"},
                    "color": {"type": "string"},
                }
            ),
            "notes": {"type": "string"},
            "city": {"type": "string"},
            "country": {"type": "string"},
            "has_photo": {"type": "boolean"},
            "photo_url": {"type": "string"},
            "responsible": {"type": "string"},
            "created_at": _TIME,
            "updated_at": _TIME,
            "phones": {"type": "array", "items": {"$ref": "#/components/schemas/Phone"}},
            "open_orders": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}},
        }
    ),
}

OPENAPI_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "operationId": "getHealth",
            "summary": "AMI link state, last event age, calls in progress",
            "tags": ["daemon"],
            "security": [],
            "responses": {
                "200": json_body("the AMI link is up", {"$ref": "#/components/schemas/Health"}),
                "503": json_body("the AMI link is down", {"$ref": "#/components/schemas/Health"}),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "getMetrics",
            "summary": "Prometheus metrics (text format 0.0.4)",
            "tags": ["daemon"],
            "security": [],
            "responses": {
                "200": {
                    "description": "the metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/api/me": {
        "get": {
            "operationId": "getMe",
            "summary": "Who the token belongs to",
            "tags": ["daemon"],
            "security": BEARER,
            "responses": {
                "200": json_body(
                    "the token's operator",
                    obj(
                        {
                            "name": {"type": "string"},
                            "extensions": _STRINGS,
                            "role": {"enum": ["operator", "supervisor", "admin"]},
                        }
                    ),
                ),
                "401": error("no or an invalid token"),
            },
        }
    },
    PATH: {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document",
            "tags": ["daemon"],
            "security": [],
            "responses": {
                "200": json_body("the OpenAPI 3.1 document", {"type": "object"}),
            },
        }
    },
}
SCHEMAS["Health"] = obj(
    {
        "status": {"enum": ["ok", "degraded"]},
        "ami": obj(
            {
                "state": {"type": "string"},
                "last_event_age_s": {"type": ["number", "null"]},
            }
        ),
        "calls_active": {"type": "integer"},
        "store_queue_depth": {"type": "integer"},
        "uptime_s": {"type": "number"},
    }
)


def mounted_modules(app: web.Application) -> list[str]:
    """The modules whose handlers serve the app's routes, in the order they were mounted."""
    names: dict[str, None] = {}
    for route in app.router.routes():
        handler = route.handler
        module = getattr(handler, "__module__", None) or type(handler).__module__
        names[module] = None
    return list(names)


def build(app: web.Application) -> dict[str, Any]:
    """The document: every mounted module's paths, the shared components."""
    paths: dict[str, Any] = {}
    seen: set[int] = set()
    for name in mounted_modules(app):
        module = sys.modules.get(name)
        fragment = OPENAPI_PATHS if name in BASE_MODULES else getattr(module, "OPENAPI_PATHS", {})
        if id(fragment) in seen:
            continue
        seen.add(id(fragment))
        for path, item in fragment.items():
            clash = set(paths.get(path, {})) & set(item)
            if clash:
                raise ValueError(f"OpenAPI: {name} documents {path} {sorted(clash)} again")
            paths[path] = {**paths.get(path, {}), **item}
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
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `pbxlink token`, its hash in the config",
                }
            },
        },
    }


class _Document:
    """Built on the first request: by then every module has mounted its routes."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = None

    @public
    async def get(self, request: web.Request) -> web.Response:
        if self.body is None:
            self.body = build(request.app)
        return web.json_response(self.body)


def add_route(app: web.Application) -> None:
    app.router.add_get(PATH, _Document().get)
