"""Work any reader can make the node redo takes a bounded share of the loop (node/api/cost_budget.py)."""
from __future__ import annotations

from node.api.cost_budget import CostBudget


def test_after_work_of_t_seconds_more_is_allowed_only_t_over_the_share_later():
    now = [100.0]
    budget = CostBudget(share=0.05, clock=lambda: now[0])
    assert budget.allows()
    budget.spent(0.05)              # a digest that took 50 ms: the next one a second later
    now[0] += 0.5
    assert not budget.allows() and budget.deferred == 1
    now[0] += 0.5
    assert budget.allows()
    budget.spent(0.0001)            # a small book's digest costs next to nothing
    now[0] += 0.003
    assert budget.allows()
