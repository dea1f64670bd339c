"""Copies of the broadcast types any key may author, checked at their type's total pace (budgets.Pacer).

What passes a type's budgets is checked a twentieth of a second's worth at once and the rest in turn, the networks
taking turns: a flooder within every budget still chose when, and a second's worth at once made every node check
all of it in the same few milliseconds. While a copy waits, another neighbour's copy of the same id is a duplicate (it spends no
budget) but is kept, up to MAX_BACKUPS, one a neighbour: if the waiting copy fails its check (a forgery, the id
altered after signing, queued first) or its link closed, the next is checked in its place, so queuing first
cannot keep the genuine copy out.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from p2p import messages as m
from p2p.close_reason import Fault
from p2p.messages import Message
from p2p.peer_hooks import proven_id
from p2p.routing.budgets import Pacer
from p2p.routing.context import RoutedLink
from p2p.routing.envelope import MessageId, RouterCounters, bump

log = logging.getLogger("p2p.router")

MAX_BACKUPS = 8         # other neighbours' copies kept for an id waiting its turn (one each)

Check = Callable[[RoutedLink, str, Message, str], None]     # (link, its node id, copy, type): check and accept
Copy = tuple[RoutedLink, Message]


class PacedChecks:
    """One node's pacers, one per open type, with the copies kept in case a waiting one fails."""

    def __init__(self, counters: RouterCounters, check: Check, seen: Callable[[MessageId], bool],
                 network_of: Callable[[RoutedLink], str]) -> None:
        self.counters, self.check, self.seen, self.network_of = counters, check, seen, network_of
        self._pacers: dict[str, Pacer[Copy]] = {}
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._backups: dict[MessageId, list[Copy]] = {}

    def declare(self, kind: str, total_rate: float) -> None:
        if total_rate != float("inf"):
            self._pacers[kind] = Pacer(total_rate)

    def kept(self, link: RoutedLink, message: Message) -> bool:
        """Whether a copy of `message`'s id waits its turn already (this one is then a duplicate, kept in case)."""
        backups = self._backups.get(message["id"])
        if backups is None:
            return False
        src = proven_id(link)
        if len(backups) < MAX_BACKUPS and all(proven_id(held) != src for held, _ in backups):
            backups.append((link, message))
        return True

    def now(self, link: RoutedLink, message: Message, kind: str, network: str) -> bool:
        """A copy that passed its budgets (`network`'s part of them): True to check it now; False when it waits its
        turn or is dropped (the queues hold a second's worth: `pacer_full` when its network has the most waiting;
        otherwise the network with the most gives up its newest, `pacer_evicted`)."""
        if kind not in self._pacers:
            return True
        return self._admit(link, message, kind, network, requeue=True) is True

    def _admit(self, link: RoutedLink, message: Message, kind: str, network: str, requeue: bool) -> bool | None:
        """The pacer's verdict on a copy: True (check it now), False (it waits), None (dropped). A copy given up for
        another network's takes the copies kept for its id with it unless `requeue`: then they are offered in turn
        (`_requeue`), so a forgery queued last, the id's genuine copies kept behind it, cannot be made to give up
        its place and take them out unchecked."""
        verdict, evicted = self._pacers[kind].admit((link, message), network)
        if verdict is None:
            bump(self.counters.dropped, "pacer_full")
        elif not verdict:
            self._backups[message["id"]] = []
            self.counters.events["paced"] += 1
            if kind not in self._handles:
                self._later(kind)
        if evicted is not None:
            bump(self.counters.dropped, "pacer_evicted")
            kept = self._backups.pop(evicted[1]["id"], [])
            if requeue:
                self._requeue(kept, kind)
        return verdict

    def _requeue(self, kept: list[Copy], kind: str) -> None:
        """The copies kept for an id whose waiting copy gave up its place, each offered in its own network's queue
        (without requeueing what that gives up in turn) until one waits, the rest kept behind it, or one checked at
        once passes."""
        for index, (link, message) in enumerate(kept):
            if not link.is_open:
                continue
            verdict = self._admit(link, message, kind, self.network_of(link), requeue=False)
            if verdict is False:
                self._backups[message["id"]] = kept[index + 1:]
                return
            if verdict:
                self._check(link, message, kind)
                if self.seen(message["id"]):
                    return

    def _turn(self, kind: str) -> None:
        """Check the copies of `kind` whose turn has come, each id's kept copies after it until one passes, and
        wake again for the next; a copy whose link closed meanwhile is let go, and a forgery closes its link now,
        as it would have on arrival."""
        self._handles.pop(kind, None)
        try:
            for first in self._pacers[kind].due():
                mid = first[1]["id"]
                for link, message in [first, *self._backups.pop(mid, ())]:
                    if self.seen(mid):          # this copy or one before it passed: the rest are duplicates
                        break
                    if not link.is_open:
                        bump(self.counters.dropped, "paced_link_closed")
                        continue
                    self._check(link, message, kind)
        finally:
            self._later(kind)

    def _check(self, link: RoutedLink, message: Message, kind: str) -> None:
        try:
            self.check(link, proven_id(link), message, kind)
        except m.ProtocolError as exc:
            link.close(exc.reason, exc.detail, fault=Fault.PEER)
        except Exception:       # a bug of ours: this copy is dropped, the others still get their turn
            log.exception("checking a paced %s copy failed", kind)
            bump(self.counters.dropped, "paced_error")

    def _later(self, kind: str) -> None:
        wait = self._pacers[kind].wait()
        if wait is not None:
            self._handles[kind] = asyncio.get_running_loop().call_later(wait, self._turn, kind)

    def stop(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
