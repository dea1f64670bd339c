"""The fault mix of tests/integration/test_rpc_faults.py, in simulated time against the real router:
5 peers, one 10x slow, one failing 50% of requests fast, one gone; 2 healthy peers remain, so the bad
ones are half the fleet the router still knows."""
import random

import pytest

from p2p.rpc.router import AdaptiveRouter, RouterConfig
from tests.unit.test_rpc_router import deliver

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
