import math
import random

import pytest

from p2p.resilience.breaker import BreakerConfig
from p2p.resilience.retry_budget import RetryBudget
from p2p.rpc.metrics import PeerMetrics
from p2p.rpc.router import AdaptiveRouter, RetryPolicy, RouterConfig, RouterWeights


def router(**kw):
    return AdaptiveRouter(RouterConfig(**kw), rng=random.Random(7), clock=lambda: 0.0)


def feed(r, peer, latency, now, n=20, fail=0.0, rng=random.Random(1), step=0.05):  # noqa: B008 - one stream for all calls
    for _ in range(n):
        r.on_start(peer, now)
        if rng.random() < fail:
            r.on_failure(peer, "error", 0.001, now + 0.001)
        else:
            r.on_success(peer, latency, now + latency)
        now += step
    return now


def fail(r, peer, kind, n, sent, done):
    for _ in range(n):
        r.on_start(peer, sent)
        r.on_failure(peer, kind, done - sent, done)


def test_peak_ewma_jumps_up_and_decays_with_tau():
    m = PeerMetrics(tau=1.0)
    m.observe(0.010, 0.0)
    m.observe(0.100, 0.1)
    assert m.ewma == 0.100
    m.observe(0.010, 1.1)                  # 1 s later: weight exp(-1) on the old value
    assert m.ewma == pytest.approx(0.010 + 0.090 * 0.3679, rel=1e-3)
    before = m.ewma
    m.on_start(2.0)
    m.on_failure("error", 0.001, 2.001)    # a fast error costs the penalty latency, smoothed
    assert m.ewma == pytest.approx(before + (m.penalty_latency - before) * (1 - math.exp(-0.901)), rel=1e-3)
    m.on_start(2.1)
    m.on_failure("timeout", 1.0, 3.1)      # a timeout is a peak
    assert m.ewma == 1.0


def test_silence_raises_the_estimate_of_a_peer_that_stops_answering():
    m = PeerMetrics()
    m.observe(0.010, 0.0)
    m.on_start(1.0)
    assert m.latency(1.005, prior=0.010) == pytest.approx(0.010)
    assert m.latency(1.3, prior=0.010) == pytest.approx(0.3)
    m.on_failure("timeout", 1.0, 2.0)      # timeouts do not count as progress
    assert m.silence(2.0) == 0.0 and m.outstanding == 0


def test_score_ordering_fast_beats_slow_and_fast_failing_loses_to_healthy():
    r = router()
    feed(r, "fast", 0.010, 0.0)
    feed(r, "slow", 0.050, 0.0)
    feed(r, "failing", 0.002, 0.0, fail=0.5)
    now = 1.0
    assert r.cost("fast", now) < r.cost("slow", now)
    assert r.cost("failing", now) > r.cost("slow", now)
    snap = r.snapshot(now)
    assert snap["failing"]["error_rate"] > 0.2
    assert snap["fast"]["score"] < snap["slow"]["score"]


def test_outstanding_adds_load_to_cost():
    r = router()
    feed(r, "a", 0.010, 0.0)
    feed(r, "b", 0.010, 0.0)
    base = r.cost("a", 1.0)
    r.on_start("a", 1.0)
    r.on_start("a", 1.0)
    assert r.cost("a", 1.0) == pytest.approx(3 * base, rel=0.05)
    assert r.cost("a", 1.0) > r.cost("b", 1.0)


def test_weights_are_configurable():
    heavy = router(weights=RouterWeights(error=50.0))
    light = router(weights=RouterWeights(error=0.0))
    for r in (heavy, light):
        for q in ("q1", "q2"):
            feed(r, q, 0.010, 0.0)
        feed(r, "p", 0.010, 0.0, fail=0.3, rng=random.Random(5))
    assert heavy.cost("p", 1.0) > 5 * light.cost("p", 1.0)


def test_fleet_wide_errors_single_nobody_out():
    r = router()
    for i, q in enumerate(("a", "b", "c", "d")):
        feed(r, q, 0.004, 0.0, n=600, fail=0.25, rng=random.Random(i), step=0.005)
    costs = sorted(r.cost(q, 3.0) for q in "abcd")
    assert costs[-1] < 2.0 * costs[0]          # noise only: no peer is penalised for the fleet's errors


