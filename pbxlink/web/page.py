"""The operator page: `/` and its files under `/static/`, public (they hold no data: the page
asks the API for everything with the operator's token).

The files change only with a pbxlink upgrade and have no hashed names (no build step), so they
are sent `no-cache` with an ETag: the browser keeps them and revalidates with a cheap 304, and
never runs yesterday's script against today's API. The Content-Security-Policy allows only
this origin's scripts and styles, so text from a caller or a CRM can never become code.

`python -m pbxlink.web.page` rewrites static/ring.wav from `ring_wav()` (the file is committed;
a test checks it matches).
"""

from __future__ import annotations

import io
import math
import re
import struct
import sys
import wave
from pathlib import Path

from aiohttp import web

from pbxlink.web.errors import ApiError
from pbxlink.web.spec import Answer, Route, mount

STATIC = Path(__file__).resolve().parent / "static"
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".wav": "audio/wav",
}
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\.[a-z]{2,4}")
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def add_routes(app: web.Application) -> None:
    """Mount `/` and `/static/{name}` on `app` (make_app does)."""
    mount(app, ROUTES)


def _file(name: str) -> web.FileResponse:
    path = STATIC / name
    suffix = path.suffix
    if not NAME.fullmatch(name) or suffix not in TYPES or not path.is_file():
        raise ApiError(404, "not_found", f"no static file {name!r}", what="static file")
    # FileResponse answers If-None-Match / If-Modified-Since with a 304 by itself
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": TYPES[suffix]})


async def index(request: web.Request) -> web.FileResponse:
    return _file("index.html")


async def static(request: web.Request) -> web.FileResponse:
    return _file(request.match_info["name"])


ROUTES = [
    Route("GET", "/", "getOperatorPage", "The operator page (sign in with a token)", "page",
          {200: Answer("the page", content={"text/html": {}})}, role="public", handler=index),
    Route("GET", "/static/{name}", "getStaticFile",
          "A file of the operator page (script, style, icon, sound)", "page",
          {200: Answer("the file", content={"*/*": {}})}, {404: "no such file"}, role="public",
          handler=static),
]  # fmt: skip


def ring_wav(rate: int = 16_000) -> bytes:
    """Two soft rising chimes, 0.7 s: heard over an open-plan office, not a fire alarm."""
    notes = ((0.0, 0.35, 880.0), (0.3, 0.4, 1318.5))  # start s, length s, Hz: A5 then E6
    total = int(rate * 0.7)
    samples = [0.0] * total
    for start, length, freq in notes:
        first = int(start * rate)
        for i in range(int(length * rate)):
            t = i / rate
            envelope = min(1.0, t / 0.01) * math.exp(-t * 7.0)  # 10 ms attack, bell decay
            tone = math.sin(2 * math.pi * freq * t) + 0.3 * math.sin(4 * math.pi * freq * t)
            samples[first + i] += 0.35 * envelope * tone
    frames = b"".join(struct.pack("<h", round(max(-1.0, min(1.0, s)) * 32767)) for s in samples)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames)
    return out.getvalue()


if __name__ == "__main__":
    target = STATIC / "ring.wav"
    target.write_bytes(ring_wav())
    print(f"wrote {target}", file=sys.stderr)
