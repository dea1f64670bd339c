"""The way out of a permanent halt: validators gone for good, the rest take the chain on.

When so many validators are gone for good (machine and data lost) that the rest can never again form a
quorum, nothing is final any more and nothing can be, since removing the gone ones needs a quorum too. The
way out is the operators' explicit decision, as etcd's `--force-new-cluster` or a Cosmos chain's
halt-and-restart from the last certified state, but inside the chain and checkable by every node:

- each surviving validator's operator runs `exchange-node validators recover --keep ID,ID,...` naming the
  same new set: a subset of the current set that keeps at least f + 1 of it (one more than the faults it
  tolerates: at least one honest validator agreed, and every quorum that could have certified a block at the
  next height shares a validator with the new set);
- the new set's designated member (`proposer(height, RECOVERY_ROUND)` of the new set) builds the *recovery
  block* at H + 1 on top of the last certified block H: its only transaction is `Recover(H, id of H, keys)`,
  its header names the new set; each member who agrees signs a PRECOMMIT for it at round RECOVERY_ROUND (a
  round Tendermint never reaches, so it cannot contradict a vote of the halted height);
- a block of the halted height may be final on validators now gone: then (with at most f faulty) a kept
  validator precommitted it, and the highest-round precommit any kept validator signed at H + 1 is for it
  (Tendermint's locks). So each kept validator hands its own highest precommit (its *lock*) to the builder,
  the recovery block carries the transactions and time of the highest-round lock (`Recover.lock`), and a
  validator signs only a recovery block carrying a lock of a round at least as high as its own (the same
  block at the same round), and at most one recovery block per carried round. Fills of such a block are
  kept exactly: same transactions, same order, same time;
- its consent is written to the WAL before it leaves, and from then on it signs nothing more at H + 1 with
  the old set; once every member of the new set signed, the block is certified by that commit and broadcast
  as any decision.

Every node, followers included, accepts the recovery block only on top of its own block H (the one the
recovery names), only from the set it itself holds at H, and only with a commit carrying every new member's
precommit. Blocks up to H are never touched: a node that holds a certified H + 1 never takes another one, so
final stays final. If the "gone" validators are alive behind a partition and their side recovers too, the
chain forks from H + 1: that is the operators' responsibility, which the CLI spells out before it signs.
"""
from __future__ import annotations

from typing import Protocol

import logging

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Malformed, Vote, vote_bytes
from exchange.chain.state.chainstate import encode_item, recovery_of
from exchange.chain.consensus.block_check import BlockCheck
from exchange.crypto import node_id_for
from exchange.chain.effects import PENALTY_INVALID, SendTo, SendValidators, WalRecord
from exchange.chain.state.membership import Recover
from exchange.chain.recovery.rules import RECOVERY_ROUND, RecoveryStatus
from exchange.app.txs import InvalidTx
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire
from exchange.chain.effects import ChainEffect
from exchange.chain.consensus.tendermint import Tendermint
from exchange.chain.state.view import CoreBasics

log = logging.getLogger("exchange.chain")

RESEND_INTERVAL = 1.0               # s between re-sends of a pending recovery to the other validators

_REFUSALS = {
    "not_validator": "every validator kept must hold a seat now (a recovery seats nobody new)",
    "removes_nobody": "the new set keeps every validator: nothing to recover (the chain needs a quorum of them)",
    "too_few_kept": "a recovery must keep at least {need} of the {n} validators (one more than the faults the set "
                    "tolerates): fewer could be a faulty minority rewriting history",
}


class RecoveryCore(CoreBasics, Protocol):
    """The core as the halt recovery uses it: the state, the consensus it stands in for at the halted
    height, the key it signs with, and the effects it emits.
    Read-only (a part writes only the basics' `counters`)."""

    def apply(self, block: Block, commit: Commit, *, announce: bool, refused: dict[int, str] | None = None) -> None: ...

    @property
    def consensus(self) -> Tendermint: ...

    def drain(self, now: float) -> None: ...

    def emit(self, effect: ChainEffect) -> None: ...

    @property
    def halted(self) -> str | None: ...

    @property
    def is_validator(self) -> bool: ...

    @property
    def last_commit(self) -> Commit | None: ...

    @property
    def now_ms(self) -> int: ...

    def penalize(self, peer: str | None, points: float, reason: str) -> None: ...

    @property
    def public_key(self) -> bytes: ...

    def quorum_present(self, now: float) -> bool: ...

    def set_now(self, now: float) -> None: ...

    def sign(self, data: bytes) -> bytes: ...

    def start_height(self, now: float) -> None: ...


