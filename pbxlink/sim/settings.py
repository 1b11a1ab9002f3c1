"""The [simulator] section: the built-in AMI simulator, used with [ami] mode = "simulator"."""

from __future__ import annotations

from pbxlink.settings import Count, Port, Positive, Section, Strings, Text


class SimulatorConfig(Section):
    host: Text = "127.0.0.1"
    port: Port = 0  # 0: any free port (the daemon connects to it itself)
    calls_per_s: Positive = 0.5
    max_calls: Count = 50
    speed: Positive = 1.0  # >1 plays the recorded calls faster (demos)
    scenarios: Strings = ()  # .ami files; empty: the scenarios shipped with pbxlink
