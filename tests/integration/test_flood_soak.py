"""`make soak` (issue 25): the floods of test_flood_orders.py and test_flood_gossip.py for a minute each, on real
processes (four validators and a follower where an honest client orders every 200 ms), checked with the common
criteria (`tests/flood.py` `assert_fair`).

- Orders: one peer offering every validator one-order transactions from fresh accounts at 3x and at 10x of
  PEER_TX_RATE for 60 s. Past its budget a validator stops reading it, so it admits about PEER_TX_RATE a second
  whatever is offered; what a minute of that leaves is about 12,000 spam orders resting on every node's book.
- Gossip: a minute of fresh-key notes and hints, 400 KB notes and padded hints among them, and re-requests.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from config import Settings
from node.identity import NodeIdentity
from tests.flood import (ChainWatch, HonestClient, assert_fair, honest_after, honest_baseline, order_flood_for,
                         settled)
from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.integration.test_flood_gossip import gossip_flood_holds

pytestmark = pytest.mark.soak

SECONDS = 60.0
# the mempool's bytes (64 MiB) and what the flood leaves resting: about a minute of the budget (200 a second, ~12,000
# orders, plus what the validators read of their sockets after it) at about two kilobytes each on every node
RSS_GROWTH_MB = 64 + 20_000 * 2 / 1024


@pytest.mark.timeout(600)
@pytest.mark.parametrize("level", [3, 10])
def test_a_minute_of_order_flood_past_the_budget_leaves_the_exchange_fair(cluster: Cluster, level: int) -> None:
    validators = cluster.chain(4, seat_rule="any")
    follower = cluster.node("honest", bootstrap_peers=validators[0].p2p_address)
    nodes = [*validators, follower]
    wait_until(lambda: converged(nodes), 30)
    chain_id = validators[0].status()["chain_id"]
    flooder = NodeIdentity.generate()
    rate = level * Settings().peer_tx_rate
    client = HonestClient(follower, open_loop=True)
    try:
        with ChainWatch(nodes, interval=1.0) as watch:
            flood_start, flood_end, sent = asyncio.run(_orders(client, validators, flooder, chain_id, rate))
    finally:
        client.stop.set()
        client.join(40)
    wait_until(lambda: converged(nodes), 60, message="the flood's orders ordered everywhere")
    report = assert_fair(client, watch, (flood_start, flood_end), honest=nodes,
                         attackers={flooder.node_id: validators}, p99_floor=1.0, rss_growth_mb=RSS_GROWTH_MB)
    print(f"\n{level}x: {sent} spam transactions offered in {SECONDS:g} s, read through "
          f"{flood_end - flood_start:.0f} s after the start; {report.line()}")


async def _orders(client: HonestClient, validators: list[NodeProcess], flooder: NodeIdentity, chain_id: str,
                  rate: float) -> tuple[float, float, int]:
    flood_start = await honest_baseline(client, orders=50)
    sent = await order_flood_for(validators, flooder, chain_id, rate, SECONDS)
    flood_end = await asyncio.to_thread(settled, lambda: _budgets(validators))
    await honest_after(client, flood_end, orders=50)
    return flood_start, flood_end, sent


def _budgets(validators: list[NodeProcess]) -> list[tuple[Any, Any]]:
    """What each validator's transaction budget has held and dropped: still while it reads nothing more of a flood."""
    return [(b["holds"], b["dropped_total"]) for b in (v.status()["exchange"]["tx_budget"] for v in validators)]


@pytest.mark.timeout(600)
def test_a_minute_of_broadcast_spam_and_re_requests_stops_at_the_first_hop(cluster: Cluster) -> None:
    gossip_flood_holds(cluster, SECONDS, big_each=200)
