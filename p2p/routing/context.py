"""RoutingContext: what every routing path of one node shares (its peers, counters, dedup cache,
origin signatures and local subscribers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from p2p.origin_auth import OriginAuth
from p2p.routing.envelope import RouterCounters
from p2p.routing.subscribers import Subscribers
from p2p.seen_cache import SeenCache


@dataclass(frozen=True, slots=True)
class RoutingContext:
    peers: Any  # PeerManager (links, penalize, ban)
    counters: RouterCounters
    seen: SeenCache
    auth: OriginAuth
    subscribers: Subscribers
    max_frame_bytes: int

    @property
    def node_id(self) -> str:
        return cast("str", self.peers.node_id)


class RoutingPart:
    """Base of a routing path: the shared context as plain attributes (hot paths read them per message)."""

    def __init__(self, context: RoutingContext) -> None:
        self.peers = context.peers
        self.node_id: str = context.node_id
        self.counters = context.counters
        self.seen = context.seen
        self.auth = context.auth
        self.subscribers = context.subscribers
        self.max_frame_bytes = context.max_frame_bytes
