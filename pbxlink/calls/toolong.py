"""Too-long calls: a call whose talk time passes the threshold for its direction.

Sans-IO like the tracker: `update()` sees every CallUpdate, `tick(now)` is asked by whoever
owns the clock (the daemon's ticker, a test, a replay), so the rule is testable without
waiting half an hour. The call log applies the same rule to the final record (`is_too_long`),
so a call supervisors were told about is the call the log flags.
"""

from __future__ import annotations

from typing import Protocol

from pbxlink.calls.record import CallRecord
from pbxlink.calls.updates import CallEnded, CallUpdate, TooLong


class TooLongRule(Protocol):
    """What the rule needs of the config (`pbxlink.config.Thresholds` is one)."""

    def too_long_s(self, direction: str) -> float: ...


def is_too_long(rule: TooLongRule, record: CallRecord) -> bool:
    """For a final record: talked longer than its direction allows (unanswered: never)."""
    return record.answered_at is not None and record.talk_s > rule.too_long_s(record.direction)


class TooLongWatch:
    """Tells once per call when an answered, still-running call has talked too long."""

    def __init__(self, rule: TooLongRule) -> None:
        self.rule = rule
        self._talking: dict[str, CallRecord] = {}  # answered, running, not told yet
        self._told: set[str] = set()  # told, still running: never again

    @property
    def watched(self) -> int:
        return len(self._talking)

    def update(self, u: CallUpdate) -> None:
        """Keep the latest snapshot of each answered call until it ends or is told."""
        call_id = u.call_id
        if isinstance(u, CallEnded):
            self._talking.pop(call_id, None)
            self._told.discard(call_id)
        elif isinstance(u, TooLong) or call_id in self._told:
            return
        elif u.call.answered_at is not None:
            self._talking[call_id] = u.call

    def tick(self, now: float) -> list[TooLong]:
        """One TooLong per call that crossed its threshold by `now`."""
        out: list[TooLong] = []
        for call_id, call in list(self._talking.items()):
            assert call.answered_at is not None
            threshold = self.rule.too_long_s(call.direction)
            talk = now - call.answered_at
            if talk > threshold:
                del self._talking[call_id]
                self._told.add(call_id)
                out.append(TooLong(now, call, threshold_s=threshold, talk_s=talk))
        return out
