"""Building the block this validator proposes: the mempool's transactions that fit, then the membership
changes the seat rule calls for.

The block is measured with the function validation uses (`BlockCheck.max_block_size`, wrapped items,
header and last commit), so a full mempool never yields a block every other validator refuses. At most one
change of the validator set goes in a block, chosen in a fixed order: evidence of equivocation first,
then approved removals, leaves, jailing the absent, and promoting live standbys to a size the seat rule
allows.
"""
from __future__ import annotations

from exchange.chain.consensus.block_pace import BlockPace
from exchange.chain.types.blocks import Block, Header, Vote
from exchange.chain.state.chainstate import encode_item
from exchange.chain.types.codec import pack
from exchange.chain.consensus.block_check import BlockCheck
from typing import Iterator, Protocol

from exchange.chain.state.membership import Alive, Leave, MembershipTx, Promote, Remove
from exchange.chain.state.seats import Seats
from exchange.app.txs import SignedTx
from exchange.chain.types.blocks import Commit
from exchange.chain.mempool.pool import Mempool
from exchange.chain.state.view import CoreBasics

MAX_EVIDENCE = 16           # equivocations remembered until a block removes the equivocator
# why a request may still apply later (the list or its approver's quota frees up): kept in the mempool,
# which drops it once it expires; any other refusal is final and drops it at once
KEPT_FOR_LATER = frozenset({"too_many_pending_approvals", "standby_full", "token_standby_full",
                            "issuer_standby_quota", "successor_not_live", "size_not_allowed"})


class BuilderCore(CoreBasics, Protocol):
    """The core as the block builder uses it: the state and mempool a proposal is built from.
    Read-only (a part writes only the basics' `counters`)."""

    @property
    def last_commit(self) -> Commit | None: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def now_ms(self) -> int: ...

    @property
    def public_key(self) -> bytes: ...


class BlockBuilder:
    """What this validator proposes at the next height, and the equivocations it will report there."""

    def __init__(self, core: BuilderCore, check: BlockCheck) -> None:
        self.core = core
        self.check = check
        self.evidence: list[tuple[Vote, Vote]] = []
        config = core.config
        self.pace = BlockPace(config.block_seconds_target, config.max_block_txs - config.max_block_membership)

    def note_evidence(self, first: Vote, second: Vote) -> None:
        self.evidence.append((first, second))
        del self.evidence[:-MAX_EVIDENCE]

    def forget_outsiders(self) -> None:
        """A block applied: evidence against a validator no longer in the set is moot."""
        validators = self.core.state.validators
        self.evidence = [e for e in self.evidence if e[0].validator in validators]

    def build_block(self) -> Block:
        state = self.core.state
        now_ms = self.core.now_ms
        time_ms = max(now_ms, state.time_ms + 1)
        config = self.core.config
        ttl = state.genesis.exchange.get("order_ttl_ms", 120_000)
        self.core.mempool.expire(time_ms - config.expired_grace_ms)
        # as many as the network decides within the pace's target, each lane's share of a block at its limits
        reaped = self.core.mempool.reap(self.pace.limit, config.max_block_bytes, lane_of=self.pace.ceiling)
        app = state.app
        # transactions that expired before a block could take them are still recorded (as expired), so an
        # order someone was told is pending resolves everywhere; one already applied is left out
        expired = [tx for tx in reaped if tx.expires <= time_ms and app.order(tx.order_id(0)) is None][:100]
        txs: list[SignedTx | MembershipTx] = [*expired, *(tx for tx in reaped if time_ms < tx.expires <= time_ms + ttl)]
        membership = self._membership_txs(time_ms)
        while True:
            block = self._assemble(time_ms, [*txs, *membership])
            excess = block.size - self.check.max_block_size
            if (excess <= 0 and len(block.txs) <= config.max_block_txs) or not txs:
                return block
            # measured as validation measures it (wrapped items, header, last commit): drop the newest
            # transactions until it fits, so a full mempool never yields a block nobody accepts
            while txs and (excess > 0 or len(txs) + len(membership) > config.max_block_txs):
                excess -= len(pack(encode_item(txs.pop())))

    def _assemble(self, time_ms: int, txs: list[SignedTx | MembershipTx]) -> Block:
        state = self.core.state
        items = [encode_item(tx) for tx in txs]
        header = Header(self.core.chain_id, state.height + 1, time_ms, state.last_block_id, self.core.public_key, state.hash,
                        state.validators.hash, Block.txs_hash(items), self.core.last_commit if state.height else None)
        block = Block(header, items)
        self.check.remember_decoded(block, txs)
        return block

    def _membership_txs(self, time_ms: int) -> list[MembershipTx]:
        """What this proposer puts in its block: the admissions and approvals it holds, then at most one
        change of the set: evidence first, then approved removals, leaves, jailing the absent, and
        promoting live standbys to a size the seat rule allows."""
        state, height = self.core.state, self.core.state.height + 1
        if state.genesis.pinned:
            return []
        seats, validators = state.seats.copy(), state.validators
        chosen: list[MembershipTx] = []
        limit = self.core.config.max_block_membership - 1
        # requests first, then standbys' `alive`s (many, and each only refreshes a record)
        pending = sorted((tx for tx in self.core.mempool.membership() if not tx.changes_set),
                         key=lambda tx: isinstance(tx, Alive))
        for tx in pending:
            if len(chosen) >= limit:
                break
            why = state.membership_problem(tx, height, time_ms, seats, validators)
            if why is None:
                seats.apply(tx, validators, height, time_ms)
                chosen.append(tx)
            elif why not in KEPT_FOR_LATER:
                self.core.mempool.drop_membership(tx.id)
        for change in self._set_changes(seats, height, time_ms):
            why = state.membership_problem(change, height, time_ms, seats, validators)
            if why is None:
                chosen.append(change)
                break
            if isinstance(change, Leave) and why not in KEPT_FOR_LATER:
                self.core.mempool.drop_membership(change.id)
        return chosen

    def _set_changes(self, seats: Seats, height: int, time_ms: int) -> Iterator[MembershipTx]:
        """The set changes this block could make, in the order it prefers them (the first valid one goes in).
        Successors and promotions are standbys the chain's own record shows live (`Seats.is_live`)."""
        state, validators = self.core.state, self.core.state.validators
        live = seats.live_standbys(time_ms)
        successor = live[0] if live else None
        for a, b in self.evidence:
            if a.validator in validators and (len(validators) > 1 or successor is not None):
                yield Remove(a.validator, "equivocation", (a, b), successor)
                if successor is not None:
                    yield Remove(a.validator, "equivocation", (a, b), None)
        for key in sorted(seats.removals):
            if key in validators and (len(validators) > 1 or successor is not None):
                yield Remove(key, "approved", None, successor)
                if successor is not None:
                    yield Remove(key, "approved", None, None)
        for tx in self.core.mempool.membership():
            if isinstance(tx, Leave) and tx.key in validators:
                yield tx
        for key in validators.keys:
            if key != self.core.public_key and (len(validators) > 1 or successor is not None) \
                    and (state.is_absent(key, height, time_ms) or seats.probation_failed(key, height, time_ms)):
                yield Remove(key, "absent", None, successor)
                if successor is not None:       # the successor may be refused (`successor_unproven`): none then
                    yield Remove(key, "absent", None, None)
        for count in range(len(live), 0, -1):
            if state.genesis.size_allowed(len(validators) + count):
                yield Promote(tuple(live[:count]))
                return

