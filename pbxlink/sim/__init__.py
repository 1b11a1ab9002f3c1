"""Owns the built-in AMI simulator: recorded scenarios played as a fake Asterisk, and its
[simulator] settings (settings.py). Never imports what reads AMI (calls/, calllog/, clients/,
desk/, hub/, web/), the config loader or the daemon.

The scenarios are copies of real Asterisk 22.9 recordings from the project's shared traces, so
a fresh install can show real calls without a PBX (`make demo`).
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable


def scenarios() -> list[Traversable]:
    folder = files("pbxlink.sim").joinpath("scenarios")
    return sorted((p for p in folder.iterdir() if p.name.endswith(".ami")), key=lambda p: p.name)
