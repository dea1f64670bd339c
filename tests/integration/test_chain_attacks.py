"""The attacks on real processes, each of which must fail safe. Four pinned validators
(n = 3f+1 with f = 1: one faulty validator may neither fork, nor halt, nor poison clocks); the history
checker (tests/history.py) records every answer and re-reads every node throughout.

- clock poison: a validator (not the founder) whose clock runs 10 s ahead (libfaketime: the process really believes it;
  20 times the chain's bound and inside the links' 60 s message-age window, so the chain's own bound
  is what is tested). Its proposals are refused as `time_in_future` (ChainCore's bound: a block's time
  is at most max_clock_drift_ms = 500 ms ahead of the validating node's clock), so every block time
  anywhere stays within 500 ms of real time, finality goes on, and the poisoned node, back on the right
  clock, catches up with a chain that never left real time. Orders its users sent while its clock was
  ahead expire "too far" in the future for the others until real time catches up: they stay 202 for
  up to the offset, then become final everywhere (none is lost). A founder whose clock is ahead cannot
  set the chain's time either: the chain's time starts at zero, not at the genesis's creation time;
- stalling member: a validator stopped outright (SIGSTOP: links stay up, nothing answers), then one that
  answers slowly (stopped and resumed every 0.3 s): the other three finalise at their own pace;
- double fill across a partition: 4 validators split 2|2 with one resting sell; a buy at each side:
  neither side says final during the split; after the heal exactly one buy fills, never both;
- two networks founded apart meeting: reported on both sides (`/status` conflicting_networks, a
  WARNING), links refused, never merged; both go on finalising their own orders.
"""
from __future__ import annotations

import glob
import signal
import statistics
import threading
import time

import pytest

from tests.harness import wait_until
from tests.history import Auditor, History
from tests.integration.chain_nodes import (CHAIN_SETTINGS, P2P_PORT, final_everywhere, load_line, node_ids,
                                          pinned_chain, pinned_loopback, probe_all, settled, wait_for)
from tests.integration.netns import lan_or_skip
from tests.trading import Trader, run_traders, stop_traders

MARKETS = ["BTC-USD"]
CLOCK_AHEAD_S = 10
MAX_DRIFT_MS = 500          # CoreConfig.max_clock_drift_ms


def _faketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


def _run_with_load(clients: list, accounts: tuple[str, ...] = ("default",)) -> tuple[threading.Event, list[Trader]]:
    """Traders at these nodes until the returned event is set (stop_traders)."""
    stop = threading.Event()
    traders = [Trader(c, list(accounts), seed=i, stop=stop, wait=1.0) for i, c in enumerate(clients)]
    run_traders(traders)
    return stop, traders


def _final_latencies(history: History, nodes: set[str], since: float, until: float) -> list[float]:
    return sorted(a.ended - a.started for a in list(history.answers)
                  if a.node in nodes and a.status == 201 and since <= a.started and a.ended <= until)


