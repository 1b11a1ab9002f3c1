"""The systemd unit is valid, and the readiness signal reaches a real notify socket."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pbxlink.systemd import notify

from conftest import ROOT, need


def test_unit_verifies_clean(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze not installed (Debian package: systemd)")
    installed = Path(sys.executable).parent / "pbxlink"
    assert installed.exists(), "pbxlink console script not installed in this environment"
    text = (ROOT / "systemd" / "pbxlink.service").read_text()
    assert "ExecStart=/usr/local/bin/pbxlink run" in text
    unit = tmp_path / "pbxlink.service"
    unit.write_text(text.replace("/usr/local/bin/pbxlink", str(installed)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.strip() and "pbxlink.service" in line
    ]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "Type=notify",
        "DynamicUser=yes",
        "StateDirectory=pbxlink",
        "ConfigurationDirectory=pbxlink",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "RestartPreventExitStatus=78",
        "ConfigurationDirectoryMode=0755",  # the dynamic user reads the config
        "LoadCredential=ami-secret:/etc/pbxlink/ami-secret",  # the secret stays root's
    ],
)
def test_unit_has_the_hardening_the_issue_asks_for(setting: str) -> None:
    assert setting in (ROOT / "systemd" / "pbxlink.service").read_text().splitlines()


#: `systemd-analyze security` of the unit before LoadCredential (issue 12): no worse than this
EXPOSURE_BEFORE = 1.4


def test_unit_exposure_is_no_worse(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze not installed (Debian package: systemd)")
    assert analyze is not None
    unit = tmp_path / "pbxlink.service"
    unit.write_text((ROOT / "systemd" / "pbxlink.service").read_text())
    out = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for pbxlink\.service: ([0-9.]+)", out.stdout)
    assert found is not None, out.stdout + out.stderr
    assert float(found.group(1)) <= EXPOSURE_BEFORE, out.stdout


def test_notify_sends_ready_to_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert server.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False
