"""Client photos as files under <state_dir>/photos, checked by their bytes.

The declared Content-Type is a claim; the magic bytes decide. Only PNG, JPEG and WebP pass:
what a browser shows inline without surprises (no SVG: it can carry script). Every stored file
gets a fresh random name, so a replaced photo is never half-written under a name in use, and
the old file is removed only after the database points at the new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pbxlink.clients.model import PhotoTooLarge, UnsupportedPhoto, ValidationError

MAX_PHOTO_BYTES = 2 << 20  # 2 MiB: a card photo, not a camera original
TYPES: dict[str, str] = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
BY_SUFFIX: dict[str, str] = {f".{ext}": ctype for ctype, ext in TYPES.items()}
GENERIC = frozenset({"", "application/octet-stream"})  # "no idea": the bytes decide alone
PLACEHOLDER = Path(__file__).with_name("placeholder.svg")
PLACEHOLDER_TYPE = "image/svg+xml"


def sniff(data: bytes) -> str | None:
    """The image type the bytes say, among the accepted ones."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check(data: bytes, content_type: str | None, max_bytes: int = MAX_PHOTO_BYTES) -> str:
    """The photo's content type, or the error naming the `photo` field."""
    if len(data) > max_bytes:
        raise PhotoTooLarge("photo", f"at most {max_bytes} bytes, got {len(data)}")
    if not data:
        raise ValidationError("photo", "empty body, expected a PNG, JPEG or WebP image")
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in GENERIC and declared not in TYPES:
        raise UnsupportedPhoto("photo", f"{declared} is not accepted; send PNG, JPEG or WebP")
    actual = sniff(data)
    if actual is None:
        raise UnsupportedPhoto("photo", "the data is not a PNG, JPEG or WebP image")
    if declared not in GENERIC and declared != actual:
        raise UnsupportedPhoto("photo", f"declared {declared} but the data is {actual}")
    return actual


def content_type(path: Path) -> str:
    """By suffix: the names are ours, and the placeholder is the only SVG."""
    if path.suffix.lower() == ".svg":
        return PLACEHOLDER_TYPE
    return BY_SUFFIX.get(path.suffix.lower(), "application/octet-stream")


def write(directory: Path, client_id: int, data: bytes, ctype: str) -> str:
    """Store the photo durably under a new name; returns the name (blocking: run in a thread)."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{client_id}-{secrets.token_hex(8)}.{TYPES[ctype]}"
    tmp = directory / f".{name}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return name


def path_of(directory: Path, name: str) -> Path:
    """The file of a stored name; names are ours, but a path in the database never escapes."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad photo file name {name!r}")
    return directory / name


def remove(directory: Path, name: str | None) -> None:
    """Delete a photo no client points at any more; a missing file is fine."""
    if name:
        with contextlib.suppress(OSError, ValueError):
            path_of(directory, name).unlink()
