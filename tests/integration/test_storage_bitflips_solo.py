"""The only node of a one-validator network, one flipped byte of its block log at a time, on real processes: no
peer can supply a damaged block, so after RECOVERY_TIMEOUT it exits 3 naming the directory, having refused
orders (503 recovering) meanwhile. (The block logs of a three-validator chain: test_storage_bitflips.py.)
"""
from __future__ import annotations

import os
import random

import pytest

from tests.harness import Cluster, wait_until
from tests.integration.answers import Answers, random_order
from tests.integration.storage_flips import FAST, flip_at, flip_random_byte, frames_of, place_orders, restart

# a restart is mostly the node's own CPU: beside another test that restarts nodes on two busy cores this run
# takes up to twice its 57 s alone, past the suite's 120 s default
pytestmark = pytest.mark.timeout(240)


# 8 flips in the default run (the first certain damage); 24 in `make soak`
SOLO_FLIPS = int(os.environ.get("STORAGE_SOLO_FLIPS", "8"))


def test_the_only_node_of_a_one_validator_network_refuses_cleanly_when_its_blocks_are_damaged(cluster: Cluster):
    flip_the_only_node(cluster, SOLO_FLIPS)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_24_flips_of_the_only_node_of_a_network_refuse_cleanly(cluster: Cluster):
    flip_the_only_node(cluster, 24)


def flip_the_only_node(cluster: Cluster, flips: int) -> None:
    node = cluster.node("solo", found_after=0, recovery_timeout=3, **FAST)
    wait_until(lambda: node.status()["chain_id"], 10)
    answers = Answers()
    rng = random.Random(8)
    place_orders(answers, [node], rng, 20, wait=1.0)
    assert answers.codes[201] == 20
    blocks = node.data_dir / "chain" / "blocks"
    refused = clean = 0
    for flip in range(flips):
        assert node.stop() == 0
        if flip == 0:       # certainly damage: inside a block in the middle of the log
            segment = next(p for p in blocks.iterdir() if p.name.endswith(".seg"))
            start, end = frames_of(segment)[len(frames_of(segment)) // 2]
            path, offset, mask = segment, (start + end) // 2, 0x21
            flip_at(path, offset, mask)
        else:
            path, offset, mask = flip_random_byte(blocks, rng)
        where = f"flip {flip}: {path.name} byte {offset} ^ {mask:#04x}"
        if restart(node) == "up":
            if node.status()["exchange"]["recovering"]:
                code, body = node.api("POST", "/orders?wait=0", random_order(rng))
                assert code == 503 and body["error"]["code"] == "recovering", (where, code, body)
                assert node.proc is not None
                node.proc.wait(30)
            else:
                clean += 1
                for order_id in answers.accepted:
                    assert node.api("GET", f"/orders/{order_id}")[0] == 200, where
                continue
        refused += 1
        assert node.proc is not None
        assert node.proc.returncode == 3, (where, node.proc.returncode)
        tail = node.log_tail(5)
        assert "exchange-node: cannot recover blocks" in tail and str(blocks) in tail, (where, tail)
        flip_at(path, offset, mask)     # the operator puts the disk right (the damaged file was left as it was)
        assert restart(node) == "up", where
        assert node.status()["exchange"]["recovering"] is None, where
        for order_id in answers.accepted:
            assert node.api("GET", f"/orders/{order_id}")[0] == 200, where
    assert refused >= 2, (refused, clean)
    place_orders(answers, [node], rng, 3, wait=1.0)
    assert answers.codes[201] == 23 and not answers.problems
