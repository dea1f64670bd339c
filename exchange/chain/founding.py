"""Founding: which chain a node with no history joins, or whether it founds one — with no configuration.

A node that already has a genesis keeps it. One that has none listens for `found_after` seconds
(mDNS needs 1-2 s to show a LAN's nodes) while links come up; each peer tells us its chain id (or
that it has none yet) in its handshake and heartbeats. Then:

- a peer already on a chain: adopt that chain (the one the most peers report, then the highest);
  the node starts as a follower and asks for a validator seat once caught up;
- no chain anywhere and `VALIDATORS` unset: the node with the smallest id among itself and the
  chain-less peers it sees founds a chain with itself as the only validator; the others adopt it
  when its heartbeats show it (nodes started together end up on one chain);
- `VALIDATORS` set (a pinned set of node ids): the smallest listed id founds once it is linked to
  every listed node (it needs their keys), with exactly that set, which never changes.

Two nodes that could not see each other may each found a chain; when they meet, their links are
refused (`genesis_mismatch`) and both sides report the other network — never merged silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PeerChain:
    node_id: str
    public_key: bytes
    chain_id: str | None
    height: int
    seen: float


@dataclass
class Decision:
    action: str                                   # "wait", "adopt" or "found"
    reason: str = ""
    chain_id: str | None = None
    peers: list[str] = field(default_factory=list)          # who can give us the genesis (adopt)
    validators: list[bytes] = field(default_factory=list)   # the first validator set (found)
    pinned: bool = False


class Founding:
    def __init__(self, node_id: str, public_key: bytes, *, found_after: float, started: float,
                 pinned: tuple[str, ...] = (), forget_after: float = 10.0) -> None:
        self.node_id = node_id
        self.public_key = public_key
        self.found_after = found_after
        self.started = started
        self.pinned = tuple(sorted(set(pinned)))
        self.forget_after = forget_after
        self.peers: dict[str, PeerChain] = {}
        self.refused: set[str] = set()            # chain ids we will not adopt (e.g. other markets)

    def observe(self, node_id: str, public_key: bytes, chain_id: str | None, height: int, now: float) -> None:
        """A peer's chain from its hello or heartbeat. `public_key` may be empty (a hello is judged before the
        link proves the key): the key an open link proved is kept."""
        known = self.peers.get(node_id)
        key = public_key or (known.public_key if known is not None else b"")
        self.peers[node_id] = PeerChain(node_id, key, chain_id or None, max(0, height), now)

    def forget(self, node_id: str) -> None:
        self.peers.pop(node_id, None)

    def decide(self, now: float) -> Decision:
        live = {p.node_id: p for p in self.peers.values() if now - p.seen <= self.forget_after}
        chains: dict[str, list[PeerChain]] = {}
        for peer in live.values():
            if peer.chain_id is not None and peer.chain_id not in self.refused:
                chains.setdefault(peer.chain_id, []).append(peer)
        if chains:
            chain_id, holders = max(chains.items(), key=lambda item: (len(item[1]), max(p.height for p in item[1]),
                                                                      item[0]))
            holders.sort(key=lambda p: -p.height)
            return Decision("adopt", f"{len(holders)} peer(s) already on chain {chain_id[:12]}", chain_id,
                            [p.node_id for p in holders])
        if self.pinned:
            return self._pinned(live)
        if now - self.started < self.found_after:
            return Decision("wait", f"listening for an existing network for {self.found_after:g}s")
        chainless = sorted([self.node_id, *(p.node_id for p in live.values() if p.chain_id is None)])
        if chainless[0] != self.node_id:
            return Decision("wait", f"node {chainless[0][:12]} founds the network (smallest id)")
        return Decision("found", f"no network found among {len(chainless)} node(s)", validators=[self.public_key])

    def _pinned(self, live: dict[str, PeerChain]) -> Decision:
        if self.node_id not in self.pinned:
            return Decision("wait", "VALIDATORS does not list this node: waiting for the validators' network")
        if self.pinned[0] != self.node_id:
            return Decision("wait", f"validator {self.pinned[0][:12]} founds the network (smallest listed id)")
        missing = [v for v in self.pinned if v != self.node_id and (v not in live or len(live[v].public_key) != 32)]
        if missing:
            return Decision("wait", f"waiting for links to {len(missing)} listed validator(s): "
                                    f"{', '.join(m[:12] for m in missing)}")
        keys = [self.public_key, *(live[v].public_key for v in self.pinned if v != self.node_id)]
        return Decision("found", f"founding with the {len(keys)} listed validators", validators=keys, pinned=True)