class PendingRecovery:
    """A recovery block this node holds for the next height, and the new members' precommits gathered so far."""

    __slots__ = ("block", "tx", "validators", "sigs", "consented", "next_send")

    def __init__(self, block: Block, tx: Recover, validators: ValidatorSet) -> None:
        self.block, self.tx, self.validators = block, tx, validators
        self.sigs: dict[int, bytes] = {}          # index in the new set -> precommit signature
        self.consented = False                    # we signed it (never a second recovery at this height)
        self.next_send = 0.0

    @property
    def complete(self) -> bool:
        return len(self.sigs) == len(self.validators)

    def wire(self) -> Wire:
        return [self.block.wire(), [[i, s] for i, s in sorted(self.sigs.items())]]


class HaltRecovery:
    """One validator's part in a recovery: its operator's consent, the lock it hands on, the recovery block it
    builds (as the new set's designated member) or signs, and the signatures it gathers and passes on."""

    def __init__(self, core: RecoveryCore, check: BlockCheck) -> None:
        self.core = core
        self.check = check
        self.pending: PendingRecovery | None = None                  # a recovery block for the next height
        self._intent: tuple[int, tuple[bytes, ...]] | None = None     # our operator's (height, keep)
        self._lock: tuple[Vote, Block] | None = None                 # the highest lock a kept validator sent us
        self._signed_at = 0
        self._signed_by_round: dict[int, bytes] = {}

    def new_height(self) -> None:
        """The chain moved on: what was pending for an earlier height is moot."""
        height = self.core.state.height + 1
        if self.pending is not None and self.pending.block.height != height:
            self.pending = None
        if self._lock is not None and self._lock[0].height != height:
            self._lock = None
        self.freeze()

    def tick(self, now: float) -> None:
        if self.pending is not None:
            self.progress(now)

    def consent(self, keep: tuple[bytes, ...], now: float) -> RecoveryStatus:
        """Our operator's consent that the validators `keep` (us among them) take the chain on from our last
        certified block, as the whole new set (`recovery.py`). Raises ValueError (why) when it cannot be given:
        we hold no seat, the chain is not halted, or the set does not satisfy the recovery rule. The designated
        member builds the recovery block (carrying the highest lock it learns of); the others sign it once it
        arrives (at once if it already did); a member that holds a lock hands it to the builder."""
        self.core.set_now(now)
        state = self.core.state
        height = state.height + 1
        if self.core.halted:
            raise ValueError(f"this node halted: {self.core.halted}")
        if not self.core.is_validator:
            raise ValueError("this node holds no validator seat: only a validator's operator can consent")
        if state.genesis.pinned:
            raise ValueError("the validator set is pinned (VALIDATORS): change it in every node's settings")
        if state.height == 0:
            raise ValueError("the chain has no certified block yet")
        if self.core.public_key not in keep:
            raise ValueError("the new set must include this validator (it consents for itself only)")
        tx = Recover(state.height, state.last_block_id, keep)
        why = state.membership_problem(tx, height, max(self.core.now_ms, state.time_ms + 1))
        if why is not None:
            raise ValueError(_REFUSALS.get(why, why).format(
                n=len(state.validators), need=state.validators.faults + 1))
        if self.core.quorum_present(now):
            raise ValueError("the chain is not halted: a quorum of its validators is heard; a recovery is only for "
                             "validators gone for good")
        signed = self.pending
        if self.signed and signed is not None and signed.consented and signed.tx.keys != tx.keys:
            raise ValueError("this validator already consented to a recovery keeping " +
                             ", ".join(node_id_for(k) for k in signed.tx.keys) + " at this height")
        self._intent = (state.height, tx.keys)
        mine = self.core.consensus.own_lock(height)
        if mine is not None:
            self._note_lock(*mine)
            self.core.emit(SendValidators({"type": "chain_recovery", "body": ["lock", mine[0].wire(),
                                                                                  mine[1].wire()]}))
        self._build()
        pending = self.pending
        if pending is not None and pending.tx.keys == tx.keys:
            self._sign_pending(now)
        self.core.drain(now)
        return self.status() or {"height": height, "keep": [node_id_for(k) for k in tx.keys],
                                          "state": "recovered" if self.core.state.height >= height else "dropped",
                                          "signed": [], "missing": []}

    def _note_lock(self, vote: Vote, block: Block) -> None:
        best = self._lock
        if best is None or vote.round > best[0].round:
            self._lock = (vote, block)

    def _build(self) -> None:
        """As the designated member of the set our operator named: build the recovery block carrying the
        highest lock we know of, unless the one we hold already carries it."""
        state, intent = self.core.state, self._intent
        if intent is None or intent[0] != state.height:
            return
        probe = Recover(state.height, state.last_block_id, intent[1])
        after = probe.next_set(state.validators)
        assert after is not None
        if after.proposer(state.height + 1, RECOVERY_ROUND) != self.core.public_key:
            return
        lock = self._lock
        if lock is not None and lock[0].validator not in after:
            lock = None
        pending = self.pending
        carried = -1 if lock is None else lock[0].round
        if pending is not None and pending.tx.keys == probe.keys and pending.tx.carried_round >= carried:
            return
        tx = Recover(state.height, state.last_block_id, intent[1], None if lock is None else (lock[0], lock[1].header))
        items = [encode_item(tx), *(lock[1].txs if lock is not None else [])]
        time_ms = lock[1].header.time_ms if lock is not None else max(self.core.now_ms, state.time_ms + 1)
        header = Header(self.core.chain_id, state.height + 1, time_ms, state.last_block_id, self.core.public_key, state.hash,
                        after.hash, Block.txs_hash(items), self.core.last_commit)
        block = Block(header, items)
        if self.check.recovery_problem(block, tx) is None:
            self.pending = PendingRecovery(block, tx, after)

    def _sign_pending(self, now: float) -> None:
        """Sign the pending recovery block if our own lock allows it (else hand our lock to its builder): durable
        in the WAL before it leaves; from then on we sign nothing more at this height with the old set."""
        pending = self.pending
        assert pending is not None
        block, carried = pending.block, pending.tx.carried_round
        if pending.validators.index[self.core.public_key] not in pending.sigs:
            mine = self.core.consensus.own_lock(block.height)
            carried_id = None if pending.tx.lock is None else pending.tx.lock[1].id
            if mine is not None and (carried < mine[0].round or (carried == mine[0].round
                                                                 and carried_id != mine[1].id)):
                log.warning("the recovery block offered for height %d carries a lock of round %d, ours is of round "
                            "%d: handing ours to its builder", block.height, carried, mine[0].round)
                self.core.emit(SendTo(node_id_for(block.header.proposer),
                                     {"type": "chain_recovery", "body": ["lock", mine[0].wire(), mine[1].wire()]}))
                return
            signed = self.signed.get(carried)
            if signed is not None and signed != block.id:
                return              # one recovery block per carried round, never two
            vote = Vote.create(self.core.chain_id, PRECOMMIT, block.height, RECOVERY_ROUND, block.id, self.core.public_key,
                               self.core.sign)
            pending.sigs[pending.validators.index[self.core.public_key]] = vote.sig
            pending.consented = True
            self.signed[carried] = block.id
            self.core.emit(WalRecord(["recovery", block.height, block.wire(), vote.sig]))
            self.freeze()
            log.warning("consented to recover height %d (carrying a lock of round %d): %d validators kept (%s)",
                        block.height, carried, len(pending.validators),
                        ", ".join(n[:12] for n in pending.validators.node_ids))
        self.progress(now, resend=True)

    def freeze(self) -> None:
        """Once we consented to a recovery at H + 1, never sign H + 1 with the old set (its consensus would
        otherwise go on signing rounds, and a new lock there could outrank the one the recovery carries)."""
        if self._signed_at == self.core.state.height + 1 and self.signed:
            self.core.consensus.sign_from = max(self.core.consensus.sign_from, self.core.state.height + 2)

    @property
    def signed(self) -> dict[int, bytes]:
        """The recovery blocks we signed at the next height, by the lock round they carry."""
        height = self.core.state.height + 1
        if self._signed_at != height:
            self._signed_at, self._signed_by_round = height, {}
        return self._signed_by_round

    def restore(self, records: list[Wire]) -> None:
        """After a restart: our WAL says which recovery blocks we signed at the next height; hold to them."""
        best: PendingRecovery | None = None
        for record in records:
            if len(record) != 4 or record[1] != self.core.state.height + 1 or type(record[3]) is not bytes:
                continue
            try:
                block = Block.from_wire(record[2])
                tx = recovery_of(self.check.decode(block))
            except (Malformed, InvalidTx):
                continue
            if tx is None or self.check.recovery_problem(block, tx) is not None:
                continue
            after = tx.next_set(self.core.state.validators)
            assert after is not None and self.core.public_key in after
            self.signed[tx.carried_round] = block.id
            if best is None or tx.carried_round > best.tx.carried_round:
                best = PendingRecovery(block, tx, after)
                best.sigs[after.index[self.core.public_key]] = record[3]
                best.consented = True
                self._intent = (self.core.state.height, tx.keys)
        if best is not None:
            self.pending = best
            log.warning("resuming our consent to recover height %d", best.block.height)

    def on_message(self, body: object, sender: str | None, now: float) -> None:
        """A recovery block for our next height with the precommits on it someone gathered (`offer`), or a kept
        validator's lock for its builder (`lock`)."""
        if type(body) is not list or len(body) != 3 or body[0] not in ("offer", "lock"):
            raise Malformed("bad_recovery")
        if body[0] == "lock":
            vote, block = Vote.from_wire(body[1]), Block.from_wire(body[2])
            state = self.core.state
            if vote.height != state.height + 1:
                return
            if vote.kind != PRECOMMIT or vote.block_id != block.id or block.height != vote.height \
                    or vote.validator not in state.validators or not vote.valid(self.core.chain_id, self.core.verify):
                self.core.penalize(sender, PENALTY_INVALID, "bad_recovery_lock")
                return
            if block.header.prev_id == state.last_block_id:
                self._note_lock(vote, block)
                self._build()
                if self.pending is not None and self._intent is not None \
                        and self.pending.tx.keys == self._intent[1]:
                    self._sign_pending(now)
            return
        block = Block.from_wire(body[1])
        sigs = body[2]
        if type(sigs) is not list or len(sigs) > 1024 or not all(
                type(i) is list and len(i) == 2 and type(i[0]) is int and type(i[1]) is bytes for i in sigs):
            raise Malformed("bad_recovery")
        state = self.core.state
        if block.height != state.height + 1:
            return                  # decided here already, or ahead of us: catch-up settles it
        tx = recovery_of(self.check.decode(block))
        if tx is None:
            raise Malformed("not_a_recovery_block")
        why = self.check.recovery_problem(block, tx, self.core.now_ms)
        if why is not None:
            if why != "time_in_future":
                log.warning("recovery block from %s refused: %s", (sender or "us")[:12], why)
            return
        pending = self.pending
        if pending is None or pending.block.id != block.id:
            if pending is not None and pending.consented and tx.carried_round <= pending.tx.carried_round:
                return              # we signed one carrying as high a lock already
            after = tx.next_set(state.validators)
            assert after is not None
            pending = self.pending = PendingRecovery(block, tx, after)
        data = vote_bytes(self.core.chain_id, PRECOMMIT, block.height, RECOVERY_ROUND, block.id)
        added = False
        for index, sig in sigs:
            if index in pending.sigs:
                continue
            if index >= len(pending.validators) or not self.core.verify(pending.validators.keys[index], sig, data):
                self.core.penalize(sender, PENALTY_INVALID, "bad_recovery_signature")
                return
            pending.sigs[index] = sig
            added = True
        intent = self._intent
        if intent == (state.height, tx.keys) and self.core.public_key in pending.validators:
            self._sign_pending(now)
        else:
            self.progress(now, resend=added)

    def progress(self, now: float, resend: bool = False) -> None:
        """A complete recovery is applied and broadcast like a decision; an incomplete one we signed is passed
        on to the other validators (at once when it gained a signature, then every RESEND_INTERVAL)."""
        pending = self.pending
        if pending is None:
            return
        if pending.block.height != self.core.state.height + 1:
            self.pending = None
            return
        if pending.complete:
            block = pending.block
            commit = Commit(block.height, RECOVERY_ROUND, block.id, tuple(sorted(pending.sigs.items())))
            if not self.check.commit_ok(commit, block):
                log.error("the recovery block at height %d does not check out: dropped", block.height)
                self.pending = None
                return
            log.warning("recovered: height %d is certified by all %d validators of the new set", block.height,
                        len(pending.validators))
            self.core.counters["recoveries"] = self.core.counters.get("recoveries", 0) + 1
            self.core.apply(block, commit, announce=True, refused=self.check.refused_txs(self.check.decode(block)))
            self.core.start_height(now)
            return
        if pending.consented and (resend or now >= pending.next_send):
            pending.next_send = now + RESEND_INTERVAL
            self.core.emit(SendValidators({"type": "chain_recovery", "body": ["offer", *pending.wire()]}))

    def status(self) -> RecoveryStatus | None:
        """The recovery under way here (None: none)."""
        pending, intent = self.pending, self._intent
        if pending is None:
            if intent is None or intent[0] != self.core.state.height:
                return None
            keep = ValidatorSet(self.core.state.validators.epoch + 1, intent[1])
            designated = keep.proposer(intent[0] + 1, RECOVERY_ROUND)
            return {"height": intent[0] + 1, "keep": list(keep.node_ids), "state": "waiting_for_block",
                    "builder": node_id_for(designated), "signed": [], "missing": list(keep.node_ids)}
        vs = pending.validators
        signed = [vs.node_ids[i] for i in sorted(pending.sigs)]
        return {"height": pending.block.height, "block_id": pending.block.id.hex(), "keep": list(vs.node_ids),
                "state": "consented" if pending.consented else "offered", "carried_lock_round": pending.tx.carried_round,
                "builder": node_id_for(pending.block.header.proposer), "signed": signed,
                "missing": [n for n in vs.node_ids if n not in signed]}

