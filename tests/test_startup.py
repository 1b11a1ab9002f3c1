"""Starting where something is in the way, and commands that say which database they use.

A second daemon on the same database is refused, naming the PID that holds it; a port another
program holds is one line naming the setting and the port, exit code 2, no traceback, and the
process exits (the subprocess timeouts are hang guards, not timings). Every command that
touches the database names it, and says whether a running daemon holds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def pbxlink(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbxlink", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TZ": "UTC", **env},
    )


def write_config(path: Path, state: Path, **ports: int) -> Path:
    """A simulator config (no PBX needed) on free ports unless `ports` says otherwise."""
    web, hub = ports.get("web", 0), ports.get("hub", 0)
    path.write_text(
        f'[storage]\nstate_dir = "{state}"\n[web]\nport = {web}\n[hub]\nport = {hub}\n'
        '[simulator]\ncalls_per_s = 0.1\n[calls]\npbx_timezone = "UTC"\n'
    )
    return path


@contextlib.contextmanager
def daemon(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`pbxlink run --config CONFIG` until it logged daemon.ready; SIGTERM (exit 0) after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pbxlink", "run", "--config", str(config)],
            stdout=out,
            stderr=out,
            env={**os.environ, "TZ": "UTC"},
        )
    try:
        deadline = time.monotonic() + 60
        while b"daemon.ready" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the daemon never got ready"
            time.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"SIGTERM left the daemon running:\n{log.read_text()}") from None
        assert code == 0, log.read_text()


def said(stderr: str) -> list[str]:
    """pbxlink's own lines (the daemon's JSON log lines aside)."""
    return [line for line in stderr.splitlines() if line.startswith("pbxlink:")]


def test_a_second_daemon_on_one_database_is_refused_naming_the_pid(tmp_path: Path) -> None:
    config = write_config(tmp_path / "p.toml", tmp_path / "state")
    with daemon(config, tmp_path / "first.log") as first:
        second = pbxlink("run", "--config", str(config))
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        database = tmp_path / "state" / "pbxlink.sqlite3"
        assert said(second.stderr) == [
            f"pbxlink: {database}: the pbxlink daemon with PID {first.pid} already uses this "
            f"database (its lock: {database}.lock)"
        ]
        assert first.poll() is None  # the first one goes on
    # stopped, it leaves the lock free: the next daemon starts
    with daemon(config, tmp_path / "again.log"):
        pass


@pytest.mark.parametrize("section", ["web", "hub"])
def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path, section: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "p.toml", tmp_path / "state", **{section: port})
        out = pbxlink("run", "--config", str(config))
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert said(out.stderr) == [
        f"pbxlink: [{section}] port = {port}: cannot listen on 127.0.0.1:{port}: the port is "
        "already in use (by another program, or another pbxlink)"
    ]
    # nothing was left holding the database: a daemon on it starts
    with daemon(write_config(config, tmp_path / "state"), tmp_path / "after.log"):
        pass


def test_commands_name_their_database_and_the_daemons(tmp_path: Path) -> None:
    """The admin's import into a database no daemon reads says so, and where the daemon is."""
    service = write_config(tmp_path / "service.toml", tmp_path / "service")
    mine = write_config(tmp_path / "mine.toml", tmp_path / "home-state")
    service_db = tmp_path / "service" / "pbxlink.sqlite3"
    my_db = tmp_path / "home-state" / "pbxlink.sqlite3"
    csv = tmp_path / "clients.csv"
    csv.write_text("name,phones\nNino Beridze,+995322123456\n")
    env = {"PBXLINK_SERVICE_CONFIG": str(service)}
    with daemon(service, tmp_path / "service.log") as running:
        held = f"database: {service_db} (the pbxlink daemon with PID {running.pid} uses it)"
        export = pbxlink("clients", "export", "--config", str(service), str(tmp_path / "o.csv"))
        assert export.returncode == 0 and said(export.stderr) == [f"pbxlink: {held}"]
        check = pbxlink("check-config", str(service))
        assert check.returncode == 0 and held in check.stdout.splitlines()
        imported = pbxlink("clients", "import", "--config", str(mine), str(csv), **env)
        assert imported.returncode == 0, imported.stderr
        assert said(imported.stderr) == [
            f"pbxlink: database: {my_db}, which no pbxlink daemon uses: the pbxlink daemon "
            f"with PID {running.pid} uses {service_db} (its config: --config {service})"
        ]
    check = pbxlink("check-config", str(service), **env)
    assert f"database: {service_db} (no pbxlink daemon is running on it)" in check.stdout


def test_a_state_dir_the_daemon_cannot_use_is_one_line(tmp_path: Path) -> None:
    """E.g. the example's /var/lib/pbxlink from a user's shell: not a traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = write_config(tmp_path / "p.toml", blocker / "state")
    out = pbxlink("run", "--config", str(config))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert said(out.stderr) == [
        f"pbxlink: [storage] state_dir: cannot use {blocker / 'state'} for the database: Not a "
        "directory (run as the user that owns it, or set another state_dir)"
    ]
