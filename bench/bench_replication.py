"""Replicated exchange on real processes: 5 nodes on loopback (heartbeat and beacons every 100 ms).

1. Finality latency: an order submitted at one node (POST /orders?wait=0 returns once it is durable)
   until it is final on all 5 nodes. Each node stamps the wall-clock time an event became final
   (`final_at` in GET /orders/{id}); one host, so the clocks agree. p50/p99/max.
2. Sustained replicated throughput: clients post orders to all 5 nodes at once for a while; orders/s
   accepted (201/202), then the time until every node reports the same digest and final count.
3. Catch-up: one node is stopped, orders are placed at the others for a while, the node restarts; time
   from its restart until it reports the same digest and final count as the rest.

`python -m bench replication [--quick]`
"""
from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.table import print_table
from tests.harness import Cluster, NodeProcess, wait_until

NODE_SETTINGS = {"heartbeat_interval": 0.1, "beacon_interval": 0.1, "log_level": "WARNING"}


def order(rng: random.Random) -> dict:
    side = rng.choice(["buy", "sell"])
    price = 1000 + rng.randint(-20, 20)
    return {"market": "BTC-USD", "side": side, "type": rng.choice(["limit"] * 8 + ["ioc"]),
            "price": f"{price}.{rng.randint(0, 99):02d}", "qty": f"{rng.randint(1, 50) / 10:.1f}",
            "account": f"acct{rng.randint(0, 20)}"}


def start_nodes(cluster: Cluster, count: int) -> list[NodeProcess]:
    first = cluster.node("n0", **NODE_SETTINGS)
    rest = [cluster.node(f"n{i}", start=False, bootstrap_peers=first.p2p_address, **NODE_SETTINGS)
            for i in range(1, count)]
    for node in rest:
        node.start(wait=False)
    for node in rest:
        node.wait_ready()
    nodes = [first] + rest
    wait_until(lambda: all(n.status()["exchange"]["members"] == count for n in nodes), 30)
    return nodes


def state(node: NodeProcess) -> tuple:
    view = node.get("/book/BTC-USD?depth=0")
    return view["state_digest"], view["trade_log_hash"], view["final_events"], view["pending_events"]


def converged(nodes: list[NodeProcess]) -> bool:
    states = [state(n) for n in nodes]
    return len({s[:3] for s in states}) == 1 and not any(s[3] for s in states)


def first_link_after(node: NodeProcess, since: float) -> float | None:
    """Wall time of the first 'peer connected' line the node logged after `since` (its reconnect)."""
    import calendar

    for line in node.log_path.read_text(errors="replace").splitlines():
        if "peer connected" not in line:
            continue
        stamp, millis = line.split(" ", 1)[0].rstrip("Z").split(".")
        wall = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000
        if wall >= since - 0.001:
            return wall
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


JSON = {"Content-Type": "application/json"}


async def post(session: aiohttp.ClientSession, node: NodeProcess, body: dict) -> tuple[int, dict]:
    # orjson on the client side too: the client shares the two cores with the five nodes
    async with session.post(node.api_url + "/orders?wait=0", data=orjson.dumps(body), headers=JSON | node.auth_headers()) as response:
        return response.status, orjson.loads(await response.read())


async def latency_run(nodes: list[NodeProcess], count: int, rate: float) -> list[float]:
    rng = random.Random(1)
    submitted: list[tuple[str, float]] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            node = rng.choice(nodes)
            started = time.time()
            status, body = await post(session, node, order(rng))
            assert status in (201, 202), body
            submitted.append((body["order"]["id"], started))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.sleep(1.0)
        latencies = []
        for order_id, started in submitted:
            finals = []
            for node in nodes:
                async with session.get(f"{node.api_url}/orders/{order_id}", headers=node.auth_headers()) as response:
                    finals.append(orjson.loads(await response.read())["order"].get("final_at"))
            if all(finals):
                latencies.append(max(finals) - started)
    return latencies


