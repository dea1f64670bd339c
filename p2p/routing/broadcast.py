"""Plumtree: broadcast over links, deduplicated, each copy checked before it is forwarded.

Plumtree (Leitao et al., 2007) with one tree per origin: a node pushes the full message eagerly to
its *eager* peers for that origin and announces only the id (``ihave``, batched for
`ihave_interval`) to its *lazy* ones. A copy that arrives twice tells the receiver that link is
redundant for that origin: it moves the sender to lazy and sends ``prune``. An id announced but not
received within the graft timeout is pulled with ``graft``, which also makes that link eager again.
Eager links thus converge to a spanning tree per origin: about one copy per node per message, while
the lazy announcements keep delivery complete when a tree breaks. (One tree shared by all origins is
unstable under uneven delays: duplicates of different origins' messages prune different edges of
the same cycle, which disconnects the tree and sets off graft/prune churn.) `broadcast_mode =
"flood"` pushes to every link instead (for comparison). The graft timeout adapts like a TCP
retransmission timeout to how late eager copies arrive after their announcement (`LatenessEstimator`),
so busy, slow hosts do not set off grafts for messages that are merely on their way. Either way a
message is never sent to a peer known to have it (it sent us the message or announced it).

Verify before forward, blame only the author. Every broadcast type must be declared
(`declare`) with a validator, an origin signature (p2p/origin_auth.py), or both; a broadcast is
checked BEFORE it is forwarded or handled, so what fails stops at the first honest node, and the
neighbour that handed it over is penalised: honest nodes never forward what fails, so that
neighbour is its author (or a relay that skipped the checks).
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Callable, TypedDict, cast

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import CloseReason
from p2p.framing import encode_body, frame_body
from p2p.routing.budgets import UNKNOWN_NETWORK, GraftBudget, OpenTypeBudgets, OpenTypeRule
from p2p.peer_hooks import proven_id
from p2p.routing.context import RoutedLink, RoutingContext, RoutingPart
from p2p.routing.control_pace import ControlPace
from p2p.routing.message_cache import MessageCache
from p2p.routing.paced import PacedChecks
from p2p.routing.envelope import (CONTROL_TYPES, HELD, INVALID_POINTS, MAX_IDS, BroadcastType, Validator, bump,
                                  check_envelope, make_envelope)

log = logging.getLogger("p2p.router")


class PlumtreeStats(TypedDict):
    trees: int                       # origins we keep lazy neighbours for
    lazy_links: int
    missing: int                     # ids announced to us whose message has not come yet
    graft_timeout: float
    message_cache: int
    message_cache_bytes: int
    budget_throttled: dict[str, dict[str, list[str]]]    # type -> neighbours, networks, origins over budget now
    budget_refused: dict[str, dict[str, dict[str, int]]]  # type -> the neighbours, networks, origins most dropped
    budget_networks_sending: dict[str, int]               # type -> networks sharing its total now


# The graft timeout adapts between these: never below a loopback/LAN delivery spread, and a missing
# message is repaired within a quarter second even when late copies were seen
GRAFT_TIMEOUT_FLOOR = 0.1
GRAFT_TIMEOUT_CEILING = 0.25


class LatenessEstimator:
    """Graft timeout from samples of how long after its first announcement an eagerly pushed copy
    arrived: smoothed mean + 4 x mean deviation (Jacobson/Karels), within [floor, ceiling], drifting
    back to the floor while no late copies are seen."""

    __slots__ = ("floor", "ceiling", "mean", "deviation", "samples")

    def __init__(self, floor: float, ceiling: float) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.mean = 0.0
        self.deviation = 0.0
        self.samples = 0

    def observe(self, lateness: float) -> None:
        if self.samples == 0:
            self.mean, self.deviation = lateness, lateness / 2
        else:
            self.deviation += 0.25 * (abs(lateness - self.mean) - self.deviation)
            self.mean += 0.125 * (lateness - self.mean)
        self.samples += 1

    def decay(self, factor: float = 0.95) -> None:
        self.mean *= factor
        self.deviation *= factor

    @property
    def timeout(self) -> float:
        return min(self.ceiling, max(self.floor, self.mean + 4 * self.deviation))


class _Missing:
    """An id announced to us (ihave) that we have not received yet."""

    __slots__ = ("origin", "announcers", "handle", "grafts", "first_at")

    def __init__(self, origin: str, first_at: float) -> None:
        self.first_at = first_at
        self.origin = origin
        self.announcers: list[str] = []
        self.handle: asyncio.TimerHandle | None = None
        self.grafts = 0


class Plumtree(RoutingPart):
    """The broadcast side of the MessageRouter (see the module docstring)."""

    def __init__(self, context: RoutingContext, *, mode: str, max_hops: int, cache_size: int, cache_bytes: int,
                 graft_budget: GraftBudget, open_type_rate: float, open_type_total_rate: float) -> None:
        super().__init__(context)
        self.graft_budget = graft_budget
        self.open_types = OpenTypeBudgets()
        self.open_type_rate, self.open_type_total_rate = open_type_rate, open_type_total_rate
        # open-type copies that passed their budgets, checked at their type's total pace (paced.py)
        self.paced = PacedChecks(self.counters, self._check_and_accept, lambda mid: mid in self.seen,
                                 lambda link: self._network(link, proven_id(link)) or UNKNOWN_NETWORK)
        self.mode = mode
        self.max_hops = max_hops
        self.cache = MessageCache(max_size=cache_size, ttl=30.0, max_bytes=cache_bytes)
        self.ihave_interval = 0.02
        self.lateness = LatenessEstimator(floor=GRAFT_TIMEOUT_FLOOR, ceiling=GRAFT_TIMEOUT_CEILING)
        self.graft_retry = 0.06
        self.control_pace = ControlPace()    # prunes a second to each neighbour
        self._grafted: OrderedDict[Any, float] = OrderedDict()  # id -> first announcement, for late copies
        self.max_missing = 20_000
        self.max_origins = 10_000  # per-origin trees remembered (least recently used forgotten)
        self.types: dict[str, BroadcastType] = {}
        self._undeclared_logged: set[str] = set()
        self._lazy: OrderedDict[str, set[str]] = OrderedDict()  # origin -> neighbours we only announce to
        self._pending_ihave: dict[str, list[tuple[Any, str]]] = {}    # neighbour -> (message id, origin)
        self._ihave_handle: asyncio.TimerHandle | None = None
        self._missing: dict[Any, _Missing] = {}
        # (encoded copy, origin, neighbour it came from or None): also send it where links do not
        # reach (the Grenache path), for our broadcasts and those that came over a link
        self.fan_out: Callable[[bytes, str, str | None], None] | None = None

    # --- declarations -----------------------------------------------------------------------
    def declare(self, msg_type: str, validator: Validator | None, origin_signed: bool,
                origin_rate: float | None = None, max_bytes: int | None = None) -> None:
        """`origin_rate`: any key may author this type; each origin may author that many a second, and each
        neighbour hand over `open_type_rate` a second, each copy at most `max_bytes` encoded
        (budgets.OpenTypeBudgets)."""
        if msg_type in CONTROL_TYPES:
            raise ValueError(f"{msg_type!r} is a router control type")
        if validator is None and not origin_signed:
            raise ValueError(f"broadcast type {msg_type!r} needs a validator or an origin signature")
        self.types[msg_type] = BroadcastType(validator, origin_signed)
        if origin_rate is not None:
            if max_bytes is None:
                raise ValueError(f"an open broadcast type ({msg_type!r}) needs the largest size a copy may have")
            self.paced.declare(msg_type, self.open_type_total_rate)
            self.open_types.limit(msg_type, OpenTypeRule(per_neighbour=self.open_type_rate, per_origin=origin_rate,
                                                         total=self.open_type_total_rate,
                                                         max_bytes=max_bytes))

    # --- sending ----------------------------------------------------------------------------
    def broadcast(self, message: Message) -> str | bytes:
        kind = message["type"]
        if kind in CONTROL_TYPES or "dst" in message:
            raise ValueError(f"cannot broadcast a {kind!r} message")
        declared = self.types.get(kind)
        if declared is None:
            raise ValueError(f"broadcast type {kind!r} is not declared (MessageRouter.declare_broadcast)")
        envelope = make_envelope(self.node_id, message)
        if declared.origin_signed:
            self.auth.sign_broadcast(envelope)
        mid = envelope["id"]
        body = encode_body(envelope)
        if len(body) > self.max_frame_bytes:
            raise ValueError(f"message of {len(body)} bytes exceeds MAX_FRAME_BYTES")
        self.seen.add(mid)
        self.counters.events["broadcasts"] += 1
        self._push(mid, kind, frame_body(body), set(), self.node_id)
        if self.fan_out is not None:
            self.fan_out(body, self.node_id, None)
        return cast("str | bytes", mid)

    def lazy_peers(self, origin: str) -> set[str]:
        """Neighbours that only get ids (not messages) of `origin`'s broadcasts from us (live set)."""
        lazy = self._lazy.get(origin)
        if lazy is None:
            lazy = self._lazy[origin] = set()
            if len(self._lazy) > self.max_origins:
                self._lazy.popitem(last=False)
        else:
            self._lazy.move_to_end(origin)
        return lazy

    def forget_link(self, node_id: str) -> None:
        """A link opened or closed: it starts eager for every origin; redundant ones get pruned."""
        for lazy in self._lazy.values():
            lazy.discard(node_id)

    def link_closed(self, node_id: str) -> None:
        self.forget_link(node_id)
        self._pending_ihave.pop(node_id, None)
        self.open_types.forget(node_id)
        self.control_pace.forget(node_id)

    def _push(self, mid: Any, kind: str, frame: bytes, haves: set[str], origin: str) -> None:
        """Send a broadcast frame to eager neighbours, announce it to lazy ones, skip those that have it."""
        self.cache.put(mid, frame, haves)
        lazy = self.lazy_peers(origin)
        sent = suppressed = 0
        for node_id, link in list(self.peers.links.items()):     # a send may close a link (and drop it)
            if node_id in haves:
                suppressed += 1
            elif node_id in lazy:
                pending = self._pending_ihave.get(node_id)
                if pending is None:
                    self._pending_ihave[node_id] = [(mid, origin)]
                else:
                    pending.append((mid, origin))
            elif link.send_frame(frame):
                sent += 1
        if self._pending_ihave and self._ihave_handle is None:
            self._ihave_handle = asyncio.get_running_loop().call_later(self.ihave_interval, self._flush_ihave)
        events = self.counters.events
        events["forwarded_frames"] += sent
        events["suppressed_sends"] += suppressed
        bump(self.counters.sent, kind, sent)

    def _flush_ihave(self) -> None:
        self._ihave_handle = None
        pending, self._pending_ihave = self._pending_ihave, {}
        links = self.peers.links
        cache = self.cache
        for node_id, ids in pending.items():
            link = links.get(node_id)
            if link is None:
                continue
            fresh = []
            for item in ids:
                entry = cache.get(item[0])
                if entry is not None and node_id not in entry.haves:
                    fresh.append(item)
            for start in range(0, len(fresh), MAX_IDS):
                chunk = fresh[start:start + MAX_IDS]
                link.send({"type": "ihave", "ids": [mid for mid, _ in chunk], "origins": [o for _, o in chunk]})
                self.counters.events["ihave_ids_sent"] += len(chunk)
                bump(self.counters.sent, "ihave")

    # --- receiving --------------------------------------------------------------------------
    def on_broadcast(self, link: RoutedLink, message: Message, kind: str) -> None:
        src = proven_id(link)
        mid = message["id"]
        events = self.counters.events
        events["broadcast_copies"] += 1
        if mid in self.seen:
            bump(self.counters.duplicates, kind)
            if self._grafted:
                announced = self._grafted.pop(mid, None)
                if announced is not None:  # the pushed copy after we grafted: how late was it?
                    self.lateness.observe(asyncio.get_running_loop().time() - announced)
            entry = self.cache.get(mid)
            if entry is not None:
                entry.haves.add(src)
            lazy = self.lazy_peers(message["origin"])
            if self.mode == "plumtree" and src not in lazy:
                # over the neighbour's prune pace the prune waits for the origin's next duplicate: `src` stays eager
                if self.control_pace.may_prune(src):
                    lazy.add(src)
                    link.send({"type": "prune", "origin": message["origin"]})
                    events["prunes_sent"] += 1
                    bump(self.counters.sent, "prune")
                else:
                    events["prunes_deferred"] += 1
            self.subscribers.duplicate(message, src)
            return
        if self.paced.kept(link, message):     # a copy of it waits its turn: kept in case that one fails
            bump(self.counters.duplicates, kind)
            self.subscribers.duplicate(message, src)
            return
        network = self._network(link, src)
        refused = self.open_types.refusal(kind, src, message["origin"], message, network)
        if refused is not None:
            bump(self.counters.dropped, refused)
            return
        if self.paced.now(link, message, kind, network or UNKNOWN_NETWORK):
            self._check_and_accept(link, src, message, kind)

    def _network(self, link: RoutedLink, src: str) -> str | None:
        """Whose part of an open type's total a neighbour's copies spend: its link's network; a link carried by a
        relay, a part of its own beside the relay's (circuits' keys are free, and they must not take the part of
        the honest relay's own network)."""
        network = self.peers.network_of(src)
        return f"relayed:{network}" if link.via is not None else network

    def _check_and_accept(self, link: RoutedLink, src: str, message: Message, kind: str) -> None:
        author = self._check(message, kind, src)
        if author is False:
            return
        if author is HELD:
            self.counters.events["held"] += 1
            self.subscribers.deliver(message, src, message["origin"])
            return
        self.lazy_peers(message["origin"]).discard(src)  # it is on a path from the origin to us: keep it eager
        self._accept(message, kind, src, author, "link")

    def on_grenache(self, message: Message) -> str | None:
        """A copy that came over Grenache (no link, no authenticated sender): checked like any copy,
        deduplicated, forwarded over our links and handled. None, or why it was refused; nobody is
        penalised (anyone can post to a Grenache endpoint)."""
        kind = message["type"]
        if kind in CONTROL_TYPES or "dst" in message:
            return "not_a_broadcast"
        check_envelope(message)
        self.counters.events["broadcast_copies"] += 1
        origin = message["origin"]
        if message["id"] in self.seen:
            bump(self.counters.duplicates, kind)
            self.subscribers.duplicate(message, origin)
            return None
        refused = self.open_types.refusal(kind, "grenache", origin, message, "grenache")
        if refused is not None:
            bump(self.counters.dropped, refused)
            return refused
        author = self._check(message, kind, origin, blame=False)
        if author is False:
            return "invalid"
        if author is HELD:
            self.counters.events["held"] += 1
            self.subscribers.deliver(message, origin, origin)
            return None
        self._accept(message, kind, origin, author, "grenache")
        return None

    def _accept(self, message: Message, kind: str, src: str, author: str | None, via: str) -> None:
        """A checked broadcast seen for the first time: remember it, forward it, hand it over."""
        mid = message["id"]
        events = self.counters.events
        self.seen.add(mid)
        events["unique_broadcasts"] += 1
        self.counters.broadcast_received[via] += 1
        haves = {src} if via == "link" else set()
        missing = self._missing.pop(mid, None)
        if missing is not None:
            if missing.handle is not None:
                missing.handle.cancel()
            haves.update(missing.announcers)
            if missing.grafts == 0:  # pushed to us, later than an announcement
                self.lateness.observe(asyncio.get_running_loop().time() - missing.first_at)
        origin = message["origin"]
        hops = message.get("hops", 0) + 1
        if hops <= self.max_hops:
            forward = message.copy()
            forward["hops"] = hops
            body = encode_body(forward)
            self._push(mid, kind, frame_body(body), haves, origin)
            if via == "link" and self.fan_out is not None:
                self.fan_out(body, origin, src)
        else:
            events["hop_limited"] += 1
        self.subscribers.deliver(message, src, author)

    def _check(self, message: Message, kind: str, src: str, blame: bool = True) -> Any:
        """Before a broadcast is forwarded or handled: False (dropped) unless its type is declared and
        it passes the origin signature and the validator; HELD when the validator cannot judge it
        yet. Otherwise its proven author (None when only the validator vouched for it). A neighbour
        that sent a forgery loses its link; one that sent an invalid message is penalised (with
        `blame`)."""
        declared = self.types.get(kind)
        if declared is None:        # a type this node does not carry (diagnostic notes without DEBUG_API)
            bump(self.counters.dropped, "undeclared_type")
            if kind not in self._undeclared_logged:
                self._undeclared_logged.add(kind)
                log.info("dropping %r broadcasts from peers: this node does not carry that type", kind)
            return False
        author = None
        if declared.origin_signed:
            problem = self.auth.check_broadcast(message)
            if problem == "stale":
                bump(self.counters.dropped, "stale")
                return False
            if problem is not None:
                raise m.ProtocolError(CloseReason.BAD_SIGNATURE, f"{kind} {message['id']!s:.24} not signed by its origin")
            author = message["origin"]
        validator = declared.validator
        if validator is not None:
            try:
                valid = validator(message, src)
            except m.ProtocolError:
                valid = False
            except Exception as exc:  # noqa: BLE001 - a validator's bug: drop the message, blame no one
                self.subscribers.internal_error(f"router.validator.{kind}", exc)
                bump(self.counters.dropped, "validator_error")
                return False
            if valid is None:      # cannot be judged yet (e.g. a block ahead of ours): use it, do not forward it
                return HELD
            if not valid:
                self.counters.events["invalid"] += 1
                bump(self.counters.dropped, "invalid")
                if blame:
                    self.peers.penalize(src, INVALID_POINTS, f"invalid {kind}")
                return False
        return author

    def on_ihave(self, link: RoutedLink, message: Message) -> None:
        src = proven_id(link)
        ids = message["ids"]
        origins = message["origins"]
        if len(origins) != len(ids):
            raise m.ProtocolError(CloseReason.MALFORMED_MESSAGE, "ihave.origins")
        self.counters.events["ihave_ids_received"] += len(ids)
        loop = None
        for mid, origin in zip(ids, origins):
            entry = self.cache.get(mid)
            if entry is not None:
                entry.haves.add(src)
                continue
            if mid in self.seen:
                continue
            missing = self._missing.get(mid)
            if missing is None:
                if len(self._missing) >= self.max_missing:
                    continue
                loop = loop or asyncio.get_running_loop()
                missing = self._missing[mid] = _Missing(origin, loop.time())
                missing.handle = loop.call_later(self.lateness.timeout, self._graft_due, mid)
            if src not in missing.announcers:
                missing.announcers.append(src)

    def _graft_due(self, mid: Any) -> None:
        """An announced id has not arrived in time: pull it from the next announcer, eagerly from now on."""
        missing = self._missing.get(mid)
        if missing is None:
            return
        missing.handle = None
        if mid in self.seen:
            del self._missing[mid]
            return
        links = self.peers.links
        while missing.grafts < len(missing.announcers):
            node_id = missing.announcers[missing.grafts]
            missing.grafts += 1
            link = links.get(node_id)
            if link is None:
                continue
            self.lazy_peers(missing.origin).discard(node_id)
            link.send({"type": "graft", "ids": [mid], "origins": [missing.origin]})
            if missing.grafts == 1:
                self._grafted[mid] = missing.first_at
                if len(self._grafted) > 1000:
                    self._grafted.popitem(last=False)
            self.counters.events["grafts_sent"] += 1
            bump(self.counters.sent, "graft")
            missing.handle = asyncio.get_running_loop().call_later(self.graft_retry, self._graft_due, mid)
            return
        del self._missing[mid]
        bump(self.counters.dropped, "graft_exhausted")

    def on_graft(self, link: RoutedLink, message: Message) -> None:
        """Re-send what a neighbour missed: each id once per neighbour (it has it then), within the graft byte
        budgets of the neighbour and of its network; a request beyond them is dropped, not penalised (a slow
        honest link may ask twice)."""
        src = proven_id(link)
        for origin in set(message["origins"]):
            self.lazy_peers(origin).discard(src)
        for mid in message["ids"]:
            entry = self.cache.get(mid)
            if entry is None:
                bump(self.counters.dropped, "graft_unknown")
            elif src in entry.haves:
                bump(self.counters.dropped, "graft_repeat")
            elif not self.graft_budget.take(src, len(entry.frame), self._network(link, src) or UNKNOWN_NETWORK):
                bump(self.counters.dropped, "graft_budget")
            elif link.send_frame(entry.frame):
                entry.haves.add(src)
                self.counters.events["grafts_served"] += 1

    def on_prune(self, link: RoutedLink, message: Message) -> None:
        self.counters.events["prunes_received"] += 1
        if self.mode == "plumtree":
            self.lazy_peers(message["origin"]).add(proven_id(link))

    # --- housekeeping -----------------------------------------------------------------------
    def stop(self) -> None:
        self.paced.stop()
        if self._ihave_handle is not None:
            self._ihave_handle.cancel()
        for missing in self._missing.values():
            if missing.handle is not None:
                missing.handle.cancel()
        self._missing.clear()

    def stats(self) -> PlumtreeStats:
        return {"trees": len(self._lazy), "lazy_links": sum(len(lazy) for lazy in self._lazy.values()),
                "missing": len(self._missing), "graft_timeout": round(self.lateness.timeout, 3),
                "message_cache": len(self.cache), "message_cache_bytes": self.cache.bytes,
                "budget_throttled": self.open_types.throttled(), "budget_refused": self.open_types.refused(),
                "budget_networks_sending": self.open_types.networks_sending()}