def deliver(r, pending, now):
    """Report to `r` the answers in `pending` [(done, peer, latency, ok)] due by `now`."""
    pending.sort()
    while pending and pending[0][0] <= now:
        done, peer, lat, ok = pending.pop(0)
        if ok:
            r.on_success(peer, lat, done)
        else:
            r.on_failure(peer, "error", lat, done)


def simulate(r, latencies, steps=4000, rate=0.002):
    """Closed-form toy loop: one request every `rate` s, answered after the peer's latency."""
    pending: list[tuple[float, str, float, bool]] = []
    counts = {p: 0 for p in latencies}
    now = 0.0
    for _ in range(steps):
        now += rate
        deliver(r, pending, now)
        peer = r.choose(list(latencies), now)
        r.on_start(peer, now)
        lat, ok = latencies[peer]()
        pending.append((now + lat, peer, lat, ok))
        counts[peer] += 1
    return counts


def test_p2c_avoids_the_slow_and_the_failing_peer():
    rng = random.Random(3)
    peers = {f"p{i}": (lambda: (rng.lognormvariate(-4.6, 0.3), True)) for i in range(5)}
    peers["slow"] = lambda: (0.1 * rng.lognormvariate(0, 0.3), True)
    peers["failing"] = lambda: ((0.001, False) if rng.random() < 0.5 else (0.01, True))
    counts = simulate(router(), peers)
    total = sum(counts.values())
    fair = total / len(peers)
    assert counts["slow"] < 0.1 * fair
    assert counts["failing"] < 0.1 * fair
    assert min(counts[f"p{i}"] for i in range(5)) > 0.6 * fair


def test_new_peer_gets_the_median_prior_and_one_request_at_a_time():
    r = router()
    feed(r, "a", 0.010, 0.0)
    feed(r, "b", 0.020, 0.0)
    feed(r, "c", 0.030, 0.0)
    assert r.prior(1.5) == pytest.approx(0.020, rel=0.2)
    assert r.choose(["a", "b", "c", "new"], 1.5) == "new"      # explored at once
    r.on_start("new", 1.5)
    for _ in range(50):                                          # not again while in flight
        assert r.choose(["a", "b", "c", "new"], 1.501) != "new"
    assert r.snapshot(1.502)["new"]["latency_ms"] >= 15


def test_exploration_probes_an_avoided_peer_about_once_per_interval():
    r = router(probe_interval=1.0)
    feed(r, "good", 0.010, 0.0, n=5)
    feed(r, "bad", 0.500, 0.0, n=5)
    picks = []
    now = 1.0
    for _ in range(3000):                # 3 s, requests answered at once
        p = r.choose(["good", "bad"], now)
        r.on_start(p, now)
        r.on_success(p, 0.5 if p == "bad" else 0.01, now)
        picks.append((now, p))
        now += 0.001
    bad = [t for t, p in picks if p == "bad"]
    assert 1 <= len(bad) <= 5


def test_breaker_opens_and_half_open_probe_comes_first():
    r = router(breaker=BreakerConfig(consecutive_failures=3, cooldown_base=1.0, cooldown_cap=1.0, cooldown_min=1.0))
    feed(r, "ok", 0.01, 0.0, n=5)
    fail(r, "bad", "error", 3, 0.3, 0.3)
    assert r.snapshot(0.4)["bad"]["breaker"] == "open"
    assert all(r.choose(["ok", "bad"], 0.5) == "ok" for _ in range(50))
    assert r.choose(["ok", "bad"], 1.31) == "bad"                   # the single probe
    r.on_start("bad", 1.31)
    assert all(r.choose(["ok", "bad"], 1.32) == "ok" for _ in range(50))
    r.on_success("bad", 0.01, 1.33)
    snap = r.snapshot(1.33)["bad"]
    assert snap["breaker"] == "closed" and snap["admission"] < 1.0


