"""Real processes: 5 nodes replicate one book through the control API, survive a kill -9 and restart,
and the CLI places, shows and cancels orders."""
from __future__ import annotations

import random
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import Cluster, NodeProcess, wait_until

FAST = {"heartbeat_interval": 0.2, "beacon_interval": 0.1, "member_timeout": 2.0}


def start_cluster(cluster: Cluster, count: int) -> list[NodeProcess]:
    first = cluster.node("n0", **FAST)
    nodes = [first] + [cluster.node(f"n{i}", start=False, bootstrap_peers=first.p2p_address, **FAST)
                       for i in range(1, count)]
    for node in nodes[1:]:
        node.start(wait=False)
    for node in nodes[1:]:
        node.wait_ready()
    wait_until(lambda: all(n.status()["exchange"]["members"] == count for n in nodes), 20,
               message="every node sees every member")
    return nodes


def books(nodes: list[NodeProcess], market: str = "BTC-USD") -> list[dict]:
    return [n.get(f"/book/{market}?depth=1000") for n in nodes]


def converged(nodes: list[NodeProcess], expected_events: int | None = None) -> bool:
    views = books(nodes)
    keys = {(v["digest"], v["state_digest"], v["trade_log_hash"], v["final_events"]) for v in views}
    if len(keys) != 1 or any(v["pending_events"] for v in views):
        return False
    return expected_events is None or views[0]["final_events"] == expected_events


def random_order(rng: random.Random) -> dict:
    side = rng.choice(["buy", "sell"])
    kind = rng.choice(["limit"] * 6 + ["ioc", "post_only"])
    price = 100 + rng.randint(-5, 5) * (1 if side == "buy" else -1)
    return {"market": "BTC-USD", "side": side, "type": kind, "price": f"{price}.{rng.randint(0, 99):02d}",
            "qty": f"{rng.randint(1, 30) / 10:.1f}", "account": rng.choice(["a", "b", "c", "d"])}


def test_five_nodes_converge_through_kill_and_restart(cluster):
    nodes = start_cluster(cluster, 5)
    victim = nodes[3]
    accepted: dict[str, int] = {}   # order id -> http status (201 final / 202 pending)
    lock = threading.Lock()
    stop_at = time.monotonic() + 6.0

    def client(index: int) -> None:
        rng = random.Random(index)
        node = nodes[index]
        while time.monotonic() < stop_at:
            try:
                status, body = node.api("POST", "/orders?wait=0.5", random_order(rng), timeout=5)
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)     # the killed node is down for a moment
                continue
            if status in (201, 202):
                with lock:
                    accepted[body["order"]["id"]] = status
            else:
                assert status in (503,), (status, body)

    with ThreadPoolExecutor(len(nodes)) as pool:
        futures = [pool.submit(client, i) for i in range(len(nodes))]
        time.sleep(2.0)
        victim.kill()                                   # kill -9 mid-run
        time.sleep(0.5)
        victim.start(wait=False)                        # same data dir: rebuilds from events.log
        victim.wait_ready()
        for future in futures:
            future.result()
    assert len(accepted) > 50
    assert any(order_id.split("-")[1] == victim.node_id for order_id in accepted)
    wait_until(lambda: converged(nodes), 30, interval=0.2,
               message="all 5 nodes report the same digest, trade log and final event count")
    views = books(nodes)
    assert views[0]["final_events"] >= len(accepted)
    trades = [n.get("/trades/BTC-USD?limit=10000") for n in nodes]
    assert all(t["trades"] == trades[0]["trades"] for t in trades) and trades[0]["trades"]
    ids = [t["id"] for t in trades[0]["trades"]]
    assert len(ids) == len(set(ids))
    for node in nodes:                                  # no accepted order is missing anywhere
        for order_id in accepted:
            status, body = node.api("GET", f"/orders/{order_id}")
            assert status == 200 and body["order"]["final"], (node.name, order_id, status, body)
    log = victim.log_tail(400)
    assert "rebuilt from" in log


def test_cli_places_shows_and_cancels_orders(cluster):
    nodes = start_cluster(cluster, 2)
    a, b = nodes
    placed = a.cli("order", "buy", "BTC-USD", "1.5", "--price", "100.25", "--json")
    assert placed.returncode == 0, placed.stderr
    import json

    order = json.loads(placed.stdout)["order"]
    assert order["status"] == "open" and order["price"] == "100.25" and order["qty"] == "1.5000"
    taker = b.cli("order", "sell", "BTC-USD", "0.5", "--price", "100", "--type", "ioc", "--account", "other")
    assert taker.returncode == 0 and "filled" in taker.stdout and "100.25" in taker.stdout, taker.stdout
    wait_until(lambda: converged(nodes, 2), 10)
    book = b.cli("book", "BTC-USD")
    assert book.returncode == 0 and "100.25" in book.stdout and "1.0000" in book.stdout, book.stdout
    trades = a.cli("trades", "BTC-USD")
    assert trades.returncode == 0 and "0.5000" in trades.stdout and "1 trades in total" in trades.stdout
    cancelled = b.cli("cancel", order["id"])
    assert cancelled.returncode == 0 and "cancel done" in cancelled.stdout, cancelled.stdout + cancelled.stderr
    wait_until(lambda: a.get(f"/orders/{order['id']}")["order"]["status"] == "cancelled", 10)
    again = a.cli("cancel", order["id"])
    assert again.returncode == 1 and "order_closed" in again.stderr
    bad = a.cli("order", "buy", "BTC-USD", "1.5", "--price", "100.255")
    assert bad.returncode == 1 and "price_not_multiple_of_tick" in bad.stderr
    status = a.cli("status")
    assert "exchange" in status.stdout and "watermark" in status.stdout
