"""One daemon per database, and a way for every command to tell which database a daemon uses.

Two daemons on one SQLite file would each write every call (twice the records, two AMI logins
fighting over the same PBX); so the daemon holds an exclusive `flock` on `<database>.lock`
for as long as it runs, with its PID written in the file. The kernel drops the lock when the
process dies, even by `kill -9`: a stale file is never mistaken for a running daemon.

The CLI reads the same file to say whether the database it is about to use is the one a
running daemon holds (an import into a database no daemon reads is a mistake worth a line).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pbxlink.startup import StartError

#: the service's config, as the README installs it (the CLI looks there for the daemon's database)
SERVICE_CONFIG = Path(os.environ.get("PBXLINK_SERVICE_CONFIG", "/etc/pbxlink/pbxlink.toml"))
SERVICE_DATABASE = Path("/var/lib/pbxlink/pbxlink.sqlite3")  # the unit's StateDirectory
#: a command's probe holds the lock (shared) for microseconds; a starting daemon retries past it
ACQUIRE_TRIES = 5
ACQUIRE_PAUSE_S = 0.05


class DatabaseInUse(StartError):
    """Another process holds the database's lock; `pid` is the one its lock file names."""

    def __init__(self, database: Path, pid: int | None) -> None:
        self.database = database
        self.pid = pid
        holder = f"the pbxlink daemon with PID {pid}" if pid else "another pbxlink daemon"
        super().__init__(
            f"{database}: {holder} already uses this database (its lock: {lock_path(database)})"
        )


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@dataclass(slots=True)
class DatabaseLock:
    """Held by the running daemon; `release()` (or process exit) lets the next one start."""

    path: Path
    fd: int

    @classmethod
    def acquire(cls, database: Path) -> DatabaseLock:
        """Lock `database` for this process, or raise DatabaseInUse naming the holder's PID.

        The lock's folder is the database's: it is created here if missing (the store would
        create it a moment later anyway)."""
        path = lock_path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # e.g. /var/lib/pbxlink from a user's shell
            raise StartError(
                f"[storage] state_dir: cannot use {path.parent} for the database: "
                f"{exc.strerror} (run as the user that owns it, or set another state_dir)"
            ) from None
        for attempt in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == ACQUIRE_TRIES - 1:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise DatabaseInUse(database, pid) from None
                time.sleep(ACQUIRE_PAUSE_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # the file stays: unlinking a lock file races its next user
        os.close(self.fd)
        self.fd = -1


def holder(database: Path) -> int | None:
    """The PID of the daemon holding `database` (0: held, PID unreadable); None: no daemon.

    Raises PermissionError when the lock file exists but this user may not read it."""
    try:
        fd = os.open(lock_path(database), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def describe(database: Path) -> str:
    """A line for a command that uses `database`: is it the one a running daemon holds?"""
    try:
        pid = holder(database)
    except PermissionError:
        return f"database: {database} (whether a daemon uses it: its lock is not readable here)"
    if pid is not None:
        who = f"the pbxlink daemon with PID {pid}" if pid else "a running pbxlink daemon"
        return f"database: {database} ({who} uses it)"
    service = service_database()
    with contextlib.suppress(OSError):
        other = holder(service) if service != database else None
        if other is not None:
            who = f"the pbxlink daemon with PID {other}" if other else "the running pbxlink daemon"
            return (
                f"database: {database}, which no pbxlink daemon uses: {who} uses {service} "
                f"(its config: --config {SERVICE_CONFIG})"
            )
    return f"database: {database} (no pbxlink daemon is running on it)"


def service_database() -> Path:
    """The database the service's config names ([storage] only: this is a hint, not a load)."""
    try:
        storage = tomllib.loads(SERVICE_CONFIG.read_text(encoding="utf-8")).get("storage", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return SERVICE_DATABASE
    if isinstance(storage, dict) and isinstance(storage.get("database"), str):
        return Path(storage["database"]).expanduser()
    if isinstance(storage, dict) and isinstance(storage.get("state_dir"), str):
        return Path(storage["state_dir"]).expanduser() / SERVICE_DATABASE.name
    return SERVICE_DATABASE
