"""`GET /api/hub`: where the page finds the popup WebSocket (any authenticated role).

The URL is built from the host the page was loaded from, so a page opened as
http://pbx.example.com:8080/ connects to ws://pbx.example.com:8081/ without configuration.
The route lives in the web part, which may know the hub; the hub never imports the web part.
"""

from __future__ import annotations

from aiohttp import web

from pbxlink.hub.messages import VERSION
from pbxlink.hub.server import Hub
from pbxlink.web.models import HubInfo
from pbxlink.web.spec import Answer, Route, mount, respond

HUB = web.AppKey("hub", Hub)


def add_routes(app: web.Application, hub: Hub) -> None:
    app[HUB] = hub
    mount(app, ROUTES)


async def hub_info(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return respond(HubInfo(hub.url_for(request.url.host or "127.0.0.1"), VERSION))


ROUTES = [
    Route("GET", "/api/hub", "getHub", "Where the popup WebSocket is (docs/popup-protocol.md)",
          "popups", {200: Answer("the hub's URL for this page's host", HubInfo)},
          handler=hub_info),
]  # fmt: skip