def test_every_breaker_open_waits_for_the_first_cooldown_then_probes_that_peer():
    """No request is forced on a peer whose breaker is cooling down: the caller is told how long to
    wait; the first peer whose cooldown ends gets the probe, and nobody else until it answers."""
    r = router(max_ejected=1.0,
               breaker=BreakerConfig(consecutive_failures=1, cooldown_base=10, cooldown_cap=10, cooldown_min=10,
                                     cooldown_jitter=0.0))
    for t, peer in ((0.0, "a"), (1.0, "b"), (2.0, "c")):
        r.on_start(peer, t)
        r.on_failure(peer, "error", 0.001, t)
    assert r.choose(["c", "b", "a"], 3.0) is None
    assert r.wait_hint(["c", "b", "a"], 3.0) == pytest.approx(7.0)      # a's cooldown ends at 10
    assert r.wait_hint(["c", "b"], 3.0) == pytest.approx(8.0)
    assert r.choose(["c", "b", "a"], 10.0, start=True) == "a"           # a's probe
    assert r.choose(["c", "b", "a"], 10.5) is None and r.wait_hint(["c", "b", "a"], 10.5) == pytest.approx(0.5)
    r.on_success("a", 0.01, 10.6)
    assert r.choose(["c", "b", "a"], 10.6) == "a"
    assert r.choose([], 3.0) is None
    assert r.choose(["a"], 3.0, exclude={"a"}) is None


def test_forget_and_transition_callback():
    log = []
    r = AdaptiveRouter(RouterConfig(breaker=BreakerConfig(consecutive_failures=1)), rng=random.Random(1),
                       on_transition=lambda peer, old, new, why: log.append((peer, str(old), str(new))))
    r.on_start("x", 0.0)
    r.on_failure("x", "timeout", 1.0, 1.0)
    assert log == [("x", "closed", "open")]
    r.forget("x")
    assert "x" not in r and r.snapshot(1.0) == {}


def test_retry_policy_attempts_budget_and_jitter():
    t = [0.0]
    policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.05, rng=random.Random(2),
                         budget=RetryBudget(ratio=0.5, min_per_second=0.0, max_balance=2.0, clock=lambda: t[0]))
    d1 = policy.next_retry_delay(1)
    d2 = policy.next_retry_delay(2)
    assert d1 is not None and d2 is not None
    assert 0 <= d1 <= 0.01 and 0 <= d2 <= 0.02
    assert policy.next_retry_delay(3) is None          # max attempts
    assert policy.next_retry_delay(1) is None          # budget spent
    policy.on_request()
    policy.on_request()
    assert policy.next_retry_delay(1) is not None
    assert policy.next_retry_delay(1, kind="bogus") is None


def test_ejection_cap_keeps_most_peers_in_rotation():
    r = router(max_ejected=0.5, breaker=BreakerConfig(consecutive_failures=1, cooldown_min=10, cooldown_base=10))
    for peer in "abcd":
        r.on_start(peer, 0.0)
        r.on_failure(peer, "error", 0.001, 0.0)
    states = [v["breaker"] for v in r.snapshot(0.1).values()]
    assert states.count("open") == 2 and states.count("closed") == 2


def test_outlier_gets_only_backed_off_probes_and_returns_when_healed():
    r = router(probe_interval=0.5, probe_interval_max=2.0)
    rng = random.Random(4)
    peers = [f"g{i}" for i in range(4)] + ["slow"]
    pending: list[tuple[float, str, float]] = []
    picks = []
    now = 0.0
    while now < 10.0:                         # 500 req/s; 'slow' is 20x slower until t = 6
        now += 0.002
        pending.sort()
        while pending and pending[0][0] <= now:
            done, peer, lat = pending.pop(0)
            r.on_success(peer, lat, done)
        p = r.choose(peers, now)
        assert p is not None
        r.on_start(p, now)
        lat = rng.lognormvariate(-4.6, 0.3) * (20 if p == "slow" and now < 6.0 else 1)
        pending.append((now + lat, p, lat))
        if p == "slow":
            picks.append(now)
    before = [t for t in picks if 2.0 < t < 6.0]
    gaps = [b - a for a, b in zip(before, before[1:])]
    assert 1 <= len(before) <= 4 and all(g >= 0.9 for g in gaps)   # backed-off probes only
    after = [t for t in picks if t >= 6.0]
    assert after and after[0] <= 8.1 and len(after) > 150         # found healthy, back in rotation


