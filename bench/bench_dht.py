"""The DHT: lookups in the deterministic simulation and on real processes.

    python -m bench dht [--quick | --smoke]

- simulation (tests/sim/dht_sim.py): 1,000 and 10,000 nodes (--quick: 1,000 and 3,000; --smoke: 300),
  300 lookups of live records each, with no faults (the baseline) and with 10 % Byzantine nodes (half
  answer with random contacts and forged records, half stay silent) and 10 % of honest nodes gone:
  found %, hops p50/p99/max, queries per lookup (each a request and an answer) and its ratio to the
  baseline, and the memory of one routing table (tracemalloc over building them all).
- real processes: 30 nodes in a line (each bootstraps to the one before it; peer exchange and mDNS off;
  --smoke: 4), every node's record published; from the last node, `GET /dht/nodes/{id}` for each other
  node, asked of the network even where the asker keeps a copy (`?fresh=1`), several rounds: lookup
  latency p50/p99 against `GET /status` on the same node (the baseline: one API round trip), queries
  per lookup and the hop distribution.
"""
from __future__ import annotations

import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.table import print_table
from tests.harness import Cluster, free_ports, wait_until
from tests.sim.dht_sim import DhtSim


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def simulation(sizes: list[int], lookups: int) -> None:
    rows = []
    for nodes in sizes:
        baseline = None
        for label, byzantine, churn in (("no faults (baseline)", 0.0, 0.0), ("10 % Byzantine, 10 % gone", 0.10, 0.10)):
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            sim = DhtSim(nodes, seed=7, byzantine=byzantine, churn=churn)
            sim.build()
            tables = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            started = time.perf_counter()
            outcomes = sim.run_lookups(lookups)
            elapsed = time.perf_counter() - started
            hops = [o.hops for o in outcomes if o.found]
            queries = statistics.mean(o.queries for o in outcomes)
            baseline = baseline or queries
            rows.append([nodes, label, f"{100 * len(hops) / len(outcomes):.1f}", _pct(hops, 0.5), _pct(hops, 0.99),
                         max(hops) if hops else "-", f"{queries:.1f}", f"{queries / baseline:.2f}",
                         f"{tables / nodes / 1024:.1f}", f"{1000 * elapsed / lookups:.2f}"])
    print_table(f"DHT lookups in the simulation, {lookups} lookups of live records per row (k 20, alpha 3, 4 disjoint "
                f"paths); records and tables include the store of every record's 20 replicas",
                ["nodes", "faults", "found %", "hops p50", "hops p99", "max", "queries/lookup", "ratio",
                 "KiB per node", "sim ms/lookup"], rows)


def processes(count: int, rounds: int) -> None:
    base = Path(tempfile.mkdtemp(prefix="bench-dht-"))
    cluster = Cluster(base)
    try:
        ports = free_ports(count)
        nodes = [cluster.node(f"d{i}", start=False, p2p_port=ports[i], discovery_pex="false", discovery_dht="true",
                              log_level="WARNING",
                              bootstrap_peers=f"127.0.0.1:{ports[i - 1]}" if i else None) for i in range(count)]
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready(60)
        wait_until(lambda: all(n.status()["discovery"]["dht"]["publications"] >= 2 for n in nodes), 60, interval=0.5,
                   message="every node published its record twice")
        asker, others = nodes[-1], nodes[:-1]
        queries_before = asker.status()["discovery"]["dht"]["queries"]
        hops_before = asker.status()["discovery"]["dht"]["lookup_hops"]
        lookup_ms, status_ms, missing = [], [], 0
        for _ in range(rounds):
            for other in others:
                started = time.perf_counter()
                code, _ = asker.api("GET", f"/dht/nodes/{other.node_id}?fresh=1", None, 30)
                lookup_ms.append(1000 * (time.perf_counter() - started))
                missing += code != 200
                started = time.perf_counter()
                asker.api("GET", "/status", None, 10)
                status_ms.append(1000 * (time.perf_counter() - started))
        done = asker.status()["discovery"]["dht"]
        queries = (done["queries"] - queries_before) / max(1, len(lookup_ms))
        hops = {h: n - hops_before.get(h, 0) for h, n in done["lookup_hops"].items() if n > hops_before.get(h, 0)}
        base_p50 = _pct(status_ms, 0.5)
        rows = [["GET /status (baseline)", len(status_ms), "-", f"{base_p50:.2f}", f"{_pct(status_ms, 0.99):.2f}", "1.00"],
                ["GET /dht/nodes/{id}", len(lookup_ms), len(lookup_ms) - missing, f"{_pct(lookup_ms, 0.5):.2f}",
                 f"{_pct(lookup_ms, 0.99):.2f}", f"{_pct(lookup_ms, 0.5) / base_p50:.2f}"]]
        print_table(f"DHT lookups on {count} real processes in a line (peer exchange and mDNS off), from the last node "
                    f"for every other, asked of the network (fresh), {rounds} round(s); {queries:.1f} dht.find "
                    f"queries per lookup; hops (the depth of the node that answered): "
                    f"{', '.join(f'{h}: {n}' for h, n in sorted(hops.items())) or '-'}",
                    ["request", "n", "found", "p50 ms", "p99 ms", "p50 ratio"], rows)
    finally:
        for node in cluster.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - a node that already died is reported by the table above
                pass


def main(flags: list[str]) -> None:
    if "--smoke" in flags:
        simulation([300], 30)
        processes(4, 1)
    elif "--quick" in flags:
        simulation([1000, 3000], 300)
        processes(8, 2)
    else:
        simulation([1000, 10_000], 300)
        processes(30, 3)
