"""Deterministic simulation: 5 replicas, random orders and cancels at random nodes, delays and reordering,
5% duplicates, 10% drops repaired by anti-entropy, a 2|3 partition that heals. After healing plus two
anti-entropy rounds every node has the same watermark, book digest and trade-log hash; at every step
no order filled beyond its quantity and no trade id appeared twice (TradeChecker, after each delivery).

The default suite runs the issue's full check: 100 seeds x 10,000 operations, spread over the machine's
cores (about 170 s on 2 quiet cores), plus a quick 100 x 1,000 pass that fails fast on a gross break."""
from __future__ import annotations

import os

import pytest

from tests.sim.network import Faults, Simulation, run_many, run_seed


def _assert_all(results: list[dict], operations: int) -> None:
    bad = [(r["seed"], r["summary"]) for r in results if not (r["converged"] and r["all_final"])]
    assert not bad, f"{len(bad)} of {len(results)} seeds did not converge: {bad[:3]}"
    assert all(r["created"] == operations for r in results)
    assert not [r["penalties"] for r in results if r["penalties"]], "an honest network penalised someone"
    assert sum(r["rollbacks"] for r in results) > 0, "the partition never forced a rollback"
    assert all(r["stats"].dropped and r["stats"].duplicated and r["stats"].cut for r in results)


def test_100_seeds_converge_small_workload():
    results = run_many(list(range(100)), 1_000, workers=min(2, os.cpu_count() or 1))
    _assert_all(results, 1_000)


@pytest.mark.timeout(900)
def test_100_seeds_converge_full_workload():
    results = run_many(list(range(100)), 10_000, workers=min(2, os.cpu_count() or 1))
    _assert_all(results, 10_000)
    assert all(r["trades"] > 1000 and r["cancels"] > 1000 for r in results)


def test_simulation_is_deterministic():
    one, two = run_seed(42, 600), run_seed(42, 600)
    assert one["summary"] == two["summary"] and one["stats"] == two["stats"]


def test_without_anti_entropy_drops_would_leave_gaps():
    """Control experiment: the same faults with pulls disabled do not converge, so the repair is real."""
    import dataclasses

    from tests.sim.network import SIM_CONFIG

    config = dataclasses.replace(SIM_CONFIG, sync_interval=1e9, gap_delay=1e9)
    sim = Simulation(3, operations=500, faults=Faults(), config=config)
    for replica in sim.replicas:
        replica.peers.clear()     # nobody to pull from
    sim.run_workload()
    sim.faults.active = False
    sim.run_until(sim.now + 1.5)
    assert not all(r.final_count == 500 for r in sim.replicas)
