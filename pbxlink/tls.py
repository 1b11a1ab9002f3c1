"""The TLS context of pbxlink's own listeners (the page's `https://`, the popups' `wss://`).

One place builds it, so both listeners accept the same certificate files, and `check-config`
loads the pair the way the daemon will: a key that does not match its certificate, or a file
the service cannot read, is found before the daemon starts rather than at its first client.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsFilesError(ValueError):
    """A certificate/key pair that cannot be loaded; the message says which file and why."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with the system's defaults (TLS 1.2+) and this certificate chain."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    for path in (cert, key):
        try:
            path.open("rb").close()
        except OSError as exc:
            raise TlsFilesError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise TlsFilesError(f"{cert} with {key}: not a certificate and its key ({reason})") from exc
    return context
