"""A link held for a component's budget (PeerManager.hold_reading) stays alive (issue 25): the liveness check,
which sees no bytes from it while it is held, counts its silence from the hold's end."""
from __future__ import annotations

import asyncio

import pytest

from tests.unit.p2p.rpc_nodes import link, nodes

pytestmark = pytest.mark.timeout(30)


async def test_a_held_link_is_not_dropped_as_silent_under_fast_heartbeats(tmp_path):
    async with nodes(tmp_path, {}, {}) as (a, b):     # heartbeats every 0.2 s: silent for 0.6 s is dead
        await link(a, b)
        held = a.peers.links[b.node_id]
        a.peers.hold_reading(b.node_id, 1.0)            # the budget's longest hold
        assert held.reading.held
        await asyncio.sleep(0.8)
        assert held.reading.held, "the hold is as long as asked"
        await asyncio.sleep(0.5)
        assert a.peers.links.get(b.node_id) is held and held.is_open, held.close_reason
        await a.rpc.request_peer(b.node_id, "ping")     # and it is read again


async def test_a_penalty_says_why_in_the_peer_row(tmp_path):
    """/status and the console show who is penalised and for what (the last reason given)."""
    async with nodes(tmp_path, {}, {}) as (a, b):
        await link(a, b)
        a.peers.penalize(b.node_id, 5.0, "bad_tx_signature")
        row = a.peers.peers[b.node_id].as_dict()
        assert row["penalty"] == 5.0 and row["penalty_reason"] == "bad_tx_signature"
