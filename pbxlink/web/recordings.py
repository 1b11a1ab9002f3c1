"""GET /api/calls/{call_id}/recording: a call's recording, for the browser's audio player.

aiohttp's FileResponse does the HTTP part (Range, If-Range, 206, 416, ETag, sendfile); this
module decides which file, if any: only a call the operator may see (operators: calls of their
own extensions; supervisors and admins: all), only a file whose real path lies inside
`recordings_dir` (see calllog/recordings.py `resolve_recording`). Refusals are logged
`recording.refused` with the reason; the client only learns 404 (no such recording, or not
yours) or 403 (the PBX named a file outside the recordings directory).

Who listened or downloaded is written to `recording_access` when a 200 or 206 goes out. A
player fetches one file in many Range requests; the store keeps one row per (call, operator,
action) a minute (CallLogStore.note_recording_access).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, NoReturn

import msgspec
import structlog
from aiohttp import web
from msgspec import Meta

from pbxlink.calllog import query
from pbxlink.calllog.recordings import RecordingRefused, resolve_recording
from pbxlink.calllog.store import CallLogStore
from pbxlink.web.auth import call_scope, operator_of
from pbxlink.web.errors import ApiError
from pbxlink.web.settings import Config
from pbxlink.web.spec import Answer, Route, convert, mount

log = structlog.get_logger("pbxlink.web")

PATH = "/api/calls/{call_id}/recording"
# Python's mimetypes knows some of these under other names (audio/x-wav) or not at all (gsm)
CONTENT_TYPES = {
    ".wav": "audio/wav",  # also Asterisk's .WAV (wav49: GSM in a WAV file)
    ".mp3": "audio/mpeg",
    ".gsm": "audio/x-gsm",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".ulaw": "audio/basic",
    ".alaw": "audio/x-alaw-basic",
}
FALLBACK_TYPE = "application/octet-stream"
SENT = (200, 206)  # what counts as listening; 304/416/412 sent no audio
# request[ACCESS]: (call_id, operator, action), for the response-prepare hook
ACCESS: Any = (
    web.RequestKey("recording_access", tuple) if hasattr(web, "RequestKey") else "recording_access"
)


def add_routes(app: web.Application, store: CallLogStore, config: Config) -> None:
    recordings = _Recordings(store, config.recordings_dir)
    mount(app, ROUTES, {"getCallRecording": recordings.get})
    app.on_response_prepare.append(recordings.sent)


class Params(msgspec.Struct):
    download: Annotated[
        bool, Meta(description="true: Content-Disposition attachment; else inline")
    ] = False


def _download(request: web.Request) -> bool:
    """true/1, false/0 or empty: other parameters are let be, as ever (a player may add its
    own, such as a cache buster)."""
    raw = request.query.get("download", "false")
    try:
        return convert({"download": raw or "false"}, Params, "parameter", strict=False).download
    except ApiError:
        raise ApiError(
            400, "bad_request", f"download: expected true or false, got {raw!r}", field="download"
        ) from None


def _disposition(kind: str, filename: str) -> str:
    """RFC 6266: an ASCII fallback, and the exact name for browsers that read filename*."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    exact = urllib.parse.quote(filename, safe="")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


class _Recordings:
    def __init__(self, store: CallLogStore, root: Path) -> None:
        self.store = store
        self.root = root

    async def get(self, request: web.Request) -> web.StreamResponse:
        call_id = request.match_info["call_id"]
        download = _download(request)
        op = operator_of(request)
        mine = call_scope(request)
        call = await self.store.get(call_id)
        if call is None:
            self._refuse(call_id, op.name, "no such call")
        if mine is not None and not await query.visible(self.store.reader, call_id, mine):
            self._refuse(call_id, op.name, "not one of the operator's calls")
        if not call.recording:
            self._refuse(call_id, op.name, "the call has no recording")
        try:
            path = await asyncio.to_thread(resolve_recording, call.recording, self.root)
        except RecordingRefused as exc:
            self._refuse(
                call_id, op.name, exc.reason, outside=exc.outside, recording=call.recording
            )
        action = "downloaded" if download else "listened"
        request[ACCESS] = (call_id, op.name, action)
        kind = "attachment" if download else "inline"
        headers = {
            "Content-Type": CONTENT_TYPES.get(path.suffix.lower(), FALLBACK_TYPE),
            "Content-Disposition": _disposition(kind, Path(call.recording).name),
        }
        return web.FileResponse(path, headers=headers)

    def _refuse(
        self, call_id: str, operator: str, reason: str, *, outside: bool = False, **extra: Any
    ) -> NoReturn:
        log.warning("recording.refused", call_id=call_id, operator=operator, reason=reason, **extra)
        if outside:
            raise ApiError(403, "forbidden", "the recording is outside the recordings directory")
        raise ApiError(404, "not_found", f"no recording for call {call_id}")

    async def sent(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: the status is final here, the audio not sent yet."""
        access = request.get(ACCESS)
        if access is None or request.method != "GET" or response.status not in SENT:
            return
        call_id, operator, action = access
        if self.store.note_recording_access(call_id, operator, action, time.time()):
            log.info("recording.accessed", call_id=call_id, operator=operator, action=action)


_AUDIO = {
    media: {"schema": {"type": "string", "format": "binary"}}
    for media in sorted({*CONTENT_TYPES.values(), FALLBACK_TYPE})
}
_RANGE = {"Content-Range": {"schema": {"type": "string"}}}

ROUTES = [
    Route("GET", PATH, "getCallRecording", "Stream or download a call's recording", "calls",
          {200: Answer("the whole recording", content=_AUDIO),
           206: Answer("the requested byte range", content=_AUDIO, headers=_RANGE),
           416: Answer("the range lies beyond the end of the file", headers=_RANGE)},
          {400: "a bad query parameter (named in `field`)",
           403: "the PBX named a file outside the recordings directory",
           404: "no such call, not the operator's call, or no recording file"},
          query=Params, check_query=False,
          extra_params=({"name": "Range", "in": "header", "required": False,
                         "description": "one byte range, e.g. bytes=0-99 or bytes=-500",
                         "schema": {"type": "string"}},),
          description=(
              "Operators get recordings of calls their extensions took part in; supervisors "
              "and admins all. Supports HTTP Range (206) for seeking. Each listening or "
              "download is recorded (at most one row per call, operator and action a minute).")),
]  # fmt: skip
