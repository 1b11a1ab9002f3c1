"""Retention on a real SQLite file: old calls go with their rows and (optionally) their files,
in small transactions, while the writer keeps committing new calls."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest
import structlog

from pbxlink.calllog import CallLogStore
from pbxlink.calllog.retention import DAY_S, Retention
from pbxlink.calllog.settings import RetentionConfig

from conftest import logged, make_record

NOW = 1_760_000_000.0


def ago(days: float) -> float:
    return NOW - days * DAY_S


def count(path: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute(sql).fetchone()[0])


def retention(store: CallLogStore, monitor: Path, **config: object) -> Retention:
    return Retention(store, RetentionConfig(**config), monitor, pause_s=0.001)  # type: ignore[arg-type]


async def test_old_calls_go_with_their_rows_new_ones_stay(
    store: CallLogStore, tmp_path: Path
) -> None:
    for call_id, age in [("old-40", 40), ("old-31", 31), ("new-29", 29.9), ("new-0", 0)]:
        store.submit(make_record(call_id=call_id, started_at=ago(age)))
        store.note_recording_access(call_id, "Nino", "listened", NOW)
    await store.flush()
    assert count(store.path, "SELECT count(*) FROM call_extensions") == 12
    with structlog.testing.capture_logs() as logs:
        deleted = await retention(store, tmp_path, calls_days=30).run_once(NOW)
    assert deleted == 2
    assert [r.call_id for r in await logged(store)] == ["new-0", "new-29"]
    path = store.path
    assert count(path, "SELECT count(*) FROM call_extensions WHERE call_id LIKE 'old%'") == 0
    assert count(path, "SELECT count(*) FROM call_extensions WHERE call_id LIKE 'new%'") == 6
    assert count(path, "SELECT count(*) FROM recording_access WHERE call_id LIKE 'old%'") == 0
    assert count(path, "SELECT count(*) FROM recording_access WHERE call_id LIKE 'new%'") == 2
    [event] = [e for e in logs if e["event"] == "calllog.retention_deleted"]
    assert (event["calls"], event["call_extensions"], event["recording_access"]) == (2, 6, 2)
    assert event["transactions"] == 1


async def test_calls_days_zero_keeps_everything(store: CallLogStore, tmp_path: Path) -> None:
    store.submit(make_record(call_id="ancient", started_at=ago(10_000)))
    await store.flush()
    keep = retention(store, tmp_path, calls_days=0, recordings=True)
    assert await keep.run_once(NOW) == 0
    await asyncio.wait_for(keep.run(), 1)  # returns at once: nothing to schedule
    assert keep.transactions == 0 and await store.count() == 1


async def test_recordings_deleted_only_inside_the_directory(
    store: CallLogStore, tmp_path: Path
) -> None:
    monitor, outside = tmp_path / "monitor", tmp_path / "outside"
    monitor.mkdir()
    outside.mkdir()
    for name in ("old.wav", "shared.wav", "new.wav", "target.wav"):
        (monitor / name).write_bytes(b"RIFF")
    (outside / "precious.wav").write_bytes(b"keep me")
    (monitor / "escape.wav").symlink_to(outside / "precious.wav")
    (monitor / "alias.wav").symlink_to(monitor / "target.wav")
    calls = {
        "rel": "old.wav",
        "abs": str(monitor / "shared.wav"),
        "abs-again": str(monitor / "shared.wav"),  # one file, two calls
        "outside": str(outside / "precious.wav"),
        "escape": "escape.wav",
        "dotdot": "../outside/precious.wav",
        "alias": "alias.wav",
        "gone": "never-written.wav",
        "no-recording": None,
    }
    for call_id, name in calls.items():
        store.submit(make_record(call_id=call_id, started_at=ago(100), recording=name))
    store.submit(make_record(call_id="new", started_at=ago(1), recording="new.wav"))
    await store.flush()
    with structlog.testing.capture_logs() as logs:
        deleted = await retention(store, monitor, calls_days=30, recordings=True).run_once(NOW)
    assert deleted == len(calls)
    assert sorted(p.name for p in monitor.iterdir()) == ["alias.wav", "escape.wav", "new.wav"]
    assert (outside / "precious.wav").read_bytes() == b"keep me"
    [event] = [e for e in logs if e["event"] == "calllog.retention_deleted"]
    assert (event["files_deleted"], event["files_refused"], event["files_missing"]) == (3, 3, 1)
    refused = sorted(e["recording"] for e in logs if e["event"] == "calllog.retention_file_refused")
    assert refused == sorted([calls["outside"], "escape.wav", "../outside/precious.wav"])


async def test_recordings_false_leaves_the_files(store: CallLogStore, tmp_path: Path) -> None:
    (tmp_path / "old.wav").write_bytes(b"RIFF")
    store.submit(make_record(call_id="old", started_at=ago(100), recording="old.wav"))
    await store.flush()
    assert await retention(store, tmp_path, calls_days=30).run_once(NOW) == 1
    assert (tmp_path / "old.wav").exists()


async def test_small_transactions(store: CallLogStore, tmp_path: Path) -> None:
    for i in range(1200):
        store.submit(make_record(call_id=f"old-{i:04}", started_at=ago(60 + i / 1000)))
    for i in range(10):
        store.submit(make_record(call_id=f"new-{i}", started_at=ago(1)))
    await store.flush()
    r = retention(store, tmp_path, calls_days=30, batch=500)
    assert await r.run_once(NOW) == 1200
    assert r.transactions == 3  # 500 + 500 + 200
    assert await store.count() == 10
    assert (
        count(store.path, "SELECT count(*) FROM call_extensions") == 30
    )  # 101 rang, 102 rang and answered
    assert await r.run_once(NOW) == 0 and r.transactions == 4  # one empty look


@pytest.mark.usefixtures("writer")
async def test_concurrent_submits_while_deleting_lose_nothing(
    store: CallLogStore, tmp_path: Path
) -> None:
    for i in range(1200):
        store.submit(make_record(call_id=f"old-{i:04}", started_at=ago(60 + i / 1000)))
    await store.flush()
    r = retention(store, tmp_path, calls_days=30, batch=50)
    job = asyncio.create_task(r.run_once(NOW))
    submitted: list[str] = []
    during = 0
    deadline = time.monotonic() + 30
    while not job.done():  # the AMI reader: a new call every millisecond or so
        assert time.monotonic() < deadline, "retention did not finish"
        call_id = f"new-{len(submitted)}"
        store.submit(make_record(call_id=call_id, started_at=ago(0)))
        submitted.append(call_id)
        during += store.written > 1200 and r.transactions > 0
        await asyncio.sleep(0.001)
    assert await job == 1200
    await store.flush()
    assert r.transactions == 25
    assert during > 0, "no new call was committed while retention ran"
    assert len(submitted) > 10
    assert await store.count() == len(submitted)
    assert count(store.path, "SELECT count(*) FROM calls WHERE call_id LIKE 'old%'") == 0
    assert store.rejected == 0


async def test_the_daemon_task_runs_at_start_and_again_and_survives_errors(
    store: CallLogStore, tmp_path: Path
) -> None:
    store.submit(make_record(call_id="old-1", started_at=ago(100)))
    await store.flush()
    r = Retention(store, RetentionConfig(calls_days=30), tmp_path, clock=lambda: NOW, every_s=0.02)
    task = asyncio.create_task(r.run())
    try:
        for _ in range(500):
            if await store.count() == 0:
                break
            await asyncio.sleep(0.01)
        assert await store.count() == 0  # the pass at start-up
        store.submit(make_record(call_id="old-2", started_at=ago(100)))
        await store.flush()
        for _ in range(500):
            if await store.get("old-2") is None:
                break
            await asyncio.sleep(0.01)
        assert await store.get("old-2") is None  # the next pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failed_pass_is_logged_not_raised(tmp_path: Path) -> None:
    closed = CallLogStore(tmp_path / "log.sqlite3")  # never opened
    r = Retention(closed, RetentionConfig(calls_days=30), tmp_path, every_s=0.01)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(r.run())
        await asyncio.sleep(0.1)
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    failed = [e for e in logs if e["event"] == "calllog.retention_failed"]
    assert len(failed) >= 2  # tried again, and again


async def test_files_that_cannot_be_deleted_are_counted_and_logged_once(
    store: CallLogStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only spool (the unit's ReadOnlyPaths; root in tests ignores chmod): the rows
    still go, the files stay, one warning says why."""
    for i in range(3):
        (tmp_path / f"old-{i}.wav").write_bytes(b"RIFF")
        store.submit(make_record(call_id=f"old-{i}", started_at=ago(100), recording=f"old-{i}.wav"))
    await store.flush()

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with structlog.testing.capture_logs() as logs:
        r = retention(store, tmp_path, calls_days=30, recordings=True)
        assert await r.run_once(NOW) == 3
    assert await store.count() == 0
    assert len(list(tmp_path.glob("old-*.wav"))) == 3
    [event] = [e for e in logs if e["event"] == "calllog.retention_deleted"]
    assert (event["files_deleted"], event["files_failed"]) == (0, 3)
    warnings = [e for e in logs if e["event"] == "calllog.retention_file_failed"]
    assert len(warnings) == 1 and "Read-only" in warnings[0]["error"]
