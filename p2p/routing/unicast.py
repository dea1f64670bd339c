"""Unicast: one message to one node, over our link to it, else through a neighbour that links to it
(a signed relay), else over Grenache when the node is announced on a Grape that answers (the same
signed relay wrapper, p2p/routing/grenache_path.py), else held in the DeliveryQueue until the node
is reachable one of those ways.

A relayed unicast carries its origin's signature over the inner message, checked by every relay and
by the target; a direct unicast's `origin` must be the link's own node (PeerManager.on_message).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Callable

from p2p.messages import Message
from p2p import messages as m
from p2p.close_reason import CloseReason
from p2p.delivery_queue import DeliveryQueue, Held
from p2p.framing import FrameError, MalformedFrame, decode_body, encode_body, encode_frame
from p2p.peer_hooks import proven_id
from p2p.resilience.token_bucket import TokenBucket
from p2p.routing.context import RoutedLink, RoutingContext, RoutingPart
from p2p.routing.envelope import (CONTROL_TYPES, INVALID_POINTS, RELAY_MAX_HOPS, MessageId, Outcome, SendResult, bump,
                                  check_envelope, make_envelope)

log = logging.getLogger("p2p.router")

# An answer with no route waits at most this long, and only for a Grenache lookup of its requester: about as long as
# a requester waits for it (RPC_TIMEOUT's default). Without a Grenache path it is dropped at once.
ANSWER_HOLD = 5.0

# Relays for nodes we do not reach cost their checks and are dropped: keys are free, so they are charged to
# the neighbour handing them over, its network (/24 or /48, four times a neighbour's) and everyone together; past a
# budget the neighbour's link is not read for a while (its bytes wait in TCP), and nobody is penalised (an honest
# relay may pass on a relay for a node whose link just closed).
UNROUTABLE_RATE = 20.0
UNROUTABLE_TOTAL_RATE = 200.0
UNROUTABLE_TRACKED = 4096


class UnroutableBudget:
    """Buckets of UNROUTABLE_RATE per neighbour, four times that per network and UNROUTABLE_TOTAL_RATE in all, each
    two seconds deep; `charge` says how long to hold the neighbour's link, 0 while every bucket has a token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._neighbours: OrderedDict[str, TokenBucket] = OrderedDict()
        self._networks: OrderedDict[str, TokenBucket] = OrderedDict()
        self._total = TokenBucket(UNROUTABLE_TOTAL_RATE, 2 * UNROUTABLE_TOTAL_RATE, clock=clock)
        self.refused = 0

    def _of(self, table: OrderedDict[str, TokenBucket], key: str, rate: float) -> TokenBucket:
        bucket = table.pop(key, None) or TokenBucket(rate, 2 * rate, clock=self.clock)
        table[key] = bucket
        if len(table) > UNROUTABLE_TRACKED:
            table.popitem(last=False)
        return bucket

    def charge(self, neighbour: str, network: str) -> float:
        buckets = (self._of(self._neighbours, neighbour, UNROUTABLE_RATE),
                   self._of(self._networks, network, 4 * UNROUTABLE_RATE), self._total)
        if all(bucket.tokens >= 1 for bucket in buckets):
            for bucket in buckets:
                bucket.try_take()
            return 0.0
        self.refused += 1
        return max(1.0 / UNROUTABLE_RATE, max((1 - b.tokens) / b.rate for b in buckets if b.tokens < 1))


