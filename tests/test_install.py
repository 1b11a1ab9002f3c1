"""Installing pbxlink as the README says: the two make targets, and the path an admin follows
to put the daemon next to Asterisk under systemd's sandbox."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, need


def make_plan(target: str, venv: Path) -> list[str]:
    """What `make TARGET` would run on a fresh machine (`make -n`, a venv that is not there)."""
    make = shutil.which("make")
    need(make is not None, "make not installed")
    assert make is not None
    out = subprocess.run(
        [make, "-n", "-C", str(ROOT), target, f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.splitlines()


@pytest.mark.parametrize(("target", "extras"), [("demo", False), ("test", True)])
def test_make_installs_the_test_tools_only_for_make_test(
    tmp_path: Path, target: str, extras: bool
) -> None:
    plan = make_plan(target, tmp_path / "venv")
    assert any(" -m venv " in line for line in plan), plan
    installs = [line for line in plan if "pip install" in line]
    assert len(installs) == 1, plan
    assert ("'.[test]'" in installs[0]) == extras, installs[0]
    assert installs[0].rstrip().endswith(("-e .", "-e '.[test]'")), installs[0]
