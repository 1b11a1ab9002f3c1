"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET, as systemd documents it."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Tell systemd about READY=1 / STOPPING=1; a no-op (False) when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True
