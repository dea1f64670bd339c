"""Round 6 on the public limits: p2p/public/rate.py after FINDING 24's fix (a message request admitted on twice what
its network's requests cost within USE_SECONDS, the whole reserve without one; the credit refilling at the total less
the parts' demand). Fake clock, in-process, a few seconds in all; see FINDING 28."""
from __future__ import annotations

import math


from p2p.public.rate import USE_SECONDS
from p2p.routing.grenache_path import MAX_FRAMES
from tests.redteam.test_public_limits_round2 import TOTAL, Clock
from tests.redteam.test_public_limits_round4 import HONEST
from tests.redteam.test_public_limits_round5 import handled, known


# --- (1) the expectation expires: a network asking now and then is judged on the whole reserve ---------------------
def slow_sender_beside_full_parts(networks: int, every: float, seconds: float = 40.0,
                                  step: float = 0.05) -> tuple[int, int, float, float, float]:
    """`networks` /24s fill their parts (an 8-frame request each every `step`); 20 of them also send a 256-frame
    request whenever the credit lets them (it is drained, and refills at what the parts leave: next to nothing).
    The honest network (in use: its requests fit its part) sends one frame every `every` s. (honest sent,
    refused, frames/s handled for the attackers, the credit's rate and what it holds at the end)."""
    clock = Clock()
    rate, nets = known(networks, clock)
    parts = rate.parts
    frames = sent = refused = 0
    honest_due, end = clock.t + every, clock.t + seconds
    while clock.t < end:
        for address in nets:
            frames += 8 * handled(rate, address, 8)
        for address in nets[:20]:
            frames += MAX_FRAMES * handled(rate, address, MAX_FRAMES)
        if honest_due <= clock.t:
            sent += 1
            refused += not handled(rate, HONEST, 1)
            honest_due += every
        clock.t += step
    return sent, refused, frames / seconds, parts._credit.rate, parts._credit.tokens("*", clock.t)


def test_a_sender_within_use_seconds_is_admitted_beside_networks_filling_their_parts() -> None:
    """Held: one frame every 5 s (its largest cost remembered) needs no credit: never refused."""
    sent, refused, used, credit_rate, _ = slow_sender_beside_full_parts(200, 5.0)
    assert refused == 0, (sent, refused, used, credit_rate)


def test_a_sender_now_and_then_is_admitted_beside_networks_filling_their_parts() -> None:
    sent, refused, used, credit_rate, credit = slow_sender_beside_full_parts(200, 12.0)
    print(f"\n200 /24s filling their parts ({used:.0f} frames/s), 20 of them draining the credit: it refills at "
          f"{credit_rate:.1f}/s, holds {credit:.1f}; honest one frame every 12 s refused {refused} of {sent}")
    assert refused == 0, (sent, refused, credit_rate, credit)


# --- (2) small then full requests: read and decoded for nothing ------------------------------------------------------
def alternating(networks: int, fillers: int, seconds: float = 20.0, step: float = 0.05) -> tuple[int, int, int]:
    """`fillers` /24s fill their parts (8 frames every `step`); `networks` others alternate a one-frame request
    (their expectation: two frames) and a 256-frame one admitted on it, the credit drained at the start.
    (256-frame requests handled, read and decoded then answered busy, networks alternating)."""
    clock = Clock()
    rate, nets = known(networks + fillers, clock)
    fill, nets = nets[:fillers], nets[fillers:]
    for address in nets:
        assert handled(rate, address, 1)
    rate.parts._credit.take("*", clock.t, rate.parts._credit.burst)
    big = dict.fromkeys(nets, True)
    ok = busy = 0
    end = clock.t + seconds
    while clock.t < end:
        for address in fill:
            handled(rate, address, 8)
        for address in nets:
            if rate.check(address, MAX_FRAMES) is None:
                size = MAX_FRAMES if big[address] else 1
                done = rate.settle(address, size, MAX_FRAMES)
                if big[address]:
                    ok, busy = ok + done, busy + (not done)
                big[address] = not big[address]
        clock.t += step
    return ok, busy, len(nets)


def test_small_then_full_requests_are_decoded_for_nothing_once_per_use_seconds_at_most() -> None:
    """Held: a full request that settles busy is remembered as the network's largest for USE_SECONDS, so its next
    is judged on the whole reserve again: each network gets one full request read and decoded for nothing per
    USE_SECONDS at most (1,000 /24s: ~100 a second, ~25,600 frames/s decoded for nothing, far under what bodies
    held and sent together force, round 5)."""
    seconds = 20.0
    ok, busy, networks = alternating(1000, 0, seconds)
    assert busy <= networks * (seconds / USE_SECONDS + 1), (ok, busy)


# --- (3) concurrent requests from one network while its expectation is small ----------------------------------------
def test_requests_out_are_counted_at_their_whole_reserve_while_the_expectation_is_small() -> None:
    """Held: a network whose requests cost one frame lately (expected: two) with the credit drained is admitted once;
    a second request while the first is out needs that one's whole reserve on credit and is refused, so one
    network forces at most one request decoded for nothing at a time."""
    clock = Clock()
    rate, nets = known(200, clock)
    address = nets[0]
    assert handled(rate, address, 1)
    clock.t += 1
    rate.parts._credit.take("*", clock.t, rate.parts._credit.burst)
    admitted = [rate.check(address.replace(".1", f".{k}", 1) if k else address, MAX_FRAMES) is None
                for k in range(1, 9)]
    assert admitted.count(True) == 1, admitted
    assert rate.settle(address, MAX_FRAMES, MAX_FRAMES) is False
    assert rate.parts._out == {}


# --- (4) an honest sender whose request grows ------------------------------------------------------------------------
def test_an_honest_sender_whose_requests_grow_is_handled_when_its_part_holds_them() -> None:
    """Held: a network in use sending one frame twice a second then a 100-frame batch (admitted on two frames'
    expectation) is handled beside 100 /24s filling their parts, the credit drained: its part (158 frames) holds it;
    its next one-frame requests are admitted on the batch's expectation."""
    clock = Clock()
    rate, nets = known(100, clock)
    rate.parts._credit.take("*", clock.t, rate.parts._credit.burst)
    results = []
    for tick in range(200):
        for address in nets:
            handled(rate, address, 8)
        if tick % 10 == 0:
            results.append(handled(rate, HONEST, 100 if tick == 100 else 1))
        clock.t += 0.05
    assert all(results), results


# --- (5) the credit's rate changed under Buckets ---------------------------------------------------------------------
def test_the_credit_stays_finite_and_within_its_burst_as_its_rate_swings() -> None:
    """Held: the credit's rate swung between zero and the total every computation of the level (networks bursting
    and going quiet) never leaves it above its burst, NaN or infinite, and a wait with the credit at rate zero is
    finite."""
    clock = Clock()
    rate, nets = known(50, clock)
    parts = rate.parts
    for tick in range(400):
        if tick % 4 < 2:
            for address in nets:
                handled(rate, address, MAX_FRAMES)
        clock.t += 0.05 if tick % 7 else 3.0
        credit = parts._credit.tokens("*", clock.t)
        assert math.isfinite(credit) and credit <= parts._credit.burst, (tick, credit)
        assert 0.0 <= parts._credit.rate <= TOTAL
    parts._credit.rate = 0.0
    parts._credit.take("*", clock.t, parts._credit.burst * 2)
    wait = parts.wait("198.51.100.0/24", clock.t, MAX_FRAMES)
    assert math.isfinite(wait), wait
