"""The one TOML config file: load, validate strictly, and build the parts' settings.

Every error names the file, the line, the key and what was expected, so an admin can fix it
without reading code, and a file's mistakes are all reported at once (fixing them one start at
a time is how a service ends up in a restart loop). Unknown keys are errors too: a typo must
not silently fall back to a default. What works but is unsafe (a listener open to the network
without TLS, a secret every user can read) is a warning, `Config.warnings`. With no file at
all, the defaults run out of the box: SQLite under the state directory and the built-in AMI
simulator.

A relative file name (`secret_file`, the TLS files) is looked up in systemd's credentials
first ($CREDENTIALS_DIRECTORY, the unit's `LoadCredential=`), then beside the config file: the
service reads the copy systemd hands it, an admin's shell the file in /etc/pbxlink.

The settings classes live in `pbxlink.settings` (re-exported here): the parts import them from
there, and only the entry points (the CLI, the daemon) import this loader. So the loader may
import what it builds from the sections (the CRM sources, the tracker's rules) without a cycle.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import stat
import tomllib
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import phonenumbers

from pbxlink.calls.rules import ChannelRules
from pbxlink.calls.tracker import TrackerConfig
from pbxlink.clients.sources import source_from_dict
from pbxlink.operators.model import ROLES, TOKEN_PREFIX, Operator
from pbxlink.settings import (
    SL_VARIANTS,
    AmiConfig,
    ClientsConfig,
    Config,
    ConfigError,
    HubConfig,
    RetentionConfig,
    SimulatorConfig,
    SlVariant,
    StorageConfig,
    Thresholds,
    WebConfig,
    default_state_dir,
)
from pbxlink.tls import TlsFilesError, server_context

#: the settings, re-exported for the entry points and the tests that import them from here
__all__ = [
    "SL_VARIANTS",
    "AmiConfig",
    "ClientsConfig",
    "Config",
    "ConfigError",
    "HubConfig",
    "RetentionConfig",
    "SimulatorConfig",
    "SlVariant",
    "StorageConfig",
    "Thresholds",
    "WebConfig",
    "default_state_dir",
    "load",
    "local_zone",
    "parse",
    "resolve_file",
    "timezone",
]


# -- value checks: each takes "where" (file:line: key) and the raw TOML value ------------------

Check = Callable[[str, Any], Any]


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _nonempty(where: str, value: Any) -> str:
    if not _str(where, value).strip():
        raise ConfigError(f"{where}: must not be empty")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _str_map(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{where}: expected a table of strings, got {value!r}")
    return dict(value)


def _positive(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


def _count(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: expected a whole number of at least 1, got {value!r}")
    return value


def _days(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: expected a whole number of days (0: forever), got {value!r}")
    return value


def _ws_url(where: str, value: Any) -> str:
    if not re.fullmatch(r"wss?://[^\s/]+(/\S*)?", _str(where, value)):
        raise ConfigError(f"{where}: expected a ws:// or wss:// URL, got {value!r}")
    return value


def _port(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{where}: expected a TCP port 0-65535, got {value!r}")
    return value


def _path(where: str, value: Any) -> Path:
    return Path(_nonempty(where, value)).expanduser()


def _one_of(*allowed: str) -> Check:
    def check(where: str, value: Any) -> str:
        if value not in allowed:
            raise ConfigError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return check


def _sources(where: str, value: Any) -> tuple[Any, ...]:
    """[[clients.sources]] tables: checked now, connected only when first asked."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{where}: expected [[clients.sources]] tables")
    return tuple(source_from_dict(f"{where}[{i}]", table) for i, table in enumerate(value))


def _region(where: str, value: Any) -> str:
    code = _str(where, value).upper()
    if phonenumbers.country_code_for_region(code) == 0:
        raise ConfigError(f"{where}: expected a country code such as GE, UA, US; got {value!r}")
    return code


