"""Owns the HTTP side: health, metrics, the token-protected REST API, its OpenAPI document and the
operator page; and the [web] listener's settings (settings.py). May use the hub (it serves
/api/hub); never imports ami/, sim/, the config loader or the daemon."""

from pbxlink.web.app import CONFIG, METRICS, STATUS, StatusSource, WebServer, make_app, serve
from pbxlink.web.auth import operator_of, public, requires
from pbxlink.web.errors import ApiError, read_json, read_object
from pbxlink.web.metrics import Metrics

__all__ = [
    "CONFIG",
    "METRICS",
    "STATUS",
    "ApiError",
    "Metrics",
    "StatusSource",
    "WebServer",
    "make_app",
    "operator_of",
    "public",
    "read_json",
    "read_object",
    "requires",
    "serve",
]
