"""Baseline for the RPC benchmarks: Node.js Grenache client -> Node.js Grenache worker through a real grape.

`measure_node_grenache(seconds, concurrency)` starts one grape, one grenache-nodejs-http worker
and the Node load client (tests/interop/js/bench_client.js, which keeps `concurrency` requests in
flight for `seconds` after a short warm-up), and returns
`{"rps", "p50_ms", "p99_ms", "requests", "errors", "concurrency", "seconds", "loadavg"}`.
`NodeGrenacheRig` keeps the grape and worker up across several measurements. Everything runs on
127.0.0.1 (see tests/interop/grenache_harness.py) and is stopped by PID afterwards.

Needs Node.js and `make npm-deps`; `node_grenache_missing()` says why when it cannot run.
Run directly: `python -m bench.grenache_baseline [seconds]`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

_HARNESS_DIR = Path(__file__).resolve().parent.parent / "tests" / "interop"
if str(_HARNESS_DIR) not in sys.path:
    sys.path.insert(0, str(_HARNESS_DIR))

from grenache_harness import GrapeCluster, NodeWorker, node_missing_reason, run_node_json  # noqa: E402

__all__ = ["measure_node_grenache", "NodeGrenacheRig", "node_grenache_missing"]

SERVICE = "bench:node-grenache"
PAYLOAD = {"op": "quote", "market": "BTC-USD", "side": "buy", "qty": "0.5"}


def node_grenache_missing() -> str | None:
    """Why the Node baseline cannot run here (no node, npm packages not installed), or None."""
    return node_missing_reason()


class NodeGrenacheRig:
    """A grape plus a Node worker announced on it, reusable for several load runs."""

    def __init__(self) -> None:
        self.cluster = GrapeCluster(1)
        self.worker: NodeWorker | None = None

    def __enter__(self) -> "NodeGrenacheRig":
        self.cluster.start()
        try:
            self.worker = NodeWorker(self.cluster[0], SERVICE, worker_id="bench")
            self.worker.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        self.cluster.stop()

    def measure(self, seconds: float, concurrency: int) -> dict:
        stats = run_node_json("bench_client.js", timeout=seconds + 60, grape=self.cluster[0], service=SERVICE,
                              seconds=seconds, concurrency=concurrency, payload=PAYLOAD)
        stats["loadavg"] = os.getloadavg()[0]
        return stats


def measure_node_grenache(seconds: float, concurrency: int) -> dict:
    """Requests/s and latency percentiles of Node client -> Node worker over a real grape."""
    if not 0 < seconds <= 120:
        raise ValueError("seconds must be in (0, 120]")
    if not 1 <= concurrency <= 1000:
        raise ValueError("concurrency must be in [1, 1000]")
    reason = node_grenache_missing()
    if reason is not None:
        raise RuntimeError(reason)
    with NodeGrenacheRig() as rig:
        return rig.measure(seconds, concurrency)


def main(argv: list[str]) -> int:
    from bench.table import print_table

    reason = node_grenache_missing()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    seconds = float(argv[0]) if argv else 3.0
    rows = []
    with NodeGrenacheRig() as rig:
        for concurrency in (1, 50):
            s = rig.measure(seconds, concurrency)
            rows.append([concurrency, s["requests"], s["errors"], s["rps"], s["p50_ms"], s["p99_ms"], s["loadavg"]])
    print_table("Node grenache-nodejs-http client -> Node worker (real grape, loopback)",
                ["in flight", "requests", "errors", "req/s", "p50 ms", "p99 ms", "load1"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
