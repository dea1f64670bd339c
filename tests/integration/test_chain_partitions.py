"""Real processes in network namespaces: 5 pinned validators and 3 followers under a load of orders at
every node, through splits of the validators, a follower cut off, and kill -9 of validators — with the
history checker (tests/history.py) recording every answer and re-reading every node throughout.

The validator set is pinned (VALIDATORS) so the fault model holds exactly for the whole run: n = 5,
f = 1, quorum 4. Hence what must hold, and is asserted:

- 1|4 split (the isolated one being the proposer of the moment): the 4 side finalises again within 2 s
  of the split; the isolated validator never says final while cut off and does not move its height;
- 2|3 split: no side has a quorum, so no node anywhere says final, no height moves, and orders get
  202 `no_quorum`; then the small side crashes (kill -9 of its two validators and its follower, whose
  order now exists only in its outbox on disk); after the heal and the restarts every one of those
  orders is final on every node;
- a follower cut off answers 202 and never 201; after the heal its orders are final everywhere;
- splits of random shapes flapping every 0.2-0.8 s, then 10% of frames lost on every link: every
  node keeps finalising, and nothing final is contradicted;
- kill -9 of the proposer: the other 4 finalise on; kill -9 of two validators: nobody says final
  until one comes back; restarted validators catch up from certified history;
- at the end: every order answered 201 or 202 exists on every node, and every node holds the same
  height, state hash, books and trade log (History.settle); orders entered at different nodes traded
  with each other.

Automatic membership (joins, removal of an absent validator) is exercised by test_chain_zeroconf.py.
"""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.harness import wait_until
from tests.history import Auditor, History
from tests.integration.chain_nodes import (Probe, final_everywhere, heights, load_line, pinned_chain, probe_all,
                                         proposer_now, settled, wait_for)
from tests.integration.netns import lan_or_skip
from tests.trading import Trader, create_accounts, run_traders, stop_traders

pytestmark = [pytest.mark.netns, pytest.mark.timeout(480)]

MARKETS = ["BTC-USD"]
MAJORITY_FINAL_WITHIN = 2.0


def latency(probe: Probe) -> float:
    """The time a probe took; read once the probes have answered."""
    assert probe.latency is not None, (probe.client.name, probe.status, probe.body)
    return probe.latency


@pytest.fixture
def lan8():
    with lan_or_skip(8, partitions=True) as lan:
        yield lan


