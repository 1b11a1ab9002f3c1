"""The [web] section: the operator page's listener (the REST API, /healthz, /metrics); and
`Config`, what the web part reads of the whole config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pbxlink.calllog.settings import Thresholds
from pbxlink.calls.tracker import TrackerConfig
from pbxlink.clients.settings import ClientsConfig
from pbxlink.operators.model import Operator
from pbxlink.settings import CredentialFile, Port, Section, Text


class WebConfig(Section):
    host: Text = "127.0.0.1"
    port: Port = 8080
    tls_cert_file: CredentialFile | None = None  # both: the page over https://
    tls_key_file: CredentialFile | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


class Config(Protocol):
    """The whole config as the web part reads it (`pbxlink.config.Config` is the one the loader
    builds; the web part never imports the loader)."""

    @property
    def operators(self) -> Sequence[Operator]: ...

    @property
    def thresholds(self) -> Thresholds: ...

    @property
    def clients(self) -> ClientsConfig: ...

    @property
    def tracker(self) -> TrackerConfig: ...

    @property
    def recordings_dir(self) -> Path: ...
