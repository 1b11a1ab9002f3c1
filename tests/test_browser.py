"""The operator page in a real browser (Debian's chromium, driven by Playwright) against the
real daemon, its simulator playing recorded calls, over real TCP on 127.0.0.1.

Skipped when /usr/bin/chromium is missing, a failure under PBXLINK_STRICT=1 (CI installs it).
Screenshots: tests/artifacts/; `PBXLINK_SCREENSHOTS=docs .venv/bin/python -m pytest
tests/test_browser.py` also rewrites docs/operator-page.png and docs/call-log.png.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from browser_harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    OPERATORS,
    Running,
    add_client,
    need_chromium,
    rest,
    running_daemon,
    screenshot_paths,
    token,
    until,
)
from playwright.async_api import Browser, Locator, Page, async_playwright
from playwright.async_api import expect as pw_expect

from pbxlink.calls.updates import Ringing
from pbxlink.daemon import TICK_S
from pbxlink.sim.scenario import Scenario
from pbxlink.web import page

from conftest import TRACES, make_record, need

# the browser is started once per module, so the async tests share the module's event loop
in_module_loop = pytest.mark.asyncio(loop_scope="module")
TIMEOUT_MS = 5000
ERRORS: dict[Page, list[str]] = {}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    need_chromium()
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_tab(browser: Browser) -> Page:
    """A fresh profile (its own localStorage and cookies), UTC like the daemon; the page's
    uncaught errors are collected in ERRORS[tab] for the test to check."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="UTC", locale="en-GB"
    )
    context.set_default_timeout(TIMEOUT_MS)
    tab = await context.new_page()
    errors: list[str] = []
    ERRORS[tab] = errors
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    return tab


async def close_tab(tab: Page) -> None:
    await tab.context.close()
    errors = ERRORS.pop(tab)
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser) -> AsyncIterator[Page]:
    tab = await new_tab(browser)
    try:
        yield tab
    finally:
        await close_tab(tab)


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
BUSY = "04_in_direct_busy"  # 0622222222: 101 busy, nobody else: 101 missed it
ABANDONED = "09_ivr_support_queue_caller_abandons"  # 104 rings, the caller hangs up
ANSWERED = "08_ivr_support_queue_103_answers"  # 0666666666, 103 answers


