"""Transaction intake: how a transaction reaches the mempool, and how our own stay alive until a block has them.

Three ways in. The local API's (`submit`, `own`: made durable in the outbox by the caller first, then handed
on every `resubmit_interval` until a block holds it or it expires); a follower's, forwarded over RPC
(`submit` with its `lane`: that follower's share of the mempool); and gossip from neighbours
(`on_gossiped_tx`, looked at only within the neighbour's budget, `tx_budget.py`). Every way runs the same
checks (`precheck`: chain, signature, the exchange's own rules) and the same per-account limits
(`account_rate.py`, the mempool's per-account and per-lane caps). A validator queues what it admits and
hands it to the other validators; a follower forwards it (`Forward`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, TypedDict

from exchange.chain.mempool.account_rate import AccountRate
from exchange.chain.effects import (PENALTY_INVALID, PENALTY_MALFORMED, ChainMessage, Forward, HoldReading, OwnDone,
                                    SendValidators)
from exchange.chain.state.membership import SIGNED_REQUESTS, MembershipTx
from exchange.chain.mempool.pool import OWN_LANE, solo_group
from exchange.chain.consensus.tendermint import WAITING
from exchange.chain.mempool.tx_budget import TxBudget
from exchange.app.txs import SignedTx
from exchange.chain.effects import ChainEffect
from exchange.chain.mempool.pool import Mempool
from exchange.chain.consensus.tendermint import Tendermint
from exchange.chain.state.view import CoreBasics

# a replay of a membership request that already counted, STALE_GRACE heights after it was signed, costs its relayer
# PENALTY_REPLAY (every refused request is refused before its signature is checked)
STALE_GRACE = 10
PENALTY_REPLAY = PENALTY_MALFORMED
PACED_SUFFIX = "/paced"     # a validator's relay lane for what a neighbour at its budget handed it (`paced_lane`)


def paced_lane(validator: str) -> str:
    """The lane of `validator`'s relays of transactions it took from a neighbour at its budget: they ride the
    heights others start here too, as they did there (`TxIntake.paces`), in the validator's relay group."""
    return validator + PACED_SUFFIX


def is_paced_lane(lane: str) -> bool:
    return lane.endswith(PACED_SUFFIX)


class IntakeCore(CoreBasics, Protocol):
    """The core as transaction intake uses it: the state and mempool it admits into, our role, and the
    heights it starts when work comes.
    Read-only (a part writes only the basics' `counters`)."""

    @property
    def consensus(self) -> Tendermint: ...

    def drain(self, now: float) -> None: ...

    def emit(self, effect: ChainEffect) -> None: ...

    @property
    def halted(self) -> str | None: ...

    @property
    def is_validator(self) -> bool: ...

    @property
    def mempool(self) -> Mempool: ...

    def network_of(self, node_id: str) -> str | None: ...

    @property
    def now(self) -> float: ...

    @property
    def now_ms(self) -> int: ...

    def penalize(self, peer: str | None, points: float, reason: str) -> None: ...

    def set_now(self, now: float) -> None: ...

    def tx_waiting(self, lane: str, now: float) -> None: ...

    def upcoming_proposers(self) -> tuple[str, ...]: ...


class AccountRateView(TypedDict):
    windows: list[list[int]]        # [blocks, ops allowed in them]
    per_second: dict[str, int]      # by block time: account / group rate and burst (0: off)
    exempt: list[str]               # accounts never counted (ACCOUNT_RATE_EXEMPT)
    refused: int
    refused_by: dict[str, int]      # blocks, account_time, group_time
    accounts: int
    groups: int


class IntakeView(TypedDict):
    """What the intake shows in /status (spread into the core's status)."""

    tx_budget: dict[str, object]
    account_rate: AccountRateView
    own_pending: int