def test_probe_success_restarts_the_estimate():
    r = router(breaker=BreakerConfig(consecutive_timeouts=2, cooldown_base=1.0, cooldown_cap=1.0, cooldown_min=1.0))
    feed(r, "ok", 0.01, 0.0, n=5)
    fail(r, "bad", "timeout", 2, 0.3, 1.3)
    assert r.snapshot(1.4)["bad"]["latency_ms"] > 500
    assert r.choose(["ok", "bad"], 2.4) == "bad"
    r.on_start("bad", 2.4)
    r.on_success("bad", 0.012, 2.412)
    assert r.snapshot(2.42)["bad"]["latency_ms"] == pytest.approx(12.0, rel=0.05)


def drive(r, peers, latency, start, end, pending, step=0.002):
    """One request every `step` s in [start, end), answered after `latency(peer, t)` s; `pending`
    carries answers across calls. Returns the [(time sent, peer)] of every request."""
    sent = []
    now = start
    while now < end:
        deliver(r, pending, now)
        p = r.choose(peers, now)
        r.on_start(p, now)
        lat = latency(p, now)
        pending.append((now + lat, p, lat, True))
        sent.append((now, p))
        now += step
    return sent


def test_a_confirmed_outlier_is_not_trusted_on_one_lucky_answer():
    r = router(probe_interval=0.5, probe_interval_max=1.0)
    peers = [f"g{i}" for i in range(4)] + ["slow"]
    lucky: list[float] = []

    def latency(p, t):            # the healthy peers are busy (~7 requests in flight each)
        if p != "slow":
            return 0.030
        if t >= 3.0 and not lucky:
            lucky.append(t)
            return 0.045          # within twice the prior (30 ms), not within the prior
        return 0.300

    pending: list[tuple[float, str, float, bool]] = []
    sent = drive(r, peers, latency, 0.0, 5.0, pending, step=0.001)
    slow = [t for t, p in sent if p == "slow" and t >= 1.0]
    assert lucky
    # Before: the lucky answer put it back in P2C for a burst (its estimate is its last answer).
    after = [t for t in slow if lucky[0] < t < lucky[0] + 0.5]
    assert len(after) <= 1, after
    assert len(slow) <= 10                               # explorations only, backed off


def test_a_healed_outlier_is_on_probation_one_request_at_a_time():
    r = router(probe_interval=0.5, probe_interval_max=1.0)
    peers = [f"g{i}" for i in range(4)] + ["slow"]
    pending: list[tuple[float, str, float, bool]] = []
    drive(r, peers, lambda p, t: 0.1 if p == "slow" else 0.010, 0.0, 3.0, pending)
    log = []

    def healed(p, t):
        if p == "slow":
            log.append(t)
        return 0.010

    sent = drive(r, peers, healed, 3.0, 6.0, pending)
    first = log[:4]                                      # the healing exploration, then probation
    assert len(first) == 4 and all(b - a >= 0.010 for a, b in zip(first, first[1:]))
    assert sum(1 for t, p in sent if p == "slow" and t >= 5.0) > 0.1 * len([t for t, _ in sent if t >= 5.0])


def test_probation_ends_on_a_slow_answer():
    r = router(probe_interval=0.5, probe_interval_max=1.0)
    peers = [f"g{i}" for i in range(4)] + ["slow"]
    pending: list[tuple[float, str, float, bool]] = []
    drive(r, peers, lambda p, t: 0.3 if p == "slow" else 0.030, 0.0, 3.0, pending, step=0.001)
    answers = []

    def relapsing(p, t):
        if p != "slow":
            return 0.030
        answers.append(t)
        return 0.010 if len(answers) == 1 else 0.3     # one normal answer, then slow again

    drive(r, peers, relapsing, 3.0, 6.0, pending, step=0.001)
    assert len(answers) >= 3
    healed = answers[0] + 0.010
    # Before: trusted on that answer, it got a burst while its next (slow) answers were on their way.
    assert sum(1 for t in answers if healed <= t < healed + 0.3) == 1
    assert len([t for t in answers if t >= healed + 0.3]) <= 4   # explorations again, backed off


def test_a_silent_peer_leaves_p2c_before_the_outlier_set_is_refreshed():
    r = router()
    for q in ("a", "b", "mute"):
        feed(r, q, 0.010, 0.0)
    now = 2.0
    r.prior(now)                                         # the cached outlier set: nobody
    for q in ("a", "b"):
        for _ in range(20):                              # busy peers: P2C would favour the idle one
            r.on_start(q, now)
        r.on_success(q, 0.029, now + 0.029)              # (and they keep answering)
    r.on_start("mute", now)                              # ... which never answers
    picks = [r.choose(["a", "b", "mute"], now + 0.03) for _ in range(200)]
    assert "mute" not in picks


