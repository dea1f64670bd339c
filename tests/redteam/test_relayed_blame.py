"""A chain message relayed for someone else is that someone's doing, never the relay's (issue 25).

The unicast router hands a relayed message to the chain with the neighbour it came through as `sender`;
the chain used that name for its transaction budget, its holds and its penalties. So a peer signing relay
wrappers with a throwaway key, sent through one honest validator to another, had the second penalise and
ban the first (five malformed transactions: 5 x 20 points), and chain transactions relayed through a
validator were never metered (validators' relays are exempt). Through an honest follower, the same
wrappers spent the follower's budget and held its link.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from node.identity import NodeIdentity
from tests.redteam.attacker import envelope, honest_nodes_intact, linked, penalties_logged, relayed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_chain_messages_relayed_through_a_validator_are_the_origins_doing_not_the_relays(chain3):
    nodes = chain3
    relay, target = nodes[0], nodes[1]
    chain_id = target.status()["chain_id"]
    mallory = NodeIdentity.generate()

    async def attack() -> None:
        peer = await linked(relay, mallory, chain_id)
        for kind in ("chain_tx", "chain_vote"):
            for _ in range(8):
                peer.send(relayed(mallory, envelope(kind, mallory.node_id, target.node_id, [0])))
        await asyncio.sleep(1.0)
        peer.close()

    asyncio.run(attack())
    time.sleep(0.5)
    assert relay.status()["router"]["events"].get("relayed", 0) >= 16, "the relay passed the wrappers on"
    assert penalties_logged(target, relay.node_id) == [], "the honest relay was blamed"
    assert "malformed_vote:bad_vote" in penalties_logged(target, mallory.node_id), "the origin was not blamed"
    assert target.status()["exchange"].get("relayed_tx_dropped", 0) >= 8, "a follower's tx relayed, not by RPC"
    honest_nodes_intact(nodes)
