import random

import pytest

from p2p.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker


def make(**kw):
    log = []
    cfg = BreakerConfig(**{"cooldown_min": 0.1, **kw})
    b = CircuitBreaker(cfg, rng=random.Random(1), on_transition=lambda o, n, r: log.append((o, n, r)))
    return b, log


def trip(b, now=0.0):
    for _ in range(b.config.consecutive_failures):
        b.record_failure(now)


def test_consecutive_failures_open_and_report():
    b, log = make(consecutive_failures=3)
    b.record_failure(0.0)
    b.record_failure(0.0)
    b.record_success(0.0)            # resets the streak
    b.record_failure(0.0)
    b.record_failure(0.0)
    assert b.current_state(0.0) is BreakerState.CLOSED
    b.record_failure(0.0)
    assert b.current_state(0.0) is BreakerState.OPEN
    assert log[-1][:2] == (BreakerState.CLOSED, BreakerState.OPEN)
    assert "3 consecutive" in log[-1][2]
    assert not b.admits(0.01)


def test_failure_rate_needs_min_volume():
    b, _ = make(consecutive_failures=100, failure_rate=0.5, min_volume=10)
    for i in range(4):                # 4 fail / 8: rate 50% not above, volume 8 < 10
        b.record_success(i * 0.01)
        b.record_failure(i * 0.01)
    assert b.state is BreakerState.CLOSED
    b.record_success(0.1)
    b.record_failure(0.1)             # 5/10: not above 50%
    assert b.state is BreakerState.CLOSED
    b.record_failure(0.1)             # 6/11 > 50%
    assert b.state is BreakerState.OPEN


def test_half_open_allows_exactly_one_probe():
    b, log = make(cooldown_base=1.0, cooldown_cap=1.0)
    trip(b)
    assert b.current_state(0.5) in (BreakerState.OPEN, BreakerState.HALF_OPEN)
    assert b.current_state(1.01) is BreakerState.HALF_OPEN
    assert (BreakerState.OPEN, BreakerState.HALF_OPEN, "cooldown elapsed") in log
    assert b.admits(1.01)
    b.acquire(1.01)
    assert not b.admits(1.02)          # probe in flight: nothing else
    assert b.admission(1.02) == 0.0


def test_probe_success_closes_with_ramp_and_keeps_trips():
    b, log = make(cooldown_base=1.0, cooldown_cap=1.0, ramp_start=0.2, ramp_period=2.0)
    trip(b)
    b.acquire(2.0)
    b.record_success(2.1)
    assert b.state is BreakerState.CLOSED
    assert log[-1] == (BreakerState.HALF_OPEN, BreakerState.CLOSED, "probe succeeded")
    assert b.admission(2.1) == pytest.approx(0.2)
    admitted = sum(b.admits(2.1) for _ in range(1000))
    assert 120 < admitted < 280
    assert b.admission(3.1) == pytest.approx(0.6)
    assert b.admission(4.2) == 1.0
    assert b.trips == 1                 # one success does not forgive the trip


def test_a_peer_down_for_long_comes_back_as_from_one_trip_and_a_flapping_one_slowly():
    b, _ = make(cooldown_base=0.5, cooldown_cap=3.0, outage_cooldown_cap=1.0, ramp_period=2.0, ramp_start=0.25)
    trip(b)
    now = 0.0
    for _ in range(30):                 # down for half a minute: a probe at most a second apart, each failing
        assert b.open_until - now <= 1.0
        now = b.open_until
        b.current_state(now)
        b.acquire(now)
        b.record_failure(now)
    now = b.open_until
    b.current_state(now)
    b.acquire(now)
    b.record_success(now)               # healed
    assert b.state is BreakerState.CLOSED and not b.flapping(now)
    assert b.admission(now + 2.0) == 1.0, "ramped over one ramp_period, as after one trip"
    for _ in range(2):                  # it drops twice more soon after: flapping, probed up to 3 s apart
        b.record_failure(now + 2.5, timeout=True)
        b.record_failure(now + 2.5, timeout=True)
        b.record_failure(now + 2.5, timeout=True)
        now = b.open_until
        b.current_state(now)
        b.acquire(now)
        b.record_success(now)
    assert b.flapping(now) and b.trips == 3
    b.record_failure(now + 0.1, timeout=True)
    assert 1.0 < b.open_until - (now + 0.1) <= 3.0


