"""Real processes: five nodes form one chain by themselves, trade through the control API under load,
survive a kill -9 and restart, and the CLI places, shows and cancels orders.

A history of every API answer is kept; at the end every node must agree with all of it: each order
answered 201 (final) is final everywhere with the same status it was reported with, or a later one
(a resting order may fill later, never un-fill), and each order answered 201 or 202 exists everywhere.
"""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.harness import Cluster, NodeProcess, converged, wait_until

FAST: dict[str, Any] = {"heartbeat_interval": 0.2}
LATER = {"open": {"open", "partially_filled", "filled", "cancelled"},
         "partially_filled": {"partially_filled", "filled", "cancelled"},
         "filled": {"filled"}, "cancelled": {"cancelled"}, "rejected": {"rejected"}}


def random_order(rng: random.Random) -> dict:
    side = rng.choice(["buy", "sell"])
    kind = rng.choice(["limit"] * 6 + ["ioc", "post_only"])
    price = 100 + rng.randint(-5, 5) * (1 if side == "buy" else -1)
    return {"market": "BTC-USD", "side": side, "type": kind, "price": f"{price}.{rng.randint(0, 99):02d}",
            "qty": f"{rng.randint(1, 30) / 10:.1f}"}


def check_history(nodes: list[NodeProcess], answers: dict[str, tuple[int, dict]]) -> None:
    for node in nodes:
        for order_id, (status, order) in answers.items():
            code, body = node.api("GET", f"/orders/{order_id}")
            assert code == 200, (node.name, order_id, code, body)
            now = body["order"]["status"]
            if status == 201:
                assert now in LATER[order["status"]], (node.name, order_id, order["status"], now)
                assert body["order"]["qty"] == order["qty"] and body["order"]["price"] == order["price"]


def test_five_nodes_trade_and_agree_through_kill_and_restart(cluster: Cluster):
    nodes = cluster.chain(5, **FAST)
    victim = nodes[3]
    answers: dict[str, tuple[int, dict]] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + 6.0

    def client(index: int) -> None:
        rng = random.Random(index)
        node = nodes[index]
        while time.monotonic() < stop_at:
            try:
                status, body = node.api("POST", "/orders?wait=1", random_order(rng), timeout=5)
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)     # the killed node is down for a moment
                continue
            if status in (201, 202):
                with lock:
                    answers[body["order"]["id"]] = (status, body["order"])
            else:
                assert status == 503, (status, body)

    with ThreadPoolExecutor(len(nodes)) as pool:
        futures = [pool.submit(client, i) for i in range(len(nodes))]
        time.sleep(2.0)
        victim.kill()                                   # kill -9 mid-run
        time.sleep(0.5)
        victim.start(wait=False)                        # same data dir: replays its blocks, catches up
        victim.wait_ready()
        for future in futures:
            future.result()
    assert len(answers) > 50
    assert sum(1 for status, _ in answers.values() if status == 201) > 25
    wait_until(lambda: converged(nodes), 30, interval=0.3,
               message="all 5 nodes at one height with the same state, book and trades")
    check_history(nodes, answers)
    trades = nodes[0].get("/trades/BTC-USD?limit=10000")["trades"]
    assert trades and len({t["id"] for t in trades}) == len(trades)
    assert "blocks replayed" in victim.log_tail(400)


def test_cli_places_shows_and_cancels_orders(cluster: Cluster):
    a, b = cluster.chain(2, **FAST)
    placed = a.cli("order", "buy", "BTC-USD", "1.5", "--price", "100.25", "--json")
    assert placed.returncode == 0, placed.stderr
    order = json.loads(placed.stdout)["order"]
    assert order["status"] == "open" and order["price"] == "100.25" and order["qty"] == "1.5000"
    taker = b.cli("order", "sell", "BTC-USD", "0.5", "--price", "100", "--type", "ioc")
    assert taker.returncode == 0 and "filled" in taker.stdout and "100.25" in taker.stdout, taker.stdout
    wait_until(lambda: converged([a, b]), 10)
    book = b.cli("book", "BTC-USD")
    assert book.returncode == 0 and "100.25" in book.stdout and "1.0000" in book.stdout, book.stdout
    trades = a.cli("trades", "BTC-USD")
    assert trades.returncode == 0 and "0.5000" in trades.stdout, trades.stdout
    refused = b.cli("cancel", order["id"])           # b does not hold a's account key
    assert refused.returncode == 1 and "not_owner" in refused.stderr, refused.stdout + refused.stderr
    cancelled = a.cli("cancel", order["id"])
    assert cancelled.returncode == 0 and "done" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    wait_until(lambda: b.get(f"/orders/{order['id']}")["order"]["status"] == "cancelled", 10)
    again = a.cli("cancel", order["id"])
    assert again.returncode == 1 and "order_closed" in again.stderr
    bad = a.cli("order", "buy", "BTC-USD", "1.5", "--price", "100.255")
    assert bad.returncode == 1 and "price_not_multiple_of_tick" in bad.stderr
    status = a.cli("status")
    assert status.returncode == 0 and "validator" in status.stdout, status.stdout
