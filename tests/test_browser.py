"""The operator page in a real browser (Debian's chromium, driven by Playwright) against the
real daemon, its simulator playing recorded calls, over real TCP on 127.0.0.1.

Skipped when /usr/bin/chromium is missing, a failure under PBXLINK_STRICT=1 (CI installs it).
Screenshots: tests/artifacts/; `PBXLINK_SCREENSHOTS=docs .venv/bin/python -m pytest
tests/test_browser.py` also rewrites docs/operator-page.png and docs/call-log.png.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from browser_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OPERATORS,
    need_chromium,
    running_daemon,
    token,
)
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import expect as pw_expect

from pbxlink.web import page

# the browser is started once per module, so the async tests share the module's event loop
in_module_loop = pytest.mark.asyncio(loop_scope="module")
TIMEOUT_MS = 5000


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    need_chromium()
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser) -> AsyncIterator[Page]:
    """A fresh profile per test (its own localStorage and cookies), UTC like the daemon."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="UTC", locale="en-GB"
    )
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def sign_in(tab: Page, url: str, who: str = "operator") -> None:
    await tab.goto(url + "/")
    await tab.fill("#token", token(who))
    await tab.click("#login-form button[type=submit]")
    name, extensions, _ = OPERATORS[who]
    await pw_expect(tab.locator("#who")).to_contain_text(name)
    await pw_expect(tab.locator("#who")).to_contain_text(extensions[0])


# -- the page's files, without a browser --------------------------------------------------------


@in_module_loop
async def test_page_and_static_files_are_public_cached_and_locked_down(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as run, aiohttp.ClientSession(run.url) as http:
        async with http.get("/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp
            assert "connect-src 'self' ws: wss:" in csp and "img-src 'self' data:" in csp
            assert "unsafe-inline" not in csp
            assert r.headers["Cache-Control"] == "no-cache"
            etag = r.headers["ETag"]
            html = await r.text()
        assert '<script type="module" src="/static/app.js">' in html
        assert "<script>" not in html and " on" + "click=" not in html  # nothing inline
        async with http.get("/", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
        async with http.get("/static/app.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get("/static/ring.wav") as r:
            assert r.status == 200 and r.content_type == "audio/wav"
        for bad in ("nope.js", "..%2Fpage.py", "page.py", ".hidden.js", "INDEX.HTML"):
            async with http.get(f"/static/{bad}") as r:
                assert r.status == 404, bad
                assert (await r.json())["error"] == "not_found"


def test_committed_ring_is_the_generated_one() -> None:
    path = page.STATIC / "ring.wav"
    assert path.read_bytes() == page.ring_wav(), "run: .venv/bin/python -m pbxlink.web.page"
    with wave.open(str(path)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    assert 0.3 < seconds < 1.5


def test_scripts_never_write_html() -> None:
    """Data reaches the DOM as text: no innerHTML/outerHTML/insertAdjacentHTML/document.write."""
    for script in page.STATIC.glob("*.js"):
        source = script.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"


# -- the page in chromium -----------------------------------------------------------------------


@in_module_loop
async def test_sign_in_shows_who_and_the_log_then_sign_out(tmp_path: Path, tab: Page) -> None:
    async with running_daemon(tmp_path) as run:
        url = run.url
        await tab.goto(url + "/")
        await pw_expect(tab.locator("#login")).to_be_visible()
        await tab.fill("#token", "wrong-token-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        await tab.click("#login-form button[type=submit]")
        await pw_expect(tab.locator("#login-error")).to_have_text("Unknown token.")
        await sign_in(tab, url)
        await pw_expect(tab.locator("#desk")).to_be_visible()
        await pw_expect(tab.locator("#login")).to_be_hidden()
        assert await tab.evaluate("localStorage.getItem('pbxlink.token')") == token("operator")
        cookies = {c["name"]: c for c in await tab.context.cookies()}
        assert cookies["token"]["value"] == token("operator")
        assert cookies["token"]["sameSite"] == "Strict"
        # a reload keeps the operator signed in
        await tab.reload()
        await pw_expect(tab.locator("#who")).to_contain_text("Alice Sales")
        await tab.click("#logout")
        await pw_expect(tab.locator("#login")).to_be_visible()
        assert await tab.evaluate("localStorage.getItem('pbxlink.token')") is None
        assert "token" not in {c["name"] for c in await tab.context.cookies()}