def timezone(where: str, value: Any) -> dt.tzinfo:
    """`"local"` (the machine's zone, the usual case next to Asterisk) or an IANA name."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a time zone name, got {value!r}")
    if value == "local":
        return local_zone()
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown time zone {value!r}") from exc


def local_zone() -> dt.tzinfo:
    """This machine's zone as a real IANA zone, so days and hours stay right across DST.

    `datetime.now().astimezone()` gives only today's fixed offset (CET in July is wrong), so
    look where the system names its zone: $TZ, /etc/timezone, the /etc/localtime symlink."""
    names = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        names.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    with contextlib.suppress(OSError):
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            names.append(target.split("zoneinfo/", 1)[1])
    for name in names:
        if name:
            with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
                return zoneinfo.ZoneInfo(name)
    fixed = dt.datetime.now().astimezone().tzinfo
    return fixed if fixed is not None else dt.UTC


def _token_hash(where: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(TOKEN_PREFIX + "[0-9a-f]{64}", value):
        raise ConfigError(
            f"{where}: expected 'sha256:' and 64 hex digits (make one with `pbxlink token`)"
        )
    return value


SECTIONS: dict[str, dict[str, Check]] = {
    "": {"company": _nonempty, "recordings_dir": _path},
    "ami": {
        "mode": _one_of("asterisk", "simulator"),
        "host": _nonempty,
        "port": _port,
        "username": _nonempty,
        "secret": _str,
        "secret_env": _nonempty,
        "secret_file": _path,
        "tls": _bool,
        "tls_ca_file": _path,
        "tls_verify": _bool,
        "ping_interval_s": _positive,
        "ping_timeout_s": _positive,
        "connect_timeout_s": _positive,
        "reconnect_min_s": _positive,
        "reconnect_max_s": _positive,
    },
    "simulator": {
        "host": _nonempty,
        "port": _port,
        "calls_per_s": _positive,
        "max_calls": _count,
        "speed": _positive,
        "scenarios": _str_list,
    },
    "storage": {"state_dir": _path, "database": _path},
    "web": {"host": _nonempty, "port": _port, "tls_cert_file": _path, "tls_key_file": _path},
    "thresholds": {
        "too_long_call_s": _positive,
        "too_long_inbound_s": _positive,
        "too_long_outbound_s": _positive,
        "too_long_internal_s": _positive,
        "service_level_s": _positive,
        "short_abandon_s": _positive,
        "service_level_variant": _one_of(*SL_VARIANTS),
    },
    "retention": {"calls_days": _days, "recordings": _bool, "batch": _count},
    "hub": {
        "host": _nonempty,
        "port": _port,
        "public_url": _ws_url,
        "origins": _str_list,
        "tls_cert_file": _path,
        "tls_key_file": _path,
        "heartbeat_s": _positive,
        "queue_frames": _count,
    },
    "clients": {
        "region": _region,
        "register_unknown": _bool,
        "strip_prefixes": _str_list,
        "last_digits": _count,
        "lookup_budget_ms": _positive,
        "sources": _sources,
    },
    "calls": {
        "trunk_contexts": _str_list,
        "trunk_endpoints": _str_list,
        "trunk_channels": _str_list,
        "did_variables": _str_list,
        "extensions": _str_map,
        "pbx_timezone": timezone,
        "call_timeout_s": _positive,
    },
}
OPERATOR_KEYS: dict[str, Check] = {
    "name": _nonempty,
    "extensions": _str_list,
    "role": _one_of(*ROLES),
    "token_hash": _token_hash,
}
RULE_KEYS = ("trunk_contexts", "trunk_endpoints", "trunk_channels", "did_variables", "extensions")
#: files read at start: a relative name is a systemd credential, else beside the config file
FILE_KEYS = (
    ("ami", "secret_file"),
    ("ami", "tls_ca_file"),
    ("web", "tls_cert_file"),
    ("web", "tls_key_file"),
    ("hub", "tls_cert_file"),
    ("hub", "tls_key_file"),
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_BAD = object()  # a value that failed its check: reported, and the default used meanwhile


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
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    operators: list[Operator] = []
    for key, value in raw.items():
        if key == "operators":
            operators = _operators(where, value, problems)
        elif key in SECTIONS and key != "" and isinstance(value, dict):
            for sub, subvalue in value.items():
                check = SECTIONS[key].get(sub)
                if check is None:
                    known = ", ".join(sorted(SECTIONS[key]))
                    problems.append(f"{where(key, sub)}: unknown key (known: {known})")
                    continue
                if (key, sub) in FILE_KEYS:
                    check = _file_check(check, base)
                checked = _checked(check, where(key, sub), subvalue, problems)
                if checked is not _BAD:
                    values[key][sub] = checked
        elif key in SECTIONS[""]:
            checked = _checked(SECTIONS[""][key], where("", key), value, problems)
            if checked is not _BAD:
                values[""][key] = checked
        else:
            sections = ", ".join(f"[{s}]" for s in SECTIONS if s) + ", [[operators]]"
            problems.append(f"{where('', key)}: unknown key or section (known: {sections})")
    config = Config(operators=operators)
    top = values[""]
    config.company = top.get("company", config.company)
    config.recordings_dir = top.get("recordings_dir", config.recordings_dir)
    config.ami = _ami(where, values["ami"], problems, config.warnings)
    config.simulator = SimulatorConfig(**values["simulator"])
    config.storage = StorageConfig(**values["storage"])
    config.web = WebConfig(**values["web"])
    config.thresholds = Thresholds(**values["thresholds"])
    config.retention = RetentionConfig(**values["retention"])
    config.hub = HubConfig(**values["hub"])
    config.clients = ClientsConfig(**values["clients"])
    config.tracker = _tracker(where, values["calls"])
    _check_operators(where, operators, problems)
    _check_listeners(where, config, problems)
    if problems:
        raise ConfigError(*problems)
    return config


def _checked(check: Check, place: str, value: Any, problems: list[str]) -> Any:
    """`check(place, value)`, or _BAD with its complaint added to `problems`."""
    try:
        return check(place, value)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return _BAD


def _file_check(check: Check, base: Path | None) -> Check:
    def resolved(where: str, value: Any) -> Path:
        return resolve_file(check(where, value), base)

    return resolved


def _ami(
    where: _Locator, values: dict[str, Any], problems: list[str], warnings: list[str]
) -> AmiConfig:
    secret_sources = [k for k in ("secret", "secret_env", "secret_file") if k in values]
    if len(secret_sources) > 1:
        problems.append(f"{where('ami', secret_sources[1])}: give only one of {secret_sources}")
    ami = AmiConfig(**{k: v for k, v in values.items() if k not in ("secret_env", "secret_file")})
    if "secret_env" in values:
        name = values["secret_env"]
        if name in os.environ:
            ami.secret = os.environ[name]
        else:
            problems.append(f"{where('ami', 'secret_env')}: environment variable {name} unset")
    elif "secret_file" in values:
        path: Path = values["secret_file"]
        try:
            ami.secret = path.read_text(encoding="utf-8").strip()
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
    if ami.mode == "asterisk" and not ami.secret and not any(
        problem.startswith(where("ami", k)) for problem in problems for k in secret_sources
    ):
        problems.append(f"{where('ami', 'mode')}: mode 'asterisk' needs a secret")
    if ami.reconnect_max_s < ami.reconnect_min_s:
        problems.append(f"{where('ami', 'reconnect_max_s')}: smaller than reconnect_min_s")
    return ami


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


def _tracker(where: _Locator, values: dict[str, Any]) -> TrackerConfig:
    rules = ChannelRules(**{k: values[k] for k in RULE_KEYS if k in values})
    tracker = TrackerConfig(rules=rules)
    tz = values.get("pbx_timezone")
    tracker.pbx_timezone = tz if tz is not None else timezone(where("calls", "tz"), "local")
    if "call_timeout_s" in values:
        tracker.call_timeout_s = values["call_timeout_s"]
    return tracker


def _operators(where: _Locator, value: Any, problems: list[str]) -> list[Operator]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        problems.append(f"{where('', 'operators')}: expected [[operators]] tables")
        return []
    out = []
    for i, table in enumerate(value):
        fields: dict[str, Any] = {}
        for key, raw in table.items():
            check = OPERATOR_KEYS.get(key)
            if check is None:
                known = ", ".join(OPERATOR_KEYS)
                problems.append(f"{where('operators', key, i)}: unknown key (known: {known})")
                continue
            checked = _checked(check, where("operators", key, i), raw, problems)
            if checked is not _BAD:
                fields[key] = checked
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