def test_probe_failure_reopens_with_growing_capped_cooldown():
    b, _ = make(cooldown_base=1.0, cooldown_factor=2.0, cooldown_cap=4.0)
    trip(b)
    ceilings = []
    now = 0.0
    for _ in range(6):
        ceilings.append(b.open_until - now)
        now = b.open_until
        assert b.current_state(now) is BreakerState.HALF_OPEN
        b.acquire(now)
        b.record_failure(now)
        assert b.state is BreakerState.OPEN
    assert b.trips == 1 and b.failed_probes == 6       # one outage: failed probes are not more trips
    assert all(0.1 <= c <= 1.0 for c in ceilings)       # a first outage's probes: outage_cooldown_cap apart
    # Full jitter: the ceiling doubles per trip, so the mean grows (statistically, over many trips).
    rng_b = CircuitBreaker(BreakerConfig(cooldown_base=1.0, cooldown_cap=64.0), rng=random.Random(3))
    early = late = 0.0
    for i in range(200):
        rng_b.trips = 0 if i % 2 == 0 else 4
        rng_b.state = BreakerState.CLOSED
        rng_b._trip(0.0, "t")
        if i % 2 == 0:
            early += rng_b.open_until
        else:
            late += rng_b.open_until
    assert late > 4 * early


def test_probe_timeout_counts_as_failure():
    b, log = make(cooldown_base=1.0, cooldown_cap=1.0, probe_timeout=0.5)
    trip(b)
    b.acquire(1.0)
    assert b.current_state(1.6) is BreakerState.OPEN
    assert "probe timed out" in log[-1][2]


def test_release_returns_the_probe_slot():
    b, _ = make(cooldown_base=1.0, cooldown_cap=1.0)
    trip(b)
    b.acquire(1.0)
    b.release(1.0)
    assert b.admits(1.0)


def test_trips_decay_only_after_sustained_health():
    b, _ = make(cooldown_base=0.5, cooldown_cap=0.5, decay_period=10.0, ramp_period=0.0)
    for _ in range(3):
        trip(b, b.open_until)
        now = b.open_until
        b.acquire(now)
        b.record_success(now)
    assert b.trips == 3
    t = b.healthy_since
    b.admission(t + 9.0)
    assert b.trips == 3
    b.admission(t + 21.0)
    assert b.trips == 1
    b.admission(t + 100.0)
    assert b.trips == 0


def test_forced_probe_from_open_and_late_failures_ignored():
    b, log = make(cooldown_base=10.0, cooldown_cap=10.0)
    trip(b)
    b.record_failure(0.1)               # late failure while open: no new trip
    assert b.trips == 1
    b.acquire(0.2)                      # router forces a probe: every peer is open
    assert b.state is BreakerState.HALF_OPEN
    assert log[-1][2] == "forced probe"
    assert b.open_for(0.2) == pytest.approx(0.2)


def test_consecutive_timeouts_trip_sooner_than_errors():
    b, log = make(consecutive_failures=10, consecutive_timeouts=3)
    b.record_failure(0.0, timeout=True)
    b.record_failure(0.0, timeout=True)
    b.record_failure(0.0)                       # an error answer breaks the timeout streak
    b.record_failure(0.0, timeout=True)
    b.record_failure(0.0, timeout=True)
    assert b.state is BreakerState.CLOSED
    b.record_failure(0.0, timeout=True)
    assert b.state is BreakerState.OPEN and "3 consecutive timeouts" in log[-1][2]


