"""Founding: which chain a node with no history joins, or whether it founds one.

A node that already has a genesis keeps it. One that has none listens for `found_after` seconds
(mDNS needs 1-2 s to show a LAN's nodes) while links come up; each peer tells us its chain id (or
that it has none yet) in its handshake and heartbeats. Then:

- given a chain to trust (`CHAIN_ID`, or the chain its `JOIN_TOKEN` names): adopt that chain once a
  peer is on it, and never another, nor found one;
- else, peers on exactly one chain: follow it (a follower has no say in it; a seat needs a join
  token or the validators' approvals). Peers on two chains under one NETWORK_ID: adopt neither and
  say so, since counting holders would let whoever runs more nodes choose for us;
- no chain anywhere and `VALIDATORS` unset: the node with the smallest id among itself and the
  chain-less peers it sees founds a chain with itself as the only validator; the others follow it
  when its heartbeats show it (nodes started together end up on one chain);
- `VALIDATORS` set (a pinned set of node ids): the smallest listed id founds once it is linked to
  every listed node (it needs their keys), with exactly that set, which never changes.

Two nodes that could not see each other may each found a chain; when they meet, their links are
refused (`genesis_mismatch`) and both sides report the other network — never merged silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_PEERS = 1024        # peers' chains remembered: anyone may send a hello, so the map is bounded


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
    peers: list[str] = field(default_factory=list)          # who can give us the genesis (adopt; whatever
                                                            # height they claim: anyone can claim the highest)
    validators: list[bytes] = field(default_factory=list)   # the first validator set (found)
    pinned: bool = False
    trust: str = ""                                         # why we adopt it: chain_id, join_token, only_chain


class Founding:
    def __init__(self, node_id: str, public_key: bytes, *, found_after: float, started: float,
                 pinned: tuple[str, ...] = (), forget_after: float = 10.0, trusted_chain: str | None = None,
                 trusted_by: str = "chain_id") -> None:
        self.node_id = node_id
        self.public_key = public_key
        self.found_after = found_after
        self.started = started
        self.pinned = tuple(sorted(set(pinned)))
        self.forget_after = forget_after
        self.peers: dict[str, PeerChain] = {}
        self.refused: set[str] = set()            # chain ids we will not adopt (e.g. other markets)
        self.trusted_chain = trusted_chain        # the only chain we may adopt (CHAIN_ID or the join token's)
        self.trusted_by = trusted_by

    def observe(self, node_id: str, public_key: bytes, chain_id: str | None, height: int, now: float) -> None:
        """A peer's chain from its hello or heartbeat. `public_key` may be empty (a hello is judged before the
        link proves the key): the key an open link proved is kept."""
        known = self.peers.pop(node_id, None)
        key = public_key or (known.public_key if known is not None else b"")
        self.peers[node_id] = PeerChain(node_id, key, chain_id or None, max(0, height), now)
        if len(self.peers) > MAX_PEERS:     # newest last: drop the longest silent, never more than we keep
            for stale in [n for n, p in self.peers.items() if now - p.seen > self.forget_after][:len(self.peers)]:
                del self.peers[stale]
            while len(self.peers) > MAX_PEERS:
                del self.peers[next(iter(self.peers))]

    def forget(self, node_id: str) -> None:
        self.peers.pop(node_id, None)

    def decide(self, now: float) -> Decision:
        live = {p.node_id: p for p in self.peers.values() if now - p.seen <= self.forget_after}
        chains: dict[str, list[PeerChain]] = {}
        for peer in live.values():
            if peer.chain_id is not None and peer.chain_id not in self.refused:
                chains.setdefault(peer.chain_id, []).append(peer)
        if self.trusted_chain is not None:
            holders = chains.get(self.trusted_chain, [])
            if not holders:
                return Decision("wait", f"waiting for a peer on chain {self.trusted_chain[:12]} (from {self.trusted_by})")
            return Decision("adopt", f"{len(holders)} peer(s) on chain {self.trusted_chain[:12]} (from "
                                     f"{self.trusted_by})", self.trusted_chain, [p.node_id for p in holders],
                            trust=self.trusted_by)
        if len(chains) > 1:
            names = ", ".join(f"{c[:12]} ({len(h)} peer(s))" for c, h in sorted(chains.items()))
            return Decision("wait", f"peers are on {len(chains)} networks with this NETWORK_ID: {names}; not "
                                    f"choosing one for you: set CHAIN_ID or JOIN_TOKEN")
        if chains:
            chain_id, holders = next(iter(chains.items()))
            return Decision("adopt", f"{len(holders)} peer(s) on chain {chain_id[:12]}, the only network in sight",
                            chain_id, [p.node_id for p in holders], trust="only_chain")
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
