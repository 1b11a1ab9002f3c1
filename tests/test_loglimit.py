"""LogLimit: a few lines per event and window, every occurrence counted, and the next line
written says how many were held back."""

from __future__ import annotations

import time
from typing import Any

from pbxlink.loglimit import LogLimit


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def test_lines_past_the_rate_are_held_back_counted_and_reported() -> None:
    log = Lines()
    limit = LogLimit(["a.refused", "b.refused"], rate="2/second")
    assert limit.seen == {"a.refused": 0, "b.refused": 0}  # named events start at zero
    written = [limit.warning(log, "a.refused", n=i) for i in range(5)]
    assert written == [True, True, False, False, False]
    assert limit.warning(log, "b.refused", n=0)  # each event has its own window
    assert log.lines == [("a.refused", {"n": 0}), ("a.refused", {"n": 1}), ("b.refused", {"n": 0})]
    assert (limit.seen["a.refused"], limit.suppressed["a.refused"]) == (5, 3)
    time.sleep(1.05)  # the window moves on
    assert limit.warning(log, "a.refused", n=5)
    assert log.lines[-1] == ("a.refused", {"n": 5, "suppressed": 3})  # the three held back
    assert limit.warning(log, "a.refused", n=6)
    assert log.lines[-1] == ("a.refused", {"n": 6})  # said once
    assert (limit.seen["a.refused"], limit.suppressed["a.refused"]) == (7, 3)
