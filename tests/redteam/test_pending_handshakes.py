"""Handshakes in progress cannot hold every inbound slot (red-team finding 1, fixed): when inbound is full, the
oldest handshake in progress from the most crowded netgroup makes room for a newcomer."""
from __future__ import annotations

import itertools

from config import load_settings
from node.configs import peer_config
from node.identity import NodeIdentity
from p2p.peers import PeerManager

_ticks = itertools.count()


class Connection:
    """What PeerManager.accept reads of a new inbound TCP connection, before any handshake byte; closing it
    tells the manager, as a real link does."""

    def __init__(self, manager: PeerManager, host: str) -> None:
        self.manager = manager
        self.remote_addr = (host, 40000)
        self.direction = "inbound"
        self.remote_id: str | None = None
        self.provisional = False
        self.connected_at = float(next(_ticks))
        self.closed: str | None = None

    def close(self, reason: str, detail: str = "") -> None:
        self.closed = reason
        self.manager._inbound_pending.discard(self)


def test_handshakes_in_progress_from_a_few_subnets_cannot_lock_out_an_honest_newcomer():
    """Default limits (MAX_PEERS 50, TARGET_OUTBOUND 8: 42 inbound; 4 per IP, 8 per /24). Twelve addresses in six
    /24s open 4 TCP connections each (48) and never finish the Noise handshake: past 42 they only evict their
    own oldest. The next honest connection, from a seventh /24, is still admitted: the oldest silent handshake
    of the most crowded netgroup makes room for it. An attacker who re-opens at once evicts its own again."""
    manager = PeerManager(peer_config(load_settings(env={}, cli={})), NodeIdentity.generate(), verify=NodeIdentity.verify,
                          node_id_for=NodeIdentity.node_id_for)
    assert (manager.limits.max_inbound, manager.limits.per_ip, manager.limits.per_subnet) == (42, 4, 8)
    attackers = [Connection(manager, f"203.0.{subnet}.{host}") for subnet in range(6) for host in (1, 2)
                 for _ in range(4)]
    assert all(manager.accept(c) is None for c in attackers)  # type: ignore[arg-type]  # a double: what accept reads
    assert len(manager._inbound_pending) == 42 and sum(c.closed == "evicted" for c in attackers) == 6
    honest = Connection(manager, "198.51.100.7")
    assert manager.accept(honest) is None, "an honest newcomer is locked out"  # type: ignore[arg-type]  # a double
    assert len(manager._inbound_pending) == 42 and sum(c.closed == "evicted" for c in attackers) == 7
    again = Connection(manager, "203.0.0.9")           # the attacker re-opens: it pushes out its own, not ours
    assert manager.accept(again) is None  # type: ignore[arg-type]  # a double: what accept reads
    assert honest.closed is None and sum(c.closed == "evicted" for c in attackers) == 8
    assert manager.counters["evictions"] == 8