def test_may_trip_guard_vetoes_the_first_trip_only():
    allowed = [False]
    b = CircuitBreaker(BreakerConfig(consecutive_failures=2, cooldown_min=1.0, cooldown_base=1.0),
                       rng=random.Random(0), may_trip=lambda: allowed[0])
    for _ in range(4):
        b.record_failure(0.0)
    assert b.state is BreakerState.CLOSED and b.vetoed == 2
    allowed[0] = True
    b.record_failure(0.0)
    b.record_failure(0.0)
    assert b.state is BreakerState.OPEN
    allowed[0] = False
    b.acquire(b.open_until)
    b.record_failure(b.open_until)              # a failed probe re-opens whatever the guard says
    assert b.state is BreakerState.OPEN


def test_ramp_is_slower_for_a_peer_that_keeps_tripping():
    b, _ = make(cooldown_base=0.5, cooldown_cap=0.5, ramp_start=0.25, ramp_period=2.0, ramp_trips=3,
                decay_period=1000.0)
    fractions = []
    for _ in range(4):
        trip(b, b.open_until)
        t = b.open_until
        b.acquire(t)
        b.record_success(t)
        fractions.append(b.admission(t + 1.0))
    assert fractions[0] == pytest.approx(0.25 + 0.75 * 1.0 / 2.0)
    assert fractions[1] == pytest.approx(0.25 + 0.75 * 1.0 / 4.0)
    assert fractions[2] == fractions[3] == pytest.approx(0.25 + 0.75 * 1.0 / 6.0)


def close_after_trip(b, now):
    """Trip `b` at `now`, then let its probe succeed when the cooldown is over; returns that time."""
    trip(b, now)
    t = b.open_until
    b.acquire(t)
    b.record_success(t)
    return t


def test_a_flapping_peer_opens_on_its_first_timeout():
    b, log = make(consecutive_failures=100, consecutive_timeouts=3, decay_period=10.0)
    b.record_failure(0.0, timeout=True)                 # never tripped: one timeout is not enough
    assert b.state is BreakerState.CLOSED
    t = close_after_trip(b, 0.0)
    b.record_failure(t + 0.1, timeout=True)             # one trip: still needs 3 in a row
    assert b.state is BreakerState.CLOSED
    t = close_after_trip(b, t + 0.2)
    assert b.flapping(t)
    b.record_failure(t + 0.1)                           # an error answer is not silence
    assert b.state is BreakerState.CLOSED
    b.record_failure(t + 0.2, timeout=True)
    assert b.state is BreakerState.OPEN and "recent trips" in log[-1][2]
    close_after_trip(b, b.open_until)                   # its probe fails first: 3 trips, not 4
    assert b.trips == 3                                 # forgiven one per 10 s of health
    assert b.flapping(b.healthy_since + 15.0) and not b.flapping(b.healthy_since + 25.0)


def test_cooldown_keeps_the_fixed_part_of_its_ceiling():
    for jitter, lowest in ((0.5, 0.5), (1.0, 0.0)):
        b, _ = make(cooldown_base=1.0, cooldown_cap=1.0, cooldown_min=0.0, cooldown_jitter=jitter,
                    consecutive_failures=1)
        cooldowns = []
        for _ in range(300):
            b.state = BreakerState.CLOSED
            b.trips = 0
            b.record_failure(0.0)
            cooldowns.append(b.open_until)
        assert min(cooldowns) >= lowest and max(cooldowns) <= 1.0
        assert min(cooldowns) < lowest + 0.05 and max(cooldowns) > 0.95   # still spread over the range


def test_a_flapping_peer_just_back_is_gated_by_requests_in_flight():
    b, _ = make(ramp_period=2.0, ramp_start=0.25, flapping_inflight=1, decay_period=1000.0)
    t = close_after_trip(b, 0.0)
    assert b.inflight_cap(t) is None                    # one trip: the usual draw-based ramp
    t = close_after_trip(b, t + 1.0)
    assert b.inflight_cap(t) == 1 and b.inflight_cap(t + 1.9) == 1
    assert b.inflight_cap(t + 2.01) is None             # stayed up ramp_period: ramps as usual
    assert 0.25 < b.admission(t + 2.01) < 1.0
    trip(b, t + 2.5)
    assert b.inflight_cap(t + 2.6) is None              # open: nothing goes