def test_splits_kills_and_heals_never_contradict_a_final_answer(lan8, tmp_path):
    for name in [f"v{i}" for i in range(5)] + [f"f{i}" for i in range(3)]:
        create_accounts(tmp_path / name, "alice", "bob")
    validators, followers = pinned_chain(lan8, tmp_path, 5, 3)
    nodes = validators + followers
    index = {node.name: i for i, node in enumerate(nodes)}
    history = History()
    clients = [history.client(n) for n in nodes]
    by_name = {c.name: c for c in clients}
    stop = threading.Event()
    traders = [Trader(c, ["alice", "bob"], seed=i, stop=stop, wait=1.0) for i, c in enumerate(clients)]
    auditor = Auditor(history, clients, MARKETS, orders_per_pass=5, interval=0.3)
    figures: list[str] = []
    run_traders(traders)
    auditor.start()
    try:
        wait_until(lambda: history.counts["final_answers"] >= 40, 60, interval=0.2,
                   message="orders final at every node before the faults start")

        # --- 1|4: the proposer of the moment alone ----------------------------------------------
        proposer = proposer_now(validators[0])
        lonely = by_name[next(n.name for n in validators if n.node_id == proposer)]
        majority = [by_name[n.name] for n in validators if n.name != lonely.name]
        with history.split([lonely.name], "1|4") as window:
            lan8.isolate(index[lonely.name])
            split_at = time.monotonic()
            probes = probe_all(majority, split_at, wait=8.0)
            lonely_probe = probe_all([lonely], split_at, wait=4.0)[0]
            wait_until(lambda: not lonely.node.status()["quorum"], 10, message="the lone validator sees no quorum")
            window.freeze(heights([lonely]))
            assert lonely_probe.status == 202, (lonely_probe.status, lonely_probe.body)
            stalled = heights([lonely])[lonely.name]
            wait_until(lambda: min(heights(majority).values()) >= stalled + 3, 15,
                       message="the 4 side keeps finalising while one validator is cut off")
            assert heights([lonely])[lonely.name] == stalled
        lan8.heal()
        latencies = sorted(latency(p) for p in probes)
        figures.append(f"1|4 split (isolated {lonely.name}, the proposer): 4 side final again after "
                       f"{latencies[0]:.2f}s (first) .. {latencies[-1]:.2f}s (last of 4 probes)")
        assert all(p.status == 201 for p in probes), [(p.client.name, p.status, p.body) for p in probes]
        assert latencies[-1] <= MAJORITY_FINAL_WITHIN, figures[-1]
        healed = time.monotonic()
        wait_until(lambda: final_everywhere(clients, [lonely_probe.order_id]), 30, interval=0.2,
                   message="the lone validator's order final everywhere after the heal")
        figures.append(f"1|4 heal: the isolated side's order final on all 8 nodes {time.monotonic() - healed:.2f}s "
                       f"after the heal")

        # --- 2|3: no side has a quorum ---------------------------------------------------------
        side_a = {index["v0"], index["v1"], index["f0"]}
        side_b = set(range(8)) - side_a
        with history.split([c.name for c in clients], "2|3") as window:
            lan8.partition([side_a, side_b])
            split_at = time.monotonic()
            # validators notice within their liveness window; followers once no block came for 3 s
            wait_for(lambda: not any(n.status()["quorum"] for n in nodes), 15,
                     "every node sees there is no quorum", nodes)
            window.freeze(heights(clients))
            probes = probe_all(clients, split_at, wait=2.0)
            assert all(p.status == 202 for p in probes), [(p.client.name, p.status, p.body) for p in probes]
            reasons = {p.client.name: p.body.get("reason") for p in probes}
            assert set(reasons.values()) == {"no_quorum"}, reasons
            frozen = dict(window.frozen)
            crashed = [n for n in nodes if index[n.name] in side_a]
            for node in crashed:          # the small side crashes: f0's order now lives only in its outbox
                node.kill()
        lan8.heal()
        assert sum(window.refused_final.values()) >= len(clients)
        healed = time.monotonic()
        for node in crashed:
            node.start(wait=False)
        for node in crashed:
            node.wait_ready(30)
        wait_for(lambda: final_everywhere(clients, [p.order_id for p in probes]), 60,
                 "every order sent during the 2|3 split final on every node after the heal", nodes)
        figures.append(f"2|3 split, then kill -9 of the whole 2 side: no node moved past {max(frozen.values())}; "
                       f"all 8 orders sent during it final on all 8 nodes {time.monotonic() - healed:.2f}s after "
                       f"the heal and the restarts")

        # --- a follower cut off ------------------------------------------------------------------
        cut = by_name["f1"]
        with history.split([cut.name], "follower cut off") as window:
            lan8.isolate(index[cut.name])
            split_at = time.monotonic()
            wait_until(lambda: not cut.node.status()["quorum"], 15, message="the cut-off follower sees no quorum")
            window.freeze(heights([cut]))
            probe = probe_all([cut], split_at, wait=2.0)[0]
            assert probe.status == 202 and probe.body["reason"] == "no_quorum", (probe.status, probe.body)
        lan8.heal()
        healed = time.monotonic()
        wait_until(lambda: final_everywhere(clients, [probe.order_id]), 30, interval=0.2,
                   message="the cut-off follower's order final everywhere after the heal")
        figures.append(f"follower cut off: its order final on all 8 nodes {time.monotonic() - healed:.2f}s after "
                       f"the heal")

        # --- flapping splits of every shape, then a lossy network -----------------------------
        rng = random.Random(14)
        flap_until = time.monotonic() + 6.0
        flaps = 0
        while time.monotonic() < flap_until:
            hosts = rng.sample(range(8), 8)
            cut_at = rng.randint(1, 4)
            lan8.partition([set(hosts[:cut_at]), set(hosts[cut_at:])])
            flaps += 1
            time.sleep(rng.uniform(0.2, 0.8))       # the fault's own schedule: how long each split lasts
        lan8.heal()
        lan8.lossy(10)
        lossy_at = time.monotonic()
        probes = probe_all(clients, lossy_at, wait=15.0)
        assert all(p.status == 201 for p in probes), [(p.client.name, p.status, p.body) for p in probes]
        start = min(heights(clients).values())
        wait_for(lambda: min(heights(clients).values()) >= start + 10, 30,
                 "every node keeps finalising with 10% of frames lost", nodes)
        lan8.heal()
        figures.append(f"{flaps} flapping splits in 6 s, then 10% loss on every link: probes at all 8 nodes "
                       f"final within {max(latency(p) for p in probes):.2f}s")

        # --- kill -9 of the proposer, then of two validators ----------------------------------
        proposer = proposer_now(validators[0])
        victim = next(n for n in validators if n.node_id == proposer)
        victim.kill()
        killed_at = time.monotonic()
        rest = [by_name[n.name] for n in validators if n is not victim]
        probes = probe_all(rest, killed_at, wait=8.0)
        assert all(p.status == 201 for p in probes), [(p.client.name, p.status, p.body) for p in probes]
        figures.append(f"kill -9 of the proposer {victim.name}: the other 4 final again after "
                       f"{max(latency(p) for p in probes):.2f}s")
        victim.start(wait=False)
        victim.wait_ready(30)
        wait_until(lambda: victim.status()["height"] >= min(heights(rest).values()), 30, interval=0.2,
                   message="the restarted validator catches up")

        pair = [n for n in validators if n is not victim][:2]
        survivors = [by_name[n.name] for n in nodes if n not in pair]
        with history.split([c.name for c in survivors], "2 of 5 validators killed") as window:
            for node in pair:
                node.kill()
            down_at = time.monotonic()
            wait_until(lambda: not any(by_name[v.name].node.status()["quorum"] for v in validators if v not in pair),
                       15, interval=0.2, message="the 3 live validators see no quorum")
            window.freeze(heights(survivors))
            probes = probe_all(survivors, down_at, wait=1.0)
            assert all(p.status == 202 for p in probes), [(p.client.name, p.status, p.body) for p in probes]
        for node in pair:
            node.start(wait=False)
        for node in pair:
            node.wait_ready(30)
        restarted = time.monotonic()
        wait_until(lambda: final_everywhere(clients, [p.order_id for p in probes]), 60, interval=0.2,
                   message="orders sent while 2 validators were down final everywhere after their restart")
        figures.append(f"2 of 5 killed: no final answer while down; their orders final on all nodes "
                       f"{time.monotonic() - restarted:.2f}s after both restarted")
    finally:
        stop_traders(traders, stop)
        auditor.stop()
    print(f"\n[{load_line()}] auditor passes {auditor.passes}")
    for line in figures:
        print("  " + line)
    print("  trader outcomes: " + ", ".join(f"{t.client.name} {dict(sorted(t.outcomes.items()))}" for t in traders))
    settled(history, clients, nodes, timeout=60)
    print(f"  {history.summary()}")
    assert history.counts["final_answers"] >= 100
    entered_at = {oid: next(iter(f.answered)) for oid, f in history.orders.items() if f.answered}
    cross = [t for t in history.trades.values()
             if entered_at.get(t["buy_order_id"]) not in (None, entered_at.get(t["sell_order_id"]))
             and t["sell_order_id"] in entered_at]
    assert len(cross) >= 10, f"only {len(cross)} trades between orders entered at different nodes"
