"""`GET /api/hub`: where the page finds the popup WebSocket (any authenticated role).

The URL is built from the host the page was loaded from, so a page opened as
http://pbx.example.com:8080/ connects to ws://pbx.example.com:8081/ without configuration.
"""

from __future__ import annotations

from aiohttp import web

from pbxlink.hub.messages import VERSION
from pbxlink.hub.server import Hub

HUB = web.AppKey("hub", Hub)


def add_routes(app: web.Application, hub: Hub) -> None:
    app[HUB] = hub
    app.router.add_get("/api/hub", hub_info)


async def hub_info(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {"url": hub.url_for(request.url.host or "127.0.0.1"), "protocol_version": VERSION}
    )
