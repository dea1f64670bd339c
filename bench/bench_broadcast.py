"""Broadcast across real node processes: delivery ratio, propagation latency to all nodes, amplification.

`python -m bench broadcast [--quick | --smoke] [--nodes=30] [--rate=100] [--duration=30] [--size=200] [--links=6]
[--modes=plumtree,flood]` starts NODES `exchange-node` processes on loopback (DEBUG_API on), each
dialling LINKS/2 random earlier nodes (so about LINKS links per node, peer exchange off), lets the
broadcast tree settle, then has every node broadcast ~SIZE-byte "note" orders so that the network
as a whole sends RATE messages/s for DURATION s. Every node records the first arrival (time.time(),
same clock for all processes) and the copies of each message; the origin stamps `ts` when it sends.

- delivery: (node, message) pairs handled / (messages x (nodes - 1))
- latency to all: per message, the last node's first arrival minus the send time (p50/p99/max)
- amplification: copies received per node per message (1.0 = every node got exactly one copy)
- modes: BROADCAST_MODE per run
- other bcast/s: broadcasts the nodes added meanwhile (the chain's certified blocks, health hints)
- ihave ids/bcast, grafts: Plumtree's lazy-push overhead over all broadcasts (ids announced, repairs)
- cpu/node: average CPU of one node process over the run (utime+stime from /proc)
- wake lag p50/p99: how late a 10 ms sleep in this (bench) process wakes up during the run, i.e. what
  the machine's other load costs every process per wake-up; each hop of a broadcast pays about that
- node stall p99/max: the same measured inside the nodes' event loops (median over nodes of their p99,
  and the worst single stall): a node stalled for S ms delays every message whose path crosses it
"""
from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.options import parse_options, percentile
from bench.table import print_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import Cluster, NodeProcess, free_ports, wait_until


SLOW = 60.0   # s for a node to answer a query around the run: 30 nodes on 2 shared cores may still be busy


def _args(argv: list[str]) -> dict:
    return parse_options(argv, {"nodes": 30, "rate": 100.0, "duration": 30.0, "size": 200, "links": 6,
                                "modes": "plumtree,flood", "settle": 4.0},
                         quick={"nodes": 20, "duration": 8.0, "settle": 3.0, "modes": "plumtree"},
                         smoke={"nodes": 4, "links": 2, "rate": 40.0, "duration": 1.0, "settle": 0.5})


def _cpu_seconds(node: NodeProcess) -> float:
    try:
        fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, AttributeError):
        return 0.0


