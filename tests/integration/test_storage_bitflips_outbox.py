"""Flipped bytes in the outbox holding orders answered 202 while there was no quorum, on real processes: each
add is stored twice, so one flip loses none of them; both copies damaged is said in the log and in /status,
never silent. (The block-log flips: test_storage_bitflips.py.)
"""
from __future__ import annotations

import os
import random
import time

import pytest

from tests.harness import Cluster, NodeProcess, converged, wait_until
from tests.integration.answers import Answers, random_order
from tests.integration.storage_flips import FAST, flip_at, flip_random_byte, frames_of, honest_everywhere, restart_all

# 6 flips in the default run; 24 in `make soak`
OUTBOX_FLIPS = int(os.environ.get("STORAGE_OUTBOX_FLIPS", "6"))


def pending_orders_on(target: NodeProcess, others: list[NodeProcess], answers: Answers, rng: random.Random,
                      count: int) -> list[str]:
    """Stop `others` (no quorum left), place `count` orders on `target` (202: in its outbox only), stop it."""
    for node in others:
        assert node.stop() == 0
    ids = []
    for _ in range(count):
        code, body = answers.post(target, random_order(rng), wait=0)
        assert code == 202, (code, body)
        ids.append(body["order"]["id"])
    assert target.status()["storage"]["outbox"]["pending"] == count
    assert target.stop() == 0
    return ids


def test_flips_in_an_outbox_of_pending_orders_lose_none_of_them(cluster: Cluster):
    flip_outboxes(cluster, OUTBOX_FLIPS)


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_24_flips_in_outboxes_of_pending_orders_lose_none_of_them(cluster: Cluster):
    flip_outboxes(cluster, 24)


def flip_outboxes(cluster: Cluster, flips: int) -> None:
    nodes = cluster.chain(3, seat_rule="any", **FAST)
    answers = Answers()
    rng = random.Random(5)
    for flip in range(flips):
        target, *others = nodes[flip % 3:] + nodes[:flip % 3]
        ids = pending_orders_on(target, others, answers, rng, 6)
        path, offset, mask = flip_random_byte(target.data_dir / "chain" / "outbox", rng)
        where = f"flip {flip}: {path.name} byte {offset} ^ {mask:#04x}"
        assert restart_all([*others, target]) == ["up"] * len(nodes), where
        wait_until(lambda: all(n.api("GET", f"/orders/{oid}")[0] == 200 for n in nodes for oid in ids), 60,
                   interval=0.3, message=f"{where}: every order answered 202 final everywhere")
        assert target.status()["storage"]["outbox"]["pending"] == 0
        honest_everywhere(nodes)
    wait_until(lambda: converged(nodes), 30, interval=0.3)
    answers.settle(nodes)
    assert not answers.problems, answers.problems[:10]


def test_an_outbox_order_whose_both_copies_are_damaged_is_reported_lost_not_silently(cluster: Cluster):
    nodes = cluster.chain(3, seat_rule="any", **FAST)
    answers = Answers()
    rng = random.Random(6)
    target, *others = nodes
    ids = pending_orders_on(target, others, answers, rng, 4)
    segment = next(p for p in (target.data_dir / "chain" / "outbox").iterdir() if p.name.endswith(".seg"))
    frames = frames_of(segment)
    assert len(frames) == 2 * len(ids), frames       # each add twice
    for start, end in frames[2:4]:                   # both copies of the second order
        flip_at(segment, (start + end) // 2)
    assert restart_all([*others, target]) == ["up"] * len(nodes)
    lost, kept = ids[1], [ids[0], *ids[2:]]
    wait_until(lambda: all(n.api("GET", f"/orders/{oid}")[0] == 200 for n in nodes for oid in kept), 60,
               interval=0.3, message="the orders with an intact copy final everywhere")
    outbox = target.status()["storage"]["outbox"]
    assert outbox["lost"] >= 1 and outbox["pending"] == 0, outbox
    text = target.log_path.read_text(errors="replace")
    assert f"outbox {segment.parent} is damaged" in text and "3 pending transactions read back intact" in text
    assert "lost unless a validator already had it" in text
    time.sleep(2.0)
    assert all(n.api("GET", f"/orders/{lost}")[0] == 404 for n in nodes), "nobody had it: it is gone, as said"
    honest_everywhere(nodes)
