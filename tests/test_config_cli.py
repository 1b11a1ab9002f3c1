"""The config file and the `pbxlink` command, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbxlink.config import SECTIONS, ConfigError, load
from pbxlink.operators import Operators

from conftest import ROOT, TRUTH, need
from truth_match import match_multiset


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`pbxlink ARGS` on a machine in the lab PBX's zone (UTC), as its admin would run it."""
    env = {**os.environ, "TZ": "UTC"}
    return subprocess.run(
        [sys.executable, "-m", "pbxlink", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_example_config_loads() -> None:
    config = load(ROOT / "config" / "pbxlink.example.toml")
    assert "from-pstn*" in config.tracker.rules.trunk_contexts
    assert config.tracker.call_timeout_s == 14400


@pytest.mark.parametrize(
    "text, words",
    [
        ("[calls]\ntrunk_context = ['x']\n", ["calls.trunk_context", "unknown key"]),
        ("[calls]\ntrunk_contexts = 'from-pstn'\n", ["calls.trunk_contexts", "list of strings"]),
        ("[calls]\ncall_timeout_s = -1\n", ["calls.call_timeout_s", "positive"]),
        ("[calls]\npbx_timezone = 'Mars/Base'\n", ["calls.pbx_timezone", "Mars/Base"]),
        ("[ami]\nhots = 'x'\n", ["ami.hots", ":2:"]),
        ("[amy]\nhost = 'x'\n", ["amy", "unknown key or section"]),
        ("[ami]\nport = 70000\n", ["ami.port", "0-65535"]),
        ("[ami]\nmode = 'asterisk'\n", ["ami.mode", "needs a secret"]),
        ("[[operators]]\nname = 'A'\nextensions = ['101']\nrole = 'boss'\n", ["role", ":4:"]),
        ("[[operators]]\nname = 'A'\nrole = 'admin'\n", ["operators[0]", "missing"]),
        ("[calls\n", ["not valid TOML"]),
        ("[hub]\npublic_url = 'http://x'\n", ["hub.public_url", ":2:", "ws://"]),
        ("[hub]\ntls_cert_file = '/c.pem'\n", ["hub.tls_cert_file", "both"]),
        ("[retention]\ncalls_days = -1\n", ["retention.calls_days", "days"]),
        ("[thresholds]\nservice_level_variant = 'x'\n", ["service_level_variant", "one of"]),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "pbxlink.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_replay_json_has_exactly_the_record_fields(traces_dir: Path) -> None:
    name = "freepbx/F01_ringgroup_georgian_caller_2002_answers.ami"
    out = run("replay", "--json", str(traces_dir / name))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert list(records[0]) == [
        "call_id",
        "started_at",
        "offered_at",
        "answered_at",
        "ended_at",
        "direction",
        "caller_number",
        "caller_name",
        "called_number",
        "extensions_rung",
        "answered_by",
        "status",
        "wait_s",
        "talk_s",
        "hangup_cause",
        "queue",
        "ivr_digits",
        "transferred_to",
        "recording",
        "partial",
        "estimated",
    ]
    assert records[0]["started_at"] == "2026-11-23T22:17:28.919Z"
    assert records[0]["estimated"] == []  # a list, empty: the whole call was seen
    assert match_multiset(TRUTH[name], records) == []


def test_replay_json_on_every_trace(traces_dir: Path) -> None:
    need(bool(TRUTH), "no truth.json found")
    for name, expected in TRUTH.items():
        out = run("replay", "--json", str(traces_dir / name))
        assert out.returncode == 0, out.stderr
        records = [json.loads(line) for line in out.stdout.splitlines()]
        assert match_multiset(expected, records) == [], name


def test_replay_table_and_config_override(traces_dir: Path, tmp_path: Path) -> None:
    trace = str(traces_dir / "10_outbound_101_to_5559876.ami")
    table = run("replay", trace)
    assert table.returncode == 0 and "outbound" in table.stdout and "5559876" in table.stdout
    # Declaring the lab trunk a phone turns the same call internal: the config is obeyed.
    cfg = tmp_path / "c.toml"
    cfg.write_text("[calls]\ntrunk_contexts = []\npbx_timezone = 'UTC'\n")
    out = run("replay", "--json", "--config", str(cfg), trace)
    assert json.loads(out.stdout)["direction"] == "internal"


def test_replay_errors_are_clear(tmp_path: Path) -> None:
    missing = run("replay", str(tmp_path / "nope.ami"))
    assert missing.returncode == 1 and "nope.ami: cannot read" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[calls]\nfoo = 1\n")
    out = run("replay", "--config", str(bad), str(tmp_path / "x.ami"))
    assert out.returncode == 2 and "calls.foo" in out.stderr and "Traceback" not in out.stderr


def test_demo_replays_the_shipped_scenarios() -> None:
    out = run("demo")
    assert out.returncode == 0, out.stderr
    assert "ნინო ბერიძე" in out.stdout
    assert "2001 stops ringing: answered_elsewhere" in out.stdout
    assert "voicemail" in out.stdout and "abandoned" in out.stdout


def test_example_documents_every_key() -> None:
    from pbxlink.config import OPERATOR_KEYS, SECTIONS

    text = (ROOT / "config" / "pbxlink.example.toml").read_text()
    for section, keys in SECTIONS.items():
        if section:
            assert f"[{section}]" in text
        for key in keys:
            documented = (f"\n{key} =", f"# {key} =", f"[[{section}.{key}]]")
            assert any(d in text for d in documented), f"{section}.{key}"
    for key in OPERATOR_KEYS:
        assert f"# {key} =" in text, f"operators.{key}"


def test_check_config_and_token_commands(tmp_path: Path) -> None:
    out = run("token")
    token = out.stdout.split(": ", 1)[1].split()[0]
    line = out.stdout.strip().splitlines()[-1]
    cfg = tmp_path / "p.toml"
    cfg.write_text(f"[[operators]]\nname = 'A'\nextensions = ['101']\nrole = 'operator'\n{line}\n")
    ok = run("check-config", str(cfg))
    assert ok.returncode == 0 and "1 operator(s)" in ok.stdout
    config = load(cfg)
    operators = Operators(config.operators)
    assert operators.by_token(token) is config.operators[0]
    assert operators.by_token(token + "x") is None
    cfg.write_text("[web]\nport = 'http'\n")
    bad = run("check-config", str(cfg))
    assert bad.returncode == 2 and f"{cfg}:2: web.port" in bad.stderr


def test_ami_secret_from_env_or_file_and_never_in_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "ami-secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("PBX_SECRET", "from-the-env")
    base = "[ami]\nmode = 'asterisk'\n"
    cfg = tmp_path / "p.toml"
    cfg.write_text(base + f"secret_file = '{secret_file}'\n")
    assert load(cfg).ami.secret == "from-a-file"
    cfg.write_text(base + "secret_env = 'PBX_SECRET'\n")
    config = load(cfg)
    assert config.ami.secret == "from-the-env"
    assert "from-the-env" not in repr(config)
    cfg.write_text(base + "secret_env = 'NOT_SET_ANYWHERE'\n")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE unset"):
        load(cfg)
    cfg.write_text(base + "secret = 'a'\nsecret_env = 'PBX_SECRET'\n")
    with pytest.raises(ConfigError, match=r":4: ami\.secret_env: give only one"):
        load(cfg)


def test_example_sources_are_valid_when_uncommented(tmp_path: Path) -> None:
    """The commented [[clients.sources]] of the example parse and pass the checks."""
    text = (ROOT / "config" / "pbxlink.example.toml").read_text()
    start, end = text.index("# [[clients.sources]]"), text.index("[calls]")
    block = "\n".join(
        line[2:] if line.startswith("# ") else "" for line in text[start:end].splitlines()
    )
    cfg = tmp_path / "s.toml"
    cfg.write_text(block)
    sources = load(cfg).clients.sources
    assert [s.name for s in sources] == ["crm", "erp"]
    cfg.write_text(block.replace('type = "sql"', 'type = "ldap"'))
    with pytest.raises(ConfigError, match=r"clients\.sources\[1\]\.type"):
        load(cfg)


def test_too_long_threshold_per_direction(tmp_path: Path) -> None:
    path = tmp_path / "pbxlink.toml"
    path.write_text("[thresholds]\ntoo_long_call_s = 600\ntoo_long_internal_s = 60\n")
    thresholds = load(path).thresholds
    assert thresholds.too_long_s("internal") == 60
    assert thresholds.too_long_s("inbound") == 600
    assert thresholds.too_long_s("outbound") == 600


def test_local_time_zone_follows_dst(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pbx_timezone = "local"` must be a real zone: a fixed offset puts July an hour off."""
    import datetime as dt

    from pbxlink.config import local_zone

    monkeypatch.setenv("TZ", "Europe/Berlin")
    zone = local_zone()
    assert dt.datetime(2026, 1, 15, 12, tzinfo=zone).utcoffset() == dt.timedelta(hours=1)
    assert dt.datetime(2026, 7, 15, 12, tzinfo=zone).utcoffset() == dt.timedelta(hours=2)


def test_errors_name_the_line_of_the_nth_operator(tmp_path: Path) -> None:
    ops = "".join(
        f"[[operators]]\nname = 'Op {i}'\nextensions = ['{100 + i}']\nrole = 'operator'\n"
        f"token_hash = 'sha256:{i:064x}'\n"
        for i in range(3)
    )
    lines = (ops + "[hub]\nport = 1\n").split("\n")
    assert lines[13] == "role = 'operator'"  # the third operator's role, line 14
    lines[13] = "role = 'boss'"
    path = tmp_path / "pbxlink.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert f"{path}:14: operators[2].role" in str(err.value)


def test_check_config_lists_every_mistake_at_once(tmp_path: Path) -> None:
    """Fixing a file one start at a time is how a service ends up in a restart loop."""
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        "[ami]\nhots = 'pbx'\nport = 'x'\n"
        "[web]\nport = 8090\n"
        "[hub]\nport = 8090\n"
        "[[operators]]\nname = 'A'\nextensions = ['101']\nrole = 'boss'\n"
        "token_hash = 'sha256:nope'\n"
        "[colors]\nx = 1\n"
    )
    out = run("check-config", str(cfg))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [
        f"pbxlink: {cfg}:2: ami.hots: unknown key (known: {', '.join(sorted(SECTIONS['ami']))})",
        f"pbxlink: {cfg}:3: ami.port: expected a TCP port 0-65535, got 'x'",
        f"pbxlink: {cfg}:11: operators[0].role: expected one of operator, supervisor, admin, "
        "got 'boss'",
        f"pbxlink: {cfg}:12: operators[0].token_hash: expected 'sha256:' and 64 hex digits "
        "(make one with `pbxlink token`)",
        f"pbxlink: {cfg}:13: colors: unknown key or section (known: "
        + ", ".join(f"[{s}]" for s in SECTIONS if s)
        + ", [[operators]])",
        f"pbxlink: {cfg}:7: hub.port: 8090 is [web] port too: each listener needs its own port",
        f"pbxlink: {cfg}: 6 mistakes",
    ]


def test_the_page_and_the_popups_need_a_port_each(tmp_path: Path) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text("[web]\nport = 8081\n")  # the hub's default port
    with pytest.raises(ConfigError, match=r":2: web\.port: 8081 is \[hub\] port too"):
        load(cfg)
    cfg.write_text("[web]\nport = 0\n[hub]\nport = 0\n")  # any free port, each: fine
    assert load(cfg).web.port == 0


def test_a_relative_secret_file_is_the_systemd_credential_else_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service reads the copy systemd hands it (LoadCredential=), an admin's shell the
    file beside the config: one config line for both."""
    etc, credentials = tmp_path / "etc", tmp_path / "credentials"
    etc.mkdir()
    credentials.mkdir()
    (etc / "ami-secret").write_text("beside-the-config\n")
    cfg = etc / "pbxlink.toml"
    cfg.write_text("[ami]\nmode = 'asterisk'\nsecret_file = 'ami-secret'\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.chdir(tmp_path)  # not the config's folder: relative to the config, not here
    assert load(cfg).ami.secret == "beside-the-config"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert load(cfg).ami.secret == "beside-the-config"  # no such credential: the file
    (credentials / "ami-secret").write_text("handed-over-by-systemd\n")
    assert load(cfg).ami.secret == "handed-over-by-systemd"
    (etc / "ami-secret").unlink()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert f"{cfg}:3: ami.secret_file: {etc / 'ami-secret'}: cannot read" in str(err.value)
    assert "needs a secret" not in str(err.value)  # one mistake, said once


def test_unsafe_settings_are_warned_about(tmp_path: Path) -> None:
    secret = tmp_path / "ami-secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        "[ami]\nmode = 'asterisk'\nsecret_file = 'ami-secret'\n"
        "[web]\nhost = '0.0.0.0'\n[hub]\nhost = '0.0.0.0'\n"
    )
    out = run("check-config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"pbxlink: warning: {cfg}:3: ami.secret_file: {secret} can be read by every user of "
        f"this machine: chmod 600 {secret}",
        f"pbxlink: warning: {cfg}:5: web.host: 0.0.0.0 is reachable from the network over "
        "plain http://: tokens and callers' data cross it unencrypted; give [web] "
        "tls_cert_file and tls_key_file, or listen on 127.0.0.1 behind a TLS proxy",
        f"pbxlink: warning: {cfg}:7: hub.host: 0.0.0.0 is reachable from the network over "
        "plain ws://: tokens and callers' data cross it unencrypted; give [hub] "
        "tls_cert_file and tls_key_file, or listen on 127.0.0.1 behind a TLS proxy",
    ]
    secret.chmod(0o600)
    cfg.write_text("[ami]\nmode = 'asterisk'\nsecret_file = 'ami-secret'\n")
    assert load(cfg).warnings == []
    cfg.write_text("[ami]\nmode = 'asterisk'\nsecret = 'inline'\n")
    cfg.chmod(0o644)
    assert load(cfg).warnings == [
        f"{cfg}:3: ami.secret: the AMI secret is in a file every user of this machine can "
        "read: chmod 600 it, or move the secret to a secret_file"
    ]


def test_the_tls_files_of_the_page_are_loaded_by_check_config(tmp_path: Path) -> None:
    from test_link_tls import make_cert

    cert, key = make_cert(tmp_path, "pbx")
    other_cert, _ = make_cert(tmp_path, "other")
    cfg = tmp_path / "p.toml"
    cfg.write_text(f"[web]\nhost = '0.0.0.0'\ntls_cert_file = '{cert}'\ntls_key_file = 'pbx.key'\n")
    out = run("check-config", str(cfg))
    assert out.returncode == 0 and "web: https://0.0.0.0:8080" in out.stdout, out.stderr
    assert "web.host" not in out.stderr  # TLS: no warning for the page
    cfg.write_text(f"[web]\ntls_cert_file = '{other_cert}'\ntls_key_file = '{key}'\n")
    out = run("check-config", str(cfg))
    assert out.returncode == 2
    assert (
        f"{cfg}:2: web.tls_cert_file: {other_cert} with {key}: not a certificate and its key"
        in out.stderr
    )
    cfg.write_text(f"[web]\ntls_key_file = '{key}'\n")
    with pytest.raises(ConfigError, match=r":2: web\.tls_key_file: give both"):
        load(cfg)


def test_replay_without_timestamps_warns_and_says_what_times_it_used(
    traces_dir: Path, tmp_path: Path
) -> None:
    """raw/ holds the captures as Asterisk sends them by default: no Timestamp headers."""
    capture = tmp_path / "capture.ami"
    capture.write_bytes((traces_dir / "raw" / "10_outbound_101_to_5559876.ami").read_bytes())
    os.utime(capture, (1_796_000_000, 1_796_000_000))  # 2026-11-30 00:53:20 UTC
    out = run("replay", "--json", str(capture))
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"pbxlink: warning: {capture}: no message has a Timestamp header (timestampevents = "
        "yes in manager.conf adds them), so the calls' times are unknown: every event was "
        "stamped with the file's modification time, 2026-11-30 00:53:20 UTC, and every wait "
        "and talk time is 0"
    ]
    record = json.loads(out.stdout)
    assert record["started_at"] == record["ended_at"] == "2026-11-30T00:53:20.000Z"
    assert record["direction"] == "outbound" and record["talk_s"] == 0
    stamped = run("replay", "--json", str(traces_dir / "10_outbound_101_to_5559876.ami"))
    assert stamped.stderr == "" and json.loads(stamped.stdout)["talk_s"] > 0


@pytest.mark.parametrize("content", [b"", b"hello, world\nthis is not AMI\n", b"\x00\xff" * 100])
def test_replay_of_something_without_ami_messages_fails_clearly(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "not-ami.txt"
    path.write_bytes(content)
    out = run("replay", str(path))
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        f"pbxlink: {path}: no AMI message in it (expected a capture of an AMI session: blocks "
        "of 'Key: value' lines, each ending with a blank line)"
    ]


def test_every_command_says_what_it_does_in_its_help() -> None:
    import argparse

    from pbxlink.cli import build_parser

    def commands(
        parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
    ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(((*path, name), sub))
                    found += commands(sub, (*path, name))
        return found

    found = commands(build_parser())
    assert len(found) == 8  # replay demo run check-config token clients, import, export
    for path, sub in found:
        assert sub.description and len(sub.description) > 60, path
        out = run(*path, "--help")
        assert out.returncode == 0, path
        assert " ".join(sub.description.split()[:8]) in " ".join(out.stdout.split()), path
