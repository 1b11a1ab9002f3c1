"""What the browser tests drive: Debian's chromium through Playwright's driver (never a
browser Playwright downloads), and the real daemon in this process with its built-in
simulator, which plays only the scenarios a test asks for.

Screenshots go to tests/artifacts/ (gitignored); with PBXLINK_SCREENSHOTS=docs the README's
pictures in docs/ are rewritten too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from pbxlink.config import Config, parse
from pbxlink.daemon import Daemon
from pbxlink.operators import hash_token
from pbxlink.sim.scenario import load_scenarios
from pbxlink.sim.server import AmiSimulator

from conftest import ROOT, need

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "tests" / "artifacts"
DOCS = ROOT / "docs"
SCREENSHOTS_TO_DOCS = os.environ.get("PBXLINK_SCREENSHOTS") == "docs"
DOCS_PICTURES = ("operator-page", "call-log")
AMI_SECRET = "browser-tests-secret"

OPERATORS = {
    # role -> (name, extensions, token)
    "operator": ("Alice Sales", ["101"], "alice-token-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    "operator2": ("Bob Sales", ["102"], "bob-token-102-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
    "supervisor": ("Sandro Boss", ["200"], "sandro-token-200-ssssssssssssssssssssssssss"),
}


def token(who: str) -> str:
    return OPERATORS[who][2]


def need_chromium() -> None:
    need(
        CHROMIUM.exists(),
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)",
    )


def daemon_config(state: Path, ami_port: int, **sections: dict[str, Any]) -> Config:
    """The config of the tests' daemon; `sections` add config sections (thresholds=...)."""
    return parse(
        {
            **sections,
            "company": "Acme Tbilisi",
            "ami": {
                "mode": "asterisk",
                "port": ami_port,
                "secret": AMI_SECRET,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.2,
            },
            "storage": {"state_dir": str(state)},
            "web": {"port": 0},
            "hub": {"port": 0},
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


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass(slots=True)
class Running:
    daemon: Daemon
    sim: AmiSimulator  # plays nothing by itself: each test plays its scenarios

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.web_port}"


@contextlib.asynccontextmanager
async def running_daemon(
    state: Path, *, speed: float = 2.0, **sections: dict[str, Any]
) -> AsyncIterator[Running]:
    """The daemon logged in to a simulator; stopped (exit code 0) afterwards."""
    sim = AmiSimulator(
        load_scenarios(),
        secret=AMI_SECRET,
        calls_per_s=0,
        speed=speed,
        timestamps=False,
        pbx_timezone=dt.UTC,
    )
    async with sim:
        daemon = Daemon(daemon_config(state, sim.port, **sections))
        task = asyncio.create_task(daemon.run())
        try:
            await until(lambda: daemon.ami_state == "up" or task.done(), 10, "the AMI link up")
            assert not task.done(), "the daemon stopped at start-up"
            yield Running(daemon, sim)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0


async def rest(run: Running, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
    """One REST call as operator 101 would make it; checks the status, returns the JSON."""
    headers = {"Authorization": f"Bearer {token('operator')}"}
    async with (
        aiohttp.ClientSession(run.url, headers=headers) as http,
        http.request(method, path, json=body) as response,
    ):
        data = await response.json()
        assert response.status == expect, (method, path, response.status, data)
        return data


async def add_client(run: Running, **fields: Any) -> dict[str, Any]:
    """A client through the REST API, as an operator makes one."""
    client: dict[str, Any] = await rest(run, "POST", "/api/clients", fields, expect=201)
    return client


def screenshot_paths(name: str) -> list[Path]:
    """Where a screenshot goes: the artifacts, and docs/ for the README's pictures when asked."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    paths = [ARTIFACTS / f"{name}.png"]
    if SCREENSHOTS_TO_DOCS and name in DOCS_PICTURES:
        paths.append(DOCS / f"{name}.png")
    return paths
