"""An honest follower whose API takes a burst of orders beyond what a validator reads from one neighbour
(PEER_TX_BURST, then PEER_TX_RATE a second; here set low) is held by each validator for a while (issue 25): that must cost
it nothing but time. Its links stay up even under fast heartbeats (a held link's silence is ours), nobody
penalises it, and its own resubmission gets every order into a block."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.flood import spam_orders
from tests.harness import Cluster, converged, wait_until
from tests.redteam.attacker import penalties_logged

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ORDERS = 3000
# a budget the API's pace passes on any machine (it took 300-1,500 orders/s on the boxes this ran on)
PEER_TX_RATE, PEER_TX_BURST = 150, 300


async def burst(node, txs) -> dict[int, int]:
    codes: dict[int, int] = {}
    gate = asyncio.Semaphore(64)
    async with aiohttp.ClientSession(headers=node.auth_headers()) as session:
        async def one(tx) -> None:
            async with gate, session.post(node.api_url + "/orders?wait=0", json={"signed": tx.as_json()}) as answer:
                codes[answer.status] = codes.get(answer.status, 0) + 1
        await asyncio.gather(*(one(tx) for tx in txs))
    return codes


def test_a_follower_past_its_budget_is_held_and_loses_nothing(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("burst"))
    try:
        validators = cluster.chain(3, seat_rule="any", debug_api="false", heartbeat_interval=0.2,
                                   peer_tx_rate=PEER_TX_RATE, peer_tx_burst=PEER_TX_BURST)
        follower = cluster.node("honest", bootstrap_peers=validators[0].p2p_address, debug_api="false",
                                heartbeat_interval=0.2)
        wait_until(lambda: converged([*validators, follower]), 30)
        txs = spam_orders(validators[0].status()["chain_id"], ORDERS)
        started = time.monotonic()
        assert asyncio.run(burst(follower, txs)) == {202: ORDERS}
        wait_until(lambda: follower.status()["exchange"].get("committed_own", 0) == ORDERS, 90, interval=1.0,
                   message="every order of the burst in a block")
        took = time.monotonic() - started
        assert sum(v.status()["exchange"]["tx_budget"]["holds"] for v in validators) > 0, \
            f"the burst ({took:.1f}s) never went past the budget: nothing was tested"
        for node in (*validators, follower):
            reasons = node.status()["p2p"].get("close_reasons", {})
            assert not any("heartbeat_timeout" in reason for reason in reasons), (node.name, reasons)
        for validator in validators:
            assert penalties_logged(validator, follower.node_id) == []
        assert follower.connected_ids() >= {v.node_id for v in validators}
    finally:
        cluster.close()
