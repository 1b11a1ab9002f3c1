"""Operators on other PCs: the page over HTTPS and the popups over WSS, under a name that is
not localhost, in a real browser (Debian's chromium through Playwright).

Browsers show notifications only to secure pages: https://, or localhost. So over plain
http://pbx.office.test the page can never notify an operator on another PC, and over
https://pbx.office.test it can. Chromium maps the name to 127.0.0.1
(--host-resolver-rules) and trusts the test certificate by its public key
(--ignore-certificate-errors-spki-list): the page is a secure context as it would be with
the company's CA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from browser_harness import (
    AMI_SECRET,
    CHROMIUM,
    CHROMIUM_ARGS,
    OPERATORS,
    need_chromium,
    running_daemon,
    token,
    until,
)
from playwright.async_api import Browser, async_playwright
from playwright.async_api import expect as pw_expect

from pbxlink.config import parse
from pbxlink.daemon import Daemon
from pbxlink.operators import hash_token
from pbxlink.sim.scenario import load_scenarios
from pbxlink.sim.server import AmiSimulator

from conftest import need

NAME = "pbx.office.test"
SALES = "06_ivr_sales_101_noanswer_102_answers"  # rings 101 (Alice) for 15 s
TIMEOUT_MS = 10_000

# The operator is in another window: the page notifies only then. Every notification the page
# makes is counted, before and after the browser's own constructor accepted it.
SPY_JS = """
window.__notes = { asked: [], shown: [] };
Object.defineProperty(document, "hidden", { get: () => true });
Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
if ("Notification" in window) {
  const Real = window.Notification;
  const Spy = function (title, options) {
    window.__notes.asked.push(title);
    const made = new Real(title, options);
    window.__notes.shown.push(title);
    return made;
  };
  Object.defineProperty(Spy, "permission", { get: () => Real.permission });
  Spy.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Spy;
}
"""


def make_cert(folder: Path) -> tuple[Path, Path, str]:
    """A certificate for NAME, its key, and its public key's SHA-256 (base64) for chromium."""
    need(subprocess.run(["which", "openssl"], capture_output=True).returncode == 0, "no openssl")
    cert, key = folder / "pbx.pem", folder / "pbx.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    public = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
        check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=public, check=True, capture_output=True, timeout=60,
    ).stdout  # fmt: skip
    return cert, key, base64.b64encode(hashlib.sha256(der).digest()).decode()


def https_config(state: Path, ami_port: int, cert: Path, key: Path) -> Any:
    tls = {"tls_cert_file": str(cert), "tls_key_file": str(key)}
    return parse(
        {
            "company": "Acme Tbilisi",
            "ami": {"mode": "asterisk", "port": ami_port, "secret": AMI_SECRET},
            "storage": {"state_dir": str(state)},
            "web": {"port": 0, **tls},
            "hub": {"port": 0, **tls},
            "calls": {"pbx_timezone": "UTC"},
            "operators": [
                {
                    "name": name,
                    "extensions": list(extensions),
                    "role": "supervisor" if who == "supervisor" else "operator",
                    "token_hash": hash_token(tok),
                }
                for who, (name, extensions, tok) in OPERATORS.items()
            ],
        }
    )


@contextlib.asynccontextmanager
async def https_daemon(state: Path, cert: Path, key: Path) -> AsyncIterator[tuple[Daemon, Any]]:
    sim = AmiSimulator(
        load_scenarios(), secret=AMI_SECRET, calls_per_s=0, speed=2.0, timestamps=False,
        pbx_timezone=dt.UTC,
    )  # fmt: skip
    async with sim:
        daemon = Daemon(https_config(state, sim.port, cert, key))
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.ami_state == "up" or task.done(), 10, "the AMI link up")
            assert not task.done(), "the daemon stopped at start-up"
            yield daemon, sim
        finally:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0


@contextlib.asynccontextmanager
async def chromium(spki: str) -> AsyncIterator[Browser]:
    need_chromium()
    args = [
        *CHROMIUM_ARGS,
        f"--host-resolver-rules=MAP {NAME} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki}",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            yield browser
        finally:
            await browser.close()


async def test_https_page_wss_popups_and_a_notification_on_a_lan_name(tmp_path: Path) -> None:
    cert, key, spki = make_cert(tmp_path)
    async with https_daemon(tmp_path / "state", cert, key) as (daemon, sim):
        # the page really is served over TLS with this certificate
        context = ssl.create_default_context(cafile=str(cert))
        _, writer = await asyncio.open_connection(
            "127.0.0.1", daemon.web_port, ssl=context, server_hostname=NAME
        )
        writer.close()
        await writer.wait_closed()
        url = f"https://{NAME}:{daemon.web_port}"
        async with chromium(spki) as browser:
            ctx = await browser.new_context(timezone_id="UTC", locale="en-GB")
            ctx.set_default_timeout(TIMEOUT_MS)
            await ctx.grant_permissions(["notifications"], origin=url)
            await ctx.add_init_script(SPY_JS)
            tab = await ctx.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            await tab.goto(f"{url}/#token={token('operator')}")
            assert await tab.evaluate("window.isSecureContext") is True
            assert await tab.evaluate("Notification.permission") == "granted"
            await pw_expect(tab.locator("#who")).to_contain_text("Alice Sales")
            # the popups come over wss:// from the page's own name: the hub's origin rule
            hub_url = await tab.evaluate(
                "fetch('/api/hub', {headers: {Authorization: 'Bearer ' + "
                "localStorage.getItem('pbxlink.token')}}).then(r => r.json()).then(j => j.url)"
            )
            assert hub_url == f"wss://{NAME}:{daemon.hub.port}/"
            await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
            sim.play_once([SALES])
            card = tab.locator(".card", has_text="0644444444")
            await card.wait_for(timeout=TIMEOUT_MS)
            await tab.wait_for_function("window.__notes.asked.length > 0")
            notes = await tab.evaluate("window.__notes")
            assert notes["asked"] == notes["shown"] and len(notes["shown"]) >= 1, notes
            assert errors == []
            await ctx.close()


async def test_over_plain_http_a_lan_name_gets_no_notifications(tmp_path: Path) -> None:
    """Why the README asks for HTTPS: the same page over http:// on a LAN name."""
    _, _, spki = make_cert(tmp_path)
    async with running_daemon(tmp_path / "state") as run:
        url = f"http://{NAME}:{run.daemon.web_port}"
        async with chromium(spki) as browser:
            ctx = await browser.new_context()
            with contextlib.suppress(Exception):  # chromium may refuse to grant it at all
                await ctx.grant_permissions(["notifications"], origin=url)
            tab = await ctx.new_page()
            await tab.goto(f"{url}/#token={token('operator')}")
            await pw_expect(tab.locator("#who")).to_contain_text("Alice Sales")
            assert await tab.evaluate("window.isSecureContext") is False
            permission = await tab.evaluate(
                "'Notification' in window ? Notification.permission : 'absent'"
            )
            assert permission != "granted"
            # the popups themselves still come (same-host origin rule), only unnoticed
            await pw_expect(tab.locator("#conn")).to_have_attribute("data-state", "live")
            await ctx.close()