class TxIntake:
    """One node's admission of transactions, and its own pending ones (`own`: id -> (tx, next retry))."""

    def __init__(self, core: IntakeCore) -> None:
        self.core = core
        config = core.config
        self.tx_budget = TxBudget(config.peer_tx_rate, config.peer_tx_burst, config.peer_tx_total_rate)
        self.account_rate = AccountRate(((1, config.account_ops_per_block), (100, config.account_ops_per_100_blocks)),
                                        rate=config.account_ops_rate, burst=config.account_ops_burst,
                                        group_rate=config.group_ops_rate, group_burst=config.group_ops_burst,
                                        exempt=config.account_rate_exempt)
        self.own: OrderedDict[str, tuple[SignedTx, float]] = OrderedDict()

    def restore(self, txs: list[SignedTx], now: float) -> None:
        """Our own transactions accepted before a restart and not yet seen in a block: hand them on again."""
        for tx in txs:
            self.own.setdefault(tx.id, (tx, now))

    def committed(self, tx_ids: list[str]) -> bool:
        """A block holds these: ours among them leave the outbox (`OwnDone`). Whether any was ours."""
        holds_own = False
        for tx_id in tx_ids:
            if self.own.pop(tx_id, None) is not None:
                self.core.emit(OwnDone(tx_id, "committed"))
                holds_own = True
        return holds_own

    def view(self) -> IntakeView:
        rate = self.account_rate
        return {"tx_budget": self.tx_budget.view(),
                "account_rate": {"windows": [list(w) for w in rate.windows],
                                 "per_second": {"account_rate": rate.rate, "account_burst": rate.burst,
                                                "group_rate": rate.group_rate, "group_burst": rate.group_burst},
                                 "exempt": sorted(a.hex() for a in rate.exempt), "refused": rate.refused,
                                 "refused_by": dict(rate.refused_by), "accounts": len(rate), "groups": rate.groups},
                "own_pending": len(self.own)}

    def submit(self, tx: SignedTx, now: float, own: bool = True, lane: str = OWN_LANE) -> str | None:
        """A transaction from our API (`own`: we keep handing it on until a block has it) or from a
        follower's RPC (`lane`: that follower, whose share of our mempool it takes). Returns why it was
        refused, or None once it is queued."""
        return self.submit_many([tx], now, own, lane)[0]

    def submit_many(self, txs: list[SignedTx], now: float, own: bool = True,
                    lane: str = OWN_LANE) -> list[str | None]:
        """`submit` for transactions that came together (our API's made durable by one outbox sync): all are
        queued before a validator waiting for work starts its height, so they share it. One at a time, each
        started a height of its own; for the only validator that is a block, its votes, a WAL sync and a block
        sync per transaction. Returns each one's refusal, or None."""
        self.core.set_now(now)
        if self.core.halted:
            return ["halted"] * len(txs)
        answers = [self._take(tx, now, own, lane) for tx in txs]
        if self.core.is_validator and any(why is None for why in answers):
            self.core.tx_waiting(lane, now)
        self.core.drain(now)
        return answers

    def _take(self, tx: SignedTx, now: float, own: bool, lane: str) -> str | None:
        why = self.precheck(tx, recording=tx.id in self.own or not own)
        if why is not None:
            return why
        if self.core.is_validator:
            why = self.admit(tx, checked=True, lane=lane)
            if why is not None and why != "duplicate":
                return why
            if why is None:     # a duplicate came from a follower handing it to each upcoming proposer
                relay: ChainMessage = {"type": "chain_tx", "body": tx.wire()}
                if not own and self.paces(lane, now):
                    relay["paced"] = True       # so it waits for a height at the other validators too
                self.core.emit(SendValidators(relay))
        else:
            self.core.emit(Forward(tx, self.core.upcoming_proposers()))
            self.core.counters["forwarded"] += 1
        if own and tx.id not in self.own:       # the caller made it durable in the outbox first
            self.own[tx.id] = (tx, now + self.core.config.resubmit_interval)
        return None

    def precheck(self, tx: SignedTx, *, recording: bool = False) -> str | None:
        """Why `tx` cannot be queued, or None. With `recording`, a transaction that expired unordered (within
        the grace) is still accepted: a block records it as expired."""
        if tx.chain_id != self.core.chain_id:
            return "wrong_chain"
        if not (self.core.mempool.is_verified(tx) or tx.signature_valid()):
            return "bad_signature"
        self.core.mempool.remember_verified(tx)
        why = self.core.state.app.precheck(tx, self.core.chain_id, self.core.now_ms)
        if why == "expired" and recording and tx.expires + self.core.config.expired_grace_ms > self.core.now_ms \
                and self.core.state.app.order(tx.order_id(0)) is None:
            return None
        return why

    def admit(self, tx: SignedTx, checked: bool = False, lane: str = OWN_LANE) -> str | None:
        if not checked:
            why = self.precheck(tx, recording=True)
            if why is not None:
                return why
        # a validator's relays, paced or not (`paced_lane`), are a group of their own, as its link's read turns are
        # (ReadTurns): whoever shares its network, their block turns are not its relays'
        sender = lane.removesuffix(PACED_SUFFIX)
        relayed = sender in self.core.state.validators.node_ids
        if sender == OWN_LANE or relayed:
            group = solo_group(sender)
        else:
            group = TxBudget.group_key(self.core.network_of(lane))
        # our API's accounts share one group's rate; a neighbour's or a follower's network already has its share of
        # what is looked at (tx_budget.py), so their transactions are charged to their accounts only
        height, time_ms, ops, rate_group = self.core.state.height + 1, self.core.state.time_ms, len(tx.ops), \
            group if sender == OWN_LANE else None
        # an agent's transaction spends the rate of the account it acts for, as the owner's own would
        if tx.id not in self.core.mempool:
            refused = self.account_rate.why_not(tx.owner, ops, height, time_ms, rate_group)
            if refused is not None:
                self.account_rate.refuse(refused)
                return "account_rate"
        why = self.core.mempool.add(tx, lane, group)
        if why is None:
            self.account_rate.record(tx.owner, ops, height, time_ms, rate_group)
        return why

    def refuses_own(self, account: bytes, ops: int) -> bool:
        """Whether a transaction of `ops` operations of `account` from our API would be refused `account_rate`
        now (counted as refused if so): the API asks before it signs, checks and writes one, so a refusal costs a
        lookup. A follower has no count: its validators refuse for it."""
        if not self.core.is_validator:
            return False
        state = self.core.state
        why = self.account_rate.why_not(account, ops, state.height + 1, state.time_ms, solo_group(OWN_LANE))
        if why is not None:
            self.account_rate.refuse(why)
        return why is not None

    def on_gossiped_tx(self, tx: SignedTx, sender: str | None, now: float, paced: bool = False) -> None:
        """A transaction from neighbour `sender`; `paced`: a validator relays it from a neighbour at its budget
        (the flag of anyone else is ignored: their own budget says whether they are at it)."""
        if not self.core.is_validator or tx.id in self.core.mempool:
            return
        lane = sender or OWN_LANE
        if paced and sender is not None and sender in self.core.state.validators.node_ids:
            lane = paced_lane(sender)
        why = self.admit(tx, lane=lane)
        if why == "bad_signature":
            self.core.penalize(sender, PENALTY_INVALID, "bad_tx_signature")
        elif why is None:
            self.core.tx_waiting(lane, now)

    def paces(self, lane: str, now: float) -> bool:
        """Whether transactions from `lane` ride the heights others start (ChainCore.tx_waiting): a neighbour at
        its budget's, and a validator's relays of such a neighbour's."""
        return is_paced_lane(lane) or self.tx_budget.at_budget(lane, now)

    def on_membership(self, tx: MembershipTx, sender: str | None) -> None:
        """A request from the network: only signed kinds travel (a proposer makes removals and promotions
        itself); one that could not apply now is not kept."""
        if not self.core.is_validator or tx.id in self.core.mempool.membership_ids():
            return
        if not isinstance(tx, SIGNED_REQUESTS):
            self.core.penalize(sender, PENALTY_INVALID, "bad_membership_signature")
            return
        state = self.core.state
        why = state.membership_problem(tx, state.height + 1, max(state.time_ms, self.core.now_ms))
        if why is not None:
            # refused before its signature costs anything (whoever signed it once could have us check it at every
            # arrival); one that already counted, re-sent well after, is a replay and whoever relays it pays (a
            # block in flight may overtake an honest one: STALE_GRACE). Any other refusal is what an honest node
            # behind the chain, or a request that lost a race, sends too: refused, free
            if why == "replayed" and sender is not None and state.height > tx.at_height + STALE_GRACE:
                self.core.counters["replayed_membership"] = self.core.counters.get("replayed_membership", 0) + 1
                self.core.penalize(sender, PENALTY_REPLAY, f"replayed_membership:{tx.kind}")
            return
        if not tx.signature_valid(self.core.chain_id, self.core.verify):
            self.core.penalize(sender, PENALTY_INVALID, "bad_membership_signature")
            return
        self.core.mempool.add_membership(tx)
        if self.core.consensus.step == WAITING:
            self.core.consensus.kick(self.core.now)

    def within_tx_budget(self, sender: str | None, now: float) -> bool:
        """Whether a transaction from neighbour `sender` may be looked at (tx_budget.py); our own, and a
        validator's relays, always."""
        if sender is None or not self.core.is_validator or sender in self.core.state.validators.node_ids:
            return True
        budget = self.tx_budget
        allowed = budget.take(sender, now, self.core.network_of(sender))
        if not allowed or budget.spent(sender):
            # held as soon as its last whole transaction is taken: what it sent next waits unread, and every
            # validator reading the same stream takes the same transactions from it, none dropped
            self.core.emit(HoldReading(sender, budget.hold_for(sender, now)))
        return allowed

    def resubmit_own(self, now: float) -> None:
        if not self.own:
            return
        time_ms = self.core.state.time_ms
        for tx_id, (tx, due) in list(self.own.items()):
            if tx.expires + self.core.config.expired_grace_ms <= time_ms:
                del self.own[tx_id]
                self.core.counters["expired_own"] += 1
                self.core.emit(OwnDone(tx_id, "expired"))
                continue
            if now < due:
                continue
            self.own[tx_id] = (tx, now + self.core.config.resubmit_interval)
            if self.core.is_validator:
                # hand it to the other validators again: our own proposals may not be the ones that win
                # (receivers that already hold it recognise it by its signature without parsing it)
                if tx.id not in self.core.mempool:
                    self.admit(tx)
                self.core.counters["resubmitted"] += 1
                self.core.emit(SendValidators({"type": "chain_tx", "body": tx.wire()}))
                continue
            self.core.counters["resubmitted"] += 1
            self.core.emit(Forward(tx, self.core.upcoming_proposers()))

