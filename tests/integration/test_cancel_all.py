"""Real processes: pulling quotes at once, as a market maker does.

- `exchange-node cancel-all` with and without a market and side cancels exactly the account's orders in
  that scope, in one signed operation, and every node agrees.
- The dead-man's switch fires from block time after the node its owner used was killed -9: the
  validators cancel the account's orders at the armed time, and not before; another account's stay.
- A good-til-time order leaves the book on every node at its time.
"""
from __future__ import annotations

import json
import time
from typing import Any

from tests.crossing import open_ids
from tests.harness import Cluster, NodeProcess, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _place(node: NodeProcess, side: str, market: str, price: str, *extra: str) -> dict:
    done = node.cli("order", side, market, "1", "--price", price, "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["order"]


def _order(node: NodeProcess, order_id: str) -> dict:
    return node.get(f"/orders/{order_id}")["order"]


def test_cancel_all_through_the_cli_cancels_its_scope_on_every_node(cluster: Cluster):
    nodes = cluster.chain(2, markets="BTC-USD,ETH-USD", **FAST)
    node = nodes[0]
    buys = [_place(node, "buy", "BTC-USD", price) for price in ("90", "91")]
    sell = _place(node, "sell", "BTC-USD", "110")
    other = _place(node, "buy", "ETH-USD", "5")
    account = buys[0]["account"]
    other_user = _place(nodes[1], "buy", "BTC-USD", "89")
    done = node.cli("cancel-all", "--market", "BTC-USD", "--side", "buy", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["final"] and answer["cancel_all"]["status"] == "done" and answer["cancel_all"]["cancelled"] == 2
    assert open_ids(node, account) == {sell["id"], other["id"]}
    for order in buys:
        assert _order(node, order["id"])["reason"] == "cancel_all"
    shown = node.cli("cancel-all")
    assert shown.returncode == 0 and "2 cancelled" in shown.stdout, shown.stdout + shown.stderr
    wait_until(lambda: converged(nodes), 10)
    for each in nodes:
        assert open_ids(each, account) == set() and open_ids(each, other_user["account"]) == {other_user["id"]}
    assert node.get(f"/accounts/{account}")["max_open_orders"] == 1000       # the default cap of a new network
    status, body = node.api("POST", "/orders/cancel-all", {"market": "NOPE-USD"})
    assert status == 422 and body["error"]["code"] == "unknown_market", body
    status, body = node.api("POST", "/orders/cancel-all", {"side": "both"})
    assert status == 422 and body["error"]["field"] == "side", body


def test_the_dead_mans_switch_fires_after_its_clients_node_is_killed(cluster: Cluster):
    validators = cluster.chain(4, **FAST)
    client_node = cluster.node("maker", bootstrap_peers=validators[0].p2p_address, **FAST)
    wait_until(lambda: converged([*validators, client_node]), 20)
    quotes = [_place(client_node, side, "BTC-USD", price) for side, price in (("buy", "95"), ("sell", "105"))]
    account = quotes[0]["account"]
    bystander = _place(validators[1], "buy", "BTC-USD", "94")
    armed = client_node.cli("cancel-after", "3", "--json")
    assert armed.returncode == 0, armed.stderr
    at = json.loads(armed.stdout)["schedule_cancel"]["at"]
    assert validators[0].get(f"/accounts/{account}")["cancel_all_at"] == at
    wait_until(lambda: open_ids(validators[2], account) == {q["id"] for q in quotes}, 5)
    client_node.kill()                                        # kill -9: nothing of the client is left to act
    assert time.time() * 1000 < at and open_ids(validators[2], account), "the switch was due before the kill"
    wait_until(lambda: not open_ids(validators[2], account), 15, message="the switch fires from block time")
    for node in validators:
        wait_until(lambda: not open_ids(node, account), 5)
        for quote in quotes:
            order = _order(node, quote["id"])
            assert (order["status"], order["reason"]) == ("cancelled", "scheduled_cancel"), order
        assert node.get(f"/accounts/{account}")["cancel_all_at"] is None
        assert open_ids(node, bystander["account"]) == {bystander["id"]}
    assert time.time() * 1000 >= at


def test_a_refreshed_switch_does_not_fire_and_a_cleared_one_never_does(cluster: Cluster):
    node, peer = cluster.chain(2, **FAST)
    quote = _place(node, "buy", "BTC-USD", "95")
    wait_until(lambda: open_ids(peer, quote["account"]) == {quote["id"]}, 5)
    assert node.cli("cancel-after", "2").returncode == 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:                        # the maker is alive: it keeps moving the switch
        assert node.cli("cancel-after", "2").returncode == 0
        assert open_ids(peer, quote["account"]) == {quote["id"]}
    cleared = node.cli("cancel-after", "--clear", "--json")
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["schedule_cancel"]["status"] == "cleared"
    height = peer.status()["height"]
    wait_until(lambda: peer.status()["height"] >= height + 15, 20, message="blocks go on")
    assert open_ids(peer, quote["account"]) == {quote["id"]}
    refused = node.cli("cancel-after", "3", "--clear")
    assert refused.returncode != 0


def test_a_good_til_time_order_leaves_every_book_at_its_time(cluster: Cluster):
    nodes = cluster.chain(2, **FAST)
    placed = time.time()
    order = _place(nodes[0], "sell", "BTC-USD", "150", "--until", "1.5")
    keeper = _place(nodes[0], "sell", "BTC-USD", "151")
    assert order["until"] >= int(placed * 1000) + 1500
    for node in nodes:
        wait_until(lambda: _order(node, order["id"])["status"] == "cancelled", 15)
        gone = _order(node, order["id"])
        assert gone["reason"] == "good_til_time" and _order(node, keeper["id"])["status"] == "open"
    assert time.time() - placed >= 1.5
    status, body = nodes[0].api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "type": "ioc",
                                                    "price": "1", "qty": "1", "until": int(placed * 1000) + 60_000})
    assert status == 422 and body["error"]["code"] == "until_not_resting", body
