"""A simulated network for MessageRouter tests: real framing, real schemas, fake links handing frames over on
the next loop pass, the way PeerLink does after decoding and validating."""
from __future__ import annotations

import asyncio
import functools
import logging
import random
from dataclasses import replace
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config import Settings
from node.configs import router_config
from node.identity import NodeIdentity
from p2p import messages as m
from p2p.failure_log import InternalErrors
from p2p.framing import decode_body
from p2p.resilience.protection import Protection
from p2p.router import MessageRouter


@functools.lru_cache(maxsize=None)
def identity(i: int) -> NodeIdentity:
    """Node i's key, the same every run (origin signatures need real keys)."""
    return NodeIdentity(Ed25519PrivateKey.from_private_bytes(i.to_bytes(32, "big")))


def nid(i: int) -> str:
    return identity(i).node_id


class FakeLink:
    def __init__(self, net: "SimNet", owner: "SimNode", remote: "SimNode") -> None:
        self.net = net
        self.owner = owner
        self.remote_id = remote.node_id
        self.remote = remote
        self.remote_links: frozenset[str] = frozenset()
        self.remote_hello = {"capabilities": ["relay", "pex"]}
        self.rtt = 0.001
        self.state = "open"
        self.via: str | None = None     # a direct link (PeerLink.via: the relay carrying a relayed one)
        self.frames_out = 0
        self.peer: FakeLink | None = None  # the other end

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def send(self, message: dict) -> bool:
        from p2p.framing import encode_frame
        return self.send_frame(encode_frame(message))

    def send_frame(self, frame: bytes) -> bool:
        if not self.is_open:
            return False
        self.frames_out += 1
        if self.net.jitter:
            self.net.loop.call_later(self.net.rng.uniform(0, self.net.jitter), self._arrive, frame)
        else:
            self.net.loop.call_soon(self._arrive, frame)
        return True

    def spare_room(self) -> int:
        return self.net.link_room

    def _arrive(self, frame: bytes) -> None:
        peer = self.peer
        if peer is None or not peer.is_open:
            return
        message = decode_body(frame[4:])
        try:
            peers = peer.owner.peers
            if peers.schemas.validate(message) and peers.gate(peer, message):
                peers.application(peer, message)
        except m.ProtocolError as exc:
            peer.close(exc.reason)

    def close(self, reason: str = "closed", detail: str = "", *, fault: object = None) -> None:
        for end in (self, self.peer):
            if end is not None and end.state == "open":
                end.state = "closed"
                end.owner.peers.drop_link(end)


class FakePeers:
    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.network_id = "test-net"
        self.schemas = m.Schemas()
        self.protection = Protection("on", 1.0)
        self.internal_errors = InternalErrors(logging.getLogger("simnet"))
        self.verify = NodeIdentity.verify
        self.node_id_for = NodeIdentity.node_id_for
        self.links: dict[str, FakeLink] = {}
        self.application: Callable[[Any, dict], None] = lambda link, message: None
        self.gate: Callable[[Any, dict], bool] = lambda link, message: True
        self.open_listeners: list = []
        self.close_listeners: list = []
        self.heartbeat_listeners: list = []
        self.bans: list[tuple[str, float, str]] = []
        self.penalties: list[tuple[str, float, str]] = []
        self.holds: list[tuple[str, float]] = []
        self.networks: dict[str, str] = {}      # a neighbour's network, when a test sets one (else its own)

    def attach(self, component: Any) -> Any:
        """PeerManager.attach for the router: its hooks, kept where the fake links call them."""
        hooks = component.peer_hooks()
        self.schemas.add(hooks.schemas)
        self.application = hooks.application or self.application
        self.gate = hooks.gate or self.gate
        self.open_listeners += hooks.on_open
        self.close_listeners += hooks.on_close
        self.heartbeat_listeners += hooks.on_heartbeat
        return component

    def penalize(self, node_id: str, points: float, reason: str) -> None:
        self.penalties.append((node_id, points, reason))

    def ban(self, node_id: str, seconds: float, reason: str) -> None:
        self.bans.append((node_id, seconds, reason))
        link = self.links.get(node_id)
        if link is not None:
            link.close("banned")

    def hold_reading(self, node_id: str, seconds: float) -> None:
        self.holds.append((node_id, seconds))

    def network_of(self, node_id: str) -> str | None:
        """As PeerManager.network_of: each simulated node is a network of its own unless a test says otherwise."""
        return self.networks.get(node_id, f"sim:{node_id[:8]}") if node_id in self.links else None

    def add_link(self, link: FakeLink) -> None:
        self.links[link.remote_id] = link
        for listener in self.open_listeners:
            listener(link)

    def drop_link(self, link: FakeLink) -> None:
        if self.links.get(link.remote_id) is link:
            del self.links[link.remote_id]
            for listener in self.close_listeners:
                listener(link)

    def heartbeat_from(self, link: FakeLink) -> None:
        link.remote_links = frozenset(link.remote.peers.links)
        for listener in self.heartbeat_listeners:
            listener(link, {"type": "heartbeat"})


class SimNode:
    def __init__(self, net: "SimNet", i: int, **settings) -> None:
        self.node_id = nid(i)
        self.peers = FakePeers(identity(i))
        settings.setdefault("debug_api", True)      # the tests' broadcasts are diagnostic notes
        self.router = self.peers.attach(MessageRouter(self.peers, router_config(replace(Settings(), **settings))))
        self.got: list[tuple[dict, str]] = []
        self.router.subscribe("note", lambda message, src: self.got.append((message, src)))


class SimNet:
    def __init__(self, n: int, **settings) -> None:
        self.loop = asyncio.get_running_loop()
        self.jitter = 0.0  # each frame arrives after a random delay up to this (uneven, reordering links)
        self.link_room = 2 << 20    # bytes every link says it can spare (PeerLink.spare_room)
        self.rng = random.Random(5)
        self.nodes = [SimNode(self, i, **settings) for i in range(n)]

    def connect(self, a: int, b: int) -> None:
        na, nb = self.nodes[a], self.nodes[b]
        la, lb = FakeLink(self, na, nb), FakeLink(self, nb, na)
        la.peer, lb.peer = lb, la
        na.peers.add_link(la)
        nb.peers.add_link(lb)

    def heartbeats(self) -> None:
        for node in self.nodes:
            for link in list(node.peers.links.values()):
                node.peers.heartbeat_from(link)

    async def settle(self, seconds: float = 0.0) -> None:
        await asyncio.sleep(seconds)
        for _ in range(200):
            await asyncio.sleep(0)

    async def quiet(self, seconds: float = 0.3) -> None:
        """Let timers (ihave batches, graft timeouts) run out."""
        await self.settle(seconds)

    def delivered(self, mid) -> list[int]:
        return [sum(1 for msg, _ in node.got if msg["id"] == mid) for node in self.nodes]

    def counter_sum(self, name: str) -> int:
        return sum(node.router.counters.events[name] for node in self.nodes)


def line(n: int, **settings) -> SimNet:
    net = SimNet(n, **settings)
    for i in range(1, n):
        net.connect(i - 1, i)
    return net


def random_graph(n: int, links_per_node: int, seed: int, **settings) -> SimNet:
    rng = random.Random(seed)
    net = SimNet(n, **settings)
    edges = set()
    for i in range(1, n):
        for j in rng.sample(range(i), min(i, links_per_node)):
            edges.add((j, i))
    for a, b in sorted(edges):
        net.connect(a, b)
    return net
