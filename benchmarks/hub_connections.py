"""Popup connections that come and go: how long a connect/hello/welcome/close cycle takes and
how many bytes the hub still holds after many of them.

Moved out of the unit tests (tests/test_hub_security.py keeps "no task, connection or socket
left behind"): bytes and seconds depend on the machine and on what else runs on it, so they
are measured and reported here, against a goal, not asserted in `make test`.

    .venv/bin/python benchmarks/hub_connections.py            # 1,000 timed, 300 traced
    .venv/bin/python benchmarks/hub_connections.py --cycles 5000 --traced 1000

`--smoke` (CI) runs 50 cycles and 20 traced ones: it proves the script works and judges nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Sequence

import structlog
from websockets.asyncio.client import connect

from pbxlink.calls import CallRecord, Ringing
from pbxlink.config import Config
from pbxlink.desk import Close, Desk, Send
from pbxlink.hub import Hub
from pbxlink.hub.settings import HubConfig
from pbxlink.operators import Operator, Operators, hash_token
from pbxlink.web.urls import client_photo

from machine import cpu_model, git_commit

ORIGIN = "http://127.0.0.1:8080"
T0 = 1_790_000_000.0
#: bytes the hub, websockets and asyncio may keep per connection that came and went
GOAL_BYTES_PER_CYCLE = 64
WHO = [("101", "operator"), ("102", "operator"), ("sup", "supervisor"), ("admin", "admin")]


def operators() -> tuple[list[Operator], dict[str, str]]:
    tokens = {who: f"bench-token-{who}-" + "x" * 32 for who, _ in WHO}
    ops = [
        Operator(who, (who,) if role == "operator" else (), role, hash_token(tokens[who]))  # type: ignore[arg-type]
        for who, role in WHO
    ]
    return ops, tokens


async def run(cycles_timed: int, cycles_traced: int) -> dict[str, float]:
    ops, tokens = operators()
    config = Config(company="ACME", operators=ops, hub=HubConfig(port=0))
    desk = Desk(
        company=config.company,
        operators=ops,
        too_long=config.thresholds,
        photo_url=client_photo,
    )

    def tell(event: object) -> None:  # the desk decides, the hub sends: as the daemon wires them
        for command in desk.handle(event):
            if isinstance(command, Send):
                hub.send(command.sessions, command.message)
            elif isinstance(command, Close):
                hub.close_session(command.session, command.code, command.reason)

    hub = Hub(config, Operators(ops), tell, origins=[ORIGIN])
    await hub.start()
    url = f"ws://127.0.0.1:{hub.port}/"

    async def cycle(who: str) -> None:
        async with connect(url, origin=ORIGIN) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "hello", "v": 1, "token": tokens[who]}))
            assert json.loads(await ws.recv())["type"] == "welcome"

    async def cycles(n: int) -> None:
        for start in range(0, n, 25):
            batch = range(start, min(start + 25, n))
            await asyncio.gather(*(cycle(WHO[i % 4][0]) for i in batch))
        for _ in range(250):
            if hub.clients == 0:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        gc.collect()

    try:
        for ext in ("101", "102"):  # every welcome carries a call
            caller, did = "+995322123456", "+995322000000"
            call = CallRecord("ringing", T0, "inbound", caller, "", did, "no_answer")
            tell(Ringing(T0, call, ext))
        await cycles(100)  # warm up: caches, free lists, first allocations
        started = time.perf_counter()
        await cycles(cycles_timed)
        took = time.perf_counter() - started
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            await cycles(cycles_traced)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    finally:
        await hub.close()
    ours = [tracemalloc.Filter(True, f"*/{lib}/*") for lib in ("pbxlink", "websockets", "asyncio")]
    grown = sum(
        s.size_diff
        for s in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    return {"seconds": took, "cycles": cycles_timed, "traced": cycles_traced, "bytes": grown}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--cycles", type=int, default=1000, help="timed connect/hello/close cycles")
    ap.add_argument("--traced", type=int, default=300, help="cycles under tracemalloc (slow)")
    ap.add_argument("--smoke", action="store_true", help="50 + 20 cycles, nothing judged (CI)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.cycles, args.traced = 50, 20
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    result = asyncio.run(run(args.cycles, args.traced))
    per_cycle = result["bytes"] / max(args.traced, 1)
    verdict = "met" if per_cycle < GOAL_BYTES_PER_CYCLE else "NOT met"
    if args.smoke:
        verdict = "not judged (smoke)"
    print(f"machine: {cpu_model()}; commit {git_commit()}")
    print(
        f"{args.cycles} cycles in {result['seconds']:.2f} s "
        f"({result['seconds'] / max(args.cycles, 1) * 1000:.2f} ms each, 25 at a time)"
    )
    print(
        f"{args.traced} more under tracemalloc: {result['bytes']:+,} bytes held "
        f"({per_cycle:+.1f} per cycle; goal under {GOAL_BYTES_PER_CYCLE}: {verdict})"
    )
    return 1 if verdict == "NOT met" else 0


if __name__ == "__main__":
    sys.exit(main())
