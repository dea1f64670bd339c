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
  chain-less peers it sees (with a key a link proved) founds a chain *jointly*: every chain-less node it
  sees live with a proven key is a first validator (itself included, at most `max_seats`, smallest ids
  first); the others adopt it when its heartbeats show it (nodes started together end up on one chain,
  each holding a seat). A smaller id that stays chain-less holds up the next FOUNDER_GRACE s, no longer;
- a node with no trust anchor (no `CHAIN_ID`, no join token, no `VALIDATORS`) judges a chain whose
  founder it saw chain-less beside it before adopting it (`judge`): it must list this node among its
  validators, or be full (`max_seats`) of nodes this node has heard; every validator it lists must be a
  node this node has heard. A founder that sat beside us and founded without us, or with keys nobody
  runs, is refused, and the honest nodes found among themselves: a ground id or `MAX_VALIDATORS=1`
  makes a node the founder of its own network only. A chain whose founder was never seen chain-less
  (founded before we started listening) is followed as before: that is the zero-config trust assumption;
- `VALIDATORS` set (a pinned set of node ids): the smallest listed id founds once it is linked to
  every listed node (it needs their keys), with exactly that set, which never changes.

Two nodes that could not see each other may each found a chain; when they meet, their links are
refused (`genesis_mismatch`) and both sides report the other network — never merged silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from exchange.crypto import node_id_for

MAX_PEERS = 1024        # peers' chains remembered: anyone may send a hello, so the map is bounded
MAX_SEATS = 7           # the most first validators a joint founding lists (the default MAX_VALIDATORS)
UNPROVEN_WAIT = 2.0     # s past `found_after` a founder waits for a chain-less peer's key (a link being opened)
REINSPECT_AFTER = 30.0  # s before a chain whose genesis nobody handed over is asked for again (others first)
FOUNDER_GRACE = 5.0     # s the next smallest id gives each smaller chain-less node to found before it does


@dataclass
class PeerChain:
    node_id: str
    public_key: bytes
    chain_id: str | None
    height: int
    seen: float


@dataclass
class Decision:
    action: str                                   # "wait", "adopt", "found" or "inspect" (read a chain's
                                                  # genesis to judge it, adopting nothing yet)
    reason: str = ""
    chain_id: str | None = None
    peers: list[str] = field(default_factory=list)          # who can give us the genesis (adopt; whatever
                                                            # height they claim: anyone can claim the highest)
    validators: list[bytes] = field(default_factory=list)   # the first validator set (found)
    pinned: bool = False
    trust: str = ""                                         # why we adopt it: chain_id, join_token, only_chain,
                                                            # joint_founding


