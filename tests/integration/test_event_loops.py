"""The daemon runs on uvloop too (EVENT_LOOP=uvloop, or auto when installed): links, gossip and orders."""
from __future__ import annotations

import pytest

from tests.harness import wait_until

pytest.importorskip("uvloop", reason="uvloop is not installed (it comes with the test extra)")


def test_nodes_on_uvloop_and_asyncio_link_and_replicate(cluster):
    a = cluster.node("a", event_loop="uvloop", found_after=0)
    wait_until(lambda: a.status()["chain_id"], 10, message="a founds its chain")
    b = cluster.node("b", event_loop="asyncio", bootstrap_peers=a.p2p_address)
    wait_until(lambda: b.node_id in a.connected_ids(), 10, message="uvloop node links")
    status, body = a.api("POST", "/orders?wait=5", {"market": "BTC-USD", "side": "buy", "type": "limit",
                                                    "price": "100.25", "qty": "1"})
    assert status == 201, body
    order_id = body["order"]["id"]
    wait_until(lambda: b.get(f"/orders/{order_id}")["order"]["status"] == "open", 10,
               message="order final on the asyncio node")
    wait_until(lambda: a.get("/book/BTC-USD")["digest"] == b.get("/book/BTC-USD")["digest"], 10)
    assert "event loop uvloop" in a.log_tail(400)
    assert "event loop asyncio" in b.log_tail(400)