def test_a_timeout_is_news_no_exploration_owed_at_once():
    r = router(probe_interval=1.0)
    for q in ("a", "b"):
        feed(r, q, 0.010, 0.0, n=20)
    r.on_start("x", 0.0)
    r.on_failure("x", "timeout", 1.0, 1.0)               # its only request, sent a timeout ago
    assert all(r.choose(["a", "b", "x"], 1.001 + i * 0.001) != "x" for i in range(100))
    assert r.choose(["a", "b", "x"], 2.01) == "x"        # explored an interval after the news


def test_a_flapping_peer_just_back_gets_one_request_at_a_time():
    cfg = BreakerConfig(consecutive_timeouts=1, cooldown_base=0.1, cooldown_cap=0.1, cooldown_min=0.1,
                        ramp_period=1.0, decay_period=100.0)
    r = router(breaker=cfg)
    feed(r, "a", 0.010, 0.0, n=20)
    feed(r, "b", 0.010, 0.0, n=20)
    feed(r, "f", 0.010, 0.0, n=20)
    now = 1.0
    for _ in range(2):                                   # drops twice, comes back twice
        r.on_start("f", now)
        r.on_failure("f", "timeout", 1.0, now + 1.0)
        now += 1.2
        assert r.choose(["a", "b", "f"], now) == "f"     # the half-open probe
        r.on_start("f", now)
        r.on_success("f", 0.010, now + 0.01)
        now += 0.02
    picks = []
    for _ in range(50):                                  # nothing answers: load piles up on a and b
        p = r.choose(["a", "b", "f"], now)
        r.on_start(p, now)
        picks.append(p)
    assert picks.count("f") == 1
    r.on_success("f", 0.010, now + 0.01)
    assert "f" in [r.choose(["a", "b", "f"], now + 0.02) for _ in range(50)]


def test_concurrency_limit_grows_only_while_in_use():
    """AIMD additive increase needs at least half the limit in flight (RFC 7661): one request at a
    time never inflates it, a peer kept busy does raise it."""
    r = router(aimd_initial=8.0)
    now = 0.0
    for _ in range(500):                       # sequential: 1 in flight, limit 8
        r.on_start("idle", now)
        now += 0.001
        r.on_success("idle", 0.001, now)
    assert r.snapshot(now)["idle"]["concurrency_limit"] == 8
    for _ in range(500):                       # 6 in flight: above half the limit, so it grows
        for _ in range(6):
            r.on_start("busy", now)
        now += 0.001
        for _ in range(6):
            r.on_success("busy", 0.001, now)
    assert r.snapshot(now)["busy"]["concurrency_limit"] > 8


@pytest.mark.parametrize("noise", ["lognormal", "jitter"])
def test_a_healed_peer_with_ordinary_latency_noise_is_back_within_seconds(noise):
    """A peer that failed half its requests heals; its answers then look like everyone else's, noise
    included (about half of them above the fleet's median). It must not need a lucky exploration
    faster than the median to come back: in every seed it serves a real share within 5 s."""
    late = []
    for seed in range(100):
        rng = random.Random(seed)
        r = AdaptiveRouter(RouterConfig(), rng=random.Random(seed), clock=lambda: 0.0)
        peers = [f"g{i}" for i in range(4)] + ["flaky"]
        pending: list = []
        sent = []
        now = 0.0
        while now < 10.0:                        # 200 requests/s; the fault heals at t = 3
            deliver(r, pending, now)
            p = r.choose(peers, now)
            assert p is not None
            r.on_start(p, now)
            if noise == "lognormal":
                lat = 0.020 * rng.lognormvariate(0.0, 0.25)
            else:                                # a fixed service time plus jitter (a sleep-bound service)
                lat = 0.020 + 0.003 * rng.random()
            ok = not (p == "flaky" and now < 3.0 and rng.random() < 0.5)
            pending.append((now + lat, p, lat, ok))
            sent.append((now, p))
            now += 0.005
        window = [p for t, p in sent if 6.0 <= t < 8.0]
        if window.count("flaky") <= 0.05 * len(window):
            late.append(seed)
    assert not late, f"still shunned 3-5 s after healing in seeds {late}"
