"""Where the route modules find the daemon's parts on the app: the AppKeys make_app fills.

Apart from app.py, which imports every route module to mount it: a route module reads these
keys from here at its top, so none has to import app.py back from inside a function.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from pbxlink.web.settings import Config


class StatusSource(Protocol):
    """What the daemon tells /healthz and the gauges of /metrics; read on every request."""

    @property
    def ami_state(self) -> str:
        """ "up", "connecting", "down" or "auth_failed"."""
        ...

    @property
    def last_event_age_s(self) -> float | None:
        """Seconds since the last AMI event; None before the first."""
        ...

    @property
    def calls_active(self) -> int: ...

    @property
    def store_queue_depth(self) -> int: ...

    @property
    def started_at(self) -> float:
        """time.time() when the daemon started."""
        ...


CONFIG = web.AppKey("config", Config)
STATUS = web.AppKey("status", StatusSource)
