"""The operator page in a real browser (Debian's chromium, driven by Playwright) against the
real daemon, its simulator playing recorded calls, over real TCP on 127.0.0.1.

Skipped when /usr/bin/chromium is missing, a failure under PBXLINK_STRICT=1 (CI installs it).
Screenshots: tests/artifacts/; `PBXLINK_SCREENSHOTS=docs .venv/bin/python -m pytest
tests/test_browser.py` also rewrites docs/operator-page.png and docs/call-log.png.
"""

from __future__ import annotations

import time
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
    add_client,
    need_chromium,
    rest,
    running_daemon,
    screenshot_paths,
    token,
)
from playwright.async_api import Browser, Locator, Page, async_playwright
from playwright.async_api import expect as pw_expect

from pbxlink.calls.updates import Ringing
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


async def save_screenshot(target: Page | Locator, name: str) -> None:
    for path in screenshot_paths(name):
        await target.screenshot(path=str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


# -- live cards -----------------------------------------------------------------------------------

SALES = "06_ivr_sales_101_noanswer_102_answers"  # 0644444444 rings 101 (15 s), then 102 answers
SALES_CALLER = "0644444444"
TRANSFER = "12_blind_transfer_101_to_102"  # 0688888888 (unknown) rings 101, who answers
TRANSFER_CALLER = "0688888888"


def rgb(hex_color: str) -> str:
    """#rrggbb as getComputedStyle() reports it."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@in_module_loop
async def test_ringing_call_pops_the_card_within_a_second_and_again_after_reload(
    tmp_path: Path, tab: Page
) -> None:
    async with running_daemon(tmp_path, speed=3.0) as run:
        client = await add_client(
            run,
            name="Giorgi Beridze",
            company="Beridze Ltd",
            category="vip",
            notes="Speaks Russian.\nCall back only after 10:00.",
            city="Tbilisi",
            country="GE",
            phones=["+995 644 44 44 44"],
        )
        order = {"number": "A-1042", "stage": "shipped", "responsible": "Nino", "debt": 120.5}
        await rest(run, "POST", f"/api/clients/{client['id']}/orders", order, expect=201)
        rang: list[float] = []
        run.daemon.listeners.append(
            lambda u: (
                rang.append(time.monotonic())
                if isinstance(u, Ringing) and u.extension == "101"
                else None
            )
        )
        await sign_in(tab, run.url)
        await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")

        run.sim.play_once([SALES])
        card = tab.locator(".card", has_text="Giorgi Beridze")
        await card.wait_for(timeout=10_000)
        shown = time.monotonic()
        assert rang, "the daemon never said 101 rings"
        assert shown - rang[0] < 1.0, f"the card came {shown - rang[0]:.2f} s after the ring"
        await pw_expect(card).to_have_attribute("data-phase", "ringing")
        await pw_expect(card.locator("[data-f=number]")).to_have_text(SALES_CALLER)
        await pw_expect(card.locator("[data-f=category]")).to_have_text("VIP")
        await pw_expect(card.locator("[data-f=notes]")).to_have_text(client["notes"])
        await pw_expect(card.locator("[data-f=direction]")).to_contain_text("Inbound")
        await pw_expect(card.locator("[data-f=ext]")).to_have_text("101 · Alice Sales")
        await pw_expect(card.locator("[data-f=ivr]")).to_have_text("1")
        await pw_expect(card.locator("[data-f=orders] tr")).to_have_count(1)
        await pw_expect(card.locator("[data-f=orders] td").first).to_have_text("A-1042")
        photo = card.locator("[data-f=photo]")
        assert await photo.get_attribute("src") == f"/api/clients/{client['id']}/photo"
        # the photo came through the token cookie (an <img> sends no header): a real image
        await pw_expect(photo).to_have_js_property("complete", True)
        assert await photo.evaluate("img => img.naturalWidth") > 0
        await save_screenshot(card, "ringing-card")
        await save_screenshot(tab, "operator-page")

        # a reload in the middle of the ring shows the card again (from the hub's welcome)
        await tab.reload()
        assert len(rang) == 1 and time.monotonic() - rang[0] < 4.0, "the ring was over too soon"
        card = tab.locator(".card", has_text="Giorgi Beridze")
        await pw_expect(card).to_have_attribute("data-phase", "ringing")
        await pw_expect(card.locator("[data-f=ext]")).to_have_text("101 · Alice Sales")

        # 101 rang out, 102 answered: 101's card says who took it, then greys out at the end
        await pw_expect(card.locator("[data-f=phase]")).to_have_text(
            "Answered by Bob Sales", timeout=10_000
        )
        await pw_expect(card).to_have_attribute("data-phase", "ended", timeout=10_000)
        await pw_expect(card.locator("[data-f=phase]")).to_contain_text("Ended · answered")
        assert float(await card.evaluate("n => getComputedStyle(n).opacity")) < 1
        await tab.click(".card button[data-act=close]")
        await pw_expect(tab.locator(".card")).to_have_count(0)
        await pw_expect(tab.locator("#no-calls")).to_be_visible()


@in_module_loop
async def test_editing_the_client_during_the_call_updates_the_card(
    tmp_path: Path, tab: Page
) -> None:
    async with running_daemon(tmp_path, speed=3.0) as run:
        caller = await add_client(run, name="Giorgi Beridze", phones=[SALES_CALLER])
        other = await add_client(run, name="Nino Kapanadze", company="Kapanadze & Co")
        categories = (await rest(run, "GET", "/api/clients/categories"))["categories"]
        problem = next(c for c in categories if c["name"] == "problem")
        await sign_in(tab, run.url)
        await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")

        run.sim.play_once([SALES])
        card = tab.locator(".card", has_text=SALES_CALLER)
        name = card.locator("[data-f=name]")
        await pw_expect(name).to_have_text("Giorgi Beridze", timeout=10_000)
        await card.locator("button[data-act=edit]").click()
        form = tab.locator("#edit-form")
        await pw_expect(form.locator("[name=name]")).to_have_value("Giorgi Beridze")
        await form.locator("[name=name]").fill("محمد عبد الله")
        await form.locator("[name=category]").select_option("problem")
        await form.locator("[name=notes]").fill("Wants a refund.\nسيتصل مرة أخرى")
        await form.locator("button[type=submit]").click()
        await pw_expect(tab.locator("#edit-dialog")).not_to_be_visible()

        await pw_expect(name).to_have_text("محمد عبد الله")
        assert await name.evaluate("n => getComputedStyle(n).direction") == "rtl"
        badge = card.locator("[data-f=category]")
        await pw_expect(badge).to_have_text(problem["label"])
        assert await badge.evaluate("n => getComputedStyle(n).backgroundColor") == rgb(
            problem["color"]
        )
        await pw_expect(card.locator("[data-f=notes]")).to_have_text(
            "Wants a refund.\nسيتصل مرة أخرى"
        )
        stored = await rest(run, "GET", f"/api/clients/{caller['id']}")
        assert (stored["name"], stored["category"]["name"]) == ("محمد عبد الله", "problem")

        # an unknown caller's number goes to an existing client, found by a search
        run.sim.play_once([TRANSFER])
        card = tab.locator(".card", has_text=TRANSFER_CALLER)
        await pw_expect(card.locator("[data-f=new]")).to_be_visible(timeout=10_000)
        await card.locator("button[data-act=attach]").click()
        dialog = tab.locator("#attach-dialog")
        await dialog.locator("[name=q]").fill("kapanadze")
        await dialog.locator("button[type=submit]").click()
        result = dialog.locator("#attach-results li", has_text="Nino Kapanadze")
        await result.locator("button").click()
        await pw_expect(dialog).not_to_be_visible()
        await pw_expect(card.locator("[data-f=name]")).to_have_text("Nino Kapanadze")
        await pw_expect(card.locator("[data-f=new]")).to_be_hidden()
        await pw_expect(card.locator("[data-f=client-company]")).to_have_text("Kapanadze & Co")
        found = await rest(run, "GET", "/api/clients/lookup?number=" + TRANSFER_CALLER)
        assert [c["id"] for c in found["clients"]] == [other["id"]]

        # a phone-sized window: everything still fits, nothing scrolls sideways
        await tab.set_viewport_size({"width": 360, "height": 800})
        assert await tab.evaluate("document.documentElement.scrollWidth") <= 360
        box = await card.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
        await save_screenshot(tab, "narrow-window")
