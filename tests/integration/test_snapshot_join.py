"""Real processes: compaction, restart from a snapshot, and a late node joining through a snapshot.

With SNAPSHOT_INTERVAL=20 and KEEP_BLOCKS=10 a busy two-node chain soon holds only its last blocks;
a node that joins later cannot replay from height 1 any more, so it fetches a peer's snapshot and checks
it against validator sets proven from the genesis (epoch proofs), then follows block by block. A node
restarted after compaction starts from its own newest snapshot. Everyone ends with the same state. Run
again with SNAPSHOT_MIN_SECONDS set (snapshots also wait that much block time), whose snapshot heights are
then no longer every 20th: the joiner and the restarted node must find the same ones as the others.
"""
from __future__ import annotations

import re
from typing import Any

import pytest

from tests.harness import Cluster, NodeProcess, converged, wait_until

INTERVAL = 20
FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "snapshot_interval": INTERVAL, "keep_blocks": 10,
                        "empty_block_interval": 0.05}


def _snapshot_heights(node: NodeProcess) -> list[int]:
    names = (node.data_dir / "chain" / "snapshots").iterdir()
    return sorted(int(m.group(1)) for m in (re.fullmatch(r"snapshot-(\d+)\.snap", p.name) for p in names) if m)


@pytest.mark.parametrize("min_seconds", [0, 5])
def test_a_late_node_joins_from_a_certified_snapshot_and_a_restart_uses_its_own(cluster: Cluster, min_seconds: int):
    settings = {**FAST, "snapshot_min_seconds": min_seconds}
    a, b = cluster.chain(2, seat_rule="any", **settings)
    a.new_accounts("maker")
    b.new_accounts("taker")
    for i in range(5):
        assert a.api("POST", "/orders", {"market": "BTC-USD", "side": "sell", "price": f"{100 + i}",
                                         "qty": "1", "account": "maker"})[0] == 201
    assert b.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "101", "qty": "1.5",
                                     "account": "taker"})[0] == 201
    wait_until(lambda: a.status()["storage"]["blocks"]["first_index"] > 30, 30, interval=0.2,
               message="blocks before the newest snapshots are compacted away")
    late = cluster.node("late", bootstrap_peers=a.p2p_address, **settings)
    wait_until(lambda: late.status()["height"] > 40, 30, interval=0.2, message="the late node follows the chain")
    assert "installed a certified snapshot" in late.log_tail(400)
    wait_until(lambda: converged([a, b, late]), 20, interval=0.3)
    book = late.get("/book/BTC-USD")
    assert book["asks"][0] == ["101.00", "0.5000"] and len(book["asks"]) == 4

    assert b.stop() == 0
    b.start()
    wait_until(lambda: converged([a, b, late]), 30, interval=0.3, message="b restarts from its snapshot and catches up")
    assert "restored the state at height" in b.log_tail(400)
    wait_until(lambda: len(_snapshot_heights(a)) == 2, 30, interval=0.2, message="two snapshots kept")
    older, newer = _snapshot_heights(a)[-2:]
    # up to 20 blocks a second here: a snapshot every 20 heights, or with 5 s of block time between them, further apart
    assert newer - older == INTERVAL if min_seconds == 0 else newer - older > INTERVAL, (older, newer)
    print(f"\nSNAPSHOT_MIN_SECONDS={min_seconds}: the two newest snapshots at heights {older} and {newer}")
