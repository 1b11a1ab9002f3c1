"""The one TOML config file: load, validate strictly, and build the parts' settings.

Every error names the file, the key and what was expected, so an admin can fix it without
reading code. Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import datetime as dt
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbxlink.calls.rules import ChannelRules
from pbxlink.calls.tracker import TrackerConfig


class ConfigError(ValueError):
    """A config file that cannot be used; the message says where and why."""


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
        raise ConfigError(f"{where}: expected a positive number of seconds, got {value!r}")
    return float(value)


def timezone(where: str, value: Any) -> dt.tzinfo:
    """`"local"` (the machine's zone, the usual case next to Asterisk) or an IANA name."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a time zone name, got {value!r}")
    if value == "local":
        local = dt.datetime.now().astimezone().tzinfo
        return local if local is not None else dt.UTC
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown time zone {value!r}") from exc


CALLS_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "trunk_contexts": _str_list,
    "trunk_endpoints": _str_list,
    "trunk_channels": _str_list,
    "did_variables": _str_list,
    "extensions": _str_map,
    "pbx_timezone": timezone,
    "call_timeout_s": _positive,
}


RULE_KEYS = ("trunk_contexts", "trunk_endpoints", "trunk_channels", "did_variables", "extensions")


@dataclass(slots=True)
class Config:
    path: Path | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


def load(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text") from exc
    return parse(raw, str(path))


def parse(raw: dict[str, Any], source: str = "<config>") -> Config:
    unknown = sorted(set(raw) - {"calls"})
    if unknown:
        raise ConfigError(f"{source}: unknown section or key [{unknown[0]}]")
    calls = raw.get("calls", {})
    if not isinstance(calls, dict):
        raise ConfigError(f"{source}: [calls] must be a table")
    values: dict[str, Any] = {}
    for key, value in calls.items():
        check = CALLS_KEYS.get(key)
        if check is None:
            raise ConfigError(
                f"{source}: unknown key calls.{key} (known: {', '.join(sorted(CALLS_KEYS))})"
            )
        values[key] = check(f"{source}: calls.{key}", value)
    rule_keys = (
        "trunk_contexts",
        "trunk_endpoints",
        "trunk_channels",
        "did_variables",
        "extensions",
    )
    rules = ChannelRules(**{k: values[k] for k in rule_keys if k in values})
    tracker = TrackerConfig(rules=rules)
    if "pbx_timezone" in values:
        tracker.pbx_timezone = values["pbx_timezone"]
    else:
        tracker.pbx_timezone = timezone(f"{source}: calls.pbx_timezone", "local")
    if "call_timeout_s" in values:
        tracker.call_timeout_s = values["call_timeout_s"]
    return Config(path=Path(source) if source != "<config>" else None, tracker=tracker)