class WakeLagProbe(threading.Thread):
    """Sleeps 10 ms over and over and records how late it wakes (scheduler delay on a busy machine)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lags: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            started = time.perf_counter()
            time.sleep(0.01)
            self.lags.append(time.perf_counter() - started - 0.01)

    def stop(self) -> tuple[float, float]:
        self.running = False
        self.join(1)
        return percentile(self.lags, 0.5), percentile(self.lags, 0.99)


def start_network(cluster: Cluster, n: int, links: int, mode: str, seed: int = 1) -> tuple[list[NodeProcess], int]:
    rng = random.Random(seed)
    ports = free_ports(n)
    per_node = max(1, links // 2)
    edges = 0
    nodes = []
    for i, port in enumerate(ports):
        targets = rng.sample(range(i), min(i, per_node))
        edges += len(targets)
        bootstrap = ",".join(f"127.0.0.1:{ports[j]}" for j in targets) or None
        nodes.append(cluster.node(f"b{i}", start=False, p2p_port=port, bootstrap_peers=bootstrap,
                                  target_outbound=len(targets), max_peers=4 * links,
                                  discovery_pex="false", debug_api="true", broadcast_mode=mode,
                                  heartbeat_interval=1.0, log_level="WARNING"))
    for node in nodes:
        node.start(wait=False)
        time.sleep(0.05)
    for node in nodes:
        node.wait_ready(90)

    def linked() -> bool:
        return sum(node.status()["peers_connected"] for node in nodes) >= 2 * edges

    wait_until(linked, 90, interval=0.5, message="all bootstrap links up")
    return nodes, edges


def run_mode(opts: dict, spec: str, base: Path) -> dict:
    mode = spec
    cluster = Cluster(base / spec)
    n = opts["nodes"]
    try:
        t0 = time.monotonic()
        nodes, edges = start_network(cluster, n, opts["links"], mode)
        startup = time.monotonic() - t0
        per_node_rate = opts["rate"] / n
        # settle: a short run lets Plumtree prune redundant links before we measure
        for node in nodes:
            node.api("POST", "/debug/load", {"rate": per_node_rate, "duration": opts["settle"], "size": opts["size"]},
                     timeout=SLOW)
        time.sleep(opts["settle"] + 1.5)
        for node in nodes:
            node.api("DELETE", "/debug/received", timeout=SLOW)
        before = {node.name: node.get("/status", timeout=SLOW)["router"] for node in nodes}
        cpu_before = {node.name: _cpu_seconds(node) for node in nodes}
        load_before = os.getloadavg()[0]
        probe = WakeLagProbe()
        probe.start()
        started = time.time()
        for node in nodes:
            status, body = node.api("POST", "/debug/load", {"rate": per_node_rate, "duration": opts["duration"],
                                                            "size": opts["size"]}, timeout=SLOW)
            assert status == 200, body
        time.sleep(opts["duration"])
        lag50, lag99 = probe.stop()
        wait_until(lambda: not any(node.get("/debug/load")["running"] for node in nodes), 30, interval=0.5)
        elapsed = time.time() - started
        load_during = os.getloadavg()[0]
        cpu = statistics.mean((_cpu_seconds(node) - cpu_before[node.name]) / elapsed for node in nodes)
        # wait for stragglers: until no node handled anything new for 2 s (at most 30 s)
        last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 2.0:
            total = sum(node.get("/status", timeout=SLOW)["router"]["received"].get("note", 0) for node in nodes)
            if total != last:
                last, quiet_since = total, time.monotonic()
            time.sleep(0.5)
        loads = [node.get("/debug/load", timeout=SLOW) for node in nodes]
        sent = sum(load["sent"] for load in loads)
        node_lag99 = statistics.median(load["lag_p99_ms"] or 0.0 for load in loads)
        node_lagmax = max(load["lag_max_ms"] or 0.0 for load in loads)
        stalls = sorted((round(t - started, 2), ms, node.name) for node, load in zip(nodes, loads)
                        for t, ms in load.get("stalls", ()))
        gc_max = max(load.get("gc_max_ms", 0.0) for load in loads)
        after = {node.name: node.get("/status", timeout=SLOW)["router"] for node in nodes}
        rows = {node.node_id: node.get("/debug/received?type=note", timeout=SLOW)["received"] for node in nodes}
    finally:
        cluster.close()

    origins: dict[str, tuple[str, float]] = {}
    arrivals: dict[str, list[float]] = {}
    depth: dict[str, int] = {}
    copies = handled = 0
    for _node_id, received in rows.items():
        for mid, origin, ts, first, n_copies, n_handled, hops in received:
            if ts is None or ts < started:
                continue  # settle-phase stragglers
            origins[mid] = (origin, ts)
            arrivals.setdefault(mid, []).append(first - ts)
            depth[mid] = max(depth.get(mid, 0), (hops or 0) + 1)
            copies += n_copies
            handled += n_handled
    expected = sent * (n - 1)
    delivered = sum(len(v) for v in arrivals.values())
    complete = [max(v) for v in arrivals.values() if len(v) == n - 1]
    per_hop = [x for v in arrivals.values() for x in v]

    def delta(key: str) -> int:
        return sum(after[k]["events"][key] - before[k]["events"][key] for k in after)

    return {
        "mode": mode, "nodes": n, "links/node": round(2 * edges / n, 1),
        "startup s": round(startup, 1),
        "sent": sent, "delivery %": round(100.0 * delivered / expected, 3) if expected else float("nan"),
        "p50 ms": round(1000 * percentile(complete, 0.50), 1), "p99 ms": round(1000 * percentile(complete, 0.99), 1),
        "max ms": round(1000 * max(complete), 1) if complete else float("nan"),
        "node p50 ms": round(1000 * percentile(per_hop, 0.5), 1),
        "hops p50/max": f"{percentile(list(depth.values()), 0.5)}/{max(depth.values(), default=0)}",
        "amplification": round(copies / handled, 3) if handled else float("nan"),
        "other bcast/s": round((delta("broadcasts") - sent) / elapsed, 1),
        "ihave ids/bcast": round(delta("ihave_ids_sent") / max(1, delta("broadcasts")), 2),
        "grafts": delta("grafts_sent"), "dups": copies - handled,
        "cpu/node %": round(100 * cpu, 1),
        "wake lag p50/p99 ms": f"{1000 * lag50:.1f}/{1000 * lag99:.0f}",
        "node stall p99/max ms": f"{node_lag99:.0f}/{node_lagmax:.0f}",
        "stalls > 100 ms": len(stalls), "gc pause max ms": gc_max, "_stalls": stalls,
        "load before": round(load_before, 2), "load after": round(load_during, 2),
    }


def main(argv: list[str]) -> None:
    opts = _args(argv)
    modes = [mode for mode in opts["modes"].split(",") if mode]
    print(f"broadcast: {opts['nodes']} node processes, ~{opts['links']} links each, {opts['rate']:g} msgs/s of "
          f"~{opts['size']} B for {opts['duration']:g} s, modes {modes}; {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.2f} at start", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-broadcast-") as tmp:
        for mode in modes:
            results.append(run_mode(opts, mode, Path(tmp)))
            print(f"  {mode}: done ({results[-1]['delivery %']}% delivered)", flush=True)
    for n, row in enumerate(results, 1):
        stalls = row.pop("_stalls")
        if stalls:
            print(f"  run {n} node stalls over 100 ms (s into the run, ms, node): {stalls[:12]}")
    metrics = list(results[0])
    print_table("Broadcast propagation (latency = origin send to last node's first arrival)",
                ["metric"] + [f"run {i + 1}" for i in range(len(results))],
                [[metric] + [row[metric] for row in results] for metric in metrics])
    goals = results[0]
    print(f"\ngoals ({goals['mode']}): delivery 100% -> {goals['delivery %']}%; p99 <= 250 ms -> {goals['p99 ms']} ms; "
          f"amplification <= 2.0 -> {goals['amplification']}")


if __name__ == "__main__":
    main(sys.argv[1:])
