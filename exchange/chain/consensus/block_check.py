"""Whether a block can be the next one: the checks every node makes before it votes for a proposal, and
before it applies or forwards a block that arrives with a quorum certificate.

A proposal is checked in full (`validate`: parent, time, proposer, state and set hashes, the last commit,
size, every transaction's signature and the membership changes in order). A certified block is applied on
its certificate (`commit_ok`), but its transactions are still checked here (`refused_txs`): a quorum's
certificate says the block was ordered, not that each transaction in it is genuine. Results are cached per
block id, so a block seen as a proposal and then as a decision is checked once.
"""
from __future__ import annotations

from typing import Protocol

import logging
from collections import OrderedDict

from exchange.chain.types.blocks import Block, BlockSource, Commit, Malformed
from exchange.chain.state.chainstate import decode_item, recovery_of
from exchange.chain.state.membership import MembershipTx, Recover
from exchange.chain.recovery.rules import RECOVERY_ROUND, carried_problem
from exchange.app.txs import InvalidTx, SignedTx
from exchange.chain.types.validators import ValidatorSet
from exchange.chain.mempool.pool import Mempool
from exchange.chain.state.view import CoreBasics

log = logging.getLogger("exchange.chain")

BLOCK_OVERHEAD = 4096       # bytes a block may carry beyond max_block_bytes: its header and last commit
_CACHED_BLOCKS = 64
_REFUSAL_REASONS = 32       # distinct reasons counted (a malformed transaction's code is part of its reason)


class CheckCore(CoreBasics, Protocol):
    """The core as the block check uses it: the state, chain and mempool a block is checked against.
    Read-only (a part writes only the basics' `counters`)."""

    @property
    def blocks(self) -> BlockSource: ...

    @property
    def mempool(self) -> Mempool: ...


