"""InboundLimiter: the per-peer inbound message rate limit, with a ban for a peer that keeps flooding.

A peer over its rate has messages dropped; drops closer together than FLOOD_GAP form one throttling
episode, and an episode lasting FLOOD_GRACE marks a flood: the peer is banned and its link closed. Only
what the peer itself authored counts towards a flood: broadcasts it relays for others are dropped over the
rate but never get it banned, since an honest relay passes on whatever a spammer elsewhere originated (the
type's own budgets, p2p/routing/budgets.py, stop that at the first hop). So its own messages have a bucket of
their own: one shared with the relays let a flood of relayed copies empty it, and the peer's next votes and
prunes then started an episode that banned an honest node for a spammer's broadcasts. A peer may so send at
most twice the rate: its own messages at the rate, and relays in what its own leave of the shared bucket.
"""
from __future__ import annotations

import logging
import time
from typing import Protocol

from p2p.close_reason import CloseReason, LinkReason
from p2p.resilience.token_bucket import TokenBucket
from p2p.peer_hooks import Identified, proven_id
from p2p.routing.envelope import RouterCounters, bump

log = logging.getLogger("p2p.router")

FLOOD_GAP = 0.25  # drops closer than this belong to one throttling episode
FLOOD_GRACE = 0.3  # a throttling episode this long is a flood: ban


class LimitedLink(Identified, Protocol):
    """What the limiter reads of a link (a PeerLink is one)."""

    @property
    def is_open(self) -> bool: ...

    def close(self, reason: LinkReason, detail: str = "") -> None: ...


class Banner(Protocol):
    def ban(self, node_id: str, seconds: float, reason: str) -> None: ...


class _InboundLimit:
    __slots__ = ("bucket", "own", "episode_start", "last_drop", "drops")

    def __init__(self, rate: float, burst: float) -> None:
        self.bucket = TokenBucket(rate, burst)      # every message, relays included
        self.own = TokenBucket(rate, burst)         # what the peer authored: only this may start a ban
        self.episode_start = 0.0
        self.last_drop = -1e9
        self.drops = 0


class InboundLimiter:
    def __init__(self, peers: Banner, counters: RouterCounters, rate: float, burst: float, ban_seconds: float) -> None:
        self.peers = peers
        self.counters = counters
        self.rate = rate
        self.burst = burst
        self.ban_seconds = ban_seconds
        self._limits: dict[str, _InboundLimit] = {}

    def opened(self, node_id: str) -> None:
        self._limits[node_id] = _InboundLimit(self.rate, self.burst)

    def closed(self, node_id: str) -> None:
        self._limits.pop(node_id, None)

    def admit(self, link: LimitedLink, relayed: bool = False) -> bool:
        """Whether a message from `link` fits its peer's rate; False drops it. `relayed`: a broadcast it passes
        on for another origin (dropped over the rate, never the start of a ban)."""
        src = proven_id(link)
        limit = self._limits.get(src)
        if limit is None:
            limit = self._limits[src] = _InboundLimit(self.rate, self.burst)
        if relayed:
            if limit.bucket.try_take():
                return True
            bump(self.counters.dropped, "throttled_relay")
            return False
        limit.bucket.try_take()     # its own messages leave the relays less, and pass on their own bucket
        if limit.own.try_take():
            return True
        self._throttle(link, limit)
        return False

    def _throttle(self, link: LimitedLink, limit: _InboundLimit) -> None:
        now = time.monotonic()
        if now - limit.last_drop > FLOOD_GAP:
            limit.episode_start = now
            limit.drops = 0
            log.info("throttling peer %s: over %g messages/s", (link.remote_id or "?")[:12], self.rate)
        limit.last_drop = now
        limit.drops += 1
        self.counters.events["throttled"] += 1
        bump(self.counters.dropped, "throttled")
        if now - limit.episode_start >= FLOOD_GRACE:
            self.counters.events["flood_bans"] += 1
            log.warning("peer %s flooded past %g messages/s for %.1fs (%d dropped): disconnecting, banned %gs",
                        (link.remote_id or "?")[:12], self.rate, now - limit.episode_start, limit.drops,
                        self.ban_seconds)
            self.peers.ban(proven_id(link), self.ban_seconds, "flood")
            if link.is_open:  # ban() closes known peers; make sure of it
                link.close(CloseReason.BANNED, "flood")
