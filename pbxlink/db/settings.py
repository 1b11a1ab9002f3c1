"""The [storage] section: where the database file is.

Declared with msgspec alone (db/ imports no other part of pbxlink): its two keys are paths,
which the loader reads as every path (expanded, never blank). `StorageConfig()`'s default
state directory reads the environment when it is built.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


def default_state_dir() -> Path:
    """systemd's StateDirectory, else the XDG state home: writable without root."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "pbxlink"


class StorageConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state_dir: Path = msgspec.field(default_factory=default_state_dir)
    database: Path | None = None  # default: <state_dir>/pbxlink.sqlite3

    @property
    def database_path(self) -> Path:
        return self.database or self.state_dir / "pbxlink.sqlite3"
