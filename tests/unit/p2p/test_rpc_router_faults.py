"""The fault mix of tests/integration/test_rpc_faults.py, in simulated time against the real router:
5 peers, one 10x slow, one failing 50% of requests fast, one gone; 2 healthy peers remain, so the bad
ones are half the fleet the router still knows. And a peer flapping 2 s dead / 2 s up."""
import heapq
import random

import pytest

from p2p.rpc.router import AdaptiveRouter, RouterConfig
from tests.unit.p2p.test_rpc_router import deliver

RATE = 200.0          # requests/s, as in the integration test
BASE = 0.020          # normal service time (s)


def run(seed: int, fault_from: float = 1.0, heal_at: float = 9.0, until: float = 14.0):
    """One request every 1/RATE s, each answered after its peer's service time. Returns the
    [(time sent, peer)] of every request."""
    rng = random.Random(seed)
    # RpcConfig's router (tau 0.3 s), hence the same behaviour as RpcService.request.
    r = AdaptiveRouter(RouterConfig(tau=0.3), rng=random.Random(seed + 100), clock=lambda: 0.0)
    peers = ["g0", "g1", "slow", "failing", "doomed"]
    pending: list[tuple[float, str, float, bool]] = []
    sent: list[tuple[float, str]] = []
    now = 0.0
    while now < until:
        now += 1.0 / RATE
        if now >= fault_from + 0.5 and "doomed" in peers:      # killed: its link closes, it is forgotten
            peers.remove("doomed")
            r.forget("doomed")
            pending = [x for x in pending if x[1] != "doomed"]
        deliver(r, pending, now)
        faulty = fault_from <= now < heal_at
        peer = r.choose(peers, now)
        assert peer is not None
        r.on_start(peer, now)
        lat, ok = BASE * rng.lognormvariate(0, 0.2), True
        if faulty and peer == "slow":
            lat *= 10
        elif faulty and peer == "failing" and rng.random() < 0.5:
            lat, ok = 0.001, False
        pending.append((now + lat, peer, lat, ok))
        sent.append((now, peer))
    return sent


SEEDS = range(1, 9)


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_failing_peer_stays_out_without_bursts_while_two_of_four_peers_are_bad(seed):
    sent = run(seed)
    after = [(t, p) for t, p in sent if 3.0 <= t < 9.0]          # from 2 s after the faults began
    bad = [t for t, p in after if p in ("slow", "failing")]
    assert len(bad) < 0.05 * len(after), len(bad)
    # One successful probe must not put the failing peer back into rotation: before the fix (a probe
    # success restarted its error average; the plain median of 4 peers, 2 of them bad, was pulled
    # up) it came back for bursts of 10-30 requests after about every other probe: 3-79 requests
    # over these 6 s, 6 of these 8 seeds failing. Now probes, and at worst a rare short burst.
    failing = [t for t, p in after if p == "failing"]
    assert len(failing) < 0.02 * len(after), failing
    worst = max((sum(1 for u in failing if t <= u < t + 0.5) for t in failing), default=0)
    assert worst <= 10, (worst, failing)


@pytest.mark.parametrize("seed", SEEDS)
def test_healed_peers_get_traffic_back_within_5_s(seed):
    sent = run(seed)
    late = [(t, p) for t, p in sent if 12.0 <= t < 14.0]          # 3-5 s after healing at 9 s
    for peer in ("slow", "failing"):
        assert sum(1 for _, p in late if p == peer) > 0.05 * len(late), peer


def run_flapping(seed: int, rate: float = 1000.0, until: float = 27.0, timeout: float = 1.0):
    """5 peers; p4 is dead 2 s / up 2 s from t = 2 to t = 22 (no answer while dead: the caller's
    timeout fires). Returns the times of requests sent into an outage, and every (time sent, peer)."""
    rng = random.Random(seed)
    r = AdaptiveRouter(RouterConfig(tau=0.3), rng=random.Random(seed + 100), clock=lambda: 0.0)
    peers = [f"p{i}" for i in range(5)]

    def dead(t: float) -> bool:
        return 2.0 <= t < 22.0 and (t - 2.0) % 4.0 < 2.0

    pending: list[tuple[float, int, str, float, bool]] = []
    lost: list[float] = []
    sent: list[tuple[float, str]] = []
    peer: str | None
    now, n = 0.0, 0
    while now < until:
        now += 1.0 / rate
        while pending and pending[0][0] <= now:
            done, _, peer, lat, ok = heapq.heappop(pending)
            if ok:
                r.on_success(peer, lat, done)
            else:
                r.on_failure(peer, "timeout", lat, done)
        peer = r.choose(peers, now)
        assert peer is not None
        r.on_start(peer, now)
        lat = BASE / 2 * rng.lognormvariate(0, 0.3)
        n += 1
        if peer == "p4" and (dead(now) or dead(now + lat)):
            heapq.heappush(pending, (now + timeout, n, peer, timeout, False))
            lost.append(now)
        else:
            heapq.heappush(pending, (now + lat, n, peer, lat, True))
        sent.append((now, peer))
    return lost, sent


@pytest.mark.parametrize("seed", range(1, 5))
def test_a_flapping_peer_costs_about_one_request_per_outage_and_comes_back(seed):
    lost, sent = run_flapping(seed)
    # Outages at 10, 14 and 18 s, once it has tripped twice. Before, each outage caught the requests
    # its ramp share had in flight plus those sent before its silence showed (6-9 in all here), and
    # its exploratory requests could go into the outage too; now it comes back one request at a
    # time and a flapping peer's first timeout opens its breaker.
    assert len([t for t in lost if t >= 10.0]) <= 4, lost
    late = [p for t, p in sent if 25.0 <= t < 27.0]                   # 3-5 s after the last outage
    assert late.count("p4") > 0.1 * len(late)
