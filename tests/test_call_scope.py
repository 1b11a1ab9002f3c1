"""An operator reads the calls of their own extensions only, through every route there is.

The routes come from the OpenAPI document the app serves, so a route added later is checked
without anyone remembering to: each GET an operator may call is called with an operator's
token, every path parameter filled with every client and every call of a seeded log, and no
answer may carry a call the operator's extensions took no part in.
"""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from desk_hub import Popups
from test_calls_api import OPERATOR_EXTS, TOKENS, Log, app_config, opened_log
from test_openapi import METHODS, routed

from pbxlink.calllog import query
from pbxlink.web import Metrics, make_app, openapi
from pbxlink.web.auth import route_access

from conftest import FakeStatus, served

# what the operator must see its own calls through (so the check is not vacuous there)
MUST_SHOW_OWN = {
    "/api/calls",
    "/api/calls.csv",
    "/api/calls/{call_id}",
    "/api/clients/{id}/calls",
}
QUERY_VALUES = {"number": "+995555123456"}  # required query parameters


def _ids_pattern(ids: list[str]) -> re.Pattern[str]:
    """Any of the call ids as a whole token (1714.5 must not match inside 1714.51)."""
    return re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, ids)) + r")(?![\w.])")


def _urls(path: str, params: list[dict], lg: Log) -> list[tuple[str, str | None]]:
    """(url, the call id in it or None) for every value of the path's parameters."""
    query = "&".join(
        f"{p['name']}={QUERY_VALUES[p['name']]}"
        for p in params
        if p["in"] == "query" and p.get("required")
    )
    suffix = f"?{query}" if query else ""
    if "{call_id}" in path:
        return [
            (path.replace("{call_id}", s.record.call_id) + suffix, s.record.call_id)
            for s in lg.calls
        ]
    if "{id}" in path:
        return [(path.replace("{id}", str(i)) + suffix, None) for i in lg.clients.values()]
    assert "{" not in path, f"{path}: teach this test a value for its parameter"
    return [(path + suffix, None)]


async def test_no_route_shows_an_operator_calls_of_other_extensions(tmp_path: Path) -> None:
    async with opened_log(tmp_path / "pbxlink.sqlite3", 300) as lg:
        recordings = tmp_path / "recordings"
        recordings.mkdir()
        for s in lg.calls:  # every recording exists: only the scope may refuse one
            if s.record.recording:
                (recordings / s.record.recording).write_bytes(b"RIFF....WAVE")
        config = app_config()
        config.recordings_dir = recordings
        app = make_app(
            config,
            FakeStatus(),
            Metrics(),
            directory=lg.directory,
            store=lg.store,
            hub=Popups(config, directory=lg.directory).hub,
        )
        mine = set(OPERATOR_EXTS)
        own = {s.record.call_id for s in lg.calls if s.involved & mine}
        foreign = {s.record.call_id for s in lg.calls if not s.involved & mine}
        shared = [
            c for c in lg.clients.values()
            if {s.client_id for s in lg.calls if s.record.call_id in own} & {c}
            and {s.client_id for s in lg.calls if s.record.call_id in foreign} & {c}
        ]  # fmt: skip
        assert own and foreign and shared, "the seeded log needs both kinds, for one client"
        foreign_ids = _ids_pattern(sorted(foreign))
        own_ids = _ids_pattern(sorted(own))
        routes = routed(app)
        showed_own: set[str] = set()
        checked = 0
        headers = {"Authorization": f"Bearer {TOKENS['operator']}"}
        async with (
            served(app) as server,
            aiohttp.ClientSession(f"http://127.0.0.1:{server.port}", headers=headers) as http,
        ):
            for path, item in openapi.build(app)["paths"].items():
                for method, op in item.items():
                    if method not in METHODS or method != "get":
                        continue
                    if route_access(routes[("GET", path)]) != "operator":
                        continue  # public, or a supervisor's route (403 for operators)
                    for url, call_id in _urls(path, op.get("parameters", []), lg):
                        async with http.get(url) as resp:
                            body = (await resp.read()).decode("utf-8", "replace")
                            status = resp.status
                        checked += 1
                        # a 404 may name the call asked for; nothing else may name another's
                        leaked = {m for m in foreign_ids.findall(body) if m != call_id}
                        if status < 400:
                            leaked |= {call_id} & foreign
                        assert not leaked, f"GET {url} ({status}) shows calls {sorted(leaked)}"
                        if call_id in foreign:
                            assert status == 404, f"GET {url}: {status}, expected 404"
                        elif call_id is not None and path == "/api/calls/{call_id}/recording":
                            recorded = any(
                                s.record.recording for s in lg.calls if s.record.call_id == call_id
                            )
                            assert status == (200 if recorded else 404), url
                        elif call_id is not None:
                            assert status == 200, f"GET {url}: {status}"
                        if own_ids.search(body):
                            showed_own.add(path)
        assert showed_own >= MUST_SHOW_OWN, MUST_SHOW_OWN - showed_own
        assert checked > len(lg.calls) * 2  # both {call_id} routes, for every call


async def test_a_clients_history_in_a_scope(tmp_path: Path) -> None:
    """A client's calls (query.client_calls) in a scope: the calls those extensions took part
    in, newest first; an operator without extensions sees none; no scope: every call of the
    client."""
    async with opened_log(tmp_path / "pbxlink.sqlite3", 200) as lg:
        for client_id in lg.clients.values():
            theirs = [s for s in lg.calls if s.client_id == client_id]
            newest = sorted(theirs, key=lambda s: (s.record.started_at, s.record.call_id))[::-1]
            for scope in (("101",), OPERATOR_EXTS, ("106", "105")):
                got = await query.client_calls(lg.store.reader, client_id, 500, scope=scope)
                wanted = [s.record.call_id for s in newest if s.involved & set(scope)]
                assert [c.call_id for c in got] == wanted
            assert await query.client_calls(lg.store.reader, client_id, 50, scope=()) == []
            everything = await query.client_calls(lg.store.reader, client_id, 500, scope=None)
            assert [c.call_id for c in everything] == [s.record.call_id for s in newest]