class Unicast(RoutingPart):
    """The unicast side of the MessageRouter."""

    def __init__(self, context: RoutingContext, queue: DeliveryQueue) -> None:
        super().__init__(context)
        self.queue = queue
        self.grenache: Any = None  # GrenachePath, when this node routes over Grenache too
        self._drains: dict[str, asyncio.Task[None]] = {}
        self.unroutable = UnroutableBudget()

    # --- sending ----------------------------------------------------------------------------
    def send_to_peer(self, node_id: str, message: Message, on_settled: Callable[[SendResult], None] | None = None,
                     *, answer: bool = False) -> SendResult:
        """See MessageRouter.send_to_peer. An `answer` never waits behind what is held for its node, goes through
        a neighbour only while that link keeps half its send buffer free ("link_busy"), and is held only while a Grenache
        lookup of its node may find it (at most ANSWER_HOLD seconds); with no path at all it is dropped
        ("unroutable")."""
        kind = message["type"]
        if kind in CONTROL_TYPES:
            raise ValueError(f"cannot send a {kind!r} message")
        envelope = make_envelope(self.node_id, message, dst=node_id)
        mid = envelope["id"]
        if node_id == self.node_id:
            return self.dropped(mid, "to_self")
        ttl = ANSWER_HOLD if answer else None
        if not answer and self.queue.pending(node_id):  # keep order behind what is already waiting
            return self._enqueue(node_id, envelope, on_settled)
        try:
            result = self._send_routed(node_id, envelope, spare=answer)
            if result is None and self.grenache is not None:
                result = self._send_grenache(node_id, self.queue.hold(envelope, on_settled, ttl))
        except FrameError:
            return self.dropped(mid, "too_large")
        if result is not None:
            return result
        if answer and self.grenache is None:
            return self.dropped(mid, "unroutable")
        return self._enqueue(node_id, envelope, on_settled, ttl)

    def route_for(self, node_id: str) -> tuple[str, RoutedLink] | None:
        """("direct", link) or ("relay", neighbour link) or None when the node is unreachable now."""
        links = self.peers.links
        link = links.get(node_id)
        if link is not None and link.is_open:
            return "direct", link
        best = None
        best_rtt = float("inf")
        for link in links.values():
            if node_id in link.remote_links and link.is_open:
                caps = (link.remote_hello or {}).get("capabilities", ("relay",))
                rtt = link.rtt if link.rtt is not None else 1.0
                if "relay" in caps and rtt < best_rtt:
                    best, best_rtt = link, rtt
        return ("relay", best) if best is not None else None

    def _send_routed(self, node_id: str, envelope: Message, spare: bool = False) -> SendResult | None:
        """Send now if there is a route; None when there is none (or its link just closed). `spare`: a relay
        link is used only while it keeps half its send buffer free for its own traffic (else dropped,
        "link_busy"): a burst of answers must never overflow, and so close, a link between honest nodes."""
        route = self.route_for(node_id)
        if route is None:
            return None
        how, link = route
        kind = envelope["type"]
        if how == "direct":
            if not link.send_frame(encode_frame(envelope, self.max_frame_bytes)):
                return None
            self.counters.events["delivered_direct"] += 1
            self.counters.unicast_sent["direct"] += 1
            bump(self.counters.sent, kind)
            return SendResult(Outcome.DELIVERED, envelope["id"], node_id)
        frame = encode_frame(self.relay_wrapper(node_id, envelope), self.max_frame_bytes)
        if spare and len(frame) > link.spare_room():
            return self.dropped(envelope["id"], "link_busy")
        if not link.send_frame(frame):
            return None
        self.counters.events["relayed_out"] += 1
        self.counters.unicast_sent["relay"] += 1
        bump(self.counters.sent, "relay")
        return SendResult(Outcome.RELAYED, envelope["id"], link.remote_id)

    def _send_grenache(self, node_id: str, held: Held) -> SendResult | None:
        """Hand a message to the Grenache path if the node's address is known; None otherwise (a
        lookup is started). Its outcome is settled when the request answers (`grenache_delivered`);
        a failed request brings it back to the hold queue (`grenache_failed`)."""
        grenache = self.grenache
        if grenache.address_of(node_id) is None:
            grenache.want(node_id)
            return None
        envelope = held.message
        frame = encode_frame(self.relay_wrapper(node_id, envelope), self.max_frame_bytes)[4:]
        if not grenache.send_unicast(node_id, frame, held):
            return None
        return SendResult(Outcome.GRENACHE, envelope["id"], "grenache")

    def grenache_delivered(self, node_id: str, tickets: list[Held]) -> None:
        self.counters.unicast_sent["grenache"] += len(tickets)
        for held in tickets:
            bump(self.counters.sent, held.message["type"])
            self.settle(held, SendResult(Outcome.GRENACHE, held.message["id"], "grenache"))

    def grenache_failed(self, node_id: str, tickets: list[Held]) -> None:
        """The Grenache path could not deliver these (in order): hold them again, first in line (each until its
        own expiry)."""
        for held in tickets:
            held.size = held.size or len(encode_body(held.message))
        self.queue.requeue_front(node_id, tickets)
        self.counters.events["queued"] += len(tickets)
        if self.route_for(node_id) is not None:
            self.start_drain(node_id)

    def reachable_again(self, node_id: str) -> None:
        """The Grenache path learned where `node_id` is: flush what we hold for it."""
        if self.queue.pending(node_id):
            self.start_drain(node_id)

    def reachable(self, node_id: str) -> bool:
        return self.route_for(node_id) is not None or (
            self.grenache is not None and self.grenache.address_of(node_id) is not None)

    def relay_wrapper(self, node_id: str, envelope: Message) -> Message:
        """`envelope` inside a relay wrapper signed by us (its origin)."""
        wrapper = {"type": "relay", "id": envelope["id"], "origin": self.node_id, "dst": node_id, "hops": 0,
                   "ts": envelope["ts"], "body": encode_body(envelope)}
        self.auth.sign_relay(wrapper)
        return wrapper

    def dropped(self, mid: MessageId | None, reason: str) -> SendResult:
        bump(self.counters.dropped, reason)
        return SendResult(Outcome.DROPPED, mid, reason=reason)

    # --- the hold queue ---------------------------------------------------------------------
    def _enqueue(self, node_id: str, envelope: Message, on_settled: Callable[[SendResult], None] | None,
                 ttl: float | None = None) -> SendResult:
        refusal, evicted = self.queue.put(node_id, envelope, on_settled, len(encode_body(envelope)), ttl)
        if refusal is not None:
            return self.dropped(envelope["id"], refusal)
        for held in evicted:
            self.settle(held, self.dropped(held.message["id"], "queue_full"))
        self.counters.events["queued"] += 1
        if node_id not in self._drains and self.reachable(node_id):
            self.start_drain(node_id)
        return SendResult(Outcome.QUEUED, envelope["id"])

    @staticmethod
    def settle(held: Held, result: SendResult) -> None:
        if held.on_settled is not None:
            try:
                held.on_settled(result)
            except Exception:
                log.exception("on_settled callback failed")

    def start_drain(self, target: str) -> None:
        if target in self._drains:
            return
        self.queue.start_drain(target)
        self._drains[target] = asyncio.get_running_loop().create_task(self._drain(target), name="router.drain")

    async def _drain(self, target: str) -> None:
        """Flush a target's queue at its warm-up rate while it stays reachable."""
        try:
            while self.queue.pending(target):
                if not self.reachable(target):
                    return  # unreachable again: keep holding; a later open/heartbeat/lookup restarts us
                ready, expired, wait = self.queue.take(target)
                for held in expired:
                    self.counters.events["expired"] += 1
                    self.settle(held, self.dropped(held.message["id"], "expired"))
                for n, held in enumerate(ready):
                    try:
                        result = self._send_routed(target, held.message)
                        if result is None and self.grenache is not None:
                            result = self._send_grenache(target, held)
                    except FrameError:
                        result = self.dropped(held.message["id"], "too_large")
                    if result is None:
                        self.queue.requeue_front(target, ready[n:])
                        return
                    self.counters.events["flushed"] += 1
                    if result.outcome is not Outcome.GRENACHE:  # the Grenache path settles its own
                        self.settle(held, result)
                if wait:
                    await asyncio.sleep(wait)
        finally:
            self._drains.pop(target, None)

    def expire(self) -> None:
        """Expire queued messages (counted, callers told); look up held-for nodes on Grenache."""
        for held in self.queue.expire():
            self.counters.events["expired"] += 1
            self.settle(held, self.dropped(held.message["id"], "expired"))
        grenache = self.grenache
        if grenache is None or not self.queue.pending_targets:
            return
        for target in self.queue.targets():
            if target in self._drains:
                continue
            if self.reachable(target):
                self.start_drain(target)
            else:
                grenache.want(target)

    def link_opened(self, node_id: str) -> None:
        if self.queue.pending(node_id):
            self.start_drain(node_id)

    def heartbeat(self, link: RoutedLink) -> None:
        """A neighbour reported its links: drain queues of targets it can relay to."""
        if not self.queue.pending_targets:
            return
        for target in self.queue.targets():
            if target in link.remote_links and target not in self._drains:
                self.start_drain(target)

    async def stop(self) -> None:
        tasks = list(self._drains.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def draining(self) -> int:
        return len(self._drains)

    # --- receiving --------------------------------------------------------------------------
    def on_unicast(self, message: Message, src: str, author: str) -> None:
        if not self.seen.add(message["id"]):
            bump(self.counters.duplicates, message["type"])
            self.subscribers.duplicate(message, src)
            return
        self.subscribers.deliver(message, src, author)

    def on_relay(self, link: RoutedLink, message: Message) -> None:
        """A unicast crossing us (or arriving through a neighbour): its origin's signature first, then the
        inner message's shape; what the origin signed wrongly is blamed on the origin. One for a node we do
        not reach is dropped and charged to the neighbour that handed it over (UnroutableBudget)."""
        counters = self.counters
        if not self.auth.check_relay(message):
            raise m.ProtocolError(CloseReason.BAD_SIGNATURE, f"relay {message['id']!s:.24} not signed by its origin")
        origin, dst, mid = message["origin"], message["dst"], message["id"]
        inner = self.relayed_inner(message)
        if inner is None:
            return
        if dst == self.node_id:
            bump(counters.received, inner["type"])
            counters.unicast_received["relay"] += 1
            self.on_unicast(inner, proven_id(link), origin)
            return
        if not self.seen.add(mid):
            bump(counters.duplicates, "relay")
            return
        hops = message["hops"] + 1
        if hops > RELAY_MAX_HOPS:
            bump(counters.dropped, "relay_hop_limit")
            return
        route = self.route_for(dst)
        if route is None or route[1] is link or route[1].remote_id == origin:
            bump(counters.dropped, "relay_unreachable")
            neighbour = proven_id(link)
            if hold := self.unroutable.charge(neighbour, self.peers.network_of(neighbour) or neighbour):
                self.peers.hold_reading(neighbour, hold)
            return
        forward = message.copy()
        forward["hops"] = hops
        if route[1].send(forward):
            counters.events["relayed"] += 1
            bump(counters.sent, "relay")

    def on_grenache(self, wrapper: Message) -> str | None:
        """A unicast that came over Grenache: a relay wrapper for us, signed by its origin (an HTTP
        caller proves nothing, so the signature is all). None, or why it was refused."""
        if wrapper["type"] != "relay":
            return "not_a_relay"
        if wrapper["dst"] != self.node_id:
            return "misaddressed"
        if not self.auth.check_relay(wrapper):
            return "bad_signature"
        inner = self.relayed_inner(wrapper)
        if inner is None:
            return "malformed"
        origin = wrapper["origin"]
        bump(self.counters.received, inner["type"])
        self.counters.unicast_received["grenache"] += 1
        self.on_unicast(inner, origin, origin)
        return None

    def relayed_inner(self, message: Message) -> Message | None:
        """The signed inner message if it is well formed and agrees with its wrapper, else None
        (dropped, the origin penalised: it signed it)."""
        origin = message["origin"]
        try:
            inner = decode_body(message["body"], self.max_frame_bytes)
            kind = inner["type"]
            if kind in CONTROL_TYPES or inner.get("id") != message["id"] or inner.get("origin") != origin \
                    or inner.get("dst") != message["dst"]:
                raise m.ProtocolError(CloseReason.MALFORMED_MESSAGE, "relay.body does not match its wrapper")
            known = self.peers.schemas.validate(inner)
            check_envelope(inner)
        except (MalformedFrame, m.ProtocolError) as exc:
            bump(self.counters.dropped, "relayed_malformed")
            self.peers.penalize(origin, INVALID_POINTS, f"relayed {exc.reason}")
            return None
        if not known and message["dst"] == self.node_id:
            bump(self.counters.dropped, "relayed_unknown")
            return None
        if self.auth.staleness(inner):
            bump(self.counters.dropped, "stale")
            return None
        return inner
