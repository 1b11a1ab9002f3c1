"""How every part declares its settings, and how one value is checked against a declaration.

Each config section is one frozen msgspec `Struct` in the part that reads it (`ami/settings.py`,
`hub/settings.py`...): a field is a key, its annotation the type and constraint, its default
the default. The named types below carry, in `Meta(description=...)`, what an admin is told was
expected (`ami.port: expected a TCP port 0-65535, got 'x'`), so that text is written once, here.
A value that is not plain (a path, a time zone, a CRM source) names its `Reader` in its
annotation, next to its declaration. `check` reads one key's value; the loader
(`pbxlink.config`) calls it key by key, so every mistake of a file is reported together.

Why msgspec: it validates against the same declaration the code reads, with constraints
(`ge`, `gt`, `pattern`) a dataclass cannot state, and imports in a few milliseconds. Nothing
here imports another part of pbxlink: every part may import it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import types
import typing
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta


class ConfigError(ValueError):
    """A config file that cannot be used; the message says where and why, a line per mistake."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


class Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A [section] of the config file: each field one key. Frozen: a part cannot change the
    settings another part was started with."""


@dataclass(frozen=True, slots=True)
class Reader:
    """In an annotation: how a value that is not plain is read from its TOML value.
    `read(where, value)` returns it or raises a ConfigError that starts with `where`."""

    read: Callable[[str, Any], Any]


#: any non-blank text (a host, a name); a blank one is reported as "must not be empty"
Text = Annotated[str, Meta(pattern=r"\S")]
#: a list of strings in TOML, a tuple here
Strings = tuple[str, ...]
Port = Annotated[int, Meta(ge=0, le=65535, description="a TCP port 0-65535")]
Positive = Annotated[float, Meta(gt=0, description="a positive number")]
Count = Annotated[int, Meta(ge=1, description="a whole number of at least 1")]
Days = Annotated[int, Meta(ge=0, description="a whole number of days (0: forever)")]
WsUrl = Annotated[
    str, Meta(pattern=r"\Awss?://[^\s/]+(/\S*)?\Z", description="a ws:// or wss:// URL")
]


def read_path(where: str, value: Any) -> Path:
    return Path(check(where, Text, value)).expanduser()


#: a file read at start; a relative name is the systemd credential of that name
#: ($CREDENTIALS_DIRECTORY, the unit's LoadCredential=), else the file beside the config file
CredentialFile = Annotated[Path, Meta(extra={"credential": True})]


def read_timezone(where: str, value: Any) -> dt.tzinfo:
    """`"local"` (the machine's zone, the usual case next to Asterisk) or an IANA name."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a time zone name, got {value!r}")
    if value == "local":
        return local_zone()
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown time zone {value!r}") from exc


TimeZone = Annotated[dt.tzinfo, Reader(read_timezone)]
#: how a type is read wherever it is declared: a `Path` (a file or folder; `~` is the home
#: folder) is given as text, and db/ declares its paths without importing this module
READERS: dict[type, Reader] = {Path: Reader(read_path)}


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


# -- reading a declaration ------------------------------------------------------------------


@functools.cache
def declared(cls: type) -> dict[str, Any]:
    """key -> annotation of a declaration: a Section, or a dataclass such as Operator."""
    hints = typing.get_type_hints(cls, include_extras=True)
    if dataclasses.is_dataclass(cls):
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return {name: hints[name] for name in cls.__struct_fields__}  # type: ignore[attr-defined]


def unwrap(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """`Annotated[T, extras...] | None` -> (T, extras): TOML cannot say None, so None only
    ever means "not given"."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(arms) == 1:
            annotation = arms[0]
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, tuple(extras)
    return annotation, ()


def expected(annotation: Any) -> str:
    """What a key of this annotation takes, said for an admin: its Meta description, else
    said of its type."""
    base, extras = unwrap(annotation)
    for meta in extras:
        if isinstance(meta, Meta) and meta.description:
            return meta.description
    if base is bool:
        return "true or false"
    if base is str:
        return "a string"
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(typing.get_args(base))
    if base == tuple[str, ...]:
        return "a list of strings"
    if base == dict[str, str]:
        return "a table of strings"
    raise TypeError(f"no description for {annotation!r}: give it a Meta(description=...)")


def check(where: str, annotation: Any, value: Any) -> Any:
    """`value` as `annotation` declares it, or a ConfigError: `where: expected ..., got ...`."""
    base, extras = unwrap(annotation)
    reader = next((e for e in extras if isinstance(e, Reader)), None) or READERS.get(base)
    if reader is not None:
        return reader.read(where, value)
    try:
        return msgspec.convert(value, annotation)
    except msgspec.ValidationError:
        pass
    metas = [m for m in extras if isinstance(m, Meta)]
    if base is str and isinstance(value, str) and not any(m.description for m in metas):
        raise ConfigError(f"{where}: must not be empty")  # Text: its one constraint
    if all((m.extra or {}).get("echo", True) for m in metas):
        raise ConfigError(f"{where}: expected {expected(annotation)}, got {value!r}")
    raise ConfigError(f"{where}: expected {expected(annotation)}")


def is_credential(annotation: Any) -> bool:
    """Is this key a `CredentialFile`, resolved against systemd's credentials?"""
    return any(
        isinstance(m, Meta) and (m.extra or {}).get("credential") for m in unwrap(annotation)[1]
    )
