"""This node's own seat requests: asking for standby with the join token, giving the seat back, and the
operator's approvals of others' seats.

Each is a signed membership transaction offered to the validators; a proposer puts it in a block when the
seat rule allows (`block_builder.py`), and every node re-checks it there (`block_check.py`).
"""
from __future__ import annotations

from typing import Callable

from exchange.chain.core_view import CoreView
from exchange.chain.effects import SendValidators
from exchange.chain.membership import Approve, Join, Leave, MembershipTx
from exchange.chain.tendermint import WAITING


class SeatRequests:
    """What this node asks of the validator set for itself, or as its operator approves."""

    def __init__(self, core: CoreView, admission_sign: Callable[[bytes], bytes] | None, now: float) -> None:
        self.core = core
        self._admission_sign = admission_sign      # the join token's key: admits this node to standby
        self._next_join = now

    def maybe_join(self, now: float) -> None:
        """With the network's join token, ask for standby (then a proposer promotes us when the seat rule
        allows). Without one, a node never asks: seats are granted by the validators' approvals."""
        state = self.core.state
        if self._admission_sign is None or self.core.config.role != "auto" or state.genesis.pinned \
                or self.core.is_validator or self.core.public_key in state.seats.standby or now < self._next_join:
            return
        # f + 1 validators' word (or a certificate we checked), never a stranger's claim (`claims.py`)
        best = self.core.sync.network_height(now, self.core.config.live_after)
        if best is None or best > state.height + 1:
            return      # not caught up (or hearing too few validators): a seat would only slow the others down
        self._next_join = now + self.core.config.join_retry
        tx = Join.create(self.core.chain_id, self.core.public_key, state.height, self._admission_sign)
        self.core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))

    def request_leave(self, now: float) -> Leave | None:
        """Give our seat back (a graceful stop), to the longest-waiting live standby if there is one. None
        when we hold no seat or the set is pinned."""
        self.core.set_now(now)
        state = self.core.state
        if not self.core.is_validator or state.genesis.pinned:
            return None
        live = [key for key in state.seats.standby_order()
                if key != self.core.public_key and self.core.sync.live_and_caught_up(key)]
        successor = live[0] if live else None
        if len(state.validators) <= 1 and successor is None:
            return None
        tx = Leave.create(self.core.chain_id, self.core.public_key, state.height, successor, self.core.sign)
        self._offer(tx, now)
        return tx

    def approve(self, action: str, key: bytes, now: float) -> Approve:
        """Our signed approval that `key` gets (`add`) or loses (`remove`) a seat; raises ValueError when it
        cannot apply now (with the reason)."""
        self.core.set_now(now)
        state = self.core.state
        tx = Approve.create(self.core.chain_id, action, key, self.core.public_key, state.height, self.core.sign)
        why = state.membership_problem(tx, state.height + 1, state.time_ms)
        if why is not None:
            raise ValueError(why)
        self._offer(tx, now)
        return tx

    def _offer(self, tx: MembershipTx, now: float) -> None:
        self.core.mempool.add_membership(tx)
        self.core.emit(SendValidators({"type": "chain_membership", "body": tx.wire()}))
        if self.core.is_validator and self.core.consensus.step == WAITING:
            self.core.consensus.kick(now)
        self.core.drain(now)

