"""The built-in AMI simulator's material: recorded scenarios shipped with the package.

They are copies of real Asterisk 22.9 recordings from the project's shared traces, so a fresh
install can show real calls without a PBX (`make demo`).
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def scenarios() -> list[Traversable]:
    folder = files("pbxlink.sim").joinpath("scenarios")
    return sorted((p for p in folder.iterdir() if p.name.endswith(".ami")), key=lambda p: p.name)
