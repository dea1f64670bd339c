"""Prunes to one neighbour are paced (p2p/routing/control_pace.py): a crowd of fresh origins, each pruned once,
no longer makes an honest node send a neighbour more than its inbound rate and get itself flood-banned."""
from __future__ import annotations

from config import Settings
from p2p.routing.control_pace import MAX_NEIGHBOURS, PRUNE_BURST, PRUNE_RATE, ControlPace


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_prunes_to_a_neighbour_stop_at_its_burst_and_refill_at_the_rate_each_neighbour_on_its_own() -> None:
    clock = Clock()
    pace = ControlPace(clock=clock)
    sent = sum(pace.may_prune("a") for _ in range(10_000))
    assert sent == PRUNE_BURST
    assert pace.may_prune("b"), "another neighbour has its own bucket"
    clock.now += 1.0
    assert sum(pace.may_prune("a") for _ in range(10_000)) == PRUNE_RATE
    # the pace stays a tenth of what a neighbour takes from us before it throttles (and, kept up, bans)
    assert PRUNE_RATE <= Settings().router_rate_limit / 10 and PRUNE_BURST <= Settings().router_rate_burst / 10


def test_the_buckets_are_bounded_and_a_closed_link_forgets_its_own() -> None:
    clock = Clock()
    pace = ControlPace(rate=1.0, burst=1.0, clock=clock)
    assert pace.may_prune("a") and not pace.may_prune("a")
    pace.forget("a")
    assert pace.may_prune("a"), "a link opened again starts with a full bucket"
    for n in range(MAX_NEIGHBOURS + 10):
        pace.may_prune(f"n{n}")
    assert len(pace._buckets) == MAX_NEIGHBOURS
