"""AMI framing: bytes in, messages out, no I/O.

Asterisk's manager protocol is a banner line followed by blocks of `Key: Value` lines, each
block closed by a blank line. Real streams mix `\\r\\n` and `\\n`, split blocks (and multi-byte
UTF-8 characters) anywhere across reads, repeat keys (`ChanVariable`) and, for old `Command`
actions, send a `Response: Follows` body that ends in `--END COMMAND--`. The parser works on
whole blocks so a caller name split across two reads is decoded only once it is complete.

Speed comes from not parsing what nobody asked for: with a subscription, an event whose name
(or, for chatty events such as `VarSet`, whose raw bytes) does not match is dropped before it
is decoded. Everything that is delivered is delivered whole.

The parser does no I/O and does not log: what it had to repair or drop (invalid UTF-8, a line
or a message over its limit) it counts in `AmiParser.anomalies`, and the adapter that owns it
(the AMI link, `pbxlink replay`) says so in its log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

BANNER_PREFIX = b"Asterisk Call Manager/"
FOLLOWS_PREFIX = b"Response: Follows"
END_COMMAND = b"--END COMMAND--"

DEFAULT_MAX_LINE = 64 * 1024
DEFAULT_MAX_MESSAGE = 1024 * 1024


class Message(dict[str, str]):
    """One AMI message: the first value of every key, plus the repeats and any raw body."""

    __slots__ = ("body", "repeated")

    def __init__(self) -> None:
        super().__init__()
        self.repeated: dict[str, list[str]] | None = None
        self.body: str = ""

    @property
    def event(self) -> str | None:
        return self.get("Event")

    def getall(self, key: str) -> list[str]:
        """Every value of a key that may repeat (ChanVariable, Output)."""
        if key not in self:
            return []
        first = [self[key]]
        if self.repeated and key in self.repeated:
            return first + self.repeated[key]
        return first


@dataclass(slots=True, frozen=True)
class Banner:
    """The `Asterisk Call Manager/<version>` line that opens every session."""

    version: str


Frame = Message | Banner

#: event name -> None (every such event) or byte strings of which one must occur in it
Subscription = Mapping[str, Iterable[bytes] | None]

#: what `AmiParser.anomalies` counts: a message with bytes that are not UTF-8 (decoded with
#: U+FFFD in their place), a line over `max_line` (skipped, the rest of its message kept), a
#: message over `max_message` (dropped up to its end)
ANOMALIES = ("invalid_utf8", "line_too_long", "message_too_long")


class AmiParser:
    """Incremental AMI parser. Feed it bytes, get `Message` and `Banner` objects back."""

    def __init__(
        self,
        subscription: Subscription | None = None,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self._wanted: dict[bytes, tuple[bytes, ...] | None] | None = None
        if subscription is not None:
            self._wanted = {
                name.encode(): (None if needles is None else tuple(needles))
                for name, needles in subscription.items()
            }
        self._max_line = max_line
        self._max_message = max_message
        self._buf = b""
        self._carry_cr = False
        self._skipping = False
        self._pending_newline = False
        self._follows: list[bytes] | None = None
        self.skipped_events = 0
        #: how often each of `ANOMALIES` happened, for the adapter to log (and clear, if it
        #: logs as it goes)
        self.anomalies: Counter[str] = Counter()

    def take_over(self, other: AmiParser) -> None:
        """Continue another parser's stream (same bytes pending), e.g. with a new subscription."""
        self._buf, self._carry_cr = other._buf, other._carry_cr
        self._skipping, self._pending_newline = other._skipping, other._pending_newline
        self._follows = other._follows
        self.anomalies += other.anomalies

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next read from the socket; return every message it completes."""
        if self._carry_cr:
            data = b"\r" + data
            self._carry_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._carry_cr = True
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        if self._skipping:
            data = self._skip_oversized(data)
            if data is None:
                return []
        if self._buf:
            if b"\n\n" not in data and not (data[:1] == b"\n" and self._buf[-1:] == b"\n"):
                self._buf += data  # no message ends in this read: nothing to split
                if len(self._buf) > self._max_message:
                    self._drop_oversized()
                return []
            buf = self._buf + data
        else:
            buf = data
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        out: list[Frame] = []
        if blocks:
            self._frames(blocks, out)
        if len(self._buf) > self._max_message:
            self._drop_oversized()
        return out

    # -- internals -------------------------------------------------------------------------

    def _frames(self, blocks: list[bytes], out: list[Frame]) -> None:
        wanted = self._wanted
        for block in blocks:
            if self._follows is not None:
                self._follows.append(block)
                if END_COMMAND in block:
                    joined = b"\n\n".join(self._follows)
                    self._follows = None
                    self._message(joined, out)
                continue
            if not block:
                continue
            if block[0] == 10:  # stray blank lines between messages
                block = block.lstrip(b"\n")
                if not block:
                    continue
            if block.startswith(b"Event: "):
                if wanted is not None:
                    end = block.find(b"\n")
                    name = (block[7:] if end < 0 else block[7:end]).rstrip()
                    if name not in wanted:
                        self.skipped_events += 1
                        continue
                    needles = wanted[name]
                    if needles is not None and not any(n in block for n in needles):
                        self.skipped_events += 1
                        continue
                self._message(block, out)
                continue
            if block.startswith(BANNER_PREFIX):
                end = block.find(b"\n")
                line = block if end < 0 else block[:end]
                out.append(Banner(line[len(BANNER_PREFIX) :].decode("ascii", "replace").strip()))
                if end >= 0:
                    self._frames([block[end + 1 :]], out)
                continue
            if block.startswith(FOLLOWS_PREFIX) and END_COMMAND not in block:
                self._follows = [block]
                continue
            self._message(block, out)

    def _message(self, block: bytes, out: list[Frame]) -> None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            text = block.decode("utf-8", "replace")
            self.anomalies["invalid_utf8"] += 1
        msg = Message()
        body: list[str] | None = None
        for line in text.split("\n"):
            if len(line) > self._max_line:
                self.anomalies["line_too_long"] += 1
                continue
            key, sep, value = line.partition(": ")
            if not sep:
                if line.endswith(":") and " " not in line:
                    key, value = line[:-1], ""
                else:
                    if line:
                        (body := body or []).append(line)
                    continue
            if key in msg:
                if msg.repeated is None:
                    msg.repeated = {}
                msg.repeated.setdefault(key, []).append(value)
            else:
                msg[key] = value
        if body is not None:
            msg.body = "\n".join(body)
        if msg:
            out.append(msg)

    def _drop_oversized(self) -> None:
        """A message that never ends would grow the buffer forever: drop it, up to its end."""
        self.anomalies["message_too_long"] += 1
        self._pending_newline = self._buf.endswith(b"\n")
        self._buf = b""
        self._follows = None
        self._skipping = True

    def _skip_oversized(self, data: bytes) -> bytes | None:
        """Discard input until the blank line that ends the oversized message."""
        if self._pending_newline and data.startswith(b"\n"):
            self._pending_newline = False
            self._skipping = False
            return data[1:]
        self._pending_newline = data.endswith(b"\n")
        end = data.find(b"\n\n")
        if end < 0:
            return None
        self._skipping = False
        self._pending_newline = False
        return data[end + 2 :]
