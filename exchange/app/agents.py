"""Agent keys: keys an account approves to trade for it within a scope, and revokes.

An agent signs with its own key (its own nonces) a transaction that names the account it acts for
(`for=`, txs.py). The state machine applies it only while the account's approval of that key stands and
has not expired, and judges each operation against the scope: which markets, which operations (place,
cancel, replace), the largest notional of one order (in its market's quote asset), and never a credit
grant or an approval of keys. The scope is part of the state, so every node judges the same way.

Bounded: at most MAX_PER_ACCOUNT agents per account and MAX_TOTAL in all. An expired approval still answers
`agent_expired` for one transaction lifetime (`grace_ms`: the chain's order TTL, so anything signed before
it expired resolves with that reason), then the block time alone drops it (a heap keyed by that time,
stale entries skipped as in timers.py), and its key is unknown (`agent_not_approved`) as after a revoke.
"""
from __future__ import annotations

import heapq
from typing import Iterator

from exchange.app.txs import (ApproveAgentOp, AtomicOp, CancelAllOp, CancelOp, GrantOp, NewOrderOp, Op, ReplaceOp,
                              RevokeAgentOp)
from exchange.wire import Wire

MAX_PER_ACCOUNT = 8
MAX_TOTAL = 100_000


def scope_problem(scope: ApproveAgentOp, op: Op) -> str | None:
    """Why an agent with `scope` may not do `op` by its kind and market, or None (the notional cap needs the
    book: the state machine judges it)."""
    kind = type(op)
    if kind is GrantOp:
        return "agent_cannot_grant"
    if kind is ApproveAgentOp or kind is RevokeAgentOp:
        return "agent_cannot_approve"
    if kind is AtomicOp:
        return None         # a batch marker: its operations are judged one by one
    market: str | None = None
    if isinstance(op, NewOrderOp):
        need, market = "place", op.market
    elif isinstance(op, ReplaceOp):
        need, market = "replace", op.market
    elif isinstance(op, (CancelOp, CancelAllOp)):
        need, market = "cancel", op.market
    else:                   # schedule_cancel: every market's orders
        need = "cancel"
    if need not in scope.operations.split(","):
        return "operation_not_allowed"
    if scope.markets is not None and (market is None or market not in scope.markets.split(",")):
        return "market_not_allowed"
    return None


class Agents:
    __slots__ = ("by_owner", "total", "grace_ms", "_heap")

    def __init__(self, grace_ms: int) -> None:
        self.by_owner: dict[str, dict[str, ApproveAgentOp]] = {}    # account -> agent key -> its approval
        self.total = 0
        self.grace_ms = grace_ms
        self._heap: list[tuple[int, str, str]] = []                 # (drop at, account, agent)

    def __bool__(self) -> bool:
        return self.total > 0

    def scope(self, owner: str, agent: str) -> ApproveAgentOp | None:
        agents = self.by_owner.get(owner)
        return None if agents is None else agents.get(agent)

    def of(self, owner: str) -> dict[str, ApproveAgentOp]:
        return self.by_owner.get(owner, {})

    def room_for(self, owner: str, agent: str) -> str | None:
        """Why `owner` cannot approve one more agent key now, or None (re-scoping a key it has is always allowed)."""
        held = self.by_owner.get(owner, {})
        if agent in held:
            return None
        if len(held) >= MAX_PER_ACCOUNT:
            return "too_many_agents"
        if self.total >= MAX_TOTAL:
            return "agent_table_full"
        return None

    def approve(self, owner: str, approval: ApproveAgentOp) -> None:
        held = self.by_owner.setdefault(owner, {})
        if approval.agent not in held:
            self.total += 1
        held[approval.agent] = approval
        if approval.expires is not None:
            self._push(approval.expires + self.grace_ms, owner, approval.agent)

    def revoke(self, owner: str, agent: str) -> bool:
        held = self.by_owner.get(owner)
        if held is None or agent not in held:
            return False
        del held[agent]
        self.total -= 1
        if not held:
            del self.by_owner[owner]
        return True

    def drop_expired(self, now_ms: int) -> list[tuple[str, str]]:
        """Forget every approval whose grace after expiry has passed by `now_ms`; (account, agent) of each."""
        dropped = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            at, owner, agent = heapq.heappop(heap)
            approval = self.scope(owner, agent)
            if approval is not None and approval.expires is not None and approval.expires + self.grace_ms == at:
                self.revoke(owner, agent)
                dropped.append((owner, agent))
        return dropped

    def _push(self, at: int, owner: str, agent: str) -> None:
        heapq.heappush(self._heap, (at, owner, agent))
        if len(self._heap) > 2 * self.total + 64:
            self._heap = [(a.expires + self.grace_ms, o, g) for o, g, a in self._entries() if a.expires is not None]
            heapq.heapify(self._heap)

    def _entries(self) -> Iterator[tuple[str, str, ApproveAgentOp]]:
        for owner, held in self.by_owner.items():
            for agent, approval in held.items():
                yield owner, agent, approval

    # ------------------------------------------------------------------ snapshots

    def rows(self) -> list[Wire]:
        """`[[account, agent, markets, operations, cap, expires], ...]` sorted by account then agent."""
        return [[owner, agent, a.markets, a.operations, a.cap, a.expires]
                for owner, agent, a in sorted(self._entries(), key=lambda entry: (entry[0], entry[1]))]
