"""A DATA_DIR that holds one chain, started with a join token naming another: the node refuses to start, exits 3
with one line naming the directory, both chains and what to do, and leaves the directory as it was."""
from __future__ import annotations

import secrets

from tests.harness import Cluster, wait_until


def test_a_data_dir_of_another_chain_than_the_token_names_exits_3_saying_what_to_do(cluster: Cluster):
    node = cluster.node("a", found_after=0)
    ours = wait_until(lambda: node.status()["chain_id"], 10, message="the node founds its chain")
    assert node.stop() == 0
    blocks_before = sorted(p.name for p in (node.data_dir / "chain" / "blocks").iterdir())
    other = secrets.token_hex(32)
    node.start(wait=False, join_token=f"exn1-{other}-{secrets.token_hex(32)}")
    assert node.proc is not None
    assert node.proc.wait(30) == 3, node.log_tail()
    last = node.log_tail(1).strip()
    assert last.startswith("exchange-node: ") and str(node.data_dir / "chain") in last, last
    assert f"holds chain {ours[:16]}" in last and other[:16] in last and "move the directory aside" in last, last
    assert sorted(p.name for p in (node.data_dir / "chain" / "blocks").iterdir()) == blocks_before
    node.start(join_token=None)
    assert node.status()["chain_id"] == ours, "the same directory starts again once the setting is dropped"
