"""What peers say of their chain, and what we say of ours.

A peer states its chain id and height in its hello and heartbeats (or, met only over Grenache, in a
`chain_status` message): the founding logic hears it (which chain to adopt), the core's block sync learns how
far the peer is. A peer on another chain with our NETWORK_ID is not linked and is remembered in `conflicts`
(shown in /status; at most MAX_CONFLICTS, the newest, since anyone can name another chain). Ours goes into our
handshakes and heartbeats (`chain_info`) and, every second, to the nodes we meet only over Grenache.
"""
from __future__ import annotations

import logging
from typing import Callable, TypedDict

from exchange.chain.founding import Founding
from exchange.chain.founding_loop import Conflict
from exchange.chain.ports import ChainHost, ChainNetwork

log = logging.getLogger("exchange.chain")

MAX_CONFLICTS = 32          # peers on other chains remembered (and shown in /status)


class ChainInfo(TypedDict):
    """Our chain as our handshakes and heartbeats state it ("" and 0 before we have one)."""

    chain_id: str
    height: int


class PeerChains:
    """The peers' chains as they state them, and ours as we state it (the service's `peer_chains`)."""

    def __init__(self, host: ChainHost, founding: Founding, network: ChainNetwork, network_id: str,
                 clock: Callable[[], float], counters: dict[str, int]) -> None:
        self.host = host
        self.founding = founding
        self.network = network
        self.network_id = network_id
        self.clock = clock
        self.counters = counters            # the service's: status_sent, status_received
        self.conflicts: dict[str, Conflict] = {}        # peers on another chain: node id -> what we know
        self.grenache_members: Callable[[], set[str]] = set     # nodes we reach only over Grenache
        self._status_sent_at = 0.0

    def chain_info(self) -> ChainInfo:
        """What our handshakes and heartbeats say about our chain."""
        genesis, core = self.host.genesis, self.host.core
        return {"chain_id": genesis.chain_id if genesis else "", "height": core.height if core else 0}

    def on_peer_info(self, node_id: str, public_key: bytes, chain_id: str | None, height: int) -> bool:
        """A peer's chain (from its hello or heartbeat). False when it is on another chain: not to be linked."""
        now = self.clock()
        self.founding.observe(node_id, public_key, chain_id, height, now)
        genesis = self.host.genesis
        mine = genesis.chain_id if genesis else None
        if mine is not None and chain_id and chain_id != mine:
            if chain_id not in {c["chain_id"] for c in self.conflicts.values()}:
                log.warning("peer %s is on another network with the same NETWORK_ID %r (chain %s at height %d, "
                            "ours %s): not linking; the two networks were founded apart and are not merged",
                            node_id[:12], self.network_id, chain_id[:16], height, mine[:16])
            self.conflicts.pop(node_id, None)
            self.conflicts[node_id] = {"chain_id": chain_id, "height": height, "seen": now,
                                       "reason": "founded apart (different genesis)"}
            while len(self.conflicts) > MAX_CONFLICTS:      # anyone can name another chain: keep the newest few
                del self.conflicts[next(iter(self.conflicts))]
            return False
        core = self.host.core
        if core is not None and chain_id == mine:
            core.peer_height(node_id, height, now)
            self.host.schedule_pump()
        return True

    def on_peer_gone(self, node_id: str) -> None:
        self.founding.forget(node_id)

    def on_status(self, body: object, sender: str) -> None:
        """A Grenache-only peer's `chain_status` message (linked peers say it in heartbeats)."""
        self.counters["status_received"] += 1
        if type(body) is list and len(body) == 2 and type(body[0]) is str and len(body[0]) in (0, 64) \
                and type(body[1]) is int and 0 <= body[1] < (1 << 62):
            self.on_peer_info(sender, b"", body[0] or None, body[1])

    def tell_grenache_members(self) -> None:
        """Every second, our chain id and height to the nodes we meet only through the Grape."""
        now = self.clock()
        if now - self._status_sent_at < 1.0:
            return
        self._status_sent_at = now
        info = self.chain_info()
        for node_id in self.grenache_members():
            self.network.send(node_id, {"type": "chain_status", "body": [info["chain_id"], info["height"]]})
            self.counters["status_sent"] += 1
