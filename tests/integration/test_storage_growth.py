"""Growth is bounded by the book and a recent window, not by history: orders go through one validator's own
chain code (tests/chain_fill.py: snapshots every 500 heights, the block log cut 1,000 blocks behind the
newest), then a real `exchange-node` takes the directory over, restarts from its newest snapshot plus the
blocks after it, serves /status with the sizes, and takes orders.

The window that bounds memory and snapshots is the exchange's: 100,000 closed orders and 10,000 trades
per market (exchange/app/history.py); older closed orders answer 404. Measured here at 10^6 orders
(4,000 heights, 250 orders a block, load 2.6): disk 50-63 MB once compaction runs (two snapshots of 18.5 MB
and 12-25 MB of blocks: the window plus up to one 16 MiB segment), in-process RSS 100-118 MB from 2*10^5
orders on, a real restart serving in 2.3 s at 242 MB RSS (decoding the snapshot costs more memory than
building the same state block by block). The bounds asserted leave room for a loaded machine.
"""
from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from exchange.chain.store.block_store import KEEP_BLOCKS_BEHIND_SNAPSHOT
from tests.chain_fill import SNAPSHOT_INTERVAL, FillResult, disk_bytes, fill, rss_kib
from tests.harness import Cluster, NodeProcess, wait_until

MiB = 1024 * 1024
# tests/chain_fill.py founds its chain with the genesis defaults


def take_over(cluster: Cluster, data_dir: Path) -> tuple[NodeProcess, float]:
    """Start a real node on a filled DATA_DIR; seconds from spawn to /ready 200."""
    node = cluster.node(data_dir.name, start=False, heartbeat_interval=0.5)
    started = time.monotonic()
    node.start(wait=False)
    node.wait_ready(120)
    wait_until(lambda: node.api("GET", "/ready")[0] == 200, 120, interval=0.02, message="serving")
    return node, time.monotonic() - started


def replayed_after_snapshot(node: NodeProcess) -> tuple[int, int]:
    """(snapshot height restored, blocks replayed after it) from the node's start-up lines."""
    text = node.log_path.read_text(errors="replace")
    snapshot = re.findall(r"restored the state at height (\d+) from a snapshot", text)
    replayed = re.findall(r"\((\d+) blocks replayed\)", text)
    assert snapshot and replayed, node.log_tail()
    return int(snapshot[-1]), int(replayed[-1])


def check_restart(cluster: Cluster, data_dir: Path, result: FillResult) -> tuple[NodeProcess, float, int]:
    node, seconds = take_over(cluster, data_dir)
    status = node.status()
    storage = status["storage"]
    assert status["height"] >= result.heights
    assert storage["blocks"]["first_index"] > 1 and storage["snapshots"]["count"] == 2, storage
    assert storage["snapshots"]["newest_height"] == result.heights // SNAPSHOT_INTERVAL * SNAPSHOT_INTERVAL
    assert storage["blocks"]["bytes"] > 0 and storage["snapshots"]["bytes"] > 0 and storage["wal"]["missing"] == 0
    snapshot, replayed = replayed_after_snapshot(node)
    assert snapshot == storage["snapshots"]["newest_height"] and replayed <= SNAPSHOT_INTERVAL
    assert storage["blocks"]["last_index"] - storage["blocks"]["first_index"] < KEEP_BLOCKS_BEHIND_SNAPSHOT + \
        SNAPSHOT_INTERVAL + 16
    for order_id in result.recent_order_ids:        # within the closed-order window: still answered
        code, body = node.api("GET", f"/orders/{order_id}")
        assert code == 200 and body["order"]["status"] == "filled", (code, body)
    code, body = node.api("POST", "/orders?wait=2", {"market": "BTC-USD", "side": "buy", "price": "95", "qty": "1"})
    assert code == 201, (code, body)
    assert node.proc is not None
    return node, seconds, rss_kib(node.proc.pid)


def test_compaction_keeps_a_window_and_a_real_node_restarts_from_its_snapshot(cluster: Cluster, tmp_path):
    data_dir = tmp_path / "filled"
    result = asyncio.run(fill(data_dir, 100_000, heights=2_000))
    assert result.orders == 100_000 and not result.refused
    last = result.checkpoints[-1]
    assert last["blocks_first"] > 1 and last["open_orders"] <= 1_000 + 250
    node, seconds, rss = check_restart(cluster, data_dir, result)
    assert seconds < 20, seconds
    node.stop()


@pytest.mark.soak
def test_a_million_orders_keep_disk_and_memory_bounded(cluster: Cluster, tmp_path):
    data_dir = tmp_path / "million"
    result = asyncio.run(fill(data_dir, 1_000_000, heights=4_000, checkpoints=20))
    assert result.orders == 1_000_000 and not result.refused
    steady = [p for p in result.checkpoints if p["orders"] >= 300_000]
    reference = steady[0]["rss_kib"]
    for point in steady:
        assert point["disk_bytes"] <= 96 * MiB, point            # 2 snapshots + the block window + a segment
        assert point["rss_kib"] <= max(1.25 * reference, reference + 32 * 1024), (reference, point)
        assert point["rss_kib"] <= 192 * 1024, point
        assert point["open_orders"] <= 1_000 + 250, point
    assert disk_bytes(data_dir / "chain") <= 96 * MiB
    node, seconds, rss = check_restart(cluster, data_dir, result)
    assert seconds <= 15, f"restart to serving took {seconds:.1f} s"
    assert rss <= 384 * 1024, f"a restarted node holds {rss / 1024:.0f} MiB"
    node.stop()
