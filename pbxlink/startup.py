"""Why the daemon could not start, said in one line an admin can act on.

A port another program holds, or a database another daemon holds, is not a bug in pbxlink:
it deserves the setting to change and the value, not a traceback (and `pbxlink run` exits 2,
like for a bad config file, instead of hanging on the parts it had already opened).
"""

from __future__ import annotations

import errno
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from ssl import SSLContext
from typing import TypeVar

import msgspec

from pbxlink.ami.settings import AmiConfig
from pbxlink.config import Config
from pbxlink.sim.server import AmiSimulator
from pbxlink.tls import TlsFilesError, server_context

T = TypeVar("T")


class StartError(Exception):
    """The daemon cannot start; the message names the setting at fault."""


def listen_error(section: str, host: str, port: int, exc: OSError) -> StartError:
    """`[section] port`/`host` could not be listened on: which, and why, in one line."""
    if exc.errno == errno.EADDRINUSE:
        why = "the port is already in use (by another program, or another pbxlink)"
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges)"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this machine (see [{section}] host)"
    else:
        why = exc.strerror or str(exc)
    return StartError(f"[{section}] port = {port}: cannot listen on {host}:{port}: {why}")


async def listening(section: str, host: str, port: int, start: Callable[[], Awaitable[T]]) -> T:
    """`await start()`, a listener of `[section]`; a port taken is a StartError."""
    try:
        return await start()
    except OSError as exc:
        raise listen_error(section, host, port, exc) from None


def web_tls(cert_file: Path | None, key_file: Path | None) -> SSLContext | None:
    """The page's https:// context from `[web] tls_cert_file`/`tls_key_file`, if set."""
    if cert_file is None or key_file is None:
        return None
    try:
        return server_context(cert_file, key_file)
    except TlsFilesError as exc:
        raise StartError(f"[web] tls_cert_file: {exc}") from None


def print_demo_link(host: str, port: int, tls: bool, token: str) -> None:
    """The demo's page link, for the person watching the terminal (not a log line)."""
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    print(
        f"pbxlink demo: the operator page is {'https' if tls else 'http'}://{host}:{port}/"
        f"#token={token} (a supervisor made up for this run; configure [[operators]] for"
        " real ones)",
        file=sys.stderr,
        flush=True,
    )


async def start_simulator(config: Config) -> tuple[AmiSimulator, AmiConfig]:
    """The built-in AMI simulator, listening, and the AMI settings that log in to it."""
    ami, sim = config.ami, config.simulator
    secret = secrets.token_urlsafe(16)
    simulator = AmiSimulator.from_config(
        sim,
        username=ami.username,
        secret=secret,
        timestamps=False,
        speed=sim.speed,
        pbx_timezone=config.tracker.pbx_timezone,
    )
    await listening("simulator", sim.host, sim.port, simulator.start)
    ami = msgspec.structs.replace(ami, host=sim.host, port=simulator.port, secret=secret, tls=False)
    return simulator, ami
