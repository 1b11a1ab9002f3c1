"""The desk: call updates in, commands out. Sans-IO, like the tracker and h11's `Connection`.

It decides, for every call in progress: whose card it is (which number to look up, which
client the log row gets), who sees it (operators by extension, supervisors and admins as
wallboards; docs/popup-protocol.md), what each person is told and when (ringing, answered,
transferred, ended, missed, client_updated, too_long), and what a page opened mid-call is
shown (the welcome). Nothing here reads a socket, a database or a clock: every input carries
what it needs, `handle` returns the commands for the adapters (daemon.py runs them).

    desk = Desk(company="ACME", operators=ops, too_long=thresholds, photo_url=urls.client_photo)
    for command in desk.handle(update_or_event):
        ...  # Lookup, Refresh, Send, Close, Snapshot, Record, LinkClient, Alert

Inputs are dispatched on their type through one table (`_HANDLERS`); the per-call state is
data (`_Live`), the people connected are data (`_Session`s indexed by extension).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pbxlink.calls.record import CallRecord, iso_utc
from pbxlink.calls.toolong import TooLongRule, TooLongWatch
from pbxlink.calls.updates import (
    Answered,
    CallEnded,
    CallStarted,
    CallUpdate,
    Changed,
    RingEnded,
    Ringing,
    TooLong,
    Transferred,
)
from pbxlink.desk import messages
from pbxlink.desk.card import (
    CallCard,
    Person,
    PhotoUrl,
    build_card,
    client_number,
    no_lookup,
    operator_names,
)
from pbxlink.desk.events import (
    Alert,
    CardCompleted,
    ClientsChanged,
    Close,
    Command,
    LinkClient,
    LookedUp,
    Lookup,
    Record,
    Refresh,
    Refreshed,
    RosterChanged,
    Send,
    SessionClosed,
    SessionOpened,
    Snapshot,
    Tick,
)

#: ring outcomes that are a missed call for that extension (answered_elsewhere is not)
MISSED = frozenset({"no_answer", "busy"})
WALLBOARD_ROLES = frozenset({"supervisor", "admin"})
#: calls that ended while their lookup ran, remembered to link the log row when it answers
REMEMBER_LOOKUPS = 10_000


@dataclass(slots=True)
class _Live:
    """A call in progress as the desk sees it: enough to route, and to welcome a reload."""

    call: CallRecord
    card: CallCard | None = None
    looking: bool = False  # a Lookup went out and its LookedUp has not come back
    ringing: dict[str, float] = field(default_factory=dict)  # extension -> ring start
    shown: set[str] = field(default_factory=set)  # extensions that were sent the call
    missed: set[str] = field(default_factory=set)  # rings that ended no_answer/busy
    holder: str | None = None  # the extension holding the answered call
    answered_at: float | None = None
    answer_estimated: bool = False  # answered in an AMI gap: the stored time may come later

    @property
    def announced(self) -> bool:
        """The wallboards were sent the call: it rang or reached someone, or was answered."""
        return bool(self.shown) or self.answered_at is not None


@dataclass(slots=True)
class _Session:
    operator: Person

    @property
    def wallboard(self) -> bool:
        return self.operator.role in WALLBOARD_ROLES


class Desk:
    """`photo_url`: where a client's photo is served (`pbxlink.web.urls.client_photo`); the
    desk is handed it because URLs are web/'s to build and the desk imports no other part."""

    def __init__(
        self,
        *,
        company: str,
        operators: Iterable[Person],
        too_long: TooLongRule,
        photo_url: PhotoUrl,
    ) -> None:
        self.company = company
        self._photo_url = photo_url
        self._operators = tuple(operators)
        self._names = operator_names(self._operators)
        self._too_long = TooLongWatch(too_long)
        self._calls: dict[str, _Live] = {}
        self._ended_looking: OrderedDict[str, None] = OrderedDict()
        self._sessions: dict[int, _Session] = {}
        self._by_ext: dict[str, set[int]] = {}
        self._wallboards: set[int] = set()
        self._out: list[Command] = []

    # -- public API -----------------------------------------------------------------------------

    def handle(self, event: object) -> list[Command]:
        """One input (a CallUpdate or a `pbxlink.desk.events` input); the commands it causes."""
        handler = _HANDLERS.get(type(event))
        if handler is None:
            raise TypeError(f"the desk does not take {type(event).__name__}")
        handler(self, event)
        out, self._out = self._out, []
        return out

    @property
    def calls(self) -> int:
        """Calls in progress the desk holds."""
        return len(self._calls)

    # -- call updates ---------------------------------------------------------------------------

    def _update(self, u: CallUpdate) -> None:
        self._too_long.update(u)
        call = u.call
        if isinstance(u, CallEnded):
            self._ended(u)
            return
        live = self._calls.get(call.call_id)
        if live is None:
            live = self._calls[call.call_id] = _Live(call)
        live.call = call
        self._out.append(Snapshot(call, u.at))
        if not live.looking and live.card is None and no_lookup(call) is None:
            live.looking = True
            self._out.append(Lookup(call.call_id, client_number(call)))
        step = _STEPS.get(type(u))
        if step is not None:
            step(self, live, u)

    def _ringing(self, live: _Live, u: Ringing) -> None:
        ext, call = u.extension, live.call
        live.ringing[ext] = u.at
        live.shown.add(ext)
        self._send(
            self._audience((ext,)),
            lambda: messages.Ringing(
                call_id=call.call_id, extension=ext, at=iso_utc(u.at), card=self._card(live, ext)
            ),
        )

    def _ring_ended(self, live: _Live, u: RingEnded) -> None:
        live.ringing.pop(u.extension, None)
        if u.outcome in MISSED:
            live.missed.add(u.extension)

    def _answered(self, live: _Live, u: Answered) -> None:
        call = live.call
        who = u.extension
        if who is None and call.direction == "outbound":
            who = call.caller_number or None  # the far end answered the operator's call
        live.holder, live.answered_at = who, u.at
        live.answer_estimated = "answered_at" in call.estimated
        live.ringing.clear()
        if who is not None:
            live.shown.add(who)
        self._send(
            self._audience(live.shown),
            lambda: messages.Answered(
                call_id=call.call_id,
                extension=u.extension,
                at=iso_utc(u.at),
                card=self._card(live, who),
            ),
        )

    def _transferred(self, live: _Live, u: Transferred) -> None:
        call = live.call
        live.holder = u.extension
        live.shown.add(u.extension)
        self._send(
            self._audience(live.shown),
            lambda: messages.Transferred(
                call_id=call.call_id,
                extension=u.extension,
                kind=u.kind,
                at=iso_utc(u.at),
                card=self._card(live, u.extension),
            ),
        )

    def _changed(self, live: _Live, u: Changed) -> None:
        # after a restart the tracker adopts what the previous run stored: a reload's welcome
        # then shows the call's real answer time, not the resync's estimate
        call = live.call
        if live.answer_estimated and "answered_at" not in call.estimated:
            live.answered_at, live.answer_estimated = call.answered_at, False

    def _too_long_told(self, live: _Live, u: TooLong) -> None:
        call = live.call
        self._out.append(Alert(u))
        self._send(
            set(self._wallboards),
            lambda: messages.TooLong(
                call_id=call.call_id,
                talk_s=u.talk_s,
                threshold_s=u.threshold_s,
                at=iso_utc(u.at),
                card=self._card(live, live.holder),
            ),
        )

    def _ended(self, u: CallEnded) -> None:
        call = u.call
        live = self._calls.pop(call.call_id, None)
        card = live.card if live is not None else None
        client_id = card.clients[0].id if card is not None and len(card.clients) == 1 else None
        self._out.append(Record(call, client_id))
        if live is None:
            return
        if live.looking:
            self._remember_looking(call.call_id)
        live.call = call
        if live.announced:
            self._send(
                self._audience(live.shown),
                lambda: messages.Ended(
                    call_id=call.call_id,
                    status=call.status,
                    at=iso_utc(u.at),
                    wait_s=call.wait_s,
                    talk_s=call.talk_s,
                ),
            )
        if call.status == "answered":
            return
        for ext in sorted(live.missed):
            self._send(
                self._audience((ext,), wallboards=False),
                lambda ext=ext: messages.Missed(
                    call_id=call.call_id,
                    extension=ext,
                    at=iso_utc(u.at),
                    card=self._card(live, ext, final=True),
                ),
            )

    def _remember_looking(self, call_id: str) -> None:
        self._ended_looking[call_id] = None
        if len(self._ended_looking) > REMEMBER_LOOKUPS:
            self._ended_looking.popitem(last=False)

    # -- cards ----------------------------------------------------------------------------------

    def _looked_up(self, e: LookedUp) -> None:
        live = self._calls.get(e.call_id)
        if live is not None and live.looking:
            live.looking = False
            live.card = e.card
            self._card_changed(live)
        elif self._ended_looking.pop(e.call_id, 0) is None and len(e.card.clients) == 1:
            self._out.append(LinkClient(e.call_id, e.card.clients[0].id))

    def _card_completed(self, e: CardCompleted) -> None:
        live = self._calls.get(e.call_id)
        if live is not None and live.card is not None:
            live.card.external = e.external
            self._card_changed(live)

    def _clients_changed(self, e: ClientsChanged) -> None:
        calls = tuple(
            (live.call.call_id, number)
            for live in self._calls.values()
            if live.card is not None and (number := client_number(live.call))
        )
        if calls:
            self._out.append(Refresh(calls))

    def _refreshed(self, e: Refreshed) -> None:
        live = self._calls.get(e.call_id)
        if live is None or live.card is None:
            return
        clients = list(e.clients)
        if clients != live.card.clients:
            live.card.clients = clients
            self._card_changed(live)

    def _card_changed(self, live: _Live) -> None:
        if not live.announced:
            return  # the first message about the call will carry the card
        ext = live.holder or next(reversed(live.ringing), None)
        call_id = live.call.call_id
        self._send(
            self._audience(live.shown),
            lambda: messages.ClientUpdated(call_id=call_id, card=self._card(live, ext)),
        )

    def _card(self, live: _Live, extension: str | None, *, final: bool = False) -> messages.Card:
        return build_card(
            live.call,
            live.card,
            company=self.company,
            names=self._names,
            extension=extension,
            photo_url=self._photo_url,
            final=final,
        )

    # -- people ---------------------------------------------------------------------------------

    def _roster(self, e: RosterChanged) -> None:
        """New operators (a config reload): a removed token's sessions close with 4002, a
        changed operator's sessions go on with the new extensions and role."""
        self._operators = e.operators
        self._names = operator_names(self._operators)
        by_token = {op.token_hash: op for op in self._operators}
        for session_id, session in list(self._sessions.items()):
            now = by_token.get(session.operator.token_hash)
            if now is None:
                self._unindex(session_id)
                self._out.append(Close(session_id, messages.TOKEN_REVOKED, "token no longer valid"))
            elif now != session.operator:
                self._unindex(session_id)
                self._index(session_id, now)

    def _opened(self, e: SessionOpened) -> None:
        """The welcome goes first: the page sees the calls in progress, then changes."""
        session = self._index(e.session, e.operator)
        op = e.operator
        welcome = messages.Welcome(
            operator=messages.WelcomeOperator(
                name=op.name, extensions=tuple(op.extensions), role=op.role
            ),
            company=self.company,
            calls=self._calls_for(session),
        )
        self._out.append(Send(frozenset((e.session,)), welcome))

    def _closed(self, e: SessionClosed) -> None:
        self._unindex(e.session)

    def _index(self, session_id: int, operator: Person) -> _Session:
        session = self._sessions[session_id] = _Session(operator)
        if session.wallboard:
            self._wallboards.add(session_id)
        for ext in operator.extensions:
            self._by_ext.setdefault(ext, set()).add(session_id)
        return session

    def _unindex(self, session_id: int) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        self._wallboards.discard(session_id)
        for ext in session.operator.extensions:
            owners = self._by_ext.get(ext)
            if owners is not None:
                owners.discard(session_id)
                if not owners:
                    del self._by_ext[ext]

    def _calls_for(self, session: _Session) -> tuple[messages.Ringing | messages.Answered, ...]:
        """The welcome's calls: what this person's page should be showing right now."""
        mine = set(session.operator.extensions)
        out: list[messages.Ringing | messages.Answered] = []
        for live in self._calls.values():
            cid = live.call.call_id
            # answered, unless its holder's phone still rings (a blind transfer's target)
            if live.answered_at is not None and live.holder not in live.ringing:
                if session.wallboard or live.holder in mine:
                    card = self._card(live, live.holder)
                    at = iso_utc(live.answered_at)
                    out.append(
                        messages.Answered(call_id=cid, extension=live.holder, at=at, card=card)
                    )
                continue
            ringing = [e for e in live.ringing if session.wallboard or e in mine]
            if ringing:
                ext = ringing[-1]
                at, card = iso_utc(live.ringing[ext]), self._card(live, ext)
                out.append(messages.Ringing(call_id=cid, extension=ext, at=at, card=card))
        return tuple(out)

    def _audience(self, extensions: Iterable[str], *, wallboards: bool = True) -> set[int]:
        out = set(self._wallboards) if wallboards else set()
        for ext in extensions:
            out.update(self._by_ext.get(ext, ()))
        return out

    def _send(self, sessions: set[int], build: Callable[[], messages.ServerMessage]) -> None:
        """Build the message only if someone gets it; the adapter encodes it once for all."""
        if sessions:
            self._out.append(Send(frozenset(sessions), build()))

    # -- time -----------------------------------------------------------------------------------

    def _tick(self, e: Tick) -> None:
        for told in self._too_long.tick(e.at):
            live = self._calls.get(told.call_id)
            if live is not None:
                live.call = told.call
                self._too_long_told(live, told)
            else:
                self._out.append(Alert(told))


_STEPS: dict[type, Callable[[Desk, _Live, Any], None]] = {
    Ringing: Desk._ringing,
    RingEnded: Desk._ring_ended,
    Answered: Desk._answered,
    Transferred: Desk._transferred,
    Changed: Desk._changed,
}

_HANDLERS: dict[type, Callable[[Desk, Any], None]] = {
    **dict.fromkeys((CallStarted, *_STEPS, CallEnded), Desk._update),
    LookedUp: Desk._looked_up,
    CardCompleted: Desk._card_completed,
    ClientsChanged: Desk._clients_changed,
    Refreshed: Desk._refreshed,
    RosterChanged: Desk._roster,
    SessionOpened: Desk._opened,
    SessionClosed: Desk._closed,
    Tick: Desk._tick,
}
