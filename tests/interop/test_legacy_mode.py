"""Mode 3, legacy: a Grenache-only node (P2P_ENABLED=false, DISCOVERY_GRENACHE=true) trades with hybrid
nodes, with real grapes (Node.js).

Two hybrid nodes form a chain over their link; a third node opens no peer port at all and reaches them
only through the grapes: it adopts their chain, follows its certified blocks, and its users' orders go to
the validators and become final like anyone's. Orders placed on every node trade with each other, the
digests are equal, and the legacy node never holds a validator seat. Then two hybrid nodes whose direct
TCP is impossible (each listens where the other cannot reach) but that share a grape trade too: orders
flow via Grenache and the metrics say so.
"""
from __future__ import annotations

from typing import Any


import pytest

from tests.harness import Cluster, NodeProcess, converged, wait_until

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "discovery_grenache": "true"}


def place(node: NodeProcess, side: str, price: str, qty: str = "1") -> dict:
    status, body = node.api("POST", "/orders?wait=10", {"market": "BTC-USD", "side": side, "price": price, "qty": qty})
    assert status == 201, (node.name, status, body)
    return body["order"]


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process listens on (from /proc)."""
    import os

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:        # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_a_legacy_node_trades_with_hybrid_nodes_through_grenache(cluster: Cluster, grapes) -> None:
    a, b = cluster.chain(2, seat_rule="any", grape_urls=grapes[0], **FAST)
    legacy = cluster.node("legacy", p2p_enabled="false", grape_urls=grapes[1], **FAST)
    wait_until(lambda: legacy.status()["chain_id"] == a.status()["chain_id"], 40, interval=0.3,
               message="the legacy node adopts the hybrid nodes' chain through Grenache")
    wait_until(lambda: legacy.status()["height"] >= a.status()["height"] - 1, 30, interval=0.3)
    assert legacy.status()["role"] == "follower" and legacy.status()["peers_connected"] == 0
    assert legacy.node_id not in a.status()["validators"]

    sell = place(a, "sell", "100", "2")
    place(legacy, "buy", "100")                       # legacy buys from a hybrid node
    place(b, "buy", "100")
    sold = place(legacy, "sell", "101")
    bought = place(b, "buy", "101")                   # a hybrid node buys from the legacy node
    assert bought["status"] == "filled"
    wait_until(lambda: converged([a, b, legacy]), 30, interval=0.3,
               message="the same book, trades and state on all three")
    trades = legacy.get("/trades/BTC-USD")["trades"]
    assert {t["maker_order_id"] for t in trades} == {sell["id"], sold["id"]} and len(trades) == 3
    # the legacy node listens only for its API and its Grenache endpoint: no peer port
    assert legacy.proc is not None
    ports = listening_ports(legacy.proc.pid)
    api_port = int(legacy.api_url.rsplit(":", 1)[1])
    grenache_port = legacy.status()["router"]["grenache"]["port"]
    assert ports == {api_port, grenache_port}, ports
    assert legacy.status()["listen"].startswith("legacy")


def test_walled_hybrid_nodes_trade_over_grenache(cluster: Cluster, grapes) -> None:
    walled: dict[str, Any] = {"p2p_host": "127.0.0.2", "grenache_messages_host": "127.0.0.1", **FAST}
    a = cluster.node("a", found_after=0, grape_urls=grapes[0], **walled)
    wait_until(lambda: a.status()["chain_id"], 15)
    b = cluster.node("b", grape_urls=grapes[1], **walled)
    wait_until(lambda: b.status()["chain_id"] == a.status()["chain_id"], 40, interval=0.3,
               message="b adopts a's chain over Grenache (no TCP path between them)")
    assert a.connected_ids() == set() and b.connected_ids() == set()
    place(a, "sell", "100")
    taken = place(b, "buy", "100")
    assert taken["status"] == "filled"
    wait_until(lambda: converged([a, b]), 30, interval=0.3)
    paths = b.get("/routing")["message_paths"]
    assert paths["unicast_sent"]["grenache"] > 0 and paths["unicast_received"]["grenache"] > 0, paths
    assert paths["broadcast_received"]["grenache"] > 0, paths   # certified blocks reach b over Grenache


def test_trading_goes_on_over_links_when_the_grapes_die(cluster: Cluster, grapes) -> None:
    """Hybrid nodes found through the grapes and linked: every grape is killed mid-run; orders keep becoming
    final over the links and none accepted is lost."""
    nodes = cluster.chain(3, seat_rule="any", grape_urls=grapes[0], **FAST)
    accepted = []
    for i, node in enumerate(nodes * 4):
        accepted.append(place(node, "buy" if i % 2 else "sell", f"{100 + i % 3}"))
        if i == 5:
            grapes.stop()                            # every grape, by PID
    wait_until(lambda: converged(nodes), 30, interval=0.3)
    for node in nodes:
        for order in accepted:
            assert node.get(f"/orders/{order['id']}")["order"]["id"] == order["id"]
