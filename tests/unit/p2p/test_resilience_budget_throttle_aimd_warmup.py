import random

import pytest

from p2p.resilience.aimd import AIMDLimit
from p2p.resilience.backoff import Backoff
from p2p.resilience.retry_budget import RetryBudget
from p2p.resilience.throttle import AdaptiveThrottle
from p2p.resilience.token_bucket import TokenBucket
from p2p.resilience.warmup import Warmup


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_retry_budget_exhaustion_and_refill():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, max_balance=5.0, clock=clock)
    spent = 0
    while budget.try_retry():
        spent += 1
    assert spent == 5 and not budget.can_retry() and budget.denied == 1
    for _ in range(10):                 # 10 requests earn 2 retries
        budget.record_request()
    assert budget.try_retry() and budget.try_retry() and not budget.try_retry()
    clock.t = 1.0                       # the floor refills 1/s
    assert budget.can_retry()
    assert budget.try_retry() and not budget.can_retry()


def test_retry_budget_caps_amplification():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, max_balance=1.0, clock=clock)
    retries = 0
    for _ in range(10_000):             # every request fails and wants a retry
        budget.record_request()
        retries += budget.try_retry()
    assert retries / 10_000 == pytest.approx(0.2, abs=0.001)


def test_token_bucket_put_is_capped():
    b = TokenBucket(0.0, 2.0, clock=Clock(), initial=0)
    b.put(5)
    assert b.tokens == 2.0


def test_backoff_delay_for_is_full_jitter_and_capped():
    b = Backoff(0.1, 1.0, 2.0, random.Random(0))
    samples = [b.delay_for(10) for _ in range(500)]
    assert max(samples) <= 1.0 and min(samples) >= 0.0 and max(samples) > 0.9
    assert all(b.delay_for(0) <= 0.1 for _ in range(100))
    assert b.attempts == 0


def test_throttle_formula_and_recovery():
    t = AdaptiveThrottle(k=2.0, span=10.0, buckets=10, rng=random.Random(0))
    assert t.reject_probability(0.0) == 0.0
    for _ in range(100):                # backend fails everything
        if not t.should_reject(0.0):     # (a local refusal counts itself)
            t.record_failure(0.0)
    p = t.reject_probability(0.0)
    assert p == pytest.approx(100 / 101)
    # answers bring it back to zero: requests <= K * accepts (accepts: neither failed nor in flight)
    t2 = AdaptiveThrottle(k=2.0, span=10.0, buckets=10, rng=random.Random(0))
    for i in range(100):
        t2.should_reject(0.0)
        if i % 2 == 1:
            t2.record_failure(0.0)
    assert t2.reject_probability(0.0) == 0.0
    # 1 accept in 4: (400 - 2*100) / 401 ~ 0.5 of new requests rejected locally
    t3 = AdaptiveThrottle(k=2.0, span=10.0, buckets=10, rng=random.Random(0))
    t3._window.add("requests", 0.0, 400)
    t3._window.add("refused", 0.0, 300)
    assert t3.reject_probability(0.0) == pytest.approx(200 / 401)
    # requests still in flight are neither accepted nor refused
    assert t3.reject_probability(0.0, in_flight=100) == pytest.approx(300 / 401)
    assert t3.reject_probability(11.0) == 0.0   # window forgets
    t4 = AdaptiveThrottle(k=2.0, span=10.0, buckets=10, rng=random.Random(0))
    for _ in range(50):
        assert not t4.should_reject(0.0, in_flight=49)   # a burst at start: nothing answered yet
    assert t4.reject_probability(0.0, in_flight=50) == 0.0


def test_aimd_additive_increase_multiplicative_decrease():
    a = AIMDLimit(4.0, min_limit=1.0, max_limit=6.0, increase=1.0, decrease=0.5, target_latency=0.1, cooldown=1.0)
    for _ in range(4):                  # one limit's worth of fast answers: about +1
        a.on_success(0.05)
    assert a.limit == pytest.approx(4.0 + 1 / 4 + 1 / 4.25 + 1 / 4.485 + 1 / 4.708, rel=1e-3)
    a.on_success(0.5)                   # slow answers do not grow the limit
    before = a.limit
    assert a.on_overload(10.0)
    assert a.limit == pytest.approx(before / 2)
    assert not a.on_overload(10.5)      # same congestion episode
    assert a.on_overload(11.0) and a.on_overload(12.0) and a.on_overload(13.0)
    assert a.limit == 1.0 and a.allowed == 1 and a.can_send(0) and not a.can_send(1)
    for _ in range(1000):
        a.on_success(0.01)
    assert a.limit == 6.0


def test_warmup_ramps_linearly_and_drives_a_bucket():
    w = Warmup(100.0, 10.0, start_fraction=0.1, started_at=5.0)
    assert w.rate(5.0) == pytest.approx(10.0)
    assert w.rate(10.0) == pytest.approx(55.0)
    assert w.rate(15.0) == 100.0 and w.done(15.0)
    assert w.rate(0.0) == pytest.approx(10.0)
    bucket = TokenBucket(1.0, 10.0, clock=Clock())
    w.apply(bucket, 10.0)
    assert bucket.rate == pytest.approx(55.0)
    w.restart(20.0)
    assert w.fraction(20.0) == pytest.approx(0.1)
