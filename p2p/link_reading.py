"""When an open link's messages are handed to the node, and whether its socket is read at all.

One socket read brings up to 256 KiB, a thousand small frames; handled at once they hold the event loop, and
every other link's messages behind them, for as long as they take. So a link hands over at most TURN_MESSAGES
per event-loop turn, fewer once the turn has taken TURN_SECONDS (PeerLink._dispatch_open: 64 messages that
each cost a signature check, such as fresh-key hints, would hold the loop for all 64 checks, and a validator's
vote on another link behind them); it keeps the rest in its backlog with its socket paused: the next turn
serves the other links first, and a peer that sends faster than we handle its frames is slowed by TCP, not by
our memory. Nothing is dropped. A component whose budget for the peer is spent may also hold the link
(`hold`): nothing is read for a while and its backlog waits too, so the peer's sending waits in its own TCP
window instead of being decoded here only to be dropped, and what it sent is taken at the budget's pace rather
than in a burst each time a hold ends. Every read is also charged against the peer's byte budget (`charge`):
what one peer costs us to decrypt and frame is bounded per peer, not only by its message rate, and past the
budget its socket waits until the deficit has refilled. A link relayed through a circuit has no socket of its
own: when it falls behind, its carrier link stops reading (`block`), so a relay cannot pile frames up in it
either; such a link is never held (PeerLink.hold_reading), since that would stop the carrier for as long as
the hold.

A link's turns are handed out by its node's ReadTurns, by network: each event-loop turn, every network (the
/24 or /48 a link comes from) gets one link's turn, its links in turn, until the networks' turns together have
taken SHARED_TURNS_SECONDS; those left go first in the next one. A kept node's turn (a validator's) is taken
whatever the time, so its votes wait for one short event-loop turn however many networks send. A read that finds
its network's turn taken, or its network's links waiting, waits in the backlog with the socket paused, however
small it is. A node that cannot keep up with what it is sent reads a crowd of keys from one network as it reads
one neighbour from another, as the transaction budgets share the total (exchange/chain/mempool/tx_budget.py); by link,
eight keys from one /24 would get eight turns to the other neighbour's one, and so would eight links that each
send less than a turn between reads, since those never fall behind on their own.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Collection, TypedDict

from p2p.admission import netgroup
from p2p.messages import Message

TURN_MESSAGES = 64      # an open link's messages handed over per event-loop turn
TURN_SECONDS = 0.002    # ... or fewer: once a turn's messages took this long, the rest wait for its next turn
KEPT = "kept:"          # the network of a node we keep linked: its own
SHARED_TURNS_SECONDS = 0.004    # the waiting networks' turns together per event-loop turn, past which the rest
                                # wait for the next one, first in line (kept nodes' turns are not counted)


class ReadTurnsView(TypedDict):
    given: int
    waiting: dict[str, int]         # links waiting for a turn now, per network
    behind_s: dict[str, float]      # how long each of those networks has had links waiting without a break


class ReadTurns:
    """A node's read turns, by network: each event-loop turn, every network gets one link's turn. A network whose
    links wait gets it from one callback (`_run`: LinkReading._next_turn), its links in the order they asked; a
    network with none waiting takes it at the read (`take_now`), and its next reads in the same event-loop turn
    wait. A node we keep linked (`kept`: the validators) is a network of its own: a crowd on its /24, or all of
    a test's nodes on one machine, never shares its votes' turns."""

    def __init__(self, kept: Callable[[], Collection[str]] = frozenset) -> None:
        self._kept = kept
        self._waiting: dict[str, deque[LinkReading]] = {}
        self._since: dict[str, float] = {}  # when each network waiting began to, without a break (monotonic)
        self._served: set[str] = set()      # networks that had their turn in this event-loop turn
        self._handle: asyncio.Handle | None = None
        self.given = 0          # turns handed out to links waiting: how often this node was behind its links

    def network_of(self, node_id: str | None, address: tuple[str, int] | None, via: str | None) -> str:
        """Whose turns a link shares: a kept node's its own; else its address's network (/24 or /48), or,
        carried through a relay, the relay's circuits'."""
        if node_id is not None and node_id in self._kept():
            return f"{KEPT}{node_id}"
        if via is not None:
            return f"via:{via}"
        return netgroup(address[0]) if address is not None else "unknown"

    def take_now(self, network: str, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a read from `network` may be handed over at once: none of its links waits and it has not had
        its turn in this event-loop turn. If so, that read is its turn."""
        if network in self._served or network in self._waiting:
            return False
        self._served.add(network)
        self._schedule(loop)
        return True

    def want(self, reading: "LinkReading", network: str, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting.setdefault(network, deque()).append(reading)
        self._since.setdefault(network, time.monotonic())
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is None:    # called soon: at the start of the next event-loop turn, before its reads
            self._handle = loop.call_soon(self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new event-loop turn: every network may take a turn again, and those with links waiting take theirs,
        in line, until their turns together have taken SHARED_TURNS_SECONDS; the rest keep their place at the
        front of the line for the next event-loop turn. A kept node's turn is taken whatever the time: while a
        crowd of networks sends faster than the node handles, its validators' votes wait for one short event-loop
        turn, not for every network's turn (sixteen networks' 2 ms turns would make each step of a height wait
        tens of milliseconds, and a round's timeout pass before its proposal was read)."""
        self._handle = None
        self._served = served = set()
        waiting = self._waiting
        shared_until = time.perf_counter() + SHARED_TURNS_SECONDS
        for network in list(waiting):
            kept = network.startswith(KEPT)
            if not kept and time.perf_counter() > shared_until:
                continue        # waits, first in line, for the next event-loop turn
            links = waiting.pop(network)
            reading = links.popleft()
            if links:
                waiting[network] = links    # its other links wait at the back of the line
            served.add(network)
            self.given += 1
            try:
                reading._next_turn()    # asks again (`want`) while it has a backlog: the next callback, behind the rest
            except Exception as exc:  # noqa: BLE001 - one link's failure must not cost the others their turns
                loop.call_exception_handler(
                    {"message": "a link's read turn failed", "exception": exc})
        for network in [network for network in self._since if network not in waiting]:
            del self._since[network]    # caught up (a link that asked again in its turn kept it waiting)
        if waiting or served:       # links still waiting, or networks to let read again in the next turn
            self._schedule(loop)

    def view(self) -> ReadTurnsView:
        """For /status: the turns handed out so far, the links waiting for one now per network, and how long each
        such network has been waiting without a break (a moment's wait is a busy turn; seconds, a node behind)."""
        now = time.monotonic()
        return {"given": self.given, "waiting": self.waiting(),
                "behind_s": {network: now - since for network, since in self._since.items()}}

    def waiting(self) -> dict[str, int]:
        """Links waiting for a turn, per network."""
        return {network: len(links) for network, links in self._waiting.items()}


class LinkReading:
    __slots__ = ("_loop", "_transport", "_dispatch", "_failed", "_is_open", "backlog", "_queued", "_hold_timer",
                 "_hold_until", "_paused", "_blockers", "_caught_up_at", "_read_rate", "_read_burst", "_read_tokens",
                 "_read_at", "read_holds", "_turns", "_network")

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Callable[[], asyncio.Transport | None],
                 dispatch: Callable[[list[Message]], None], failed: Callable[[Exception], None],
                 is_open: Callable[[], bool], read_budget: tuple[float, float], turns: ReadTurns,
                 network: Callable[[], str]) -> None:
        self._loop = loop
        self._turns = turns                 # who hands out this link's turns, by network
        self._network = network             # the network this link comes from
        self._transport = transport
        self._dispatch = dispatch           # hands messages to the node; may raise for the link to close
        self._failed = failed               # what a turn run later does with what `dispatch` raised
        self._is_open = is_open
        self.backlog: deque[Message] = deque()     # received and decoded, waiting for a later turn
        self._queued = False                # waiting in `_turns` for a turn
        self._hold_timer: asyncio.TimerHandle | None = None
        self._hold_until = 0.0
        self._paused = False
        self._blockers: set[object] = set()     # what else stops this socket being read (a circuit carried on it)
        self._caught_up_at = 0.0        # event-loop time we last caught up: the backlog emptied or the last blocker left
        self._read_rate, self._read_burst = read_budget     # bytes a second, bursts of
        self._read_tokens, self._read_at = self._read_burst, loop.time()
        self.read_holds = 0

    def deliver(self, messages: list[Message]) -> None:
        """Hand over at most TURN_MESSAGES now, if this is its network's turn (ReadTurns.take_now); the rest, or
        all of them if not, in later turns, in order after any backlog (after the hold, while the link is held)."""
        if self.backlog or self._hold_timer is not None or not self._turns.take_now(self._network(), self._loop):
            self.backlog.extend(messages)
            if not self._queued and self._hold_timer is None:
                self._want_turn()
            self._update()
            return
        if len(messages) <= TURN_MESSAGES:
            self._dispatch(messages)
            return
        self.backlog.extend(messages)
        self._take_turn()

    def _want_turn(self) -> None:
        self._queued = True
        self._turns.want(self, self._network(), self._loop)

    def _take_turn(self) -> None:
        backlog = self.backlog
        batch = [backlog.popleft() for _ in range(min(TURN_MESSAGES, len(backlog)))]
        if backlog:
            self._want_turn()
        else:
            self._caught_up_at = self._loop.time()
        self._update()
        self._dispatch(batch)

    def _next_turn(self) -> None:
        self._queued = False
        if not self._is_open():
            self.backlog.clear()
            return
        if self._hold_timer is not None:
            return          # held: the backlog waits for the hold's end (_hold_over)
        try:
            self._take_turn()
        except Exception as exc:  # noqa: BLE001 - a transport callback in all but name: nothing escapes it
            self._failed(exc)

    def charge(self, size: int) -> None:
        """`size` bytes read from the socket: past the budget, read nothing until the deficit has refilled."""
        now = self._loop.time()
        tokens = min(self._read_burst, self._read_tokens + (now - self._read_at) * self._read_rate) - size
        self._read_tokens, self._read_at = tokens, now
        if tokens < 0:
            self.read_holds += 1
            self.hold(-tokens / self._read_rate)

    def put_back(self, messages: list[Message]) -> None:
        """Messages of a turn that a hold began in (the one before them spent a budget), or that the turn had no
        time left for (TURN_SECONDS): first in line again, for the turn after the hold, or the link's next turn
        after the other callbacks ready now."""
        self.backlog.extendleft(reversed(messages))
        if not self._queued and self._hold_timer is None:
            self._want_turn()
        self._update()

    def hold(self, seconds: float) -> None:
        """Read nothing for `seconds` (a later call may extend the hold, never shorten it)."""
        until = self._loop.time() + seconds
        if until <= self._hold_until:
            return
        self._hold_until = until
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = self._loop.call_at(until, self._hold_over)
        self._update()

    def _hold_over(self) -> None:
        self._hold_timer = None
        if self.backlog and not self._queued:
            self._want_turn()
        self._update()

    @property
    def held(self) -> bool:
        return self._hold_timer is not None

    @property
    def hold_until(self) -> float:
        """When (event-loop time) the latest hold ends or ended (0.0: never held)."""
        return self._hold_until

    @property
    def ours_until(self) -> float:
        """Until when (event-loop time) the peer's silence is ours, not its own: now while we have not read its
        socket because its messages still wait in our backlog or a circuit on it blocks it (a node busy with a
        flood is behind, its peer not silent), else the end of the latest hold or the moment we last caught up
        (the backlog emptied, the last blocker left), whichever is later."""
        if self.backlog or self._blockers:
            return self._loop.time()
        return max(self._hold_until, self._caught_up_at)

    def block(self, by: object) -> None:
        """Stop reading until `by` unblocks it: a relayed link carried on this one is behind, and what this
        link reads for it would only pile up in that link's backlog."""
        self._blockers.add(by)
        self._update()

    def unblock(self, by: object) -> None:
        """Read again once nothing else blocks it; the peer's silence is ours until this moment (what it sent
        meanwhile waits in our socket, read on the loop's next turn)."""
        if by in self._blockers:
            self._blockers.discard(by)
            if not self._blockers:
                self._caught_up_at = self._loop.time()
        self._update()

    def _update(self) -> None:
        paused = bool(self.backlog) or self._hold_timer is not None or bool(self._blockers)
        transport = self._transport()
        if paused == self._paused or transport is None or transport.is_closing():
            return
        self._paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def close(self) -> None:
        """The link is gone: nothing more is handed over, no timer left behind."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        self._hold_timer = None
        self.backlog.clear()        # a turn it still waits for finds it closed and empty
        self._blockers.clear()
