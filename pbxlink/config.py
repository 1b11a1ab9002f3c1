"""The one TOML config file: load, validate strictly, and build the parts' settings.

Every error names the file, the line, the key and what was expected, so an admin can fix it
without reading code, and a file's mistakes are all reported at once (fixing them one start at
a time is how a service ends up in a restart loop). Unknown keys are errors too: a typo must
not silently fall back to a default. What works but is unsafe (a listener open to the network
without TLS, a secret every user can read) is a warning, `Config.warnings`. With no file at
all, the defaults run out of the box: SQLite under the state directory and the built-in AMI
simulator.

Each section is declared once, as a msgspec Struct in the part that reads it (`SECTIONS` lists
them; `pbxlink.settings` says how a declaration reads). This loader only assembles them: it
checks each key's value against its field's annotation, finds the lines for the messages,
resolves files, and runs the checks that span keys. The parts never import it, so it may
import what it builds from the sections (the CRM sources, the tracker's rules) without a cycle.

A relative file name (`secret_file`, the TLS files: `CredentialFile`) is looked up in
systemd's credentials first ($CREDENTIALS_DIRECTORY, the unit's `LoadCredential=`), then
beside the config file: the service reads the copy systemd hands it, an admin's shell the file
in /etc/pbxlink.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from pbxlink.ami.settings import AmiConfig
from pbxlink.calllog.settings import RetentionConfig, Thresholds
from pbxlink.calls.rules import ChannelRules
from pbxlink.calls.tracker import TrackerConfig
from pbxlink.clients.settings import ClientsConfig
from pbxlink.db.settings import StorageConfig
from pbxlink.hub.settings import HubConfig
from pbxlink.operators.model import Operator
from pbxlink.settings import (
    ConfigError,
    Positive,
    Section,
    Strings,
    Text,
    TimeZone,
    check,
    declared,
    is_credential,
    local_zone,
)
from pbxlink.sim.settings import SimulatorConfig
from pbxlink.tls import TlsFilesError, server_context
from pbxlink.web.settings import WebConfig


class TopLevel(Section):
    """The keys above the first [section]."""

    company: Text = "pbxlink"  # shown on the card and the page
    recordings_dir: Path = Path("/var/spool/asterisk/monitor")  # where MixMonitor writes


class CallsSection(Section):
    """[calls]: the tracker's channel rules (calls/rules.py) and its clock. calls/ is a sans-IO
    core that imports nothing, so its keys are declared here; a key left out keeps the
    tracker's own default."""

    trunk_contexts: Strings | None = None
    trunk_endpoints: Strings | None = None
    trunk_channels: Strings | None = None
    did_variables: Strings | None = None
    extensions: dict[str, str] | None = None
    pbx_timezone: TimeZone | None = None  # "local" (the default) or an IANA name
    call_timeout_s: Positive | None = None


#: [section] -> its declaration, in the order messages list them ("" is the top level)
DECLARED: dict[str, type] = {
    "": TopLevel,
    "ami": AmiConfig,
    "simulator": SimulatorConfig,
    "storage": StorageConfig,
    "web": WebConfig,
    "thresholds": Thresholds,
    "retention": RetentionConfig,
    "hub": HubConfig,
    "clients": ClientsConfig,
    "calls": CallsSection,
}
_TOP = TopLevel()


