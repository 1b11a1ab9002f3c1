"""Retention: calls older than `[retention] calls_days` leave the log, and with
`recordings = true` their recording files leave the disk.

Deletes go in small batches through the store's writer connection, one transaction each,
with a pause between them: the writer takes its turn on the same lock, so a new record waits
one small batch at most and never meets a locked database. Rows are committed first, files
deleted after; a crash in between leaves a few orphan files, never a row without its file.

A recording file is only deleted when `resolve_recording` (calllog/recordings.py) finds it
inside the recordings directory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from pbxlink.calllog.recordings import RecordingRefused, resolve_recording
from pbxlink.calllog.settings import RetentionConfig
from pbxlink.calllog.store import CallLogStore, Purged
from pbxlink.calls.record import iso_utc

log = structlog.get_logger("pbxlink.calllog")

DAY_S = 86400.0
EVERY_S = 3600.0  # after the run at start-up
PAUSE_S = 0.05  # between batches: the writer and the readers get the database


@dataclass(slots=True)
class FileCounts:
    deleted: int = 0
    missing: int = 0
    refused: int = 0  # outside the recordings directory: left alone
    failed: int = 0  # permission, I/O: left, logged
    names: set[str] = field(default_factory=set)


class Retention:
    """Deletes old calls (and files). `run()` is the daemon's task; `run_once(now)` one pass."""

    def __init__(
        self,
        store: CallLogStore,
        config: RetentionConfig,
        recordings_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        pause_s: float = PAUSE_S,
        every_s: float = EVERY_S,
    ) -> None:
        self.store = store
        self.config = config
        self.recordings_dir = recordings_dir
        self.clock = clock
        self.pause_s = pause_s
        self.every_s = every_s
        self.transactions = 0  # delete transactions committed, over this object's life

    async def run(self) -> None:
        """At start-up, then every hour; a failed pass is logged and tried again next time."""
        if self.config.calls_days <= 0:
            log.info("calllog.retention_off")
            return
        while True:
            try:
                await self.run_once(self.clock())
            except Exception:  # a locked or broken database must not stop the daemon
                log.exception("calllog.retention_failed", path=str(self.store.path))
            await asyncio.sleep(self.every_s)

    async def run_once(self, now: float) -> int:
        """Delete the calls that started more than calls_days before `now`; returns how many."""
        days = self.config.calls_days
        if days <= 0:
            return 0
        started = time.perf_counter()
        cutoff = now - days * DAY_S
        batch = self.config.batch
        total = Purged(0, 0, 0, [])
        files = FileCounts()
        transactions = 0
        while True:
            # shielded: a daemon shutdown lets the batch commit instead of cutting it
            purged = await asyncio.shield(self.store.delete_older(cutoff, batch))
            transactions += 1
            self.transactions += 1
            total.calls += purged.calls
            total.extensions += purged.extensions
            total.accesses += purged.accesses
            if self.config.recordings and purged.recordings:
                await asyncio.to_thread(self._delete_files, purged.recordings, files)
            if purged.calls < batch:
                break
            await asyncio.sleep(self.pause_s)
        log.info(
            "calllog.retention_deleted",
            calls=total.calls,
            call_extensions=total.extensions,
            recording_access=total.accesses,
            files_deleted=files.deleted,
            files_missing=files.missing,
            files_refused=files.refused,
            files_failed=files.failed,
            transactions=transactions,
            before=iso_utc(cutoff),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return total.calls

    def _delete_files(self, names: list[str], counts: FileCounts) -> None:
        """In a worker thread: unlink each recording's real file, if inside the directory."""
        for name in names:
            if name in counts.names:
                continue  # two calls, one file (a transfer's recording)
            counts.names.add(name)
            try:
                resolve_recording(name, self.recordings_dir).unlink()
                counts.deleted += 1
            except RecordingRefused as exc:
                if exc.outside:
                    counts.refused += 1
                    log.warning("calllog.retention_file_refused", recording=name, reason=exc.reason)
                else:
                    counts.missing += 1
            except FileNotFoundError:  # deleted meanwhile
                counts.missing += 1
            except OSError as exc:  # read-only (the unit's ReadOnlyPaths), permissions
                counts.failed += 1
                if counts.failed == 1:  # the same cause for all: the rest is only counted
                    log.warning("calllog.retention_file_failed", recording=name, error=str(exc))
