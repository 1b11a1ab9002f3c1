"""Which pages may open the popup WebSocket when `[hub] origins` names none.

The page pbxlink serves itself, under whatever name the browser reached it: an `Origin` whose
host is the host the browser connected to (the WebSocket request's `Host` header), whose port
is the web port, and whose scheme is the one the web listener speaks. So operators on other
PCs who open `http://pbx.office.lan:8080/` get their popups with no configuration, and a page
of another site (another host, or another port of this one) is refused with 4003.

This is a guard against other sites' scripts, not against an attacker: a DNS-rebound name
passes it (the browser connects to the hub under the attacker's name, and sends it as both
Origin and Host). The token in `hello` is the real guard. Pages behind a reverse proxy, whose
origin is the proxy's, are allowed by naming them in `[hub] origins`.
"""

from __future__ import annotations

from yarl import URL


def same_host(origin: str, host: str | None, *, web_port: int, web_tls: bool) -> bool:
    """Is `origin` the page pbxlink serves on `web_port`, reached as `host` (a Host header)?"""
    if not host:
        return False
    try:
        page = URL(origin)
        reached = URL(f"http://{host}")
    except ValueError:
        return False
    if page.scheme != ("https" if web_tls else "http") or page.path not in ("", "/"):
        return False
    if page.host is None or reached.host is None or page.user is not None:
        return False
    return page.host.lower().rstrip(".") == reached.host.lower().rstrip(".") and (
        page.port == web_port
    )