# ------------------------------------------------------------------ clock poison
@pytest.mark.timeout(240)
def test_a_validator_with_a_clock_far_ahead_cannot_move_block_times(cluster):
    library = _faketime()
    if library is None:
        pytest.skip("libfaketime not installed (apt-get install faketime)")
    ids = node_ids(cluster.base, [f"v{i}" for i in range(4)])
    liar = ids.index(max(ids))                        # not the founder (the smallest id): see the next test
    validators, _ = pinned_loopback(cluster, 4, env={liar: _ahead(library, CLOCK_AHEAD_S)})
    poisoned = validators[liar]
    honest = [n for n in validators if n is not poisoned]
    wait_until(lambda: poisoned.status()["finality_lag_s"] >= CLOCK_AHEAD_S - 2, 10,
               message="the poisoned node's clock is ahead of the chain's (its finality lag shows the offset)")
    history = History()
    clients = [history.client(n) for n in validators]
    stop, traders = _run_with_load(clients)
    auditor = Auditor(history, clients, MARKETS, orders_per_pass=5).start()
    worst_ms = -10**9
    try:
        refused_before = _refusals(honest)
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            for node in validators:
                status = node.status()
                wall_ms = time.time() * 1000
                worst_ms = max(worst_ms, status["exchange"]["last_block_time_ms"] - wall_ms)
            if _refusals(honest) > refused_before + 2 and history.counts["final_answers"] > 40:
                break
        assert _refusals(honest) > refused_before, "the poisoned validator's proposals were never even seen"
        assert worst_ms <= MAX_DRIFT_MS, f"a block time {worst_ms:.0f} ms ahead of the wall clock"
        finals_honest = sum(1 for a in history.answers if a.status == 201 and a.node != poisoned.name)
        assert finals_honest >= 20, history.summary()
        # back on the right clock, it catches up with a chain that never left real time
        poisoned.stop()
        poisoned.env_extra.clear()
        poisoned.start()
        wait_for(lambda: poisoned.status()["height"] >= min(n.status()["height"] for n in honest), 30,
                 "the validator back on the right clock catches up", validators)
        probes = probe_all([clients[liar]], time.monotonic(), wait=5.0)
        assert probes[0].status == 201, probes[0].body
    finally:
        stop_traders(traders, stop)
        auditor.stop()
    wait_for(lambda: final_everywhere(clients, list(history.accepted())), CLOCK_AHEAD_S + 60,
             "every accepted order final everywhere, the poisoned node's included", validators)
    for trade in validators[0].get("/trades/BTC-USD?limit=10000")["trades"]:
        assert trade["time_ms"] <= time.time() * 1000 + MAX_DRIFT_MS, trade
    print(f"\n[{load_line()}] clock +{CLOCK_AHEAD_S}s on one of 4 validators: newest block time at most "
          f"{worst_ms:.0f} ms ahead of the wall clock; {_refusals(honest)} proposals refused as time_in_future")
    settled(history, clients, validators)
    print(f"  {history.summary()}")


@pytest.mark.timeout(120)
def test_a_founder_with_a_clock_far_ahead_cannot_stall_the_network_nor_set_its_time(cluster):
    library = _faketime()
    if library is None:
        pytest.skip("libfaketime not installed (apt-get install faketime)")
    ids = node_ids(cluster.base, [f"v{i}" for i in range(4)])
    founder = ids.index(min(ids))                     # the smallest listed id founds a pinned network
    validators, _ = pinned_loopback(cluster, 4, env={founder: _ahead(library, 60)})
    for node in validators:
        chain_time_ms = node.status()["exchange"]["last_block_time_ms"]
        assert chain_time_ms <= time.time() * 1000 + MAX_DRIFT_MS, f"{node.name}: the chain's time is ahead"
    start = validators[0].status()["height"]
    wait_until(lambda: validators[0].status()["height"] >= start + 3, 10, message="the new network makes blocks")


