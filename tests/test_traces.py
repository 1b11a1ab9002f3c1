"""Every real Asterisk trace is reported exactly as its truth says, however it is cut."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pbxlink.ami.framing import AmiParser
from pbxlink.calls.record import RECORD_FIELDS
from pbxlink.calls.updates import CallEnded
from pbxlink.replay import StreamDriver, finished_calls, replay
from pbxlink.sim.eventfilter import EventFilter

from conftest import ROOT, TRACE_NAMES, TRUTH, lab_tracker, need
from truth_match import match_multiset


def records_of(data: bytes, chunk: int) -> list[dict]:
    chunks = (data[i : i + chunk] for i in range(0, len(data), chunk))
    return [u.call.to_dict() for u in finished_calls(replay(chunks, lab_tracker()))]


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_trace_matches_truth(name: str, traces_dir: Path) -> None:
    need(name in TRUTH, "no truth.json found")
    records = records_of((traces_dir / name).read_bytes(), 64 * 1024)
    assert match_multiset(TRUTH[name], records) == []


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("name", TRACE_NAMES)
def test_any_read_size_gives_the_same_records(name: str, chunk: int, traces_dir: Path) -> None:
    need(name in TRUTH, "no truth.json found")
    data = (traces_dir / name).read_bytes()
    if chunk == 1 and len(data) > 1_000_000:
        data = data[:400_000]  # the 40-call trace cut short: 1-byte reads of all of it are slow
    assert records_of(data, chunk) == records_of(data, len(data))


def test_every_call_gets_exactly_one_record(traces_dir: Path) -> None:
    """A trace cut anywhere still ends each call it started once (the rest as partial)."""
    data = (traces_dir / "14_load_40_calls.ami").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 5000):
        updates = list(replay([data[:cut]], lab_tracker()))
        started = [u.call_id for u in updates if type(u).__name__ == "CallStarted"]
        ended = [u.call_id for u in updates if isinstance(u, CallEnded)]
        assert sorted(started) == sorted(ended)
        assert len(set(ended)) == len(ended)
        assert any(u.call.partial for u in updates if isinstance(u, CallEnded))


@pytest.mark.parametrize(
    "name",
    ["15_ami_reconnect_midcall", "06_ivr_sales_101_noanswer_102_answers", "14_load_40_calls"],
)
def test_receive_time_stamping_without_timestampevents(name: str, traces_dir: Path) -> None:
    """Asterisk's default sends no Timestamp: a live daemon stamps receive time instead.

    raw/NN.ami is that stream; raw/NN.jsonl gives each message's receive time.
    """
    raw = traces_dir / "raw"
    need((raw / f"{name}.jsonl").exists(), f"raw capture of {name} not found")
    data = (raw / f"{name}.ami").read_bytes()
    received = [
        json.loads(line)
        for line in (raw / f"{name}.jsonl").read_text().splitlines()
        if '"rx"' in line
    ]
    tracker = lab_tracker()
    parser = AmiParser({**tracker.subscription(), "FullyBooted": None})
    driver = StreamDriver(tracker)
    ended = []
    for rx in received:
        piece = data[rx["offset"] : rx["offset"] + rx["length"]]
        for frame in parser.feed(piece):
            ended += [u for u in driver.frame(frame, rx["t_wall"]) if isinstance(u, CallEnded)]
    assert match_multiset(TRUTH[f"{name}.ami"], [u.call.to_dict() for u in ended]) == []


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_readme_eventfilter_keeps_every_record(name: str, traces_dir: Path) -> None:
    """What Asterisk sends with the README's manager.conf filters gives the same records."""
    readme = EventFilter.from_text((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(readme.white) >= 15, "the README lost its eventfilter lines"
    data = (traces_dir / name).read_bytes()
    filtered = readme.stream(data)
    assert len(filtered) < len(data) * 0.5 or len(data) < 30_000
    assert records_of(filtered, 64 * 1024) == records_of(data, 64 * 1024)


def test_readme_table_lists_every_field_of_the_json_record() -> None:
    """The README says the JSON record 'has exactly these fields': its table must keep up with
    RECORD_FIELDS (offered_at was once added to the record and not to the table)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("The JSON record has exactly these fields:", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| (.+?) \|", table, re.MULTILINE)
    named = [name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)]
    assert named == list(RECORD_FIELDS)