class BlockCheck:
    """The block checks of one node, over the state its core holds now."""

    def __init__(self, core: CheckCore) -> None:
        self.core = core
        self._decoded: OrderedDict[bytes, list[SignedTx | MembershipTx]] = OrderedDict()  # block id -> decoded transactions
        self._invalid: OrderedDict[bytes, str] = OrderedDict()        # block id -> why it is invalid
        self._valid: OrderedDict[bytes, None] = OrderedDict()         # block ids that passed every check
        # commits whose signatures checked out: (block id, round, signatures, hash of the set checked against)
        self._good_commits: OrderedDict[tuple[bytes, int, tuple[tuple[int, bytes], ...], bytes], None] = OrderedDict()
        self.refused: dict[str, int] = {}      # proposals refused here, by reason (/status, metrics)

    def remember_decoded(self, block: Block, txs: list[SignedTx | MembershipTx]) -> None:
        """A block we built ourselves: its transactions are known without decoding them again."""
        self._decoded[block.id] = txs
        if len(self._decoded) > _CACHED_BLOCKS:
            self._decoded.popitem(last=False)

    def decode(self, block: Block) -> list[SignedTx | MembershipTx]:
        txs = self._decoded.get(block.id)
        if txs is None:
            txs = [decode_item(item) for item in block.txs]
            self.remember_decoded(block, txs)
        return txs

    def validate(self, block: Block, now_ms: int | None = None) -> str | None:
        """Why `block` cannot be the next block, or None (Tendermint's valid(v); cached per block id)."""
        known = self._invalid.get(block.id)
        if known is not None:
            return known
        if block.id in self._valid:
            return None
        why = self._check(block, now_ms)
        if why is not None:
            if why != "time_in_future":          # our clock may catch up with an honest proposer's
                self._invalid[block.id] = why
            if len(self._invalid) > 256:
                self._invalid.popitem(last=False)
            self.core.counters["invalid_blocks"] += 1
            reason = why if why in self.refused or len(self.refused) < _REFUSAL_REASONS else "other"
            self.refused[reason] = self.refused.get(reason, 0) + 1
            log.warning("block %s at height %d refused: %s", block.id.hex()[:12], block.height, why)
        return why

    def decode_known(self, item: object) -> SignedTx | MembershipTx:
        """A block's transaction, taken from the mempool when we hold the very same one (same signature and
        the same content: we compare what we hold with the block's bytes) instead of parsing it again."""
        if type(item) is list and len(item) == 2 and item[0] == "a" and type(item[1]) is list and len(item[1]) == 6:
            known = self.core.mempool.by_sig.get(item[1][5]) if type(item[1][5]) is bytes else None
            if known is not None and known.wire() == item[1]:
                return known
        return decode_item(item)

    def _check(self, block: Block, now_ms: int | None) -> str | None:
        state, header = self.core.state, block.header
        if header.chain_id != self.core.chain_id:
            return "wrong_chain"
        if header.height != state.height + 1 or header.prev_id != state.last_block_id:
            return "wrong_parent"
        if header.time_ms <= state.time_ms:
            return "time_not_increasing"
        if now_ms is not None and header.time_ms > now_ms + self.core.config.max_clock_drift_ms:
            return "time_in_future"
        if header.proposer not in state.validators:
            return "proposer_not_validator"
        if header.app_hash != state.hash:
            return "app_hash_mismatch"
        if header.validators_hash != state.validators.hash:
            return "validators_mismatch"
        commit = header.last_commit
        if state.height == 0:
            if commit is not None:
                return "unexpected_last_commit"
        elif commit is None or commit.height != state.height or commit.block_id != state.last_block_id \
                or not commit.verify(self.core.chain_id, state.prev_validators, self.core.verify):
            return "bad_last_commit"
        if len(block.txs) > self.core.config.max_block_txs or block.size > self.max_block_size:
            return "block_too_large"
        try:
            txs = [self.decode_known(item) for item in block.txs]
        except (Malformed, InvalidTx) as exc:
            return f"malformed_tx:{getattr(exc, 'code', exc)}"
        why = self._membership_problem([tx for tx in txs if isinstance(tx, MembershipTx)], header.height,
                                       header.time_ms)
        if why is not None:
            return why
        seen: set[str] = set()
        ttl = self.core.state.genesis.exchange.get("order_ttl_ms", 120_000)
        for tx in txs:
            if isinstance(tx, MembershipTx):
                continue
            if tx.id in seen:
                return "duplicate_tx"
            seen.add(tx.id)
            if tx.chain_id != self.core.chain_id:
                return "tx_wrong_chain"
            if tx.expires > header.time_ms + ttl:
                return "tx_expires_too_late"
            if not self.core.mempool.is_verified(tx):
                if not tx.signature_valid():
                    return "bad_tx_signature"
                self.core.mempool.remember_verified(tx)
        self.remember_decoded(block, txs)
        self._valid[block.id] = None
        if len(self._valid) > _CACHED_BLOCKS:
            self._valid.popitem(last=False)
        return None

    def _membership_problem(self, changes: list[MembershipTx], height: int, time_ms: int) -> str | None:
        """Why a block's membership transactions cannot all apply in order, or None: each signed by whom it
        must be, each valid on the state the ones before it leave, and at most one change of the set."""
        if len(changes) > self.core.config.max_block_membership:
            return "too_many_membership_txs"
        state = self.core.state
        seats, validators, changed = state.seats.copy(), state.validators, False
        for tx in changes:
            if isinstance(tx, Recover):
                return "recover_outside_a_recovery_block"
            if not tx.signature_valid(self.core.chain_id, self.core.verify):
                return "bad_membership_signature"
            if changed and tx.changes_set:
                return "two_set_changes"
            why = state.membership_problem(tx, height, time_ms, seats, validators)
            if why is not None:
                return f"bad_membership_tx:{tx.kind}:{why}"
            after = seats.apply(tx, validators, height, time_ms)
            if after is not None:
                validators, changed = after, True
                seats.after_change(after)
        return None

    def judge_certified(self, block: Block, commit: Commit) -> bool | None:
        """Before a certified block is forwarded: True (valid and next, or one we hold), False (cannot be
        valid: its sender made it up), None (ahead of us: we cannot check it yet, so we do not forward it)."""
        if commit.height != block.height or commit.block_id != block.id or block.header.chain_id != self.core.chain_id:
            return False
        state = self.core.state
        if block.height <= state.height:
            stored = self.core.blocks.get(block.height)
            return None if stored is None else stored[0].id == block.id
        if block.height > state.height + 1:
            return None
        if not self.commit_ok(commit, block):
            return False
        return block.header.prev_id == state.last_block_id

    def commit_ok(self, commit: Commit, block: Block) -> bool:
        """`commit` certifies `block`, the next height: a quorum of our set, or for a recovery block, every
        member of the set it recovers to (at RECOVERY_ROUND)."""
        certifying = self._certifying_set(block)
        if certifying is None:
            return False
        validators, everyone = certifying
        if everyone and (commit.round != RECOVERY_ROUND or len(commit.sigs) != len(validators)):
            return False
        # the whole certificate and the set it was checked against: another copy of it is checked afresh
        key = (commit.block_id, commit.round, commit.sigs, validators.hash)
        if key in self._good_commits:
            return True
        if not commit.verify(self.core.chain_id, validators, self.core.verify):
            return False
        self.trust_commit(commit, validators)
        return True

    def trust_commit(self, commit: Commit, validators: ValidatorSet) -> None:
        """`commit` is a quorum of distinct members of `validators` whose signatures were already checked (a
        follower's own assembly of the precommits it received, `precommit_quorum.py`): `commit_ok` takes it as it
        takes one it verified, for a block of that id certified by that set."""
        self._good_commits[(commit.block_id, commit.round, commit.sigs, validators.hash)] = None
        if len(self._good_commits) > _CACHED_BLOCKS:
            self._good_commits.popitem(last=False)

    def _certifying_set(self, block: Block) -> tuple[ValidatorSet, bool] | None:
        """The set whose commit certifies `block` (the next height) and whether every member must sign it:
        ours, or for a recovery block the set it recovers to. None: a recovery block that cannot apply here."""
        first = block.txs[0] if block.txs else None
        if not (type(first) is list and len(first) == 2 and first[0] == "m" and type(first[1]) is list
                and first[1][:1] == ["recover"]):
            return self.core.state.validators, False         # not a recovery block: no need to decode it here
        try:
            recovery = recovery_of(self.decode(block))
        except (Malformed, InvalidTx):
            return self.core.state.validators, False
        if recovery is None:
            return self.core.state.validators, False
        if self.recovery_problem(block, recovery) is not None:
            return None
        after = recovery.next_set(self.core.state.validators)
        assert after is not None
        return after, True

    def recovery_problem(self, block: Block, tx: Recover, now_ms: int | None = None) -> str | None:
        """Why `block` cannot be the recovery block at our next height, or None: on top of our last block, the
        one its recovery names, by the recovery rule on our own set, naming the recovered set, built by its
        designated member on our state, with the commit of our last block."""
        state, header = self.core.state, block.header
        if header.chain_id != self.core.chain_id:
            return "wrong_chain"
        if header.height != state.height + 1 or header.prev_id != state.last_block_id:
            return "wrong_parent"
        why = state.membership_problem(tx, header.height, header.time_ms)
        if why is not None:
            return f"recover:{why}"
        why = carried_problem(tx, block)
        if why is not None:
            return why
        if not tx.signature_valid(self.core.chain_id, self.core.verify):
            return "bad_lock_signature"
        after = tx.next_set(state.validators)
        assert after is not None
        if header.validators_hash != after.hash:
            return "validators_mismatch"
        if header.proposer != after.proposer(header.height, RECOVERY_ROUND):
            return "not_the_recovery_proposer"
        if header.app_hash != state.hash:
            return "app_hash_mismatch"
        if header.time_ms <= state.time_ms:
            return "time_not_increasing"
        if now_ms is not None and header.time_ms > now_ms + self.core.config.max_clock_drift_ms:
            return "time_in_future"
        commit = header.last_commit
        if state.height == 0:
            return "nothing_to_recover"
        if commit is None or commit.height != state.height or commit.block_id != state.last_block_id \
                or not commit.verify(self.core.chain_id, state.prev_validators, self.core.verify):
            return "bad_last_commit"
        return None

    def refused_txs(self, txs: list[SignedTx | MembershipTx]) -> dict[int, str]:
        """Transactions of a certified block that fail our own checks: recorded as failed, never run (a
        quorum's certificate says the block was ordered, not that each transaction in it is genuine)."""
        refused: dict[int, str] = {}
        mempool = self.core.mempool
        for index, tx in enumerate(txs):
            if isinstance(tx, SignedTx):
                if tx.chain_id != self.core.chain_id:
                    refused[index] = "wrong_chain"
                elif not (mempool.is_verified(tx) or tx.signature_valid()):
                    refused[index] = "bad_signature"
                else:
                    mempool.remember_verified(tx)
            elif not tx.signature_valid(self.core.chain_id, self.core.verify):
                refused[index] = "bad_signature"
        if refused:
            self.core.counters["refused_certified_txs"] = self.core.counters.get("refused_certified_txs", 0) + len(refused)
            log.error("a certified block at height %d holds %d transaction(s) that fail our checks: recorded as "
                      "failed, not executed", self.core.state.height + 1, len(refused))
        return refused

    @property
    def max_block_size(self) -> int:
        return self.core.config.max_block_bytes + BLOCK_OVERHEAD

