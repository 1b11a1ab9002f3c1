"""`GET /api/hub`: where the page finds the popup WebSocket (any authenticated role).

The URL is built from the host the page was loaded from, so a page opened as
http://pbx.example.com:8080/ connects to ws://pbx.example.com:8081/ without configuration.
The route lives in the web part, which may know the hub; the hub never imports the web part.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pbxlink.hub.messages import VERSION
from pbxlink.hub.server import Hub
from pbxlink.web.openapi import BEARER, error, json_body, obj

OPENAPI_PATHS: dict[str, Any] = {
    "/api/hub": {
        "get": {
            "operationId": "getHub",
            "summary": "Where the popup WebSocket is (docs/popup-protocol.md)",
            "tags": ["popups"],
            "security": BEARER,
            "responses": {
                "200": json_body(
                    "the hub's URL for this page's host",
                    obj(
                        {
                            "url": {"type": "string", "pattern": "^wss?://"},
                            "protocol_version": {"type": "integer"},
                        }
                    ),
                ),
                "401": error("no or an invalid token"),
            },
        }
    }
}

HUB = web.AppKey("hub", Hub)


def add_routes(app: web.Application, hub: Hub) -> None:
    app[HUB] = hub
    app.router.add_get("/api/hub", hub_info)


async def hub_info(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {"url": hub.url_for(request.url.host or "127.0.0.1"), "protocol_version": VERSION}
    )
