"""Real processes: accounts that belong to someone and markets a network agrees on.

- Two users on two nodes, with nothing configured but their nodes' default accounts, trade with each
  other through the CLI, as the README's quick start does.
- A seeded random run of 1,000 orders from accounts on three nodes: every node's positions equal the sums
  of the trade log computed here independently (Decimal), and every asset sums to zero.
- A node whose MARKETS differ from the network's refuses to join it and says why, on its status and log.
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from decimal import Decimal
from typing import Any

from tests.harness import Cluster, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def test_two_users_on_two_nodes_trade_out_of_the_box(cluster: Cluster):
    alice, bob = cluster.chain(2, **FAST)
    sold = alice.cli("order", "sell", "BTC-USD", "1", "--price", "100", "--json")
    assert sold.returncode == 0, sold.stderr
    bought = bob.cli("order", "buy", "BTC-USD", "1", "--price", "100", "--json")
    assert bought.returncode == 0, bought.stderr
    order = json.loads(bought.stdout)["order"]
    assert order["status"] == "filled", order          # two accounts: no self-trade prevention in the way
    wait_until(lambda: converged([alice, bob]), 10)
    trade = alice.get("/trades/BTC-USD")["trades"][-1]
    assert trade["maker_order_id"] == json.loads(sold.stdout)["order"]["id"] and trade["taker_order_id"] == order["id"]
    shown = alice.cli("account", "show")
    assert shown.returncode == 0 and "-1.0000" in shown.stdout, shown.stdout + shown.stderr


def test_positions_equal_the_trade_log_on_every_node(cluster: Cluster):
    nodes = cluster.chain(3, **FAST)
    names = {node.name: [f"{node.name}-{i}" for i in range(3)] for node in nodes}
    for node in nodes:
        node.new_accounts(*names[node.name])
    rng = random.Random(1000)
    batches: dict[str, list] = defaultdict(list)
    for _ in range(1000):
        node = rng.choice(nodes)
        side = rng.choice(["buy", "sell"])
        price = 100 + rng.randint(-8, 8) * (1 if side == "buy" else -1) / 4
        batches[node.name].append({"market": "BTC-USD", "side": side, "type": rng.choice(["limit", "limit", "ioc"]),
                                   "price": f"{price:.2f}", "qty": f"{rng.randint(1, 40) / 10:.1f}",
                                   "account": rng.choice(names[node.name])})
    for node in nodes:
        orders = batches[node.name]
        for start in range(0, len(orders), 200):
            status, body = node.api("POST", "/orders/batch?wait=10", {"orders": orders[start:start + 200]})
            assert status == 200 and all("error" not in r for r in body["results"]), body
    wait_until(lambda: converged(nodes), 30, interval=0.3)
    trades = nodes[0].get("/trades/BTC-USD?limit=10000")["trades"]
    assert len(trades) > 100
    expected: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for trade in trades:
        qty, cost = Decimal(trade["qty"]), Decimal(trade["qty"]) * Decimal(trade["price"])
        expected[trade["buyer"]]["BTC"] += qty
        expected[trade["buyer"]]["USD"] -= cost
        expected[trade["seller"]]["BTC"] -= qty
        expected[trade["seller"]]["USD"] += cost
    assert all(sum(e[a] for e in expected.values()) == 0 for a in ("BTC", "USD"))
    for node in nodes:
        for account, held in expected.items():
            shown = node.get(f"/accounts/{account}")["positions"]
            assert {a: Decimal(v) for a, v in shown.items()} == {"BTC": held["BTC"], "USD": held["USD"]}, \
                (node.name, account, shown, dict(held))


def test_a_node_with_other_markets_refuses_the_network_and_says_why(cluster: Cluster):
    a, = cluster.chain(1, **FAST)
    odd = cluster.node("odd", bootstrap_peers=a.p2p_address, markets="BTC-USD,ETH-USD", **FAST)
    wait_until(lambda: odd.status()["conflicting_networks"], 15, message="the mismatch is reported")
    conflict = next(iter(odd.status()["conflicting_networks"].values()))
    assert "MARKETS" in conflict["reason"] and "BTC-USD" in conflict["reason"]
    assert odd.status()["chain_id"] is None
    assert "not joining chain" in odd.log_tail(100)
    status, body = odd.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "1", "qty": "1"})
    assert status == 503 and body["error"]["code"] == "no_chain_yet"
