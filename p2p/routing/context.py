"""RoutingContext: what every routing path of one node shares (its peers, counters, dedup cache,
origin signatures and local subscribers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol

from p2p.close_reason import Fault, LinkReason
from p2p.failure_log import InternalErrors
from p2p.messages import Message, Schemas
from p2p.origin_auth import OriginAuth, SigningPeers
from p2p.peer_hooks import Identified
from p2p.resilience.protection import Protection
from p2p.routing.envelope import RouterCounters
from p2p.routing.subscribers import Subscribers
from p2p.seen_cache import SeenCache


class RoutedLink(Identified, Protocol):
    """What the routing paths read of a link (a PeerLink is one)."""

    @property
    def remote_hello(self) -> Message | None: ...
    @property
    def remote_links(self) -> frozenset[str]: ...      # the nodes its heartbeats say it links to
    @property
    def rtt(self) -> float | None: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def via(self) -> str | None: ...                    # the relay carrying it, None for a direct link

    def send(self, message: Message) -> bool: ...

    def send_frame(self, frame: bytes) -> bool: ...

    def spare_room(self) -> int: ...                    # bytes it takes while half its send buffer stays free

    def close(self, reason: LinkReason, detail: str = "", *, fault: Fault | None = None) -> None: ...


class RouterPeers(SigningPeers, Protocol):
    """What the message router and its paths need of the PeerManager: its open links, the message types
    they accept, the protection switch, and penalties and bans for neighbours that misbehave."""

    @property
    def links(self) -> Mapping[str, RoutedLink]: ...
    @property
    def schemas(self) -> Schemas: ...
    @property
    def protection(self) -> Protection: ...

    @property
    def internal_errors(self) -> InternalErrors: ...     # where a handler's own bug is reported (once, then counted)

    def penalize(self, node_id: str, points: float, reason: str) -> None: ...

    def ban(self, node_id: str, seconds: float, reason: str) -> None: ...

    def network_of(self, node_id: str) -> str | None: ...   # its open link's /24 or /48 (or relay's); None: no link

    def hold_reading(self, node_id: str, seconds: float) -> None: ...   # read nothing from its link that long


@dataclass(frozen=True, slots=True)
class RoutingContext:
    peers: RouterPeers
    counters: RouterCounters
    seen: SeenCache
    auth: OriginAuth
    subscribers: Subscribers
    max_frame_bytes: int

    @property
    def node_id(self) -> str:
        return self.peers.node_id


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
