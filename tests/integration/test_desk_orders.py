"""Real processes: a stop order, reduce-only, and an atomic batch, as a desk uses them through the CLI and API.

- A reduce-only stop-market sell (`order sell ... --type stop_market --trigger 95 --reduce-only`) waits
  untriggered, then fires in the very block whose trade crosses 95, on both nodes: it sells only what the
  account holds (the position ends flat, never short), and its fill is in the crossing trade's block.
- A node that joins after the blocks holding two waiting triggers were compacted away installs a certified
  snapshot that carries them, and fires the crossed one exactly as the others do.
- An atomic batch (`POST /orders/batch` with `"atomic": true`) that names an unknown order is refused whole with
  that reason and changes nothing on any node; the same batch without it cancels, places and replaces together
  (the state machine's own all-or-nothing judgement, for a batch a proposer puts in a block anyway, is
  tests/unit/chain/test_state_triggers.py's).
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.harness import Cluster, NodeProcess, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}


def _order(node: NodeProcess, *args: str) -> dict:
    done = node.cli("order", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["order"]


def _btc(node: NodeProcess, account: str) -> Decimal:
    return Decimal(node.get(f"/accounts/{account}")["positions"]["BTC"])


def test_a_reduce_only_stop_fires_in_the_crossing_block_on_every_node(cluster: Cluster):
    desk, other = cluster.chain(2, **FAST)
    _order(other, "sell", "BTC-USD", "2", "--price", "100")
    bought = _order(desk, "buy", "BTC-USD", "2", "--type", "market")
    account = bought["account"]
    assert _btc(desk, account) == 2
    stop = _order(desk, "sell", "BTC-USD", "5", "--type", "stop_market", "--trigger", "95", "--reduce-only")
    assert (stop["status"], stop["trigger_price"], stop["reduce_only"]) == ("untriggered", "95.00", True)
    _order(other, "buy", "BTC-USD", "10", "--price", "95")
    wait_until(lambda: converged([desk, other]), 10)
    assert other.get(f"/orders/{stop['id']}")["order"]["status"] == "untriggered"
    crossing = _order(desk, "sell", "BTC-USD", "1", "--price", "95")      # trades at 95: the stop's block
    assert crossing["status"] == "filled"
    wait_until(lambda: converged([desk, other]), 10)
    for node in (desk, other):
        fired = node.get(f"/orders/{stop['id']}")["order"]
        assert (fired["status"], fired["type"], fired["qty"]) == ("filled", "market", "1.0000"), fired
        assert _btc(node, account) == 0                                  # flat: never short
        trades = {t["taker_order_id"]: t for t in node.get("/trades/BTC-USD?limit=10")["trades"]}
        assert trades[stop["id"]]["height"] == trades[crossing["id"]]["height"]
        assert trades[stop["id"]]["price"] == "95.00"


def test_an_atomic_batch_changes_all_or_nothing_on_every_node(cluster: Cluster, tmp_path: Path):
    desk, other = cluster.chain(2, **FAST)
    bid = _order(desk, "buy", "BTC-USD", "1", "--price", "90")
    ask = _order(desk, "sell", "BTC-USD", "1", "--price", "110")
    account = bid["account"]
    batch = [{"op": "cancel", "market": "BTC-USD", "order_id": bid["id"]},
             {"market": "BTC-USD", "side": "buy", "price": "91", "qty": "1"},
             {"op": "replace", "market": "BTC-USD", "order_id": "0" * 32, "price": "109", "qty": "1"}]
    status, body = desk.api("POST", "/orders/batch?wait=5", {"atomic": True, "orders": batch})
    assert status == 200 and len(body["results"]) == 4, body          # the marker's result first
    assert {r["error"]["code"] for r in body["results"]} == {"unknown_order"}, body   # the node refuses it whole
    batch[2]["order_id"] = ask["id"]
    status, body = desk.api("POST", "/orders/batch?wait=5", {"atomic": True, "orders": batch})
    assert status == 200 and body["results"][0]["result"]["outcome"] == "accepted", body
    wait_until(lambda: converged([desk, other]), 10)
    for node in (desk, other):
        open_now = node.get(f"/orders?account={account}&status=open")["orders"]
        assert sorted(o["price"] for o in open_now) == ["109.00", "91.00"], open_now
        assert node.get(f"/orders/{bid['id']}")["order"]["status"] == "cancelled"
    status, body = desk.api("POST", "/orders/batch", {"atomic": True, "orders": [{"op": "cancel_all"}]})
    assert status == 422 and body["error"]["code"] == "invalid_op", body
    ops = [{"op": "cancel", "market": "BTC-USD", "order_id": o["id"]} for o in open_now]
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([*ops, {"op": "cancel", "market": "BTC-USD", "order_id": bid["id"]}]))
    refused = desk.cli("batch", str(path))                                # bid is cancelled already
    assert refused.returncode == 1 and "not_open" in refused.stderr, refused.stderr
    path.write_text(json.dumps([*ops, {"market": "BTC-USD", "side": "buy", "price": "92", "qty": "1"}]))
    done = desk.cli("batch", str(path))
    assert done.returncode == 0, done.stderr
    assert [o["price"] for o in desk.get(f"/orders?account={account}&status=open")["orders"]] == ["92.00"]


SNAPSHOTS: dict[str, Any] = {**FAST, "snapshot_interval": 20, "keep_blocks": 10, "empty_block_interval": 0.05}


def _post(node: NodeProcess, **fields: str) -> dict:
    """An order through the API (quicker than a CLI process), final."""
    status, body = node.api("POST", "/orders?wait=5", {"market": "BTC-USD", **fields})
    assert status == 201 and body["final"], body
    return dict(body["order"])


def test_a_node_that_joined_from_a_snapshot_fires_the_waiting_triggers_the_same(cluster: Cluster):
    desk, other = cluster.chain(2, seat_rule="any", **SNAPSHOTS)
    _post(other, side="sell", qty="1", price="100")
    _post(desk, side="buy", qty="1", price="100")                  # the last trade price: 100
    stop = _post(desk, side="buy", qty="1", type="stop_market", trigger_price="105")
    limit = _post(other, side="sell", qty="1", type="stop_limit", trigger_price="90", price="89")
    wait_until(lambda: desk.status()["storage"]["blocks"]["first_index"] > 30, 30, interval=0.2,
               message="the blocks holding the triggers are compacted away")
    late = cluster.node("late", bootstrap_peers=desk.p2p_address, **SNAPSHOTS)
    wait_until(lambda: converged([desk, other, late]), 30, interval=0.3, message="the late node follows the chain")
    assert "installed a certified snapshot" in late.log_tail(400)
    for order in (stop, limit):
        assert late.get(f"/orders/{order['id']}")["order"] == desk.get(f"/orders/{order['id']}")["order"]
        assert late.get(f"/orders/{order['id']}")["order"]["status"] == "untriggered"
    _post(other, side="sell", qty="3", price="120")
    _post(other, side="sell", qty="1", price="106")
    crossing = _post(desk, side="buy", qty="1", price="106")
    wait_until(lambda: converged([desk, other, late]), 15, interval=0.3)
    views = [node.get(f"/orders/{stop['id']}")["order"] for node in (desk, other, late)]
    assert views[0]["status"] == "filled" and views[0] == views[1] == views[2], views
    for node in (desk, other, late):
        trades = {t["taker_order_id"]: t for t in node.get("/trades/BTC-USD?limit=10")["trades"]}
        assert (trades[stop["id"]]["height"], trades[stop["id"]]["price"]) == (trades[crossing["id"]]["height"],
                                                                              "120.00")
        assert node.get(f"/orders/{limit['id']}")["order"]["status"] == "untriggered"