def _ahead(library: str, seconds: int) -> dict[str, str]:
    """Environment that moves a process's wall clock (not its monotonic clock) `seconds` ahead."""
    return {"LD_PRELOAD": library, "FAKETIME": f"+{seconds}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _refusals(nodes) -> int:
    return sum(n.log_path.read_text(errors="replace").count("refused: time_in_future") for n in nodes)


# ------------------------------------------------------------------ stalling member
@pytest.mark.timeout(240)
def test_a_stalled_or_slow_validator_does_not_slow_the_others(cluster):
    validators, _ = pinned_loopback(cluster, 4)
    staller = validators[3]
    stalled = staller.proc
    assert stalled is not None              # pinned_loopback started it
    honest = {n.name for n in validators[:3]}
    history = History()
    clients = [history.client(n) for n in validators]
    stop, traders = _run_with_load(clients[:3])
    auditor = Auditor(history, clients, MARKETS, orders_per_pass=5).start()
    phases: dict[str, tuple[float, float]] = {}
    try:
        start = time.monotonic()
        wait_until(lambda: history.counts["final_answers"] >= 30, 30, message="a baseline of final orders")
        phases["baseline"] = (start, time.monotonic())
        stalled.send_signal(signal.SIGSTOP)
        begin = time.monotonic()
        _phase(validators[:3], "the three others finalise while the fourth is stopped")
        phases["stopped"] = (begin, time.monotonic())
        stalled.send_signal(signal.SIGCONT)
        begin = time.monotonic()
        slow = threading.Event()

        def stutter() -> None:     # a member that answers, but slowly: stopped 0.3 s of every 0.6 s
            while not slow.is_set():
                stalled.send_signal(signal.SIGSTOP)
                slow.wait(0.3)
                stalled.send_signal(signal.SIGCONT)
                slow.wait(0.3)
        stutterer = threading.Thread(target=stutter, daemon=True)
        stutterer.start()
        try:
            _phase(validators[:3], "the three others finalise while the fourth is slow")
        finally:
            slow.set()
            stutterer.join(5)
            stalled.send_signal(signal.SIGCONT)
        phases["slow"] = (begin, time.monotonic())
        wait_for(lambda: staller.status()["height"] >= min(n.status()["height"] for n in validators[:3]), 30,
                 "the stalled validator catches up", validators)
    finally:
        stalled.send_signal(signal.SIGCONT)
        stop_traders(traders, stop)
        auditor.stop()
    settled(history, clients, validators)
    figures = {}
    for phase, (since, until) in phases.items():
        latencies = _final_latencies(history, honest, since, until)
        assert len(latencies) >= 5, (phase, latencies)
        figures[phase] = (len(latencies), statistics.median(latencies), latencies[int(0.9 * (len(latencies) - 1))])
    print(f"\n[{load_line()}] submit-to-final at the three others (count, p50, p90 in s): "
          + "; ".join(f"{p} {n} {p50:.3f} {p90:.3f}" for p, (n, p50, p90) in figures.items()))
    for phase in ("stopped", "slow"):
        assert figures[phase][1] <= max(1.0, 3 * figures["baseline"][1]), figures


def _phase(nodes, message: str, seconds: float = 5.0, blocks: int = 15) -> None:
    """A fault phase: at least `seconds` long (past the links' 1.5 s silence limit, so a stopped validator
    is also dropped) and at least `blocks` new heights at every one of `nodes`."""
    start = min(n.status()["height"] for n in nodes)
    until = time.monotonic() + seconds
    wait_until(lambda: min(n.status()["height"] for n in nodes) >= start + blocks and time.monotonic() >= until,
               seconds + 30, interval=0.2, message=message)


# ------------------------------------------------------------------ double fill across a partition
@pytest.mark.netns
@pytest.mark.timeout(240)
def test_one_resting_sell_and_a_buy_on_each_side_of_a_split_fills_once(tmp_path):
    with lan_or_skip(4, partitions=True) as lan:
        validators, _ = pinned_chain(lan, tmp_path, 4)
        history = History()
        clients = [history.client(n) for n in validators]
        auditor = Auditor(history, clients, MARKETS, orders_per_pass=5).start()
        try:
            status, sell = clients[0].post_order({"market": "BTC-USD", "side": "sell", "type": "limit",
                                                  "price": "100", "qty": "1"}, wait=5)
            assert status == 201 and sell["order"]["status"] == "open", sell
            with history.split([c.name for c in clients], "2|2") as window:
                lan.partition([{0, 1}, {2, 3}])
                wait_for(lambda: not any(n.status()["quorum"] for n in validators), 15,
                         "both sides see they have no quorum", validators)
                window.freeze({c.name: h for c, h in zip(clients, [n.status()["height"] for n in validators])})
                buy = {"market": "BTC-USD", "side": "buy", "type": "limit", "price": "100", "qty": "1"}
                answers = [clients[i].post_order(buy, wait=2) for i in (1, 2)]
                assert [a[0] for a in answers] == [202, 202], answers
                assert {a[1]["reason"] for a in answers} == {"no_quorum"}, answers
            lan.heal()
            buys = [a[1]["order"]["id"] for a in answers]
            healed = time.monotonic()
            wait_for(lambda: final_everywhere(clients, buys), 60, "both buys final everywhere after the heal",
                     validators)
            healed_in = time.monotonic() - healed
        finally:
            auditor.stop()
        settled(history, clients, validators)
        for client in clients:
            views = [client.get(f"/orders/{oid}")[1]["order"] for oid in buys]
            assert sorted(v["status"] for v in views) == ["filled", "open"], views
            assert sorted(v["filled"] for v in views) == ["0.0000", "1.0000"], views
            assert client.get(f"/orders/{sell['order']['id']}")[1]["order"]["status"] == "filled"
            trades = client.get("/trades/BTC-USD?limit=100")[1]["trades"]
            assert len(trades) == 1 and trades[0]["sell_order_id"] == sell["order"]["id"], trades
        print(f"\n[{load_line()}] 2|2 split: both buys 202 no_quorum; after the heal both final on all 4 "
              f"nodes in {healed_in:.2f}s, exactly one filled; {history.summary()}")


# ------------------------------------------------------------------ two networks founded apart
@pytest.mark.netns
@pytest.mark.timeout(240)
def test_two_networks_founded_apart_are_reported_and_never_merged(tmp_path):
    with lan_or_skip(4, partitions=True) as lan:
        lan.partition([{0, 1}, {2, 3}])                 # two LANs that cannot see each other yet
        everyone = ",".join(f"{a}:{P2P_PORT}" for a in lan.addresses)
        nodes = [lan.node(tmp_path, i, f"n{i}", **{**CHAIN_SETTINGS, "bootstrap_peers": everyone, "found_after": None})
                 for i in range(4)]
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready(30)
        sides = [nodes[:2], nodes[2:]]

        def one_chain(side) -> str | None:
            views = [n.status() for n in side]
            ids = {v["chain_id"] for v in views}
            return ids.pop() if len(ids) == 1 and None not in ids and all(v["quorum"] for v in views) else None
        chains = [wait_until(lambda: one_chain(s), 40, interval=0.3, message="each side founds one network")
                  for s in sides]
        assert chains[0] != chains[1]
        history = History()
        clients = [history.client(n) for n in nodes]
        placed = []
        for side in (0, 1):
            status, body = clients[2 * side].post_order({"market": "BTC-USD", "side": "buy", "type": "limit",
                                                         "price": f"{90 + side}", "qty": "1"}, wait=5)
            assert status == 201, body
            placed.append(body["order"]["id"])
        lan.heal()
        healed = time.monotonic()

        def reported() -> bool:
            for side, other in ((0, 1), (1, 0)):
                for node in sides[side]:
                    conflicts = node.status()["conflicting_networks"]
                    if not any(c.get("chain_id") == chains[other] for c in conflicts.values()):
                        return False
            return True
        wait_for(reported, 40, "both sides report the other network", nodes)
        noticed = time.monotonic() - healed
        seen = {n.name: max(c["seen"] for c in n.status()["conflicting_networks"].values()) for n in nodes}
        wait_until(lambda: all(max(c["seen"] for c in n.status()["conflicting_networks"].values()) > seen[n.name]
                               for n in nodes), 30, message="the other network keeps knocking and keeps being refused")
        for side, other in ((0, 1), (1, 0)):
            for node in sides[side]:
                view = node.status()
                assert view["chain_id"] == chains[side]
                assert not node.connected_ids() & {n.node_id for n in sides[other]}, node.name
                assert _warning_logged(node, "on another network with the same NETWORK_ID")
        for side in (0, 1):                              # each still finalises, and only its own orders
            status, body = clients[2 * side + 1].post_order({"market": "BTC-USD", "side": "sell", "type": "limit",
                                                             "price": "200", "qty": "1"}, wait=5)
            assert status == 201, body
            for node in sides[side]:
                assert node.api("GET", f"/orders/{placed[side]}")[0] == 200
                assert node.api("GET", f"/orders/{placed[1 - side]}")[0] == 404
        print(f"\n[{load_line()}] networks founded apart: both sides reported the other {noticed:.2f}s after "
              f"the heal; links refused, chains kept apart")
        history.assert_clean()


def _warning_logged(node, text: str) -> bool:
    return any("WARNING" in line and text in line for line in node.log_path.read_text(errors="replace").splitlines())
