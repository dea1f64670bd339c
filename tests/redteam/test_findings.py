"""Reproductions of what the red team found (tests/redteam/FINDINGS.md). Each is skipped so the suite stays
green; remove the mark to see it fail against the current build."""
from __future__ import annotations

import pytest

from config import load_settings
from node.identity import NodeIdentity
from p2p.peers import PeerManager


class Connection:
    """What PeerManager.accept reads of a new inbound TCP connection, before any handshake byte."""

    def __init__(self, host: str) -> None:
        self.remote_addr = (host, 40000)
        self.direction = "inbound"


@pytest.mark.skip(reason="FINDING 1: handshakes in progress fill every inbound slot and are never evicted")
def test_handshakes_in_progress_from_a_few_subnets_cannot_lock_out_an_honest_newcomer():
    """Default limits (MAX_PEERS 50, TARGET_OUTBOUND 8: 42 inbound; 4 per IP, 8 per /24). Twelve addresses in six
    /24s open 4 TCP connections each and never finish the Noise handshake: all 42 are admitted as pending, the
    next honest connection is refused `too_many_peers`, and nothing is evicted, because eviction only looks at
    open links. Re-opened every HANDSHAKE_TIMEOUT (5 s), this keeps every newcomer out for as long as it runs."""
    manager = PeerManager(load_settings(env={}, cli={}), NodeIdentity.generate(), verify=NodeIdentity.verify,
                          node_id_for=NodeIdentity.node_id_for)
    assert (manager.limits.max_inbound, manager.limits.per_ip, manager.limits.per_subnet) == (42, 4, 8)
    admitted = sum(manager.accept(Connection(f"203.0.{subnet}.{host}")) is None
                   for subnet in range(6) for host in (1, 2) for _ in range(4))
    assert admitted == 42
    assert manager.accept(Connection("198.51.100.7")) is None, "an honest newcomer is locked out"
