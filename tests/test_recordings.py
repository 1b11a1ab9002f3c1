"""Recordings over real TCP on 127.0.0.1 with real files in tmp_path: Range requests, path
escapes (.., absolute, symlinks), who may hear which call, and the access rows written."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from pbxlink.calllog import CallLogStore
from pbxlink.calllog.recordings import RecordingRefused, resolve_recording
from pbxlink.config import Config
from pbxlink.operators import Operator, hash_token
from pbxlink.web import Metrics, make_app, openapi
from pbxlink.web.recordings import PATH

from conftest import FakeStatus, make_record, session_to

T0 = 1_760_000_000.0
TOKENS = {
    "nino": "op-token-101-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "giorgi": "op-token-102-dddddddddddddddddddddddddddddd",
    "supervisor": "sup-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "admin": "admin-token-cccccccccccccccccccccccccccccccccc",
}
AUDIO = bytes(range(256)) * 4  # 1,024 bytes, every offset distinguishable mod 256


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """The monitor directory with real files, and a directory outside it."""
    monitor, outside = tmp_path / "monitor", tmp_path / "outside"
    (monitor / "2025" / "10").mkdir(parents=True)
    outside.mkdir()
    for name in ("a.wav", "b.mp3", "c.gsm", "d.ogg", "e.WAV", "2025/10/f.wav"):
        (monitor / name).write_bytes(AUDIO)
    (outside / "secret.wav").write_bytes(b"not for operators")
    (monitor / "escape.wav").symlink_to(outside / "secret.wav")
    (monitor / "alias.wav").symlink_to(monitor / "2025" / "10" / "f.wav")
    (monitor / "folder.wav").mkdir()
    return monitor, outside


CALLS = {
    "abs": "{monitor}/a.wav",
    "mp3": "b.mp3",
    "gsm": "c.gsm",
    "ogg": "{monitor}/d.ogg",
    "wav49": "e.WAV",
    "nested": "2025/10/f.wav",
    "alias": "alias.wav",
    "dotdot": "../../../../../../../../etc/passwd",
    "dotdot-inside": "2025/../a.wav",
    "elsewhere": "{outside}/secret.wav",
    "elsewhere-missing": "/nonexistent/x.wav",
    "escape": "escape.wav",
    "missing": "gone.wav",
    "folder": "folder.wav",
    "none": None,
}


@pytest.fixture
async def store(store: CallLogStore, dirs: tuple[Path, Path]) -> CallLogStore:
    """The call log holding CALLS, Nino's, and one call of Giorgi's 102 ("theirs")."""
    monitor, outside = dirs
    for call_id, name in CALLS.items():
        recording = None if name is None else name.format(monitor=monitor, outside=outside)
        store.submit(make_record(call_id=call_id, recording=recording, extensions_rung=["101"]))
    store.submit(
        make_record(call_id="theirs", recording="a.wav", extensions_rung=["102"], answered_by="102")
    )
    await store.flush()
    return store


@pytest.fixture
async def http(
    store: CallLogStore, dirs: tuple[Path, Path]
) -> AsyncIterator[aiohttp.ClientSession]:
    config = Config(
        recordings_dir=dirs[0],
        operators=[
            Operator("Nino", ("101",), "operator", hash_token(TOKENS["nino"])),
            Operator("Giorgi", ("102",), "operator", hash_token(TOKENS["giorgi"])),
            Operator("Sandro", (), "supervisor", hash_token(TOKENS["supervisor"])),
            Operator("Ana", (), "admin", hash_token(TOKENS["admin"])),
        ],
    )
    app = make_app(config, FakeStatus(), Metrics(), store=store)  # mounts the recordings
    async with session_to(app) as session:
        yield session


async def get(
    http: aiohttp.ClientSession,
    call_id: str,
    who: str = "nino",
    *,
    expect: int,
    headers: dict[str, str] | None = None,
    **params: str,
) -> tuple[aiohttp.ClientResponse, bytes]:
    url = PATH.format(call_id=call_id)
    async with http.get(url, headers={**auth(who), **(headers or {})}, params=params) as resp:
        body = await resp.read()
        assert resp.status == expect, f"{call_id}: {resp.status} {body[:200]!r}"
        return resp, body


async def accesses(store: CallLogStore, call_id: str) -> list[tuple[str, str]]:
    await store.flush()
    return [(a["operator"], a["action"]) for a in await store.recording_accesses(call_id)]  # type: ignore[misc]


# -- streaming -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_id", "content_type"),
    [
        ("abs", "audio/wav"),
        ("mp3", "audio/mpeg"),
        ("gsm", "audio/x-gsm"),
        ("ogg", "audio/ogg"),
        ("wav49", "audio/wav"),
        ("nested", "audio/wav"),
        ("dotdot-inside", None),
    ],
)
async def test_whole_file_with_its_content_type(
    http: aiohttp.ClientSession, call_id: str, content_type: str | None
) -> None:
    if content_type is None:  # `..` is refused even where it would stay inside
        await get(http, call_id, expect=403)
        return
    resp, body = await get(http, call_id, expect=200)
    assert body == AUDIO
    assert resp.headers["Content-Type"] == content_type
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Disposition"].startswith("inline; filename=")
    assert resp.headers["Cache-Control"] == "no-store"


async def test_range_requests(http: aiohttp.ClientSession) -> None:
    resp, body = await get(http, "abs", expect=206, headers={"Range": "bytes=0-99"})
    assert body == AUDIO[:100] and resp.headers["Content-Range"] == "bytes 0-99/1024"
    resp, body = await get(http, "abs", expect=206, headers={"Range": "bytes=1000-"})
    assert body == AUDIO[1000:] and resp.headers["Content-Range"] == "bytes 1000-1023/1024"
    resp, body = await get(http, "abs", expect=206, headers={"Range": "bytes=-100"})
    assert body == AUDIO[-100:] and resp.headers["Content-Range"] == "bytes 924-1023/1024"
    resp, body = await get(http, "abs", expect=416, headers={"Range": "bytes=5000-"})
    assert resp.headers["Content-Range"] == "bytes */1024" and body == b""
    await get(http, "abs", expect=416, headers={"Range": "bytes=oops"})
    # If-Range older than the file: the whole file, not a piece of a changed one
    stale = {"Range": "bytes=0-9", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"}
    _, body = await get(http, "abs", expect=200, headers=stale)
    assert body == AUDIO
    fresh = {"Range": "bytes=0-9", "If-Range": "Fri, 01 Jan 2100 00:00:00 GMT"}
    _, body = await get(http, "abs", expect=206, headers=fresh)
    assert body == AUDIO[:10]


async def test_download_is_an_attachment(http: aiohttp.ClientSession, store: CallLogStore) -> None:
    resp, body = await get(http, "nested", expect=200, download="true")
    assert body == AUDIO
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=\"f.wav\"; filename*=UTF-8''f.wav"
    )
    resp, _ = await get(http, "nested", expect=400, download="maybe")
    error = await resp.json()
    assert error["field"] == "download" and "download" in error["message"]


async def test_a_symlink_inside_pointing_inside_is_served(http: aiohttp.ClientSession) -> None:
    _, body = await get(http, "alias", expect=200)
    assert body == AUDIO


async def test_cookie_token_works_for_the_audio_element(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get(PATH.format(call_id="abs"), cookies={"token": TOKENS["nino"]}) as resp:
        assert resp.status == 200 and await resp.read() == AUDIO


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call_id", "status", "reason"),
    [
        ("dotdot", 403, "'..' in the recording name"),
        ("elsewhere", 403, "an absolute path outside the recordings directory"),
        ("elsewhere-missing", 403, "an absolute path outside the recordings directory"),
        ("escape", 403, "resolves outside the recordings directory"),
        ("missing", 404, "no such file"),
        ("folder", 404, "not a regular file"),
        ("none", 404, "the call has no recording"),
        ("no-such-call", 404, "no such call"),
        ("theirs", 404, "not one of the operator's calls"),
    ],
)
async def test_refused(
    http: aiohttp.ClientSession,
    store: CallLogStore,
    call_id: str,
    status: int,
    reason: str,
    caplog_structlog: list[dict[str, Any]],
) -> None:
    resp, body = await get(http, call_id, expect=status)
    assert resp.content_type == "application/json"
    assert b"not for operators" not in body and b"root:" not in body
    refused = [e for e in caplog_structlog if e["event"] == "recording.refused"]
    assert [(e["reason"], e["operator"], e["call_id"]) for e in refused] == [
        (reason, "Nino", call_id)
    ]
    assert await accesses(store, call_id) == []


@pytest.fixture
def caplog_structlog() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as logs:
        yield logs


async def test_the_recordings_directory_itself_behind_a_symlink(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """/var/spool/asterisk -> /data/asterisk: names under either spelling are inside."""
    monitor, _ = dirs
    link = tmp_path / "spool-link"
    link.symlink_to(monitor)
    assert resolve_recording(str(link / "a.wav"), link) == (monitor / "a.wav").resolve()
    assert resolve_recording(str(monitor / "a.wav"), link) == (monitor / "a.wav").resolve()
    assert resolve_recording("a.wav", link) == (monitor / "a.wav").resolve()


@pytest.mark.parametrize(
    ("name", "outside"),
    [
        ("a\0.wav", False),  # a NUL byte
        ("loop.wav", False),  # a symlink loop
        ("", True),  # the directory itself
        (".", True),
    ],
)
def test_odd_names_are_refused(dirs: tuple[Path, Path], name: str, outside: bool) -> None:
    monitor, _ = dirs
    os.symlink("loop.wav", monitor / "loop.wav")
    with pytest.raises(RecordingRefused) as refused:
        resolve_recording(name, monitor)
    assert refused.value.outside is outside


# -- who may listen ------------------------------------------------------------------------------


async def test_roles(http: aiohttp.ClientSession) -> None:
    await get(http, "theirs", "nino", expect=404)  # not 403: not even that it exists
    await get(http, "theirs", "giorgi", expect=200)
    await get(http, "abs", "giorgi", expect=404)
    await get(http, "theirs", "supervisor", expect=200)
    await get(http, "abs", "admin", expect=200)
    async with http.get(PATH.format(call_id="abs")) as resp:
        assert resp.status == 401


# -- who listened --------------------------------------------------------------------------------


async def test_access_rows_one_per_operator_action_and_minute(
    http: aiohttp.ClientSession, store: CallLogStore
) -> None:
    for start in range(0, 1024, 128):  # a player fetching in pieces: one listening
        await get(http, "abs", expect=206, headers={"Range": f"bytes={start}-{start + 127}"})
    await get(http, "abs", expect=416, headers={"Range": "bytes=9999-"})  # no audio sent
    async with http.head(PATH.format(call_id="abs"), headers=auth("nino")) as resp:
        assert resp.status == 200
    await get(http, "abs", expect=200, download="true")
    await get(http, "abs", expect=200, download="true")
    await get(http, "abs", "supervisor", expect=200)
    assert await accesses(store, "abs") == [
        ("Nino", "listened"),
        ("Nino", "downloaded"),
        ("Sandro", "listened"),
    ]
    rows = await store.recording_accesses("abs")
    assert all(str(r["at"]).endswith("Z") for r in rows)
    async with http.get("/api/calls/abs", headers=auth("supervisor")) as resp:
        assert resp.status == 200
        assert (await resp.json())["recording_accesses"] == rows  # the call's page shows it


async def test_access_rows_window_and_vanished_calls(store: CallLogStore) -> None:
    """The store side: a minute later is a new row; a call retention deleted meanwhile is
    skipped, not an error that would make the writer's batch fail again and again."""
    assert store.note_recording_access("abs", "Nino", "listened", T0)
    assert not store.note_recording_access("abs", "Nino", "listened", T0 + 59)
    assert store.note_recording_access("abs", "Nino", "listened", T0 + 61)
    store.note_recording_access("deleted-meanwhile", "Nino", "listened", T0)
    store.submit(make_record(call_id="after", recording="a.wav"))  # the same batch still commits
    assert await accesses(store, "abs") == [("Nino", "listened"), ("Nino", "listened")]
    assert await store.get("after") is not None
    assert await accesses(store, "deleted-meanwhile") == []
    with pytest.raises(ValueError, match="action"):
        store.note_recording_access("abs", "Nino", "deleted", T0)


def test_the_openapi_operation(store: CallLogStore, tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    app = make_app(Config(recordings_dir=tmp_path), FakeStatus(), Metrics(), store=store)
    doc = openapi.build(app)
    validate(doc)  # raises on an invalid document
    get_op = doc["paths"][PATH]["get"]
    assert {"200", "206", "401", "403", "404", "416"} <= set(get_op["responses"])
