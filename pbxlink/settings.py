"""The parts' settings as plain values, and ConfigError: what a part imports to be configured.

`pbxlink.config` reads the TOML file and builds these; it also builds what the sections name
(the CRM sources, the tracker's channel rules), so it imports those parts. A part that only
needs its settings imports them from here: the AMI link, the call log, the directory, the
hub, the web API and the simulator never import the loader, so the loader may import any of
them without a cycle. Nothing here reads a file; `StorageConfig`'s default reads the
environment, when it is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pbxlink.calls.tracker import TrackerConfig
from pbxlink.operators.model import Operator


class ConfigError(ValueError):
    """A config file that cannot be used; the message says where and why, a line per mistake."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


# -- the sections, one class each ------------------------------------------------------------------


@dataclass(slots=True)
class AmiConfig:
    mode: Literal["asterisk", "simulator"] = "simulator"
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "pbxlink"
    secret: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    ping_interval_s: float = 10.0
    ping_timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(slots=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (the daemon connects to it itself)
    calls_per_s: float = 0.5
    max_calls: int = 50
    speed: float = 1.0  # >1 plays the recorded calls faster (demos)
    scenarios: tuple[str, ...] = ()  # .ami files; empty: the scenarios shipped with pbxlink


@dataclass(slots=True)
class StorageConfig:
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    database: Path | None = None  # default: <state_dir>/pbxlink.sqlite3

    @property
    def database_path(self) -> Path:
        return self.database or self.state_dir / "pbxlink.sqlite3"


@dataclass(slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert_file: Path | None = None  # both: the page over https://
    tls_key_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


SlVariant = Literal["abandons_against", "abandons_ignored", "quick_abandons_succeed"]
SL_VARIANTS: tuple[SlVariant, ...] = (
    "abandons_against",
    "abandons_ignored",
    "quick_abandons_succeed",
)


@dataclass(slots=True)
class Thresholds:
    too_long_call_s: float = 1800.0  # talk time; the per-direction keys override it
    too_long_inbound_s: float | None = None
    too_long_outbound_s: float | None = None
    too_long_internal_s: float | None = None
    service_level_s: float = 20.0  # "answered within" (docs/metrics.md)
    short_abandon_s: float = 5.0  # callers who hung up this fast are not counted as offered
    service_level_variant: SlVariant = "abandons_against"

    def too_long_s(self, direction: str) -> float:
        """The talk time after which a call of this direction is too long."""
        own: float | None = getattr(self, f"too_long_{direction}_s", None)
        return self.too_long_call_s if own is None else own


@dataclass(slots=True)
class RetentionConfig:
    calls_days: int = 0  # 0: keep the call log forever
    recordings: bool = False  # also delete the recording files of the calls deleted
    batch: int = 500  # rows per transaction, so the daemon's writes never wait long


@dataclass(slots=True)
class HubConfig:
    host: str = "127.0.0.1"
    port: int = 8081  # the popup websocket; 0: any free port
    public_url: str = ""  # what browsers connect to; default ws(s)://<page host>:<port>/
    origins: tuple[str, ...] = ()  # allowed Origin headers; empty: the web page's own
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    heartbeat_s: float = 20.0
    queue_frames: int = 256  # a client this far behind is dropped


@dataclass(slots=True)
class ClientsConfig:
    region: str = "GE"  # numbers without a country code are read as this country's
    register_unknown: bool = True  # an unknown caller becomes a `potential` client
    strip_prefixes: tuple[str, ...] = ("9", "0", "8")
    last_digits: int = 9
    lookup_budget_ms: float = 50.0
    sources: tuple[Any, ...] = ()  # pbxlink.clients.sources.Source, in chain order


@dataclass(slots=True)
class Config:
    path: Path | None = None
    company: str = "pbxlink"
    ami: AmiConfig = field(default_factory=AmiConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    web: WebConfig = field(default_factory=WebConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    recordings_dir: Path = Path("/var/spool/asterisk/monitor")
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    operators: list[Operator] = field(default_factory=list)
    #: what works but is unsafe, each naming the file, line and key; check-config prints them
    warnings: list[str] = field(default_factory=list)


def default_state_dir() -> Path:
    """systemd's StateDirectory, else the XDG state home: writable without root."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "pbxlink"
