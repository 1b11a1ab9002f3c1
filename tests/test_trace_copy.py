"""The traces shipped in tests/traces are the real recordings, byte for byte, and enough.

tests/traces is a copy of ../shared/traces (the lab's Asterisk 22.9 recordings and their
truth), so a fresh clone tests everything without the lab's folder beside it. The manifest,
tests/traces.sha256 (`sha256sum -c` reads it), pins every byte; wherever ../shared/traces
exists (CI has it) the copy is compared with it, so the two can never drift apart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, SHARED_TRACES, TRACES, TRACES_MANIFEST, need


def sums(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) -> its SHA-256."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def manifest() -> dict[str, str]:
    """tests/traces.sha256, `sha256sum` lines of paths under traces/."""
    out = {}
    for number, line in enumerate(TRACES_MANIFEST.read_text(encoding="utf-8").splitlines(), 1):
        digest, _, name = line.partition("  ")
        assert len(digest) == 64 and name.startswith("traces/"), f"traces.sha256:{number}"
        out[name.removeprefix("traces/")] = digest
    return out


def test_the_copy_matches_its_manifest() -> None:
    listed, found = manifest(), sums(TRACES)
    assert sorted(set(listed) - set(found)) == [], "files of the manifest missing from the copy"
    assert sorted(set(found) - set(listed)) == [], "files in the copy the manifest lacks"
    changed = sorted(name for name, digest in found.items() if listed[name] != digest)
    assert changed == []
    # what the tests rely on is in it: both truths, the FreePBX and the control recordings
    for name in ("truth.json", "freepbx/truth.json", "raw/14_load_40_calls.jsonl"):
        assert name in found
    assert any(name.startswith("control/") and name.endswith(".ami") for name in found)


def test_the_copy_is_byte_for_byte_the_shared_traces() -> None:
    need(SHARED_TRACES.is_dir(), f"{SHARED_TRACES} not found: nothing to compare the copy with")
    assert sums(SHARED_TRACES) == sums(TRACES)


def test_a_clone_without_shared_runs_every_trace_test(tmp_path: Path) -> None:
    """A fresh clone with no ../shared beside it: every trace test runs (strict: no skips)."""
    git = shutil.which("git")
    need(git is not None and (ROOT / ".git").exists(), "not a git checkout: nothing to clone")
    assert git is not None
    clone = tmp_path / "pbxlink"
    subprocess.run(
        [git, "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert not (clone.parent / "shared").exists()
    env = {**os.environ, "PBXLINK_STRICT": "1", "PYTHONPATH": str(clone)}
    tests = ["tests/test_traces.py", "tests/test_trace_copy.py::test_the_copy_matches_its_manifest"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary and "error" not in summary, summary
