"""MessageRouter: the facade the rest of the node routes application messages through.

Unicast (p2p/routing/unicast.py: direct, relayed, over Grenache, or held until reachable) and
broadcast (p2p/routing/broadcast.py: deduplicated Plumtree eager/lazy push, verified before
forwarding) over the PeerManager's links, with per-type subscribers (p2p/routing/subscribers.py),
per-peer inbound rate limits (p2p/routing/inbound_limit.py) and counters. The envelope, schemas and
outcomes all paths share live in p2p/routing/envelope.py.

With DISCOVERY_GRENACHE (and GRENACHE_MESSAGES, on by default) the node also serves and uses the
Grenache path (p2p/routing/grenache_path.py): unicasts to nodes no link reaches go over Grenache
HTTP RPC when the node is announced on a Grape, and broadcasts reach members of the Grape that
links do not reach. It needs no peer port: a node with P2P off can `start()` the router and send
and receive routed messages through Grenache alone.

Verify before forward, blame only the author. Every broadcast type must be declared
(`declare_broadcast`) with a validator, an origin signature (p2p/origin_auth.py), or both; the
router checks a broadcast BEFORE it forwards or handles it. A relayed unicast carries its origin's
signature, checked by every relay and by the target; a direct unicast's `origin` must be the link's
own node (PeerManager.on_message). What a subscriber rejects (ProtocolError) is blamed on the proven
author, never on a relay; any other exception in a subscriber is our bug: reported once with its
traceback and counted.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, TypedDict

from p2p.messages import Message
from p2p.delivery_queue import DeliveryQueue
from p2p.grenache.grape import GrapeClient
from p2p.origin_auth import OriginAuth
from p2p.resilience.protection import Protection, ProtectionView
from p2p.routing.broadcast import LatenessEstimator, MessageCache, Plumtree, PlumtreeStats
from p2p.routing.budgets import GraftBudget
from p2p.routing.config import GrenacheMessagesConfig, RouterConfig
from p2p.routing.context import RoutedLink, RouterPeers, RoutingContext
from p2p.peer_hooks import PeerHooks, proven_id
from p2p.routing.envelope import (ROUTING_SCHEMAS, BroadcastType, Handler, Outcome, RouterCounters, SendResult, Validator,
                                  check_envelope, is_msg_id, new_message_id)
from p2p.routing.grenache_path import GrenachePath, GrenachePathStats
from p2p.routing.inbound_limit import InboundLimiter
from p2p.routing.subscribers import Subscribers
from p2p.routing.unicast import Unicast
from p2p.seen_cache import SeenCache

__all__ = ["MessageRouter", "Outcome", "SendResult", "check_envelope", "is_msg_id", "new_message_id",
           "LatenessEstimator", "MessageCache"]


class PathsView(TypedDict):
    """How messages travelled, by path: unicasts sent and received, unique broadcasts received."""
    unicast_sent: dict[str, int]
    unicast_received: dict[str, int]
    broadcast_received: dict[str, int]
    broadcast_sent_grenache: int


class SeenCacheView(TypedDict):
    size: int
    max_size: int
    ttl: float
    evicted: int
    expired: int


class QueueView(TypedDict):
    messages: int                    # unicasts held for nodes we cannot reach now
    targets: int
    bytes: int                       # their encoded size (QUEUE_TARGET_BYTES per target, QUEUE_MAX_BYTES in all)
    draining: int


class RateLimitView(TypedDict):
    rate: float
    burst: float


class RouterStats(PlumtreeStats):
    """The message router in `/status`: counters by type, the broadcast tree, the paths messages took."""
    mode: str
    sent: dict[str, int]
    received: dict[str, int]
    duplicates: dict[str, int]
    dropped: dict[str, int]
    events: dict[str, int]
    amplification: float | None
    links: int
    relay_reach: int
    relay_targets: list[str]
    seen_cache: SeenCacheView
    queue: QueueView
    rate_limit: RateLimitView
    paths: PathsView
    grenache: GrenachePathStats | None
    protection: ProtectionView
    summary: str


class MessageRouter:
    """Routes application messages for one node: PeerManager.attach wires it as `peer_hooks` says (every
    message no link-local handler takes, the per-peer gate, link and heartbeat listeners); `start`/`stop`
    run its housekeeping."""

    def __init__(self, peers: RouterPeers, config: RouterConfig) -> None:
        self.peers = peers
        self.config = config
        self.node_id: str = peers.node_id
        self.max_frame_bytes = config.max_frame_bytes
        self.counters = RouterCounters()
        self.seen = SeenCache(config.seen_cache_size, config.seen_cache_ttl)
        self.protection: Protection = peers.protection
        self.queue = DeliveryQueue(config.queue_max_messages, config.queue_ttl, max_target_bytes=config.queue_target_bytes,
                                   max_bytes=config.queue_max_bytes, protection=self.protection)
        self.auth = OriginAuth.for_peers(peers, max_age=config.seen_cache_ttl / 2)
        self.subscribers = Subscribers(peers, self.counters)
        self.inbound = InboundLimiter(peers, self.counters, config.rate_limit, config.rate_burst, config.flood_ban)
        context = RoutingContext(peers, self.counters, self.seen, self.auth, self.subscribers, self.max_frame_bytes)
        graft_budget = GraftBudget(config.graft_peer_bytes, config.graft_total_bytes, config.max_frame_bytes)
        self.plumtree = Plumtree(context, mode=config.broadcast_mode, max_hops=config.broadcast_max_hops,
                                 cache_size=config.seen_cache_size // 5 or 1,
                                 cache_bytes=config.broadcast_cache_bytes, graft_budget=graft_budget,
                                 open_type_rate=config.open_type_rate,
                                 open_type_total_rate=config.open_type_total_rate)
        self.unicast = Unicast(context, self.queue)
        self.grenache = self._grenache_path(config.grenache) if config.grenache is not None else None
        self._reach: tuple[float, set[str]] = (-1.0, set())
        self._tasks: list[asyncio.Task[None]] = []
        self._control = {"relay": self.unicast.on_relay, "ihave": self.plumtree.on_ihave,
                         "graft": self.plumtree.on_graft, "prune": self.plumtree.on_prune}
        if config.diagnostic_types:
            self.declare_broadcast("note", origin_signed=True)

    # --- public API -------------------------------------------------------------------------
    def subscribe(self, msg_type: str, handler: Handler) -> None:
        """Call `handler(message, from_node_id)` once per message of `msg_type` handled by this node:
        broadcasts from others and unicasts addressed to us. `from_node_id` is the neighbour it
        arrived from; the author is `message["origin"]`."""
        self.subscribers.subscribe(msg_type, handler)

    def unsubscribe(self, msg_type: str, handler: Handler) -> None:
        self.subscribers.unsubscribe(msg_type, handler)

    @property
    def duplicate_listeners(self) -> list[Handler]:
        """Called with each duplicate copy (diagnostics)."""
        return self.subscribers.duplicate_listeners

    def declare_broadcast(self, msg_type: str, *, validator: Validator | None = None,
                          origin_signed: bool = False) -> None:
        """Make `msg_type` a broadcast type. Each needs a way to be checked before it is forwarded:
        `origin_signed` (the router signs ours and verifies others': the origin is proven, the id
        bound to the content), and/or `validator(message, from_node_id) -> bool` for the content
        (a self-authenticating type checks its own signature there, and should derive its id from
        it as `p2p.origin_auth.signed_id` does). What fails is neither handled nor forwarded, and
        the neighbour that sent it is penalised. A validator that returns None cannot judge the
        message yet (it needs state this node does not have): it is handed to the subscribers, who
        may use it, but not forwarded, and nobody is blamed."""
        self.plumtree.declare(msg_type, validator, origin_signed)

    def set_validator(self, msg_type: str, validator: Validator, *, origin_rate: float | None = None,
                      max_bytes: int | None = None) -> None:
        """Declare `msg_type` with `validator` (keeping an origin signature it was declared with). `origin_rate`:
        any key may author it, so copies are budgeted per neighbour and per origin before they are checked, and
        one larger than `max_bytes` encoded is dropped unchecked."""
        known = self.plumtree.types.get(msg_type)
        self.plumtree.declare(msg_type, validator, bool(known and known.origin_signed), origin_rate, max_bytes)

    @property
    def broadcast_types(self) -> dict[str, BroadcastType]:
        return self.plumtree.types

    @property
    def validators(self) -> dict[str, Validator]:
        return {k: t.validator for k, t in self.plumtree.types.items() if t.validator is not None}

    def broadcast(self, message: Message) -> str | bytes:
        """Send `message` (a dict with "type" and payload fields) to the whole network; returns its id.
        The envelope fields are filled in here; this node's own subscribers are not called."""
        return self.plumtree.broadcast(message)

    def send_to_peer(self, node_id: str, message: Message, on_settled: Callable[[SendResult], None] | None = None,
                     *, answer: bool = False) -> SendResult:
        """Send `message` to one node: over our link to it, else through a neighbour that links to it,
        else hold it (bounded by count and bytes, for QUEUE_TTL) until it is reachable. A QUEUED message's
        final outcome is passed to `on_settled` later (delivered/relayed when flushed, dropped when it
        expires). An `answer` to someone's request goes now, through a neighbour only while that link keeps half
        its send buffer free (else dropped "link_busy"), and is held only while a Grenache lookup may find its node (at most
        ANSWER_HOLD seconds); with no path it is dropped "unroutable": held for a requester nobody reaches, it
        would be held for whoever asked, and a fresh key costs nothing."""
        return self.unicast.send_to_peer(node_id, message, on_settled, answer=answer)

    def route_for(self, node_id: str) -> tuple[str, RoutedLink] | None:
        """("direct", link) or ("relay", neighbour link) or None when the node is unreachable now."""
        return self.unicast.route_for(node_id)

    def reachable(self, node_id: str) -> bool:
        """Whether a message to `node_id` could leave now: a link, a relay, or its address on Grenache."""
        return self.unicast.reachable(node_id)

    def lazy_peers(self, origin: str) -> set[str]:
        """Neighbours that only get ids (not messages) of `origin`'s broadcasts from us (live set)."""
        return self.plumtree.lazy_peers(origin)

    @property
    def mode(self) -> str:
        return self.plumtree.mode

    @property
    def cache(self) -> MessageCache:
        return self.plumtree.cache

    @property
    def lateness(self) -> LatenessEstimator:
        return self.plumtree.lateness

    # --- the Grenache path -------------------------------------------------------------------
    def _grenache_path(self, config: GrenacheMessagesConfig) -> GrenachePath:
        unicast, plumtree = self.unicast, self.plumtree
        path = GrenachePath(
            node_id=self.node_id, network_id=self.peers.network_id, grape=GrapeClient(config.grape_urls),
            service=config.service, host=config.host, port=config.port, max_frame_bytes=self.max_frame_bytes,
            accept_unicast=unicast.on_grenache, accept_broadcast=plumtree.on_grenache,
            delivered=unicast.grenache_delivered, failed=unicast.grenache_failed,
            reachable_again=unicast.reachable_again, report=self.subscribers.internal_error, schemas=self.peers.schemas,
            announce_interval=config.announce_interval, limits=config.limits)
        unicast.grenache = path
        plumtree.fan_out = self._fan_out
        return path

    def _fan_out(self, body: bytes, origin: str, src: str | None) -> None:
        """A broadcast copy ours or from a link: over Grenache to members our links do not reach,
        unless its origin is a member itself (it has sent them its own copy)."""
        path = self.grenache
        if path is None or not path.members or (origin != self.node_id and path.is_member(origin)):
            return
        exclude = self._link_reach()
        if src is not None:
            exclude = exclude | {src}
        path.fan_out(body, origin, exclude)

    def _link_reach(self) -> set[str]:
        """Nodes our links reach in one or two hops (as neighbours' heartbeats report), cached 0.5 s."""
        now = time.monotonic()
        if now - self._reach[0] < 0.5:
            return self._reach[1]
        links = self.peers.links
        reach = set(links).union(*(link.remote_links for link in links.values() if link.is_open))
        self._reach = (now, reach)
        return reach

    # --- housekeeping -----------------------------------------------------------------------
    async def start(self) -> None:
        """Run housekeeping (and the Grenache path, if configured: needs no peer port)."""
        if self.grenache is not None:
            await self.grenache.start()
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="router.sweep"))

    async def stop(self) -> None:
        tasks = self._tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self.grenache is not None:
            await self.grenache.stop()
        await self.unicast.stop()
        self.plumtree.stop()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.sweep()

    def sweep(self) -> None:
        """Expire queued messages (counted, callers told) and old seen ids."""
        self.unicast.expire()
        self.seen.prune()
        self.plumtree.lateness.decay()

    # --- PeerManager hooks ------------------------------------------------------------------
    def _on_open(self, link: RoutedLink) -> None:
        node_id = proven_id(link)
        self.inbound.opened(node_id)
        self.plumtree.forget_link(node_id)  # new links start eager for every origin; redundant ones get pruned
        self.unicast.link_opened(node_id)

    def _on_close(self, link: RoutedLink) -> None:
        node_id = proven_id(link)
        self.inbound.closed(node_id)
        self.plumtree.link_closed(node_id)

    def _on_heartbeat(self, link: RoutedLink, message: Message) -> None:
        self.unicast.heartbeat(link)

    def peer_hooks(self) -> PeerHooks:
        return PeerHooks("router", schemas=ROUTING_SCHEMAS, application=self.on_message, gate=self.admit,
                         on_open=(self._on_open,), on_close=(self._on_close,), on_heartbeat=(self._on_heartbeat,))

    def admit(self, link: RoutedLink, message: Message) -> bool:
        """The gate of our peer hooks: the per-peer inbound rate limit, asked for every application
        message (also those other layers handle directly). False drops the message."""
        return self.inbound.admit(link, relayed=_relayed_broadcast(link, message))

    def on_message(self, link: RoutedLink, message: Message) -> None:
        """The application path of our peer hooks: every validated message no link-local handler took."""
        src = proven_id(link)
        kind = message["type"]
        received = self.counters.received
        received[kind] = received.get(kind, 0) + 1
        control = self._control.get(kind)
        if control is not None:
            control(link, message)
            return
        if "id" not in message:  # a plain link-local message (no routing): hand it over as is
            self.subscribers.deliver(message, src, src)
            return
        check_envelope(message)
        if "dst" in message:
            if message["dst"] != self.node_id:
                dropped = self.counters.dropped
                dropped["misaddressed"] = dropped.get("misaddressed", 0) + 1
                return
            self.counters.unicast_received["direct"] += 1
            self.unicast.on_unicast(message, src, src)  # its origin is this neighbour (PeerManager checked)
        else:
            self.plumtree.on_broadcast(link, message, kind)

    # --- reporting --------------------------------------------------------------------------
    @property
    def amplification(self) -> float | None:
        """Copies received per unique broadcast received (1.0 is ideal; flooding gives about the degree)."""
        events = self.counters.events
        unique = events["unique_broadcasts"]
        return round(events["broadcast_copies"] / unique, 4) if unique else None

    def stats(self) -> RouterStats:
        counters = self.counters
        links = self.peers.links
        # nodes we reach only through a neighbour (as their heartbeats report), for operators and tests
        relay_targets = set().union(*(link.remote_links for link in links.values() if link.is_open))
        relay_targets -= set(links)
        relay_targets.discard(self.peers.node_id)
        seen = self.seen
        return {
            "mode": self.mode, "sent": dict(counters.sent), "received": dict(counters.received),
            "duplicates": dict(counters.duplicates), "dropped": dict(counters.dropped),
            "events": dict(counters.events), "amplification": self.amplification,
            **self.plumtree.stats(),
            "links": len(links),
            "relay_reach": len(relay_targets), "relay_targets": sorted(relay_targets)[:256],
            "seen_cache": {"size": len(seen), "max_size": seen.max_size, "ttl": seen.ttl,
                           "evicted": seen.evicted, "expired": seen.expired},
            "queue": {"messages": len(self.queue), "targets": self.queue.pending_targets, "bytes": self.queue.bytes,
                      "draining": self.unicast.draining},
            "rate_limit": {"rate": self.inbound.rate, "burst": self.inbound.burst},
            "paths": self.paths(),
            "grenache": self.grenache.stats() if self.grenache is not None else None,
            "protection": self.protection.snapshot(),
            "summary": self.summary(),
        }

    def paths(self) -> PathsView:
        """How messages travelled: unicasts sent and received, and unique broadcasts received, by path."""
        counters = self.counters
        return {"unicast_sent": dict(counters.unicast_sent), "unicast_received": dict(counters.unicast_received),
                "broadcast_received": dict(counters.broadcast_received),
                "broadcast_sent_grenache": self.grenache.counters["broadcasts_sent"] if self.grenache else 0}

    def summary(self) -> str:
        """One line for `exchange-node status`: the protection mode and the paths messages took."""
        protection = self.protection
        counters = self.counters
        share = "" if protection.canary >= 1.0 else f" for {protection.canary:.0%} of traffic"
        sent, received = counters.unicast_sent, counters.broadcast_received
        line = (f"protection {protection.mode}{share}; unicasts sent {sent['direct']} direct, {sent['relay']} relayed, "
                f"{sent['grenache']} grenache ({counters.events['queued']} held); broadcasts in "
                f"{received['link']} link, {received['grenache']} grenache")
        if self.grenache is not None:
            stats = self.grenache.stats()
            line += f"; grenache :{stats['port']} grape {stats['grape']}, {len(stats['members'])} members"
        return line


def _relayed_broadcast(link: RoutedLink, message: Message) -> bool:
    """A broadcast the neighbour passes on from someone else: over its rate it is dropped, but it never gets the
    neighbour banned (an honest relay of a spammer's copies is not the spammer)."""
    origin = message.get("origin")
    return origin is not None and origin != link.remote_id and "dst" not in message and "id" in message
