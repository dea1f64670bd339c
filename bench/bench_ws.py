"""Market data stream fan-out on a real node: N WebSocket clients subscribed to book (depth 25) and
trades while orders arrive at a steady rate, side by side with no subscribers.

Per run: orders/s the node accepted, the node's CPU (utime + stime from /proc over the measured
window, in % of one core), messages delivered to clients per second, and the update latency from
final to client: each trade carries `ts`, the node's wall clock when it became final; a client
subtracts it from its own clock at arrival (one host, so the clocks agree). Clients run in worker
processes (asyncio, aiohttp) on the same 2 cores as the node; to keep their share small, one client
in TIMING_EVERY parses its trade messages (one sample per message, from its oldest trade) and the
rest only count what arrives. The workers' CPU is printed too. Clients that the node cuts off as too
slow are counted, not hidden.

`python -m bench ws [--quick | --smoke] [--clients N] [--rate ORDERS_PER_S]`
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from bench.child import Child, get, wait_event
from bench.options import sized
from bench.table import print_table
from tests.harness import Cluster, NodeProcess, wait_until

BATCH_INTERVAL = 0.05
MAX_IN_FLIGHT = 20
WORKERS = 2
TIMING_EVERY = 10


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def orders(rng: random.Random, count: int, accounts: int) -> list[dict]:
    """Orders around 100.00 that cross often (trades) without the book growing without bound."""
    return [{"market": "BTC-USD", "side": rng.choice(["buy", "sell"]), "type": rng.choice(["limit", "limit", "ioc"]),
             "price": f"{100 + rng.randint(-20, 20) / 100:.2f}", "qty": f"{rng.randint(1, 10) / 10:.1f}",
             "account": f"a{rng.randrange(accounts)}"} for _ in range(count)]


# --- clients (worker processes) ---------------------------------------------------------------------
async def _client(url: str, ready: asyncio.Event, stop: asyncio.Event, stats: dict, timing: bool) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_str('{"event":"subscribe","channel":"book","market":"BTC-USD","depth":25}')
            await ws.send_str('{"event":"subscribe","channel":"trades","market":"BTC-USD"}')
            stats["connected"] += 1
            if stats["connected"] == stats["clients"]:
                ready.set()
            latencies = stats["latencies"]
            while not stop.is_set():
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                        stats["cut_off"] += 1 if ws.close_code == 4008 else 0
                    return
                if not stats["measuring"]:
                    continue
                stats["messages"] += 1
                if timing and '"trades"' in message.data and '"update"' in message.data:
                    arrived = time.time()
                    latencies.append(arrived - orjson.loads(message.data)["trades"][0]["ts"])


def _worker(url: str, clients: int, ready, go, finish, results) -> None:
    async def main() -> None:
        stats = {"clients": clients, "connected": 0, "messages": 0, "cut_off": 0, "latencies": [], "measuring": False}
        connected, stop = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(_client(url, connected, stop, stats, n % TIMING_EVERY == 0))
                 for n in range(clients)]
        await connected.wait()
        ready.set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, go.wait)
        stats["measuring"] = True
        await loop.run_in_executor(None, finish.wait)
        stats["measuring"] = False
        stop.set()
        results.put({k: stats[k] for k in ("messages", "cut_off", "latencies")})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


# --- one run ------------------------------------------------------------------------------------------
async def _load(node: NodeProcess, rate: float, seconds: float, accounts: int) -> tuple[int, int]:
    """Open loop: a batch every BATCH_INTERVAL whether or not earlier ones were answered (at most
    MAX_IN_FLIGHT outstanding; a slot with none free is skipped and counted)."""
    rng = random.Random(7)
    per_batch = max(1, round(rate * BATCH_INTERVAL))
    accepted = skipped = 0
    in_flight: set[asyncio.Task] = set()

    async def post(session: aiohttp.ClientSession, body: bytes) -> None:
        nonlocal accepted
        async with session.post(node.api_url + "/orders/batch", data=body,
                                headers={"Content-Type": "application/json", **node.auth_headers()}) as response:
            answer = await response.json()
            accepted += sum(1 for r in answer.get("results", []) if "order" in r)

    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for n in range(int(seconds / BATCH_INTERVAL)):
            delay = started + n * BATCH_INTERVAL - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= MAX_IN_FLIGHT:
                skipped += per_batch
                continue
            task = asyncio.create_task(post(session, orjson.dumps({"orders": orders(rng, per_batch, accounts)})))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
    return accepted, skipped


def run(base: Path, clients: int, rate: float, seconds: float, accounts: int = 10) -> dict:
    cluster = Cluster(base / f"run-{clients}")
    ctx = multiprocessing.get_context("spawn")
    workers: list[Child] = []
    try:
        subscriptions = 2 * clients + 10                # book and trades each
        unread = max(64 << 20, clients * (256 << 10))    # the per-client bound alone decides who is too slow
        node = cluster.node("n", p2p_enabled="false", ws_max_clients=max(1000, clients + 10),
                            ws_max_clients_per_address=clients + 10, ws_max_clients_per_subnet=clients + 10,
                            # every client is on this machine: the per-address shares of the API's connections
                            # and of the stream's subscriptions and unread bytes must let them all in
                            ws_max_subscriptions=max(16384, subscriptions), ws_max_subscriptions_per_address=subscriptions,
                            ws_max_subscriptions_per_subnet=subscriptions, ws_send_buffer_per_address=unread,
                            ws_send_buffer_per_subnet=unread, ws_send_buffer_total=unread,
                            api_max_connections=max(2048, clients + 64), api_max_connections_per_subnet=max(1024, clients + 64),
                            api_max_connections_per_address=clients + 64, log_level="WARNING")
        node.new_accounts(*(f"a{i}" for i in range(accounts)))       # the orders come from these accounts
        wait_until(lambda: node.status()["chain_id"], 10, message="the standalone node founds its chain")
        node.api("POST", "/orders/batch", {"orders": orders(random.Random(1), 200, accounts)})   # a book to stream
        go, finish, results = ctx.Event(), ctx.Event(), ctx.Queue()
        url = node.api_url.replace("http", "ws", 1) + "/ws"
        shares = [clients // WORKERS + (1 if i < clients % WORKERS else 0) for i in range(WORKERS)] if clients else []
        readies = []
        for share in shares:
            ready = ctx.Event()
            workers.append(Child(ctx, _worker, url, share, ready, go, finish, results))
            readies.append(ready)
        for ready in readies:
            wait_event(ready, workers, 120, "the clients to connect")
        go.set()
        cpu_before, wall_before = cpu_seconds(node.proc.pid), time.monotonic()
        clients_before = sum(cpu_seconds(w.pid) for w in workers)
        accepted, skipped = asyncio.run(_load(node, rate, seconds, accounts))
        cpu = cpu_seconds(node.proc.pid) - cpu_before
        clients_cpu = sum(cpu_seconds(w.pid) for w in workers) - clients_before
        wall = time.monotonic() - wall_before
        finish.set()
        collected = [get(results, workers, 60, "the clients' counts") for _ in workers]
        latencies = sorted(x for c in collected for x in c["latencies"])
        pick = (lambda q: 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else \
            (lambda q: None)
        return {"clients": clients, "orders_per_s": accepted / wall, "skipped": skipped, "cpu_pct": 100 * cpu / wall,
                "clients_cpu_pct": 100 * clients_cpu / wall,
                "messages_per_s": sum(c["messages"] for c in collected) / wall,
                "p50_ms": pick(0.5), "p99_ms": pick(0.99), "trades_seen": len(latencies),
                "cut_off": sum(c["cut_off"] for c in collected)}
    finally:
        for worker in workers:
            worker.stop()
        cluster.close()


def main(flags: list[str]) -> None:
    def option(name: str, default: float) -> float:
        return float(flags[flags.index(name) + 1]) if name in flags and flags.index(name) + 1 < len(flags) \
            else default
    clients = int(option("--clients", sized(flags, 1000, 100, 4)))
    rate = option("--rate", 1000.0)
    seconds = sized(flags, 20.0, 5.0, 1.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as base:
        for count in (0, clients):
            r = run(Path(base), count, rate, seconds, sized(flags, 10, 10, 2))
            rows.append([r["clients"], r["orders_per_s"], r["skipped"], r["cpu_pct"], r["clients_cpu_pct"],
                         r["messages_per_s"],
                         "-" if r["p50_ms"] is None else r["p50_ms"], "-" if r["p99_ms"] is None else r["p99_ms"],
                         r["trades_seen"], r["cut_off"]])
    print_table(f"stream fan-out: book depth 25 + trades per client, {rate:g} orders/s offered for {seconds:g} s, "
                "node CPU in % of one core, latency = client arrival - trade's final time",
                ["clients", "orders/s", "orders skipped", "node cpu %", "clients cpu %", "msgs/s to clients",
                 "p50 ms", "p99 ms",
                 "messages timed", "cut off"], rows)
    if len(rows) == 2 and rows[0][3]:
        print(f"  node CPU with {clients} subscribers / without: {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
