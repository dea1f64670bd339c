"""Unicast latency by path, in one run: a direct link, a relay through a neighbour, and Grenache.

`python -m bench grenache_path [--quick | --smoke] [--count=1000] [--rate=300]` starts one real grape and
four `exchange-node` processes on loopback (DEBUG_API on, peer exchange off):

- A, on the grape, sends to the three others in turn;
- B is linked to A: the direct path;
- C is linked to B only (not on the grape): the relayed path, through B;
- D is on the grape too, but A and D cannot reach each other's peer port: both listen on 127.0.0.2
  while the grape records 127.0.0.1 (B dials A at 127.0.0.2): the Grenache path, HTTP RPC to D's
  message endpoint.

A sends COUNT notes to each, interleaved, at RATE sends/s in all (each through A's control API).
Latency is one way: the receiver's first arrival minus the `ts` A stamped into the envelope
(time.time(), one clock for all processes), p50/p99/max per path.
"""
from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.options import parse_options, percentile
from bench.table import print_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import Cluster, wait_until
from tests.interop.grenache_harness import GrapeCluster, node_missing_reason

COMMON = {"discovery_pex": "false", "debug_api": "true", "heartbeat_interval": 0.2, "log_level": "WARNING"}


def main(argv: list[str]) -> None:
    reason = node_missing_reason()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    opts = parse_options(argv, {"count": 1000, "rate": 300.0}, quick={"count": 300}, smoke={"count": 10})
    grape = GrapeCluster(1)
    work = Path(tempfile.mkdtemp(prefix="bench-grenache-path-"))
    cluster = Cluster(work)
    try:
        grape.start()
        on_grape = {"discovery_grenache": "true", "grape_urls": grape[0], "p2p_host": "127.0.0.2",
                    "grenache_messages_host": "127.0.0.1", **COMMON}
        a = cluster.node("a", **on_grape)
        b = cluster.node("b", bootstrap_peers=a.p2p_address, **COMMON)
        c = cluster.node("c", bootstrap_peers=b.p2p_address, **COMMON)
        d = cluster.node("d", **on_grape)
        targets = {"direct": b, "relay": c, "grenache": d}
        wait_until(lambda: a.get("/status")["router"]["relay_targets"] == [c.node_id] and b.node_id in a.connected_ids()
                   and d.node_id in a.get("/status")["router"]["grenache"]["members"], 30,
                   message="A linked to B, reaching C through B and D over Grenache")
        sent: dict[str, list[tuple[str, str]]] = {path: [] for path in targets}
        interval = 1.0 / opts["rate"]
        started = time.monotonic()
        for i in range(opts["count"] * len(targets)):
            path = list(targets)[i % len(targets)]
            due = started + i * interval
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            result = a.api("POST", "/debug/send", {"node_id": targets[path].node_id, "payload": i})[1]
            sent[path].append((result["id"], result["outcome"]))
        rows = []
        for path, node in targets.items():
            ids = {mid for mid, _ in sent[path]}
            wait_until(lambda n=node, want=ids: want <= {r[0] for r in n.get("/debug/received?type=note")["received"]},
                       30, message=f"every {path} note delivered")
            records = {r[0]: r for r in node.get("/debug/received?type=note")["received"]}
            latencies = [(records[mid][3] - records[mid][2]) * 1000.0 for mid in ids]
            outcomes = sorted({outcome for _, outcome in sent[path]})
            rows.append([path, "/".join(outcomes), len(latencies), statistics.median(latencies),
                         percentile(latencies, 0.99), max(latencies)])
        print_table(f"one-way unicast latency by path, {opts['count']} each at {opts['rate']:g}/s in all",
                    ["path", "outcome", "n", "p50 ms", "p99 ms", "max ms"], rows)
    finally:
        cluster.close()
        grape.stop()
        shutil.rmtree(work, ignore_errors=True)