# the browser's clock (the machine's, like time.time()) when a card first shows the name
SHOWN_AT_JS = """name => {
  window.shownAt = null;
  const seen = () => [...document.querySelectorAll(".card [data-f=name]")]
    .some((n) => n.textContent === name);
  new MutationObserver((_, observer) => {
    if (seen()) { window.shownAt = Date.now(); observer.disconnect(); }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


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
        seed_calls(run, client["id"], "+995644444444")  # the log beside the card
        await until(lambda: run.daemon.store.queue_depth == 0, 5, "the seeded calls stored")
        rang: list[float] = []
        tell = run.daemon.desk_adapter.tell

        def heard(event: object) -> None:  # when the desk hears 101 ring
            if isinstance(event, Ringing) and event.extension == "101":
                rang.append(time.time())
            tell(event)

        run.daemon.desk_adapter.tell = heard  # type: ignore[method-assign]
        await sign_in(tab, run.url)
        await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
        await tab.evaluate(SHOWN_AT_JS, "Giorgi Beridze")

        run.sim.play_once([SALES])
        card = tab.locator(".card", has_text="Giorgi Beridze")
        await card.wait_for(timeout=10_000)
        assert rang, "the daemon never said 101 rings"
        shown = await tab.evaluate("window.shownAt") / 1000
        assert shown - rang[0] < 1.0, f"the card came {shown - rang[0]:.3f} s after the ring"
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

        # a reload in the middle of the ring (5 s long) shows the card again (hub's welcome)
        await tab.reload()
        card = tab.locator(".card", has_text="Giorgi Beridze")
        await pw_expect(card.locator("[data-f=ext]")).to_have_text("101 · Alice Sales")
        assert len(rang) == 1 and time.time() - rang[0] < 4.0, "the ring was over too soon"
        await pw_expect(card).to_have_attribute("data-phase", "ringing")
        await save_screenshot(card, "ringing-card")
        await pw_expect(tab.locator("#log-table tbody tr").first).to_be_visible()
        await save_screenshot(tab, "operator-page")

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


@in_module_loop
async def test_page_reconnects_by_itself_and_signs_out_a_removed_operator(
    tmp_path: Path, tab: Page
) -> None:
    async with running_daemon(tmp_path) as run:
        await sign_in(tab, run.url)
        conn = tab.locator("#conn")
        await pw_expect(conn).to_have_attribute("data-state", "live")
        hub = run.daemon.hub
        await hub.close()  # the daemon's hub goes away ...
        await pw_expect(conn).to_have_attribute("data-state", "retry")
        await pw_expect(conn).to_contain_text("reconnecting in")
        await hub.start()  # ... and comes back on another port: /api/hub says which
        await pw_expect(conn).to_have_attribute("data-state", "live", timeout=10_000)

        # the operator's token is removed from the config: the hub closes with 4002
        run.daemon.operators.replace(
            [op for op in run.daemon.operators.all if op.name != "Alice Sales"]
        )
        await pw_expect(tab.locator("#login")).to_be_visible()
        await pw_expect(tab.locator("#login-error")).to_contain_text("no longer valid")
        assert await tab.evaluate("localStorage.getItem('pbxlink.token')") is None


@in_module_loop
async def test_supervisor_is_told_of_a_call_that_talks_too_long(tmp_path: Path, tab: Page) -> None:
    limits = {"too_long_call_s": 1}
    async with running_daemon(tmp_path, speed=2.0, thresholds=limits) as run:
        await sign_in(tab, run.url, "supervisor")
        await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
        run.sim.play_once([TRANSFER])  # 101 answers after 1 s and talks for 8 s
        card = tab.locator(".card", has_text=TRANSFER_CALLER)
        await pw_expect(card.locator("[data-f=phase]")).to_have_text("Talking", timeout=5000)
        # the daemon checks talk times every few seconds (daemon.TICK_S)
        alert = tab.locator("#alerts .alert-item")
        await pw_expect(alert).to_have_count(1, timeout=int(TICK_S * 1000) + 3000)
        await pw_expect(alert).to_contain_text(TRANSFER_CALLER)
        await pw_expect(alert).to_contain_text("limit 0:01")
        await pw_expect(alert).to_contain_text("Alice Sales")  # who is on that call


# -- the call log ---------------------------------------------------------------------------------

MISSED_BG = rgb("#fee2e2")  # style.css --missed-bg
ANSWERED_BG = rgb("#dcfce7")  # style.css --ok-bg
SEEDED = 56  # more than a page (50): "load more" has something to load
SEED_STATUSES = ("no_answer", "answered", "voicemail", "answered", "abandoned", "answered")


def seed_calls(run: Running, client_id: int, number: str) -> None:
    """Earlier calls of today, straight into the daemon's store; every third one the client's
    (from `number`)."""
    now = time.time()
    midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = max(midnight.timestamp() + 1, now - 3600)
    step = (now - 5 - first) / SEEDED
    for i in range(SEEDED):
        status = SEED_STATUSES[i % len(SEED_STATUSES)]
        started = first + i * step
        extension = ("101", "102", "103")[i % 3]
        ours = i % 3 == 0
        caller = number if ours else f"+99559900{i:04d}"
        answered = status == "answered"
        record = make_record(
            call_id=f"seed-{i}",
            started_at=started,
            caller_number=caller,
            called_number="5551000",
            status=status,
            offered_at=started,
            extensions_rung=[extension],
            answered_by=extension if answered else None,
            wait_s=3.0 + i % 20,
            talk_s=30.0 + 7 * i if answered else 0.0,
        )
        run.daemon.store.submit(record, client_id=client_id if ours else None)


@in_module_loop
async def test_call_log_colours_missed_calls_loads_more_and_filters(
    tmp_path: Path, browser: Browser, tab: Page
) -> None:
    async with running_daemon(tmp_path, speed=10.0) as run:
        client = await add_client(run, name="Tamar Lomidze", phones=["+995599000000"])
        seed_calls(run, client["id"], "+995599000000")
        await until(lambda: run.daemon.store.queue_depth == 0, 5, "the seeded calls stored")
        seeded_missed = sum(
            1 for i in range(SEEDED) if i % 3 == 0 and SEED_STATUSES[i % 6] != "answered"
        )
        await sign_in(tab, run.url)  # operator 101, who misses the busy call below
        await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
        await pw_expect(tab.locator("#missed .missed-item")).to_have_count(seeded_missed)
        boss = await new_tab(browser)
        await sign_in(boss, run.url, "supervisor")
        await pw_expect(boss.locator("#alerts-panel")).to_be_visible()  # supervisors only
        await pw_expect(boss.locator("#conn")).to_have_attribute("data-state", "live")

        seqs = run.sim.play_once([BUSY, ABANDONED, ANSWERED], interval_s=0.05)
        await asyncio.wait_for(run.sim.wait_played(seqs), 15)
        await until(
            lambda: run.daemon.tracker.active_calls == 0 and run.daemon.store.queue_depth == 0,
            10,
            "the calls stored",
        )
        # 101 missed the busy call (live), and earlier ones today (from the log at sign-in)
        missed = tab.locator("#missed .missed-item")
        await pw_expect(missed).to_have_count(1 + seeded_missed)
        await pw_expect(missed.first).to_contain_text("0622222222")
        await pw_expect(tab.locator("#missed-count")).to_have_text(str(1 + seeded_missed))
        await pw_expect(tab.locator("#alerts-panel")).to_be_hidden()
        await tab.reload()  # the list comes back from the log
        await pw_expect(missed).to_have_count(1 + seeded_missed)
        await pw_expect(missed.first).to_contain_text("0622222222")

        # the log refreshed by itself when the calls ended: a page, then the rest
        rows = boss.locator("#log-table tbody tr")
        await pw_expect(rows.first).to_contain_text("0666666666")  # scenario 08, the newest
        await pw_expect(rows).to_have_count(50)
        await save_screenshot(boss, "call-log")
        await boss.click("#more")
        await pw_expect(rows).to_have_count(SEEDED + 3)
        await pw_expect(boss.locator("#more")).to_be_hidden()
        for status, cls, background in (
            ("no_answer", "status-missed", MISSED_BG),
            ("abandoned", "status-missed", MISSED_BG),
            ("busy", "status-missed", MISSED_BG),
            ("voicemail", "status-missed", MISSED_BG),
            ("answered", "status-answered", ANSWERED_BG),
        ):
            row = boss.locator(f"#log-table tbody tr[data-status={status}]").first
            await pw_expect(row).to_have_class(cls)
            assert await row.evaluate("r => getComputedStyle(r).backgroundColor") == background

        # filters: only the answered calls of extension 103
        form = boss.locator("#log-form")
        await form.locator("[name=status]").select_option("answered")
        await form.locator("[name=extension]").fill("103")
        await form.locator("button[type=submit]").click()
        expected = sum(
            1 for i in range(SEEDED) if SEED_STATUSES[i % 6] == "answered" and i % 3 == 2
        )
        await pw_expect(rows).to_have_count(expected + 1)  # and scenario 08's call
        await pw_expect(rows.first).to_contain_text("0666666666")
        statuses = await rows.evaluate_all("rs => rs.map(r => r.dataset.status)")
        assert set(statuses) == {"answered"}
        await pw_expect(boss.locator("#more")).to_be_hidden()

        # one client's history
        await form.locator("[name=status]").select_option("")
        await form.locator("[name=extension]").fill("")
        await form.locator("button[type=submit]").click()
        await boss.locator("#log-table button[data-client]", has_text="Tamar").first.click()
        history = boss.locator("#history-dialog")
        await pw_expect(history.locator("#history-title")).to_have_text("Calls of Tamar Lomidze")
        await pw_expect(history.locator("tbody tr")).to_have_count(len(range(0, SEEDED, 3)))
        await close_tab(boss)


# every text a card's name line shows, in order, from now on
NAMES_SEEN_JS = """() => {
  window.namesSeen = [];
  new MutationObserver(() => {
    for (const n of document.querySelectorAll(".card [data-f=name]")) {
      if (window.namesSeen.at(-1) !== n.textContent) window.namesSeen.push(n.textContent);
    }
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
}"""


def trace_scenario(name: str, rewrite: Callable[[bytes], bytes] = lambda b: b) -> Scenario:
    """A real trace the simulator does not ship, played as a scenario."""
    path = TRACES / f"{name}.ami"
    need(path.exists(), f"{path} not found")
    return Scenario.from_bytes(name, rewrite(path.read_bytes()))


@in_module_loop
async def test_cards_of_colleagues_withheld_numbers_and_transfer_targets(
    tmp_path: Path, tab: Page, browser: Browser
) -> None:
    """An internal call shows the colleague and a withheld number says so, never "Looking
    up…"; after a blind transfer the target's card says Talking and 101's who took it."""
    internal = trace_scenario("11_internal_101_to_102")  # 101 calls 102
    anonymous = trace_scenario(  # 101 rings for a caller who withheld the number
        "01_in_direct_answered_caller_hangup",
        lambda b: b.replace(b"0612345678", b"anonymous").replace(b"Jane Doe", b"Anonymous"),
    )
    bob = await new_tab(browser)
    try:
        async with running_daemon(tmp_path, speed=4.0) as run:
            await sign_in(tab, run.url)  # Alice, 101
            await sign_in(bob, run.url, "operator2")  # Bob, 102
            for page_ in (tab, bob):
                await pw_expect(page_.locator("#conn")).to_have_attribute("data-state", "live")
                await page_.evaluate(NAMES_SEEN_JS)

            await asyncio.wait_for(run.sim.wait_played(run.sim.play_once([internal])), 15)
            card = bob.locator(".card").first
            await pw_expect(card.locator("[data-f=name]")).to_have_text("Alice Sales")
            await pw_expect(card.locator("[data-f=number]")).to_have_text("101")
            await pw_expect(card.locator("[data-act=edit]")).to_be_hidden()
            await pw_expect(card.locator("[data-act=attach]")).to_be_hidden()

            await asyncio.wait_for(run.sim.wait_played(run.sim.play_once([anonymous])), 15)
            card = tab.locator(".card").first
            await pw_expect(card.locator("[data-f=number]")).to_have_text("Number withheld")
            await pw_expect(card.locator("[data-f=name]")).to_have_text("Anonymous")
            await pw_expect(card.locator("[data-act=edit]")).to_be_hidden()
            for page_ in (tab, bob):
                assert "Looking up…" not in await page_.evaluate("window.namesSeen")

            run.sim.play_once([TRANSFER])  # 101 answers, blind-transfers to 102, who answers
            mine = tab.locator(".card", has_text=TRANSFER_CALLER)
            theirs = bob.locator(".card", has_text=TRANSFER_CALLER)
            await pw_expect(mine.locator("[data-f=phase]")).to_have_text("Talking", timeout=10_000)
            await pw_expect(theirs.locator("[data-f=phase]")).to_have_text(
                "Talking", timeout=10_000
            )
            await pw_expect(mine.locator("[data-f=phase]")).to_have_text("Answered by Bob Sales")
            await pw_expect(theirs.locator("[data-f=answered]")).to_have_text("101 · Alice Sales")
    finally:
        await close_tab(bob)
