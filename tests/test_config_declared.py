"""Each config key is declared once, in its part's settings Struct: the loader, its messages
and the example file all follow that declaration."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from pbxlink.ami.settings import AmiConfig
from pbxlink.config import DECLARED, OPERATOR_KEYS, SECTIONS, ConfigError, load
from pbxlink.settings import Section

from conftest import ROOT


def test_every_key_of_every_section_is_checked_and_reported_with_its_line(tmp_path: Path) -> None:
    """A wrong value for each declared key, all in one file: one message per key, each with
    the key's line and what was expected, and nothing else."""
    lines: list[str] = []
    where: dict[str, int] = {}
    for section, keys in SECTIONS.items():
        if section:
            lines.append(f"[{section}]")
        for key in keys:
            lines.append(f"{key} = {{ wrong = 1 }}")  # a table: no key takes that
            where[f"{section}.{key}" if section else key] = len(lines)
    path = tmp_path / "p.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    problems = err.value.problems
    assert len(problems) == len(where), "\n".join(problems)
    for problem, (dotted, line) in zip(problems, where.items(), strict=True):
        assert problem.startswith(f"{path}:{line}: {dotted}: expected "), problem


def test_the_example_documents_exactly_the_declared_keys() -> None:
    """Every `key =` of the example (set or commented out) is a key its section declares; the
    other way round is test_config_cli's test_example_documents_every_key."""
    section, undeclared = "", []
    for line in (ROOT / "config" / "pbxlink.example.toml").read_text().splitlines():
        header = re.fullmatch(r"#? ?\[\[?([\w.]+)\]\]?\s*", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"#? ?(\w+) = ", line)
        if key is None or section in ("clients.sources", "calls.extensions"):
            continue  # the sources declare their own keys (test_sources.py); extensions any
        keys = OPERATOR_KEYS if section == "operators" else SECTIONS[section]
        if key.group(1) not in keys:
            undeclared.append(f"[{section}] {key.group(1)}")
    assert not undeclared, f"the example shows keys no section declares: {undeclared}"


def test_a_section_is_frozen_and_refuses_keys_it_does_not_declare() -> None:
    ami = AmiConfig(port=5039)
    with pytest.raises(AttributeError):
        ami.port = 1  # type: ignore[misc]
    for name, cls in DECLARED.items():
        assert issubclass(cls, msgspec.Struct), name
        with pytest.raises(msgspec.ValidationError, match="unknown field"):
            msgspec.convert({"no_such_key": 1}, cls)
    assert all(issubclass(c, Section) for n, c in DECLARED.items() if n != "storage")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[ami]\nping_interval_s = nan\n", "ami.ping_interval_s: expected a positive number"),
        ("[ami]\nport = true\n", "ami.port: expected a TCP port 0-65535, got True"),
        ("[ami]\nhost = '  '\n", "ami.host: must not be empty"),
        ("[hub]\nqueue_frames = 1.0\n", "hub.queue_frames: expected a whole number of at least 1"),
        ("[storage]\nstate_dir = ''\n", "storage.state_dir: must not be empty"),
        ("[clients]\nregion = 'XX'\n", "clients.region: expected a country code such as GE, UA"),
        ("company = 1\n", "company: expected a string, got 1"),
    ],
)
def test_values_the_types_refuse(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert f"{path}:" in str(err.value) and problem in str(err.value)


def test_whole_numbers_for_decimal_keys_and_paths_from_text(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[ami]\nping_interval_s = 3\n[storage]\nstate_dir = '~/pbx'\n")
    config = load(path)
    assert config.ami.ping_interval_s == 3.0 and isinstance(config.ami.ping_interval_s, float)
    assert config.storage.state_dir == Path("~/pbx").expanduser()
