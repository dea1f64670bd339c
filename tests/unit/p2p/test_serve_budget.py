"""What serving requests may cost: requests and answer bytes a second per requester, per neighbour
relaying others' requests, and for everyone together; past any of them the request is refused with the wait."""
from __future__ import annotations

import pytest

from p2p.rpc.serve_budget import BURST_SECONDS, MAX_TRACKED, SUBNET_SHARE, ServeBudget, ServeLimits


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


def test_fresh_keys_from_one_network_share_its_budget_and_leave_the_total_to_others():
    """Eight fresh keys linked from one /24 each get a requester's budget, but together only the network's
    (SUBNET_SHARE requesters' worth): what they cannot take is left in the total for everyone else."""
    budget, clock = _budget(rate=10.0, bytes_=1000.0, total_rate=100.0, total_bytes=10_000.0)
    admitted = 0
    for _ in range(10):
        for key in range(8):
            if budget.admit(f"fresh-{key}", None, "203.0.113.0/24") is None:
                admitted += 1
                budget.charge(f"fresh-{key}", None, 400, "203.0.113.0/24")
    assert admitted <= SUBNET_SHARE * 1000.0 * BURST_SECONDS / 400 + 8, admitted     # the network's bytes, not 8x
    refusal = budget.admit("fresh-0", None, "203.0.113.0/24")
    assert refusal is not None and refusal.scope in ("subnet", "requester")
    assert budget.admit("elsewhere", None, "198.51.100.0/24") is None, "another network still gets answers"
    assert budget.admit("local", None, None) is None
    assert budget.view()["throttled_subnets"][0]["node_id"] == "203.0.113.0/24"


async def test_a_refusal_is_charged_to_nobody():
    """A flood's refusals must not drain the budgets the refused requests could not: only answers are charged."""
    from p2p.rpc.server import RpcServer

    budget, clock = _budget(rate=1.0, bytes_=1000.0)
    server = RpcServer(budget=budget)
    sent: list[dict] = []

    class Replier:
        def send(self, message: dict) -> bool:
            sent.append(message)
            return True

    for rid in range(50):
        server.handle_request({"type": "rpc_request", "rid": rid, "svc": "none", "p": None}, "flooder", Replier())
    refused = [m for m in sent if m.get("err") == "rate_limited"]
    assert len(refused) >= 45 and budget.view()["refused"]["requester.requests"] == len(refused)
    from p2p.framing import encode_body
    answered = [m for m in sent if m.get("err") != "rate_limited"]
    assert budget.answer_bytes == sum(len(encode_body(m)) for m in answered)      # the refusals: charged nothing
