"""Real processes: compaction, restart from a snapshot, and a late node joining through a snapshot.

With SNAPSHOT_INTERVAL=20 and KEEP_BLOCKS=10 a busy two-node chain soon holds only its last blocks;
a node that joins later cannot replay from height 1 any more, so it fetches a peer's snapshot and checks
it against validator sets proven from the genesis (epoch proofs), then follows block by block. A node
restarted after compaction starts from its own newest snapshot. Everyone ends with the same state. Run
again with SNAPSHOT_MIN_SECONDS set (snapshots also wait that much block time), whose snapshot heights are
then no longer every 20th: the joiner and the restarted node must find the same ones as the others. The joiner
and the restarted node serve the book with its proof against the certified state root, which a light client
verifies (their state roots are the others', block by block: the app hash covers them).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tests.harness import ROOT, Cluster, NodeProcess, converged, wait_until

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
    if min_seconds == 0:       # the same book, verified, from the node that joined by a snapshot and the restored one
        reads = [subprocess.Popen([sys.executable, "-m", "node.cli", "light", "book", "BTC-USD", "--node", first.api_url,
                                   "--witness", second.api_url, "--trust-dir", str(cluster.base / f"light-{n}"),
                                   "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for n, (first, second) in enumerate(((late, b), (b, a)))]
        for read, (first, second) in zip(reads, ((late, b), (b, a))):
            out, err = read.communicate(timeout=60)
            assert read.returncode == 0, err
            answer = json.loads(out)
            assert answer["verified"] and answer["node"] == first.api_url and answer["asks"][0] == ["101.00", "0.5000"]
            assert answer["witnesses_agreeing"] == [second.api_url] and not answer["refused"], answer
    wait_until(lambda: len(_snapshot_heights(a)) == 2, 30, interval=0.2, message="two snapshots kept")
    older, newer = _snapshot_heights(a)[-2:]
    # up to 20 blocks a second here: a snapshot every 20 heights, or with 5 s of block time between them, further apart
    assert newer - older == INTERVAL if min_seconds == 0 else newer - older > INTERVAL, (older, newer)
    print(f"\nSNAPSHOT_MIN_SECONDS={min_seconds}: the two newest snapshots at heights {older} and {newer}")
