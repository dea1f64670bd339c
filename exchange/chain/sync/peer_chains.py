"""What peers say of their chain, and what we say of ours.

A peer states its chain id and height in its hello and heartbeats (or, met only over Grenache, in a
`chain_status` message): the founding logic hears it (which chain to adopt), the core's block sync learns how
far the peer is. A peer on another chain with our NETWORK_ID is not linked and is remembered in `conflicts`
(shown in /status). Anyone can name another chain with a fresh key, so what is remembered is bounded by count
and age: at most MAX_CONFLICTS, the most recently heard, none heard longer than CONFLICT_TTL ago; a new chain is
logged at most once per CONFLICT_LOG_INTERVAL, with a count of the others since. Ours goes into our handshakes
and heartbeats (`chain_info`) and, every second, to the nodes we meet only over Grenache.
"""
from __future__ import annotations

import logging
from typing import Callable, TypedDict

from exchange.chain.seats.founding import Founding
from exchange.chain.seats.founding_loop import Conflict
from exchange.chain.ports import ChainHost, ChainNetwork

log = logging.getLogger("exchange.chain")

MAX_CONFLICTS = 32          # peers on other chains remembered (and shown in /status) ...
CONFLICT_TTL = 600.0        # ... each for this many seconds after it was last heard
CONFLICT_LOG_INTERVAL = 10.0    # s between warnings about another network in sight
LINKED_FOLLOWERS = 64       # followers linked to us that a validator sends its proposals and precommits directly


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
        self._warned_at = float("-inf")
        self._unwarned = 0                                  # other networks heard since the last warning
        self._linked: dict[str, None] = {}          # peers on our chain over an open link, in the order they said so

    def chain_info(self) -> ChainInfo:
        """What our handshakes and heartbeats say about our chain."""
        genesis, core = self.host.genesis, self.host.core
        return {"chain_id": genesis.chain_id if genesis else "", "height": core.height if core else 0}

    def on_peer_info(self, node_id: str, public_key: bytes, chain_id: str | None, height: int, *,
                     linked: bool = False) -> bool:
        """A peer's chain (from its hello or heartbeat; `linked`: over a link that is open). False when it is on
        another chain: not to be linked."""
        now = self.clock()
        self.founding.observe(node_id, public_key, chain_id, height, now)
        genesis = self.host.genesis
        mine = genesis.chain_id if genesis else None
        if mine is not None and chain_id and chain_id != mine:
            if chain_id not in {c["chain_id"] for c in self.conflicts.values()}:
                self._warn(node_id, chain_id, height, mine, now)
            self.note_conflict(node_id, {"chain_id": chain_id, "height": height, "seen": now,
                                         "reason": "founded apart (different genesis)"})
            return False
        core = self.host.core
        if linked and mine is not None and chain_id == mine:
            self._linked[node_id] = None
        if core is not None and chain_id == mine:
            core.peer_height(node_id, height, now)
            self.host.schedule_pump()
        return True

    def note_conflict(self, node_id: str, conflict: Conflict) -> None:
        """Remember a peer on another chain (the most recently heard first to stay), within the bounds."""
        now = self.clock()
        self.conflicts.pop(node_id, None)
        self.conflicts[node_id] = {**conflict, "seen": conflict.get("seen", now)}
        self._forget_conflicts(now)

    def conflict_view(self) -> dict[str, Conflict]:
        """The peers on other chains heard within CONFLICT_TTL (at most MAX_CONFLICTS), for /status."""
        self._forget_conflicts(self.clock())
        return dict(self.conflicts)

    def _forget_conflicts(self, now: float) -> None:
        conflicts = self.conflicts
        while conflicts:
            oldest = next(iter(conflicts))
            if len(conflicts) <= MAX_CONFLICTS and now - conflicts[oldest].get("seen", now) <= CONFLICT_TTL:
                return
            del conflicts[oldest]

    def _warn(self, node_id: str, chain_id: str, height: int, mine: str, now: float) -> None:
        """One warning per CONFLICT_LOG_INTERVAL, however many fresh keys name chains of their own."""
        if now - self._warned_at < CONFLICT_LOG_INTERVAL:
            self._unwarned += 1
            return
        others = f" ({self._unwarned} other networks heard since the last warning)" if self._unwarned else ""
        self._warned_at, self._unwarned = now, 0
        log.warning("peer %s is on another network with the same NETWORK_ID %r (chain %s at height %d, "
                    "ours %s): not linking; the two networks were founded apart and are not merged%s",
                    node_id[:12], self.network_id, chain_id[:16], height, mine[:16], others)

    def on_peer_gone(self, node_id: str) -> None:
        self.founding.forget(node_id)
        self._linked.pop(node_id, None)

    def linked_followers(self, validators: set[str]) -> list[str]:
        """The peers on our chain linked to us that are not `validators`, at most LINKED_FOLLOWERS (the longest
        linked first): what a validator sends them grows with them only up to that; the rest hear decisions."""
        found: list[str] = []
        for node_id in self._linked:
            if node_id not in validators:
                found.append(node_id)
                if len(found) == LINKED_FOLLOWERS:
                    break
        return found

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
