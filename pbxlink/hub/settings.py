"""The [hub] section: the popup WebSocket's listener; and `Config`, what the hub reads of the
whole config.

The hub never imports web/ nor the loader, so `Config` is a Protocol the loader's `Config`
satisfies, naming of the page's listener only what the same-origin check needs.
"""

from __future__ import annotations

from typing import Protocol

from pbxlink.settings import Count, CredentialFile, Port, Positive, Section, Strings, Text, WsUrl


class HubConfig(Section):
    host: Text = "127.0.0.1"
    port: Port = 8081  # the popup websocket; 0: any free port
    public_url: WsUrl = ""  # what browsers connect to; empty: ws(s)://<page host>:<port>/
    origins: Strings = ()  # allowed Origin headers; empty: the web page's own
    tls_cert_file: CredentialFile | None = None
    tls_key_file: CredentialFile | None = None
    heartbeat_s: Positive = 20.0
    queue_frames: Count = 256  # a client this far behind is dropped


class PageListener(Protocol):
    """The operator page's listener ([web]), as the hub needs it."""

    @property
    def port(self) -> int: ...

    @property
    def tls(self) -> bool: ...


class Config(Protocol):
    """The whole config as the hub reads it: its own section and the page's listener
    (`pbxlink.config.Config` is the one the loader builds)."""

    @property
    def hub(self) -> HubConfig: ...

    @property
    def web(self) -> PageListener: ...
