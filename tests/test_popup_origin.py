"""Which pages may open the popup WebSocket, for operators on other PCs.

With `[web]` and `[hub]` on the network and the page opened as http://pbx.office.lan:8080/,
the browser connects to ws://pbx.office.lan:8081/ with `Origin: http://pbx.office.lan:8080`
and `Host: pbx.office.lan:8081`. The socket goes to 127.0.0.1 here; the names are the
browser's, sent as they would be.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from desk_hub import Popups
from test_hub import OPERATORS, hello, running
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pbxlink.config import Config
from pbxlink.hub.settings import HubConfig
from pbxlink.web.settings import WebConfig

NAME = "pbx.office.lan"
WEB_PORT = 8080


def lan_hub(*, origins: tuple[str, ...] = (), tls: bool = False) -> Popups:
    web = WebConfig(host="0.0.0.0", port=WEB_PORT)
    if tls:  # the origin rule reads only whether the page is served over https
        web = WebConfig(
            host="0.0.0.0",
            port=WEB_PORT,
            tls_cert_file=Path("pbx.pem"),
            tls_key_file=Path("pbx.key"),
        )
    hub = HubConfig(host="127.0.0.1", port=0, origins=origins)
    return Popups(Config(company="ACME", operators=list(OPERATORS), web=web, hub=hub))


async def answer(hub: Popups, origin: str, host: str = NAME) -> Any:
    """Connect as a browser on another PC would; the welcome's type, or the close code."""
    uri = f"ws://{host}:{hub.port}/"  # the Host header the browser sends
    async with connect(uri, origin=origin, host="127.0.0.1", port=hub.port) as ws:  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionClosed):  # refused: it may be closed already
            await hello(ws, "101")
        try:
            return json.loads(await ws.recv())["type"]
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None


@pytest.mark.parametrize(
    ("origin", "host", "result"),
    [
        (f"http://{NAME}:{WEB_PORT}", NAME, "welcome"),  # the page, as the operator opened it
        (f"http://PBX.Office.LAN:{WEB_PORT}", NAME, "welcome"),  # names have no case
        (f"http://10.0.0.5:{WEB_PORT}", "10.0.0.5", "welcome"),  # or by its address
        (f"http://evil.example.com:{WEB_PORT}", NAME, 4003),  # another site
        (f"http://{NAME}:9999", NAME, 4003),  # another port of this host: not pbxlink's page
        (f"https://{NAME}:{WEB_PORT}", NAME, 4003),  # the page is served over http here
        (f"http://{NAME}:{WEB_PORT}", "other.office.lan", 4003),  # reached under another name
        ("null", NAME, 4003),  # a sandboxed frame or a file
    ],
)
async def test_the_page_is_allowed_under_the_name_the_browser_used(
    origin: str, host: str, result: Any
) -> None:
    hub = lan_hub()
    async with running(hub):
        assert await answer(hub, origin, host) == result


async def test_https_pages_and_configured_origins() -> None:
    hub = lan_hub(tls=True)
    async with running(hub):
        assert await answer(hub, f"https://{NAME}:{WEB_PORT}") == "welcome"
        assert await answer(hub, f"http://{NAME}:{WEB_PORT}") == 4003
    # behind a reverse proxy the page's origin is the proxy's: named in [hub] origins, and
    # then only the names given are allowed
    proxied = lan_hub(origins=("https://pbx.example.com",))
    async with running(proxied):
        assert await answer(proxied, "https://pbx.example.com", "pbx.example.com") == "welcome"
        assert await answer(proxied, f"http://{NAME}:{WEB_PORT}") == 4003
