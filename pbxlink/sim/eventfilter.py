"""Asterisk's manager.conf `eventfilter`: which events a user's AMI session is sent.

Each `eventfilter = PATTERN` line of a manager.conf user is an unanchored regular expression
searched in the whole text of an event (`Event: ...\\r\\nPrivilege: ...\\r\\n...`); a leading `!`
makes it a blacklist entry. Asterisk evaluates them as its `Filter` action documents:

- no filters: every event is sent;
- whitelist entries only: an implied "block all", then the whitelist (one match lets it pass);
- blacklist entries only: an implied "allow all", then the blacklist (one match blocks it);
- both: block all, then the whitelist, then the blacklist (passes if a white entry matches and
  no black one does).

Only events broadcast to every session are filtered. What Asterisk writes straight to one
session is not: responses, the items of an action's list (`CoreShowChannel`, carrying the
action's `ActionID`) and the `FullyBooted` that follows a login.

Patterns are POSIX extended expressions in Asterisk (`regcomp(REG_EXTENDED)`, no
`REG_NEWLINE`: `.` matches a line break and `^`/`$` only anchor the whole text). They are
compiled here as Python expressions with `re.DOTALL`, which agrees for the usual patterns
(literal headers, `.*`, classes, alternation) but not for POSIX classes such as `[[:digit:]]`.
Asterisk 21's newer `eventfilter(...)` syntax (name/header/method options) is not supported.

`decide` answers for every text of a known shape at once (fixed parts with runs of id or time
characters between them: a recorded event whose copies get fresh ids), where that is sure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

#: an `eventfilter = VALUE` line of manager.conf (or of a doc quoting one); `=>` is allowed too
_LINE = re.compile(r"^[ \t]*eventfilter[ \t]*=>?[ \t]*(.*?)[ \t]*\r?$", re.M)
_COMMENT = re.compile(r"(?<!\\);")
#: a pattern without any of these is a plain string: `decide` can reason about it exactly
_SPECIAL = frozenset(".^$*+?{}[]\\|()")


class EventFilter:
    """The `eventfilter` lines of one manager.conf user, ready to decide about events."""

    __slots__ = ("_literals", "black", "lines", "white")

    def __init__(self, lines: Iterable[str] = ()) -> None:
        """`lines`: the values of the `eventfilter` lines, in order (`"!Event: VarSet"`)."""
        self.lines = tuple(lines)
        self.white: list[re.Pattern[bytes]] = []
        self.black: list[re.Pattern[bytes]] = []
        #: per white, then per black pattern: its text when it is a plain string, else None
        self._literals: tuple[list[bytes | None], list[bytes | None]] = ([], [])
        for line in self.lines:
            black = line.startswith("!")
            pattern = line[1:] if black else line
            literal = None if _SPECIAL & set(pattern) else pattern.encode()
            self._literals[black].append(literal)
            try:
                compiled = re.compile(pattern.encode(), re.DOTALL)
            except re.error as exc:
                raise ValueError(f"eventfilter {line!r}: not a regular expression: {exc}") from None
            (self.black if black else self.white).append(compiled)

    @classmethod
    def from_text(cls, text: str) -> EventFilter:
        """The filter of every `eventfilter = ...` line in `text` (manager.conf, README.md)."""
        return cls(eventfilter_lines(text))

    def __bool__(self) -> bool:
        """False when there are no filters: everything passes, nothing need be checked."""
        return bool(self.white or self.black)

    def __repr__(self) -> str:
        return f"EventFilter({list(self.lines)!r})"

    def passes(self, event: bytes) -> bool:
        """Whether Asterisk sends this event (its whole text, as broadcast) to the user."""
        if self.white and not any(p.search(event) for p in self.white):
            return False
        return not any(p.search(event) for p in self.black)

    def decide(self, fixed: Sequence[bytes], runs: Sequence[bytes]) -> bool | None:
        """`passes` for every text of one shape, or None when the answer may differ.

        The shape: `fixed[0] R1 fixed[1] R2 ... fixed[n]`, where each `Ri` is any run of at
        least one character taken from `runs[i-1]` (a recorded event, its ids and times left
        open). A plain-string pattern found in a fixed part matches every such text; one that
        cannot overlap any run (its characters do not fit there) matches none. Anything else,
        and every real regular expression, gives None: check each text with `passes`.
        """
        if not self:
            return True
        white, black = (
            _any(_occurs(lit, fixed, runs) if lit is not None else None for lit in literals)
            for literals in self._literals
        )
        if (self.white and white is False) or black is True:
            return False
        if (self.white and white is None) or (self.black and black is None):
            return None
        return True

    def stream(self, data: bytes) -> bytes:
        """A recorded AMI stream as Asterisk would have sent it to this user.

        In a recording, the events written to the session alone are told apart by what they
        carry: a reply to an action has an `ActionID`, a broadcast event has none. Blocks
        that are not events (banner, responses) are kept as they are.
        """
        if not self:
            return data
        kept = [
            block
            for block in data.split(b"\r\n\r\n")
            if not block.startswith(b"Event: ") or b"ActionID: " in block or self.passes(block)
        ]
        return b"\r\n\r\n".join(kept)


def eventfilter_lines(text: str) -> list[str]:
    """The values of the `eventfilter = ...` lines in a manager.conf (or README.md) text.

    As Asterisk's config parser reads them: a `;` starts a comment unless escaped as `\\;`.
    """
    values = (_COMMENT.split(m[1], 1)[0].rstrip().replace("\\;", ";") for m in _LINE.finditer(text))
    return [v for v in values if v]


def _any(results: Iterable[bool | None]) -> bool | None:
    """Three-valued `any`: True if one is True, False if all are False, else None."""
    unknown = False
    for result in results:
        if result:
            return True
        unknown |= result is None
    return None if unknown else False


def _occurs(literal: bytes, fixed: Sequence[bytes], runs: Sequence[bytes]) -> bool | None:
    """Whether `literal` occurs in every text of the shape (True), in none (False), or maybe."""
    if any(literal in part for part in fixed):
        return True
    for i, chars in enumerate(runs):
        if _may_cross(literal, fixed[i], chars, fixed[i + 1]):
            return None
    return False


def _may_cross(literal: bytes, before: bytes, chars: bytes, after: bytes) -> bool:
    """Whether `literal` can occur in `before + R + after` overlapping R, a run of `chars`.

    The literal is cut as head (the end of `before`), middle (in R, at least one character)
    and tail (the start of `after`). A head longer than `before`, or a tail longer than
    `after`, would reach the neighbouring runs: not ruled out, so True.
    """
    n = len(literal)
    for head in range(n):
        if head > len(before):
            if literal[head - len(before) : head] == before:
                return True
            continue
        if head and not before.endswith(literal[:head]):
            continue
        end = head
        while end < n and literal[end] in chars:
            end += 1
            tail = literal[end:]
            if len(tail) > len(after) and tail.startswith(after):
                return True
            if after.startswith(tail):
                return True
    return False
