"""Why the daemon could not start, said in one line an admin can act on.

A port another program holds, or a database another daemon holds, is not a bug in pbxlink:
it deserves the setting to change and the value, not a traceback (and `pbxlink run` exits 2,
like for a bad config file, instead of hanging on the parts it had already opened).
"""

from __future__ import annotations

import errno


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
