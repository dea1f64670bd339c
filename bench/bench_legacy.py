"""Order to final through a legacy (Grenache-only) node vs a hybrid node, side by side in one run.

Two hybrid validators share a grape with a legacy node (P2P_ENABLED=false, DISCOVERY_GRENACHE=true) and a
hybrid follower. Orders are placed one at a time, alternating between the legacy node and the hybrid
follower, with `?wait=10`: the time to the 201 answer is order-to-final as that node's user sees it.

    python -m bench legacy [--quick | --smoke]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.options import percentile, sized
from bench.table import print_table
from tests.harness import Cluster, wait_until
from tests.interop.grenache_harness import GrapeCluster, node_missing_reason


def main(flags: list[str]) -> None:
    reason = node_missing_reason()
    if reason:
        print(f"bench legacy skipped: {reason}")
        return
    count = sized(flags, 200, 40, 4)
    settings = {"heartbeat_interval": 0.5, "discovery_grenache": "true", "log_level": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="bench-legacy-") as base, GrapeCluster(2) as grapes:
        cluster = Cluster(Path(base))
        try:
            validators = cluster.chain(2, seat_rule="any", grape_urls=grapes[0], **settings)
            hybrid = cluster.node("hybrid", role="follower", bootstrap_peers=validators[0].p2p_address,
                                  grape_urls=grapes[0], **settings)
            legacy = cluster.node("legacy", p2p_enabled="false", grape_urls=grapes[1], **settings)
            chain_id = validators[0].status()["chain_id"]
            wait_until(lambda: legacy.status()["chain_id"] == chain_id and hybrid.status()["chain_id"] == chain_id,
                       60, interval=0.5, message="both followers on the chain")
            times: dict[str, list[float]] = {"legacy": [], "hybrid": []}
            for i in range(count):
                node = legacy if i % 2 else hybrid
                body = {"market": "BTC-USD", "side": "buy" if i % 4 < 2 else "sell", "price": "100", "qty": "0.1"}
                started = time.perf_counter()
                status, answer = node.api("POST", "/orders?wait=10", body, timeout=15)
                elapsed = time.perf_counter() - started
                if status == 201:
                    times[node.name].append(elapsed)
            rows = [[name, len(v), 1000 * percentile(v, 0.5), 1000 * percentile(v, 0.99), 1000 * max(v)]
                    for name, v in times.items()]
            print_table("order to final (201) through a legacy Grenache-only follower vs a hybrid follower",
                        ["node", "orders", "p50 ms", "p99 ms", "max ms"], rows)
        finally:
            cluster.close()