@dataclass(frozen=True)
class Verdict:
    """What a node with no trust anchor makes of a chain's genesis before adopting it."""
    action: str                 # "adopt", "refuse" or "later" (keys it lists not heard yet: asked again)
    reason: str = ""
    joint: bool = False         # it lists this node among its first validators


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
        self.max_seats = MAX_SEATS                # first validators of a joint founding (min(MAX_VALIDATORS, 7))
        self.seen_chainless: dict[bytes, float] = {}    # proven keys of nodes heard with no chain while we had none
        self.heard_keys: dict[bytes, float] = {}        # proven keys of every node heard (-> when last)
        self.judged: dict[str, Verdict] = {}            # chain id -> verdict on its genesis ("adopt" ones only)
        self._later_since: dict[str, float] = {}        # chain id -> when its genesis was first found wanting
        self._unanswered: dict[str, float] = {}         # chain id -> when no holder handed over its genesis
        self.networks: list[tuple[str, int]] = []       # (chain id, peers on it) while two or more are in sight

    def observe(self, node_id: str, public_key: bytes, chain_id: str | None, height: int, now: float) -> None:
        """A peer's chain from its hello or heartbeat. `public_key` may be empty (a hello is judged before the
        link proves the key): the key an open link proved is kept."""
        known = self.peers.pop(node_id, None)
        key = public_key or (known.public_key if known is not None else b"")
        self.peers[node_id] = PeerChain(node_id, key, chain_id or None, max(0, height), now)
        if public_key:      # only a key a link proved: a hello could name anyone
            _remember(self.heard_keys, public_key, now)
            if not chain_id:
                _remember(self.seen_chainless, public_key, now)
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
        self.networks = []
        if len(chains) > 1 and not self.pinned:
            unjudged = [c for c in sorted(chains) if c not in self.judged
                        and now - self._unanswered.get(c, float("-inf")) >= REINSPECT_AFTER]
            if unjudged:        # a chain founded beside us, with us or without us, is judged before we wait
                chain_id = unjudged[0]
                return Decision("inspect", f"peers are on {len(chains)} networks with this NETWORK_ID: reading the "
                                           f"genesis of chain {chain_id[:12]}", chain_id,
                                [p.node_id for p in chains[chain_id]])
            joint = [c for c in sorted(chains) if (v := self.judged.get(c)) is not None and v.joint]
            if len(joint) == 1:
                chain_id = joint[0]
                return Decision("adopt", f"chain {chain_id[:12]} was founded jointly with this node as a validator",
                                chain_id, [p.node_id for p in chains[chain_id]], trust="joint_founding")
        if len(chains) > 1:
            self.networks = sorted(((c, len(h)) for c, h in chains.items()), key=lambda n: (-n[1], n[0]))
            names = ", ".join(f"{c[:12]} ({n} peer(s))" for c, n in self.networks)
            return Decision("wait", f"peers are on {len(chains)} networks with this NETWORK_ID: {names}; not "
                                    f"choosing one for you: set CHAIN_ID=<chain id> (whole ids in /status "
                                    f"`networks_in_sight`) or start with a join token of the one you mean")
        if chains:
            chain_id, holders = next(iter(chains.items()))
            judged = self.judged.get(chain_id)
            if judged is not None and judged.joint:
                return Decision("adopt", f"chain {chain_id[:12]} was founded jointly with this node as a validator",
                                chain_id, [p.node_id for p in holders], trust="joint_founding")
            return Decision("adopt", f"{len(holders)} peer(s) on chain {chain_id[:12]}, the only network in sight",
                            chain_id, [p.node_id for p in holders], trust="only_chain")
        if self.pinned:
            return self._pinned(live)
        if now - self.started < self.found_after:
            return Decision("wait", f"listening for an existing network for {self.found_after:g}s")
        chainless = sorted([self.node_id, *(p.node_id for p in live.values() if p.chain_id is None)])
        unproven = [p.node_id for p in live.values() if p.chain_id is None and len(p.public_key) != 32]
        if unproven and now - self.started < self.found_after + UNPROVEN_WAIT:
            return Decision("wait", f"waiting for {len(unproven)} chain-less peer(s) to prove their key, to found "
                                    f"the network with them")
        # the smallest proven id founds; one that stays chain-less (a ground id that never founds, or a slow
        # node) holds up the next smallest FOUNDER_GRACE s, and a hello without a key not at all
        smaller = sorted(p.node_id for p in live.values()
                         if p.chain_id is None and len(p.public_key) == 32 and p.node_id < self.node_id)
        if smaller and now - self.started < self.found_after + FOUNDER_GRACE * len(smaller):
            return Decision("wait", f"node {smaller[0][:12]} founds the network (smallest id)")
        keys = [self.public_key, *(p.public_key for p in sorted(live.values(), key=lambda p: p.node_id)
                                   if p.chain_id is None and len(p.public_key) == 32)][:max(1, self.max_seats)]
        return Decision("found", f"no network found among {len(chainless)} node(s): founding it with "
                                 f"{len(keys)} of them as its validators", validators=keys)

    def unanswered(self, chain_id: str, now: float) -> None:
        """No holder handed over this chain's genesis: judge the others first (a chain named by strangers who
        never answer must not keep us from one founded with us)."""
        self._unanswered[chain_id] = now
        if len(self._unanswered) > MAX_PEERS:
            del self._unanswered[next(iter(self._unanswered))]

    def judge(self, chain_id: str, founder: bytes, validators: Sequence[bytes], now: float) -> Verdict:
        """May a node with no trust anchor adopt this chain? Only a chain founded beside us is judged (its founder
        was heard with no chain while we had none): it was founded jointly with us, or is full of nodes we heard;
        anything else is a founder making itself the network's (a ground id, MAX_VALIDATORS=1, or keys nobody
        runs). A chain founded before we listened is followed: nothing here can tell it from an honest one."""
        if self.trusted_chain is not None or self.pinned:
            return Verdict("adopt")
        joint = self.public_key in validators
        if founder not in self.seen_chainless:
            verdict = Verdict("adopt", joint=joint)
        else:
            verdict = self._judge_founded_beside_us(chain_id, founder, validators, joint, now)
        if verdict.action == "refuse":
            self.refused.add(chain_id)
        elif verdict.action == "adopt":
            self.judged[chain_id] = verdict
            self._later_since.pop(chain_id, None)
            if len(self.judged) > MAX_PEERS:        # chains are named by whoever links: bounded like the peers
                del self.judged[next(iter(self.judged))]
        return verdict

    def _judge_founded_beside_us(self, chain_id: str, founder: bytes, validators: Sequence[bytes], joint: bool,
                                 now: float) -> Verdict:
        founder_id = node_id_for(founder)[:12]
        if not joint and len(validators) < self.max_seats:
            return Verdict("refuse", f"its founder {founder_id} was chain-less beside this node and founded it "
                                     f"with {len(validators)} validator(s), without this node: a network nobody "
                                     f"here chose; founding with the nodes in sight instead")
        unheard = [k for k in validators if k != self.public_key and k not in self.heard_keys]
        if unheard:
            first = self._later_since.setdefault(chain_id, now)
            if now - first < max(self.found_after, UNPROVEN_WAIT):
                return Verdict("later", f"chain {chain_id[:12]} lists {len(unheard)} validator(s) not heard here yet")
            return Verdict("refuse", f"its founder {founder_id} was chain-less beside this node and lists "
                                     f"{len(unheard)} of its {len(validators)} validator(s) that no node here has "
                                     f"heard: keys nobody runs would be its own seats")
        return Verdict("adopt", joint=joint)

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


def _remember(seen: dict[bytes, float], key: bytes, now: float) -> None:
    """Newest last, at most MAX_PEERS: anyone may open a link with a fresh key."""
    seen.pop(key, None)
    seen[key] = now
    while len(seen) > MAX_PEERS:
        del seen[next(iter(seen))]
