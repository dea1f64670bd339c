"""What serving requests may cost (issue 25): requests and answer bytes a second per requester, per neighbour
relaying others' requests, and for everyone together; past any of them the request is refused with the wait."""
from __future__ import annotations

import pytest

from p2p.rpc.serve_budget import BURST_SECONDS, MAX_TRACKED, ServeBudget, ServeLimits


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _budget(rate: float = 10.0, bytes_: float = 1000.0, total_rate: float = 1000.0,
            total_bytes: float = 100_000.0) -> tuple[ServeBudget, Clock]:
    clock = Clock()
    return ServeBudget(ServeLimits(rate, bytes_, total_rate, total_bytes), clock=clock), clock


def test_a_requester_gets_its_burst_then_its_rate_and_is_told_how_long_to_wait():
    budget, clock = _budget(rate=10.0)
    assert all(budget.admit("asker", None) is None for _ in range(int(10 * BURST_SECONDS)))
    refusal = budget.admit("asker", None)
    assert refusal is not None and (refusal.scope, refusal.budget) == ("requester", "requests")
    assert refusal.wait == pytest.approx(0.1)
    assert budget.admit("someone-else", None) is None, "one requester's spending is nobody else's"
    clock.now += 0.1
    assert budget.admit("asker", None) is None
    view = budget.view()
    assert view["refused"] == {"requester.requests": 1}
    assert view["throttled_requesters"][0]["node_id"] == "asker"


def test_answer_bytes_are_charged_after_and_a_scope_in_debt_waits():
    budget, clock = _budget(bytes_=1000.0)
    assert budget.admit("asker", None) is None
    budget.charge("asker", None, 5_000)         # one big answer: beyond its 2,000-byte burst, into debt
    refusal = budget.admit("asker", None)
    assert refusal is not None and refusal.budget == "bytes" and refusal.wait == pytest.approx(3.001)
    clock.now += 3.01
    assert budget.admit("asker", None) is None


def test_fresh_origins_through_one_neighbour_spend_the_neighbours_budget():
    budget, _ = _budget(rate=10.0)
    admitted = sum(budget.admit(f"fresh-{n}", "relay") is None for n in range(100))
    assert admitted == int(10 * BURST_SECONDS)
    assert budget.view()["refused"] == {"neighbour.requests": 100 - admitted}
    assert budget.admit("fresh-x", "other-relay") is None, "another neighbour keeps its own budget"
    assert budget.admit("relay", None) is None, "the relay's own requests are its own scope"


def test_everyone_together_is_capped_too():
    budget, _ = _budget(rate=10.0, total_rate=5.0)
    admitted = sum(budget.admit(f"n{n}", None) is None for n in range(50))
    assert admitted == int(5 * BURST_SECONDS) and budget.view()["refused"] == {"total.requests": 50 - admitted}


def test_the_tables_keep_the_most_recent_scopes():
    budget, _ = _budget(rate=1.0)
    for n in range(MAX_TRACKED + 10):
        budget.admit(f"fresh-{n}", None)
    assert len(budget._requesters) == MAX_TRACKED and "fresh-0" not in budget._requesters
