"""The DHT in a deterministic simulation (tests/sim/dht_sim.py): with 10 % of nodes Byzantine (half answer
with random contacts and forged records, half stay silent) and 10 % of honest nodes gone, lookups of live
records succeed at least 99 % of the time in O(log n) hops; an eclipse attempt with ids ground next to a
target does not hide it. Each prints its hop distribution."""
from __future__ import annotations

import math

import pytest

from tests.sim.dht_sim import DhtSim, hop_histogram


def _run(nodes: int, lookups: int, seed: int) -> None:
    sim = DhtSim(nodes, seed=seed, byzantine=0.10, churn=0.10)
    sim.build()
    outcomes = sim.run_lookups(lookups)
    found = sum(o.found for o in outcomes)
    hops = [o.hops for o in outcomes if o.found]
    print(f"\n{nodes} nodes, {lookups} lookups: {found / lookups:.1%} found; hops {hop_histogram(outcomes)}; "
          f"{sum(o.queries for o in outcomes) / lookups:.1f} queries per lookup; {sim.forged_refused} forged records refused")
    assert found >= 0.99 * lookups, f"{lookups - found} of {lookups} lookups failed"
    assert max(hops) <= math.ceil(math.log2(nodes)), hops
    assert sim.forged_refused > 0, "no Byzantine node offered a forged record: the simulation did not test that"


def test_lookups_among_1000_nodes_with_byzantine_and_churn():
    _run(1000, 300, seed=1)


@pytest.mark.slow
def test_lookups_among_10000_nodes_with_byzantine_and_churn():
    _run(10_000, 300, seed=2)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_an_eclipse_with_ids_ground_next_to_the_target_does_not_hide_it(seed: int):
    """40 sybils in four subnets with ids sharing 16 bits with the target (as if each key were ground 2^16
    times): they take 20 of the target's 20 replica places and answer only with each other."""
    sim = DhtSim(1000, seed=seed, byzantine=0.05, churn=0.05)
    honest = [n for n in sim.nodes.values() if n.role == "honest" and n.alive]
    target = honest[0].node_id
    sybils = sim.add_sybils(target, 40, prefix_bits=16)
    sim.build()
    outcomes = sim.run_lookups(200, targets=[target])
    found = sum(o.found for o in outcomes)
    print(f"\neclipse (seed {seed}): 40 sybils sharing 16 bits with the target; {found}/200 found; "
          f"hops {hop_histogram(outcomes)}")
    assert sum(s in n.table for n in honest for s in sybils) > 0, "no sybil reached a table: no eclipse tried"
    assert found >= 198, f"the eclipse hid the target from {200 - found} of 200 lookups"
