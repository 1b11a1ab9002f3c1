"""The config file and the `pbxlink` command, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbxlink.config import ConfigError, load

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
    ]
    assert records[0]["started_at"] == "2026-11-23T22:17:28.919Z"
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
    assert config.operator_by_token(token) is config.operators[0]
    assert config.operator_by_token(token + "x") is None
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
