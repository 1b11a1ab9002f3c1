"""pbxlink's framing inside panoramisk: `Manager(protocol_factory=FramedAMIProtocol)`.

panoramisk 1.4 decodes each read on its own (`errors='ignore'`), so a caller name whose UTF-8
bytes straddle two reads loses characters, and it only splits on `\\r\\n\\r\\n`. This protocol
keeps panoramisk's actions, futures and callbacks, and replaces only the byte handling with
`AmiParser`. Events are parsed only if a registered pattern (or an explicit
`manager.pbxlink_subscription`) can want them. A manager that sets `pbxlink_sink` gets pbxlink
`Message` objects for events directly, without panoramisk's slower Message conversion, and
one that sets `pbxlink_anomalies` is told what the parser counted as malformed since the last
read (the parser does not log; the link does).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message as PanoramiskMessage

from pbxlink.ami.framing import AmiParser, Banner, Message, Subscription

WILDCARDS = frozenset("*?[")


def subscription_of(manager: Any) -> Subscription | None:
    """What a manager's registered callbacks can match; None when a pattern is a wildcard."""
    explicit = getattr(manager, "pbxlink_subscription", None)
    if explicit is not None:
        return explicit
    patterns = [pattern for pattern, _ in getattr(manager, "patterns", [])]
    if any(WILDCARDS & set(p) for p in patterns):
        return None
    return dict.fromkeys(patterns)


def to_panoramisk(msg: Message) -> PanoramiskMessage:
    headers: dict[str, Any] = dict(msg)
    if msg.repeated:
        for key, more in msg.repeated.items():
            headers[key] = [msg[key], *more]
    return PanoramiskMessage(headers, content=msg.body)


class FramedAMIProtocol(AMIProtocol):
    parser: AmiParser | None
    _patterns_seen: int

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.parser = None
        self._patterns_seen = -1

    def _parser(self) -> AmiParser:
        """(Re)built when callbacks were registered since, so new subscriptions take effect."""
        factory = self.factory
        seen = len(getattr(factory, "patterns", ())) if factory is not None else -1
        if self.parser is None or seen != self._patterns_seen:
            parser = AmiParser(subscription_of(factory) if factory is not None else None)
            if self.parser is not None:
                parser.take_over(self.parser)
            self.parser = parser
            self._patterns_seen = seen
        return self.parser

    def data_received(self, data: bytes) -> None:  # type: ignore[override]
        sink = getattr(self.factory, "pbxlink_sink", None)
        parser = self._parser()
        frames = parser.feed(data)
        if parser.anomalies:
            self._tell_anomalies(parser.anomalies)
        for frame in frames:
            if isinstance(frame, Banner):
                self.version = frame.version
                continue
            if sink is not None and "Event" in frame:
                action_id = frame.get("ActionID")
                if action_id is None or action_id not in self.responses:
                    sink(frame)  # events, and list items of actions panoramisk is not awaiting
                    continue
            self.handle_message(to_panoramisk(frame))

    def _tell_anomalies(self, counted: Counter[str]) -> None:
        """Hand what the parser counted in this read to the manager's reporter, and start
        counting afresh (the parser's counter is a tally, not a history)."""
        report = getattr(self.factory, "pbxlink_anomalies", None)
        if report is not None:
            report(Counter(counted))
        counted.clear()
