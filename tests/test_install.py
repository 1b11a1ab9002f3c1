"""Installing pbxlink as the README says: the two make targets, and the path an admin follows
to put the daemon next to Asterisk under systemd's sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from pbxlink.sim.scenario import load_scenarios
from pbxlink.sim.server import AmiSimulator

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


# -- the README's install path, as an unprivileged user ----------------------------------------

SERVICE_UID = 61184 + os.getpid() % 1000  # in systemd's DynamicUser range; nobody's on CI
NOT_HERE = ("ln -s ", "cp systemd/", "systemctl ")  # systemd's part: done by hand below


def readme_install_lines() -> list[str]:
    """The shell lines of the README's "Installing next to Asterisk" block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Installing next to Asterisk", 1)[1]
    block = section.split("```sh\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / "pbxlink.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def as_service(*command: str, env: dict[str, str]) -> list[str]:
    """`command` as the service's user: its own uid and gid, no supplementary groups."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    ids = str(SERVICE_UID)
    return [setpriv, "--reuid", ids, "--regid", ids, "--clear-groups", "--", "env", "-i",
            *(f"{k}={v}" for k, v in env.items()), *command]  # fmt: skip


def opt_pbxlink(root: Path) -> Path:
    """/opt/pbxlink as the README's first line makes it, from the system's python3 (the
    service's user cannot run a python kept under /root), with this checkout's packages in
    place of the pip download."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    need(system is not None, "no system python3 in /usr/bin")
    assert system is not None
    version = subprocess.run(
        [system, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip()
    need(
        version == str(sys.version_info[:2]),
        f"{system} is Python {version}, this environment's packages are for {sys.version_info[:2]}",
    )
    venv = root / "opt" / "pbxlink"
    subprocess.run([system, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_packages = next(venv.glob("lib/python3.*/site-packages"))
    ours = sysconfig.get_paths()["purelib"]
    (site_packages / "pbxlink-checkout.pth").write_text(
        f"{ROOT}\nimport site; site.addsitedir({ours!r})\n"
    )
    return venv / "bin" / "python"


def own_copy(python: Path) -> None:
    """The venv gets its own copy of this checkout's package and of the packages it runs
    with, in place of the paths to them: for a checkout the service's user cannot walk
    into. (The copy is what `pip install` would have put there.)"""
    site_packages = next(python.parent.parent.glob("lib/python3.*/site-packages"))
    (site_packages / "pbxlink-checkout.pth").unlink()
    ours = Path(sysconfig.get_paths()["purelib"])
    editable = shutil.ignore_patterns("__editable__*", "__pycache__")  # they point at ROOT
    shutil.copytree(ours, site_packages, symlinks=True, dirs_exist_ok=True, ignore=editable)
    shutil.copytree(ROOT / "pbxlink", site_packages / "pbxlink", ignore=editable)
    for path in [site_packages, *site_packages.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A root folder the service's user can walk into, as / is (pytest's tmp is root's)."""
    root = Path(tempfile.mkdtemp(prefix="pbxlink-root-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root)


async def test_the_readme_install_runs_as_the_services_unprivileged_user(
    scratch_root: Path,
) -> None:
    """The README's lines, as root in a scratch root; then what systemd does for the unit
    (the state folder for its user, LoadCredential= copies); then `check-config` and `run`
    as that user, the AMI login made with the secret systemd handed over; then an admin's
    import from a root shell lands in the database the service reads."""
    need(os.geteuid() == 0, "needs root: the install runs as root, the daemon as another user")
    need(shutil.which("setpriv") is not None, "setpriv not installed (util-linux)")
    need(shutil.which("openssl") is not None, "openssl not installed")
    etc = scratch_root / "etc" / "pbxlink"

    def here(text: str) -> str:  # the scratch root's paths for the real ones
        return text.replace("/etc/pbxlink", str(etc)).replace(
            "/var/lib/pbxlink", str(scratch_root / "var" / "lib" / "pbxlink")
        )

    # 1. the README, as root
    lines = readme_install_lines()
    assert lines[0].startswith("python3 -m venv /opt/pbxlink && "), lines[0]
    python = opt_pbxlink(scratch_root)
    pbxlink = [str(python), "-m", "pbxlink"]
    probe = subprocess.run(as_service(*pbxlink, "--version", env={}), capture_output=True)
    if probe.returncode != 0:  # a checkout other users cannot read (under /root, say)
        own_copy(python)
        probe = subprocess.run(as_service(*pbxlink, "--version", env={}), capture_output=True)
    need(
        probe.returncode == 0,
        f"pbxlink does not run as another user, even from its own copy: "
        f"{probe.stderr.decode(errors='replace').strip()[-300:]}",
    )
    skipped = [line for line in lines[1:] if line.startswith(NOT_HERE)]
    assert len(skipped) == 3, skipped  # the symlink, the unit, systemctl
    for line in lines[1:]:
        if line in skipped:
            continue
        command = here(line).replace("pbxlink check-config", f"{' '.join(pbxlink)} check-config")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], cwd=ROOT, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, (line, done.stdout, done.stderr)
        assert "warning" not in done.stderr, (line, done.stderr)
    secret_file = etc / "ami-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    # this machine: the PBX is a simulator on a free port, the listeners on free ports too
    ami_port, web_port, hub_port = free_ports(3)
    config = etc / "pbxlink.toml"
    text = config.read_text()
    for old, new in (
        ("port = 5038 ", f"port = {ami_port} "),
        ("port = 8080\n", f"port = {web_port}\n"),
        ("port = 8081\n", f"port = {hub_port}\n"),
        ('state_dir = "/var/lib/pbxlink"', f'state_dir = "{here("/var/lib/pbxlink")}"'),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config.write_text(text)  # the mode install gave it stays

    # 2. what systemd does when it starts the unit
    unit = unit_settings()
    state = scratch_root / "var" / "lib" / unit["StateDirectory"][0]
    state.mkdir(parents=True, mode=int(unit["StateDirectoryMode"][0], 8))
    os.chown(state, SERVICE_UID, SERVICE_UID)
    credentials = scratch_root / "run" / "credentials" / "pbxlink.service"
    credentials.mkdir(parents=True)
    for spec in unit["LoadCredential"]:
        name, source = spec.split(":", 1)
        shutil.copyfile(here(source), credentials / name)
        (credentials / name).chmod(0o400)
        os.chown(credentials / name, SERVICE_UID, SERVICE_UID)
    credentials.chmod(0o500)
    os.chown(credentials, SERVICE_UID, SERVICE_UID)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/",
        "TZ": "UTC",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "STATE_DIRECTORY": str(state),
        **dict(e.split("=", 1) for e in unit["Environment"]),
    }
    start = here(unit["ExecStart"][0]).split()
    assert start[0] == "/usr/local/bin/pbxlink", start  # the README's symlink
    start[:1] = pbxlink

    # 3. the service's user checks the config and runs the daemon
    checked = subprocess.run(
        as_service(*pbxlink, "check-config", str(config), env=env),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""  # no warning: a 0600 secret, listeners on 127.0.0.1
    assert f"database: {state / 'pbxlink.sqlite3'} (no pbxlink daemon" in checked.stdout
    async with simulator(secret=secret, port=ami_port) as sim:
        daemon = await asyncio.create_subprocess_exec(
            *as_service(*start, env=env),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await until_healthy(web_port, daemon)
            seqs = sim.play_once([sim.scenarios[0]])  # a call through the whole daemon
            await asyncio.wait_for(sim.wait_played(seqs), 30)
            await asyncio.sleep(0.5)  # the store's group commit, the journal line
        finally:
            daemon.send_signal(signal.SIGTERM)
            log = (await asyncio.wait_for(daemon.communicate(), 60))[1].decode()
        assert daemon.returncode == 0, log
    assert "Permission denied" not in log and '"call.ended"' in log, log
    database = state / "pbxlink.sqlite3"
    assert database.stat().st_uid == SERVICE_UID

    # 4. the admin imports clients from a root shell, with the service's config
    csv = scratch_root / "clients.csv"
    csv.write_text("name,phones\nNino Beridze,+995322123456\n")
    imported = subprocess.run(
        [*pbxlink, "clients", "import", "--config", str(config), str(csv)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TZ": "UTC"},
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert f"database: {database} (no pbxlink daemon is running on it)" in imported.stderr
    # ... and the service's user reads them from the same database (and may still write it)
    out = state / "export.csv"
    exported = subprocess.run(
        as_service(*pbxlink, "clients", "export", "--config", str(config), str(out), env=env),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "Nino Beridze" in out.read_text(encoding="utf-8-sig")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.asynccontextmanager
async def simulator(*, secret: str, port: int) -> AsyncIterator[AmiSimulator]:
    sim = AmiSimulator(
        load_scenarios(), port=port, secret=secret, calls_per_s=0, speed=20.0, timestamps=False
    )
    async with sim:
        yield sim


async def until_healthy(port: int, daemon: asyncio.subprocess.Process) -> None:
    """/healthz says 200 once the daemon is up and logged in to the PBX."""
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            assert daemon.returncode is None, "the daemon exited at start-up"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise AssertionError("the daemon never logged in to the PBX")