async def throughput_run(nodes: list[NodeProcess], seconds: float, concurrency: int,
                         batch: int = 1) -> tuple[int, int, float]:
    """Clients post single orders (batch=1, POST /orders) or batches (POST /orders/batch)."""
    accepted = failed = 0
    stop = time.monotonic() + seconds

    async def client(node: NodeProcess, seed: int, session: aiohttp.ClientSession) -> None:
        nonlocal accepted, failed
        rng = random.Random(seed)
        while time.monotonic() < stop:
            if batch == 1:
                status, _ = await post(session, node, order(rng))
                good = int(status in (201, 202))
            else:
                body = {"orders": [order(rng) for _ in range(batch)]}
                async with session.post(node.api_url + "/orders/batch", data=orjson.dumps(body),
                                        headers=JSON | node.auth_headers()) as response:
                    status = response.status
                    results = orjson.loads(await response.read())["results"] if status == 200 else []
                good = sum(1 for r in results if "order" in r)
            accepted, failed = accepted + good, failed + batch - good
            if status == 503:                       # overloaded: back off as a real client would
                await asyncio.sleep(0.2)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(client(node, i * 100 + j, session) for i, node in enumerate(nodes)
                               for j in range(concurrency)))
        elapsed = time.monotonic() - started
    return accepted, failed, elapsed


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    base = Path(tempfile.mkdtemp(prefix="bench-replication-"))
    cluster = Cluster(base)
    try:
        nodes = start_nodes(cluster, 5)
        # 1. finality latency at a light load
        count = 60 if quick else 300
        latencies = asyncio.run(latency_run(nodes, count, rate=20.0))
        ms = [v * 1000 for v in latencies]
        print_table("finality latency: submit at one node -> final on all 5 (ms)",
                    ["orders", "final on all", "p50", "p90", "p99", "max", "goal p99"],
                    [[count, len(ms), statistics.median(ms), percentile(ms, 0.9), percentile(ms, 0.99), max(ms),
                      "<= 300"]])
        wait_until(lambda: converged(nodes), 30, interval=0.2)

        # 2. sustained replicated throughput
        seconds = 5.0 if quick else 15.0
        rows = []
        runs = [(8, 1), (2, 50)] if quick else [(4, 1), (16, 1), (2, 50), (4, 100)]
        for concurrency, batch in runs:
            before = state(nodes[0])[2]
            accepted, failed, elapsed = asyncio.run(throughput_run(nodes, seconds, concurrency, batch))
            load_end = time.monotonic()
            wait_until(lambda: converged(nodes), 120, interval=0.1)
            settle = time.monotonic() - load_end
            after = state(nodes[0])[2]
            rows.append(["POST /orders" if batch == 1 else f"POST /orders/batch x{batch}", 5 * concurrency,
                         accepted, failed, accepted / elapsed, after - before, settle, ">= 2,000/s"])
        print_table("sustained replicated throughput: 5 nodes, clients posting to all at once, books converged",
                    ["request", "in flight", "accepted", "refused", "orders/s", "final events",
                     "converged after load (s)", "goal"], rows)

        # 3. catch-up after being offline (a fresh cluster, so the history is just what it missed)
        cluster.close()
        cluster = Cluster(base / "catchup")
        nodes = start_nodes(cluster, 5)
        victim = nodes[4]
        others = nodes[:4]
        victim.stop()
        offline = 10.0 if quick else 60.0
        target = 2000 if quick else 10_000
        placed = 0
        offline_start = time.monotonic()

        async def place_while_offline() -> int:
            done = 0
            rng = random.Random(7)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                async def client(node: NodeProcess, share: int) -> None:
                    nonlocal done
                    for _ in range(share):
                        status, _ = await post(session, node, order(rng))
                        done += status in (201, 202)
                        await asyncio.sleep(offline * 0.8 / share * 0.5)
                await asyncio.gather(*(client(others[i % 4], target // 16) for i in range(16)))
            return done

        placed = asyncio.run(place_while_offline())
        remaining = offline - (time.monotonic() - offline_start)
        if remaining > 0:
            time.sleep(remaining)
        wait_until(lambda: converged(others), 60, interval=0.1)
        restart = time.monotonic()
        restart_wall = time.time()
        victim.start(wait=False, log_level="INFO")
        victim.wait_ready(30)
        ready = time.monotonic()
        wait_until(lambda: converged(nodes), 60, interval=0.02)
        done, done_wall = time.monotonic(), time.time()
        link_up = first_link_after(victim, restart_wall)
        print_table("catch-up: node offline while orders were placed, then restarted",
                    ["offline (s)", "orders placed", "final events", "restart->first link (s)",
                     "first link->converged (s)", "API up->converged (s)", "restart->converged (s)", "goal"],
                    [[round(restart - offline_start, 1), placed, state(nodes[0])[2],
                      "?" if link_up is None else link_up - restart_wall,
                      "?" if link_up is None else done_wall - link_up, done - ready, done - restart,
                      "converged <= 2 s after reconnect"]])
    finally:
        cluster.close()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