@dataclass(slots=True)
class Config:
    """The whole config: a section each, what the top level and [calls] build, the operators."""

    path: Path | None = None
    company: str = _TOP.company
    ami: AmiConfig = field(default_factory=AmiConfig)
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    web: WebConfig = field(default_factory=WebConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    recordings_dir: Path = _TOP.recordings_dir
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    operators: list[Operator] = field(default_factory=list)
    #: what works but is unsafe, each naming the file, line and key; check-config prints them
    warnings: list[str] = field(default_factory=list)


SECTIONS: dict[str, tuple[str, ...]] = {name: tuple(declared(c)) for name, c in DECLARED.items()}
OPERATOR_KEYS: tuple[str, ...] = tuple(declared(Operator))
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# -- the file -----------------------------------------------------------------------------------


def load(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    config = parse(raw, str(path), text, base=path.parent)
    config.path = path
    ami = raw.get("ami")
    if isinstance(ami, dict) and "secret" in ami and _world_readable(path):
        where = _Locator(str(path), text)("ami", "secret")
        config.warnings.append(
            f"{where}: the AMI secret is in a file every user of this machine can read: "
            f"chmod 600 it, or move the secret to a secret_file"
        )
    return config


def _world_readable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def resolve_file(path: Path, base: Path | None) -> Path:
    """A relative `path`: systemd's credential of that name if there is one, else beside the
    config file (`base`), else in the working directory."""
    if path.is_absolute():
        return path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / path).exists():
        return Path(credentials) / path
    return (base if base is not None else Path.cwd()) / path


class _Locator:
    """Finds the line of `key` in `[section]` for error messages (tomllib gives no lines).

    The file is indexed once: it is asked for every key of every table, and a scan per key
    made loading a config with thousands of [[operators]] take minutes."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.lines: dict[tuple[str, int | None, str], int] = {}
        current, seen = "", -1
        counts: dict[str, int] = {}
        for number, line in enumerate(text.splitlines() if text else [], 1):
            header = re.match(r"\s*\[\[?\s*([\w.-]+)\s*\]\]?", line)
            if header:
                current = header.group(1)
                self.lines.setdefault(("", None, current), number)  # an unknown section's line
                if line.lstrip().startswith("[["):
                    counts[current] = counts.get(current, -1) + 1
                seen = counts.get(current, -1)
                continue
            key = re.match(r"\s*([\w.-]+)\s*=", line)
            if key:
                for index in (None, seen):
                    self.lines.setdefault((current, index, key.group(1)), number)

    def __call__(self, section: str, key: str, index: int | None = None) -> str:
        dotted = f"{section}.{key}" if section else key
        if index is not None:
            dotted = f"{section}[{index}].{key}"
        number = self.lines.get((section, index, key))
        if number is not None:
            return f"{self.source}:{number}: {dotted}"
        return f"{self.source}: {dotted}"


def parse(
    raw: dict[str, Any],
    source: str = "<config>",
    text: str | None = None,
    *,
    base: Path | None = None,
) -> Config:
    """The config of a TOML table; `base` is the config file's folder (for relative files).

    Every mistake is collected; a ConfigError lists them all, one line each."""
    where = _Locator(source, text)
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {name: {} for name in DECLARED}
    operators: list[Operator] = []
    for key, value in raw.items():
        if key == "operators":
            operators = _operators(where, value, problems)
        elif key in DECLARED and key != "" and isinstance(value, dict):
            values[key] = _read(where, DECLARED[key], key, value, problems, base)
        elif key in SECTIONS[""]:
            values[""] |= _read(where, TopLevel, "", {key: value}, problems, base)
        else:
            sections = ", ".join(f"[{s}]" for s in SECTIONS if s) + ", [[operators]]"
            problems.append(f"{where('', key)}: unknown key or section (known: {sections})")
    top = TopLevel(**values[""])
    config = Config(
        company=top.company,
        recordings_dir=top.recordings_dir,
        simulator=SimulatorConfig(**values["simulator"]),
        storage=StorageConfig(**values["storage"]),
        web=WebConfig(**values["web"]),
        thresholds=Thresholds(**values["thresholds"]),
        retention=RetentionConfig(**values["retention"]),
        hub=HubConfig(**values["hub"]),
        clients=ClientsConfig(**values["clients"]),
        tracker=_tracker(CallsSection(**values["calls"])),
        operators=operators,
    )
    config.ami = _ami(where, values["ami"], problems, config.warnings)
    _check_operators(where, operators, problems)
    _check_listeners(where, config, problems)
    if problems:
        raise ConfigError(*problems)
    return config


def _read(
    where: _Locator,
    cls: type,
    section: str,
    table: dict[str, Any],
    problems: list[str],
    base: Path | None,
    index: int | None = None,
) -> dict[str, Any]:
    """The keys of `table` that pass their declaration's checks; the others' complaints are
    added to `problems` (and the defaults used meanwhile)."""
    keys = declared(cls)
    out: dict[str, Any] = {}
    for key, value in table.items():
        place = where(section, key, index)
        if key not in keys:
            known = ", ".join(keys if index is not None else sorted(keys))
            problems.append(f"{place}: unknown key (known: {known})")
            continue
        try:
            out[key] = check(place, keys[key], value)
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            if is_credential(keys[key]):
                out[key] = resolve_file(out[key], base)
    return out


# -- the checks that span keys ------------------------------------------------------------------


def _ami(
    where: _Locator, values: dict[str, Any], problems: list[str], warnings: list[str]
) -> AmiConfig:
    secret_sources = [k for k in ("secret", "secret_env", "secret_file") if k in values]
    if len(secret_sources) > 1:
        problems.append(f"{where('ami', secret_sources[1])}: give only one of {secret_sources}")
    ami = AmiConfig(**values)
    secret = ami.secret
    if ami.secret_env is not None:
        secret = os.environ.get(ami.secret_env)
        if secret is None:
            name = ami.secret_env
            problems.append(f"{where('ami', 'secret_env')}: environment variable {name} unset")
    elif ami.secret_file is not None:
        path = ami.secret_file
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where('ami', 'secret_file')}: {path}: cannot read: {exc.strerror}")
        except UnicodeDecodeError:
            problems.append(f"{where('ami', 'secret_file')}: {path}: not UTF-8 text")
        else:
            if _world_readable(path):
                warnings.append(
                    f"{where('ami', 'secret_file')}: {path} can be read by every user of this "
                    f"machine: chmod 600 {path}"
                )
    if (
        ami.mode == "asterisk"
        and not secret
        and not any(
            problem.startswith(where("ami", k)) for problem in problems for k in secret_sources
        )
    ):
        problems.append(f"{where('ami', 'mode')}: mode 'asterisk' needs a secret")
    if ami.reconnect_max_s < ami.reconnect_min_s:
        problems.append(f"{where('ami', 'reconnect_max_s')}: smaller than reconnect_min_s")
    return msgspec.structs.replace(ami, secret=secret)


def _check_listeners(where: _Locator, config: Config, problems: list[str]) -> None:
    """The page, the popups (and the simulator): TLS files that load, a port each, and a
    warning for each one open to the network in clear."""
    listeners: list[tuple[str, str, int]] = [
        ("web", config.web.host, config.web.port),
        ("hub", config.hub.host, config.hub.port),
    ]
    if config.ami.mode == "simulator":
        listeners.append(("simulator", config.simulator.host, config.simulator.port))
    for section, cert, key in (
        ("web", config.web.tls_cert_file, config.web.tls_key_file),
        ("hub", config.hub.tls_cert_file, config.hub.tls_key_file),
    ):
        if (cert is None) != (key is None):
            given = "tls_cert_file" if cert is not None else "tls_key_file"
            problems.append(f"{where(section, given)}: give both tls_cert_file and tls_key_file")
        elif cert is not None and key is not None:
            try:
                server_context(cert, key)
            except TlsFilesError as exc:
                problems.append(f"{where(section, 'tls_cert_file')}: {exc}")
    seen: dict[int, str] = {}
    for section, _host, port in listeners:
        if port and port in seen:
            # blame the key the file sets (the other one may be a default)
            first, second = seen[port], section
            if (second, None, "port") not in where.lines:
                first, second = second, first
            problems.append(
                f"{where(second, 'port')}: {port} is [{first}] port too: "
                "each listener needs its own port"
            )
        seen.setdefault(port, section)
    for section, host, tls, scheme in (
        ("web", config.web.host, config.web.tls, "http://"),
        ("hub", config.hub.host, config.hub.tls_cert_file is not None, "ws://"),
    ):
        if host not in LOOPBACK and not host.startswith("127.") and not tls:
            config.warnings.append(
                f"{where(section, 'host')}: {host} is reachable from the network over plain "
                f"{scheme}: tokens and callers' data cross it unencrypted; give [{section}] "
                "tls_cert_file and tls_key_file, or listen on 127.0.0.1 behind a TLS proxy"
            )


def _tracker(calls: CallsSection) -> TrackerConfig:
    """The tracker's config: the [calls] keys given, the tracker's defaults for the others."""
    rules = ChannelRules(
        **{
            f.name: getattr(calls, f.name)
            for f in dataclasses.fields(ChannelRules)
            if f.init and getattr(calls, f.name) is not None
        }
    )
    tracker = TrackerConfig(rules=rules)
    tracker.pbx_timezone = calls.pbx_timezone or local_zone()
    if calls.call_timeout_s is not None:
        tracker.call_timeout_s = calls.call_timeout_s
    return tracker


def _operators(where: _Locator, value: Any, problems: list[str]) -> list[Operator]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(f"{where('', 'operators')}: expected [[operators]] tables")
        return []
    out = []
    for i, table in enumerate(value):
        fields = _read(where, Operator, "operators", table, problems, None, i)
        missing = [k for k in OPERATOR_KEYS if k not in table]
        if missing:
            problems.append(f"{where('operators', missing[0], i)}: missing")
        if all(k in fields for k in OPERATOR_KEYS):
            out.append(Operator(**fields))
    return out


def _check_operators(where: _Locator, operators: list[Operator], problems: list[str]) -> None:
    seen_tokens: set[str] = set()
    for i, op in enumerate(operators):
        if op.token_hash in seen_tokens:
            problems.append(f"{where('operators', 'token_hash', i)}: used by two operators")
        seen_tokens.add(op.token_hash)
        if op.role == "operator" and not op.extensions:
            problems.append(f"{where('operators', 'extensions', i)}: an operator needs one")
