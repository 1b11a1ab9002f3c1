"""Which file a call's recording name means, checked: the one rule the web route that
streams recordings and the retention that deletes them both follow.

The names come from the PBX (`MIXMONITOR_FILENAME`): one odd name must not point either of
them at /etc. A file counts only when its real path (symlinks followed) lies inside the
recordings directory.
"""

from __future__ import annotations

from pathlib import Path


class RecordingRefused(Exception):
    """A recording name that does not lead to a file pbxlink may serve or delete."""

    def __init__(self, reason: str, *, outside: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outside = outside  # True: outside the recordings directory; False: no such file


def _under(path: Path, root: Path) -> bool:
    return path.is_relative_to(root) and path != root


def resolve_recording(name: str, root: Path) -> Path:
    """The real file behind a recording name, or RecordingRefused.

    A relative name is relative to `root` (Asterisk's monitor directory). `..` is refused
    even where it would stay inside: Asterisk never writes one. Blocking (file system)."""
    given = Path(name)
    if ".." in given.parts:
        raise RecordingRefused("'..' in the recording name", outside=True)
    real_root = root.resolve()
    path = given if given.is_absolute() else root / given
    if given.is_absolute() and not (_under(path, root) or _under(path, real_root)):
        raise RecordingRefused("an absolute path outside the recordings directory", outside=True)
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        raise RecordingRefused("no such file", outside=False) from None
    if not _under(real, real_root):
        raise RecordingRefused("resolves outside the recordings directory", outside=True)
    if not real.is_file():
        raise RecordingRefused("not a regular file", outside=False)
    return real
