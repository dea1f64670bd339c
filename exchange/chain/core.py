"""ChainCore: one node's part in the chain, with no I/O — consensus, the replicated state, the mempool,
catch-up, and the node's own pending transactions.

Inputs are plain calls with the wall-clock time passed in (seconds): messages from neighbours
(`on_message`), transactions from the local API (`submit`), peers' chain heights from heartbeats
(`peer_height`), and `tick`. Outputs are the typed effects of `effects.py` (`ChainEffect`), collected
in emission order and taken as one `EffectBatch` by the caller (`take_effects`), which carries them out
under the durability order that module states: a WAL record before any later send, a block stored
before anything its finality lets out.

The way out of a permanent halt (validators gone for good) is `recover`, the operator's consent to a
recovery block (`recovery.py`): gathered over `recovery` messages, certified by every member of the new set.

A validator runs Tendermint (`tendermint.py`) over `ChainState`; a follower only applies blocks whose
commit (quorum certificate) it has verified against the validator set its own state derived, so
followers — however many — can neither affect safety nor slow finality. Every message arriving here is
checked before it is acted on; what fails a check that needs no local knowledge (shape, signature,
certificate) is blamed on the neighbour that sent it, since honest nodes check before they forward.
"""
from __future__ import annotations

import logging
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, assert_never

from exchange.chain.block_check import BlockCheck
from exchange.chain.blocksync import BlockSync
from exchange.chain.blocks import PRECOMMIT, Block, Commit, Header, Malformed, Proposal, Vote, vote_bytes
from exchange.chain.chainstate import Application, ChainState, encode_item, recovery_of
from exchange.chain.codec import pack
from exchange.chain.core_view import BlockSource
from exchange.chain.crypto import node_id_for
from exchange.chain.effects import (PENALTY_INVALID, PENALTY_MALFORMED, Broadcast, ChainEffect, Committed, Decide,
                                    EffectBatch, Evidence, Forward, Halt, OwnDone, Penalize, SendConsensus, SendTo,
                                    SendValidators, WalRecord)
from exchange.chain.genesis import Genesis
from exchange.chain.membership import Approve, Join, Leave, MembershipTx, Promote, Recover, Remove
from exchange.chain.mempool import OWN_LANE, Mempool
from exchange.chain.account_rate import AccountRate
from exchange.chain.tx_budget import TxBudget
from exchange.chain.recovery import RECOVERY_ROUND, RESEND_INTERVAL, PendingRecovery
from exchange.chain.seats import Seats
from exchange.chain.tendermint import WAITING, ConsensusConfig, Tendermint, wal_record_height
from exchange.chain.txs import InvalidTx, SignedTx
from exchange.chain.validators import ValidatorSet

log = logging.getLogger("exchange.chain")

_RECOVERY_REFUSALS = {
    "not_validator": "every validator kept must hold a seat now (a recovery seats nobody new)",
    "removes_nobody": "the new set keeps every validator: nothing to recover (the chain needs a quorum of them)",
    "too_few_kept": "a recovery must keep at least {need} of the {n} validators (one more than the faults the set "
                    "tolerates): fewer could be a faulty minority rewriting history",
}


@dataclass(frozen=True)
class CoreConfig:
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    max_block_txs: int = 4000
    max_block_bytes: int = 700_000
    empty_block_interval: float = 1.0     # an idle network still makes a block this often
    max_clock_drift_ms: int = 500         # a proposal's time may be at most this far ahead of our clock
    role: str = "auto"                    # auto: take a seat when granted (join token or approvals); follower: never
    join_retry: float = 3.0
    max_block_membership: int = 32        # membership transactions one block may carry
    resubmit_interval: float = 1.0        # our own pending transactions are handed on again this often
    sync_batch: int = 100                 # blocks per catch-up answer
    sync_retry: float = 1.0
    catchup_delay: float = 0.25           # a validator heard at a decided height is sent the block if it is
                                          # still not past it this long after (late votes are the norm)
    max_buffered_blocks: int = 512        # certified blocks held while the ones before them are fetched ...
    max_buffered_bytes: int = 32 * 1024 * 1024   # ... within this many bytes (a quarter per sender)
    live_after: float = 3.0               # a node heard from within this is live (join eligibility, quorum view)
    expired_grace_ms: int = 600_000       # an accepted transaction that expired unordered is still put in a
                                          # block this long after, so it resolves everywhere as `expired`
    peer_tx_rate: float = 500.0           # transactions a non-validator neighbour may hand us per second ...
    peer_tx_burst: float = 2_000.0        # ... and at once (tx_budget.py: the excess is dropped unverified)
    mempool_account_txs: int = 1_000      # transactions one account may have waiting in the mempool
    account_ops_per_block: int = 2_000    # operations of one account admitted for one block ... (0: no limit)
    account_ops_per_100_blocks: int = 50_000   # ... and for the last hundred (account_rate.py)


class _Context:
    """The HeightContext Tendermint asks about the height being decided."""

    __slots__ = ("core", "chain_id", "height", "validators", "recent_signers")

    def __init__(self, core: "ChainCore") -> None:
        state = core.state
        self.core = core
        self.chain_id = state.chain_id
        self.height = state.height + 1
        self.validators = state.validators
        self.recent_signers = state.recent_signers

    def valid(self, block: Block) -> bool:
        return self.core.check.validate(block, self.core.now_ms) is None

    def get_value(self, round_: int) -> Block:
        return self.core.build_block()


class ChainCore:
    def __init__(self, genesis: Genesis, app: Application, *, public_key: bytes, sign: Callable[[bytes], bytes],
                 verify: Callable[[bytes, bytes, bytes], bool], blocks: BlockSource,
                 config: CoreConfig | None = None, rng: random.Random | None = None, now: float = 0.0,
                 admission_sign: Callable[[bytes], bytes] | None = None) -> None:
        self.genesis = genesis
        self._admission_sign = admission_sign      # the join token's key: admits this node to standby
        self.chain_id = genesis.chain_id
        self.public_key = public_key
        self.node_id = node_id_for(public_key)
        self.sign = sign
        self.verify = verify
        self.blocks = blocks
        self.config = config or CoreConfig()
        self.rng = rng or random.Random(0)
        self.state = ChainState(genesis, app)
        self.mempool = Mempool(account_max_txs=self.config.mempool_account_txs)
        self.tx_budget = TxBudget(self.config.peer_tx_rate, self.config.peer_tx_burst)
        self.account_rate = AccountRate(((1, self.config.account_ops_per_block),
                                         (100, self.config.account_ops_per_100_blocks)))
        self.consensus = Tendermint(key=public_key, sign=sign, verify=verify, config=self.config.consensus)
        self._effects: list[ChainEffect] = []
        self.last_commit: Commit | None = None
        self.last_commit_at = now
        self.started_at = now
        self.halted: str | None = None
        self.check = BlockCheck(self)
        self.sync = BlockSync(self)
        self._validator_seen: dict[bytes, float] = {}                 # validator key -> last consensus message
        self._own: OrderedDict[str, list] = OrderedDict()             # our pending txs: id -> [tx, next retry]
        self._evidence: list[tuple[Vote, Vote]] = []
        self._next_join = now
        self._wake_at: float | None = None
        self._restore: list | None = None
        self._relayed: OrderedDict[tuple, None] = OrderedDict()      # votes handed on (they differed from ours)
        self._recovery: PendingRecovery | None = None               # a recovery block for the next height
        self._recovery_intent: tuple[int, tuple[bytes, ...]] | None = None   # our operator's (height, keep)
        self._recovery_lock: tuple[Vote, Block] | None = None       # the highest lock a kept validator sent us
        self._recovery_signed_at = 0
        self._recovery_signed_by_round: dict[int, bytes] = {}
        self.counters = {"blocks": 0, "txs": 0, "decisions_received": 0, "invalid_blocks": 0, "invalid_messages": 0,
                         "synced_blocks": 0, "forwarded": 0, "resubmitted": 0, "expired_own": 0}

    # ------------------------------------------------------------------ lifecycle
    def start(self, now: float, wal: list | None = None) -> None:
        """Begin at the state's next height (after `load_block` replayed stored blocks)."""
        self.set_now(now)
        self.last_commit_at = now
        consents = [r for r in wal or [] if type(r) is list and r and r[0] == "recovery"]
        self._restore = [r for r in wal or [] if not (type(r) is list and r and r[0] == "recovery")] or None
        self._restore_recovery(consents)
        self.start_height(now)

    def resume_signing(self, sign_from: int, now: float, wal: list | None = None) -> None:
        """Sign again from height `sign_from` (once damaged history is recovered). If the height in progress is
        one of those, its consensus starts over from what `wal` says we signed there: its rounds ran without
        our votes while we could not sign, and their rules do not fire twice."""
        self.consensus.sign_from = sign_from
        self._freeze()
        if self.is_validator and not self.halted and self.state.height + 1 >= sign_from:
            self._restore = wal or None
            self.start_height(now)
            self.drain(now)

    def restore_outbox(self, txs: list[SignedTx], now: float) -> None:
        """Our own transactions accepted before a restart and not yet seen in a block: hand them on again."""
        for tx in txs:
            self._own.setdefault(tx.id, [tx, now])

    def install_snapshot(self, data: bytes, commit_at: Commit, next_block: Block, next_commit: Commit,
                         proofs: list[tuple[Block, Commit]], app_factory: Callable[[bytes], Application],
                         now: float) -> str | None:
        """Start over from a peer's snapshot at height S: every part is checked against validator sets proven
        from our genesis (epochs.py) before anything of ours changes. Returns why it was refused, or None."""
        from exchange.chain.epochs import BadProof, replay_epochs, set_at

        self.set_now(now)
        try:
            sets = replay_epochs(self.genesis, proofs, self.verify)
            candidate = ChainState(self.genesis, self.state.app)
            candidate.restore(data, app_factory)
        except (BadProof, ValueError, Malformed, InvalidTx) as exc:
            return f"bad snapshot or proof: {exc}"
        height = candidate.height
        if height <= self.state.height:
            return "not ahead of us"
        if candidate.validators.hash != set_at(sets, height + 1).hash \
                or candidate.prev_validators.hash != set_at(sets, height).hash:
            return "its validator sets are not the proven ones"
        if commit_at.height != height or commit_at.block_id != candidate.last_block_id \
                or not commit_at.verify(self.chain_id, candidate.prev_validators, self.verify):
            return "no quorum certificate for its last block"
        header = next_block.header
        if header.height != height + 1 or header.prev_id != candidate.last_block_id \
                or header.validators_hash != candidate.validators.hash or header.app_hash != candidate.hash \
                or next_commit.height != height + 1 or next_commit.block_id != next_block.id \
                or not next_commit.verify(self.chain_id, candidate.validators, self.verify):
            return "the certified block after it does not vouch for its state"
        self.state = candidate
        self.last_commit = commit_at
        self.sync.prune_buffered()
        self.counters["snapshots_installed"] = self.counters.get("snapshots_installed", 0) + 1
        log.warning("installed a certified snapshot at height %d (%d bytes)", height, len(data))
        self.apply(next_block, next_commit, announce=False, refused=self.check.refused_txs(self.check.decode(next_block)))
        self.start_height(now)
        return None

    def load_block(self, block: Block, commit: Commit) -> None:
        """Replay a block from our own store at start-up, refusing what we refused when we first applied it."""
        self.apply(block, commit, announce=False, refused=self.check.refused_txs(self.check.decode(block)))

    def peer_height(self, node_id: str, height: int, now: float) -> None:
        """A neighbour's chain height, from its heartbeat (`blocksync.py`)."""
        self.sync.peer_height(node_id, height, now)

    def decode(self, block: Block) -> list:
        return self.check.decode(block)

    def validate(self, block: Block, now_ms: int | None = None) -> str | None:
        """Why `block` cannot be the next block, or None (`block_check.py`)."""
        return self.check.validate(block, now_ms)

    def judge_certified(self, block: Block, commit: Commit) -> bool | None:
        """Before a certified block is forwarded (`block_check.py`)."""
        return self.check.judge_certified(block, commit)

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def is_validator(self) -> bool:
        return self.public_key in self.state.validators

    @property
    def role(self) -> str:
        return "validator" if self.is_validator else "follower"

    # ------------------------------------------------------------------ validation
    # ------------------------------------------------------------------ proposing
    def build_block(self) -> Block:
        state = self.state
        now_ms = self.now_ms
        time_ms = max(now_ms, state.time_ms + 1)
        config = self.config
        ttl = state.genesis.exchange.get("order_ttl_ms", 120_000)
        self.mempool.expire(time_ms - config.expired_grace_ms)
        reaped = self.mempool.reap(config.max_block_txs - config.max_block_membership, config.max_block_bytes)
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
        state = self.state
        items = [encode_item(tx) for tx in txs]
        header = Header(self.chain_id, state.height + 1, time_ms, state.last_block_id, self.public_key, state.hash,
                        state.validators.hash, Block.txs_hash(items), self.last_commit if state.height else None)
        block = Block(header, items)
        self.check.remember_decoded(block, txs)
        return block

    def _membership_txs(self, time_ms: int) -> list[MembershipTx]:
        """What this proposer puts in its block: the admissions and approvals it holds, then at most one
        change of the set: evidence first, then approved removals, leaves, jailing the absent, and
        promoting live standbys to a size the seat rule allows."""
        state, height = self.state, self.state.height + 1
        if state.genesis.pinned:
            return []
        seats, validators = state.seats.copy(), state.validators
        chosen: list[MembershipTx] = []
        limit = self.config.max_block_membership - 1
        for tx in self.mempool.membership():
            if len(chosen) >= limit:
                break
            if tx.changes_set:
                continue
            why = state.membership_problem(tx, height, time_ms, seats, validators)
            if why is None:
                seats.apply(tx, validators, height)
                chosen.append(tx)
            elif why in ("expired", "already_validator", "already_standby", "already_approved", "banned",
                         "pinned", "not_validator", "approver_not_validator"):
                self.mempool.drop_membership(tx.id)
        change = self._set_change(seats, height, time_ms)
        if change is not None and state.membership_problem(change, height, time_ms, seats, validators) is None:
            chosen.append(change)
        return chosen

    def _set_change(self, seats: Seats, height: int, time_ms: int) -> MembershipTx | None:
        state, validators = self.state, self.state.validators
        live = [key for key in seats.standby_order() if self.sync.live_and_caught_up(key)]
        successor = live[0] if live else None
        for a, b in self._evidence:
            if a.validator in validators and (len(validators) > 1 or successor is not None):
                return Remove(a.validator, "equivocation", (a, b), successor)
        for key in sorted(seats.removals):
            if key in validators and (len(validators) > 1 or successor is not None):
                return Remove(key, "approved", None, successor)
        for tx in self.mempool.membership():
            if isinstance(tx, Leave) and tx.key in validators:
                return tx
        for key in validators.keys:
            if key != self.public_key and (len(validators) > 1 or successor is not None) \
                    and state.is_absent(key, height, time_ms):
                return Remove(key, "absent", None, successor)
        for count in range(len(live), 0, -1):
            if state.genesis.size_allowed(len(validators) + count):
                return Promote(tuple(live[:count]))
        return None

    # ------------------------------------------------------------------ network input
    def on_message(self, kind: str, body: Any, sender: str | None, now: float) -> None:
        """One chain message from neighbour `sender` (None: from ourselves or a trusted local source)."""
        self.set_now(now)
        if self.halted:
            return
        try:
            if kind == "vote":
                self._on_vote(Vote.from_wire(body), sender, now)
            elif kind == "proposal":
                self._on_proposal(Proposal.from_wire(body), sender, now)
            elif kind == "decision":
                if type(body) is not list or len(body) != 2:
                    raise Malformed("bad_decision")
                self.sync.on_certified(Block.from_wire(body[0]), Commit.from_wire(body[1]), sender, now)
            elif kind == "tx":
                if not (type(body) is list and len(body) == 6 and type(body[5]) is bytes
                        and body[5] in self.mempool.by_sig) \
                        and self.within_tx_budget(sender, now):   # already held: no need to parse it again
                    self._on_gossiped_tx(SignedTx.from_wire(body), sender, now)
            elif kind == "membership":
                self._on_membership(MembershipTx.from_wire(body), sender)
            elif kind == "sync_request":
                self.sync.on_sync_request(body, sender)
            elif kind == "sync_response":
                self.sync.on_sync_response(body, sender, now)
            elif kind == "recovery":
                self._on_recovery(body, sender, now)
        except (Malformed, InvalidTx) as exc:
            self.counters["invalid_messages"] += 1
            self.penalize(sender, PENALTY_MALFORMED, f"malformed_{kind}:{getattr(exc, 'code', exc)}")
        self.drain(now)

    def _on_vote(self, vote: Vote, sender: str | None, now: float) -> None:
        if vote.height <= self.state.height:
            self.sync.help_behind(vote.validator, vote.height, sender)
            return
        self.sync.moved_on(vote.validator, vote.height)
        if vote.height > self.state.height + 2:
            self.sync.note_ahead(sender, vote.height - 1, now)
            return
        if not self.is_validator:
            return
        why = self.consensus.on_vote(vote, now)
        if why is None and vote.height == self.state.height + 1:
            self.heard_validator(sender, now)
            self._relay_if_disagrees(vote)
        elif why == "bad_signature":
            self.penalize(sender, PENALTY_INVALID, "bad_vote_signature")

    def _on_proposal(self, proposal: Proposal, sender: str | None, now: float) -> None:
        if proposal.height <= self.state.height:
            self.sync.help_behind(proposal.proposer, proposal.height, sender)
            return
        self.sync.moved_on(proposal.proposer, proposal.height)
        if proposal.height > self.state.height + 2:
            self.sync.note_ahead(sender, proposal.height - 1, now)
            return
        if not self.is_validator:
            return
        why = self.consensus.on_proposal(proposal, now)
        if why is None and proposal.height == self.state.height + 1:
            self.heard_validator(sender, now)
        elif why == "bad_signature":
            self.penalize(sender, PENALTY_INVALID, "bad_proposal_signature")

    def _relay_if_disagrees(self, vote: Vote) -> None:
        """A vote that differs from ours (another block, or nil) goes on to every validator. An equivocator
        that tells each half of the set something else is then seen signing both by everyone (evidence, and
        its removal); votes that agree with ours, the normal case, are not relayed."""
        votes = self.consensus.votes.get((vote.round, vote.kind))
        mine = None if votes is None else votes.first.get(self.public_key)
        if mine is None or mine.block_id == vote.block_id or vote.validator == self.public_key:
            return
        tag = (vote.validator, vote.height, vote.round, vote.kind, vote.block_id)
        if tag in self._relayed:
            return
        self._relayed[tag] = None
        if len(self._relayed) > 4096:
            self._relayed.popitem(last=False)
        self.counters["votes_relayed"] = self.counters.get("votes_relayed", 0) + 1
        self.emit(SendValidators({"type": "vote", "body": vote.wire()}))

    def _relay_held_disagreeing(self, mine: Vote) -> None:
        """We just voted: the votes we already hold that differ from ours go on (see `_relay_if_disagrees`)."""
        votes = self.consensus.votes.get((mine.round, mine.kind))
        if votes is None:
            return
        for held in list(votes.by_validator.values()):
            for vote in held.values():
                self._relay_if_disagrees(vote)

    def heard_validator(self, sender: str | None, now: float) -> None:
        """The validator that handed us a message of the current height is live. Not the message's signer:
        validators re-send each other's votes (proofs of lock), so a vote signed by a validator that is cut
        off, or down, keeps arriving from those still here."""
        validators = self.state.validators
        if sender is not None and sender in validators.node_ids:
            self._validator_seen[validators.keys[validators.node_ids.index(sender)]] = now

    # ------------------------------------------------------------------ the way out of a permanent halt
    def recover(self, keep: tuple[bytes, ...], now: float) -> dict[str, Any]:
        """Our operator's consent that the validators `keep` (us among them) take the chain on from our last
        certified block, as the whole new set (`recovery.py`). Raises ValueError (why) when it cannot be given:
        we hold no seat, the chain is not halted, or the set does not satisfy the recovery rule. The designated
        member builds the recovery block (carrying the highest lock it learns of); the others sign it once it
        arrives (at once if it already did); a member that holds a lock hands it to the builder."""
        self.set_now(now)
        state = self.state
        height = state.height + 1
        if self.halted:
            raise ValueError(f"this node halted: {self.halted}")
        if not self.is_validator:
            raise ValueError("this node holds no validator seat: only a validator's operator can consent")
        if state.genesis.pinned:
            raise ValueError("the validator set is pinned (VALIDATORS): change it in every node's settings")
        if state.height == 0:
            raise ValueError("the chain has no certified block yet")
        if self.public_key not in keep:
            raise ValueError("the new set must include this validator (it consents for itself only)")
        tx = Recover(state.height, state.last_block_id, keep)
        why = state.membership_problem(tx, height, max(self.now_ms, state.time_ms + 1))
        if why is not None:
            raise ValueError(_RECOVERY_REFUSALS.get(why, why).format(
                n=len(state.validators), need=state.validators.faults + 1))
        if self.quorum_present(now):
            raise ValueError("the chain is not halted: a quorum of its validators is heard; a recovery is only for "
                             "validators gone for good")
        signed = self._recovery
        if self._recovery_signed and signed is not None and signed.consented and signed.tx.keys != tx.keys:
            raise ValueError("this validator already consented to a recovery keeping " +
                             ", ".join(node_id_for(k) for k in signed.tx.keys) + " at this height")
        self._recovery_intent = (state.height, tx.keys)
        mine = self.consensus.own_lock(height)
        if mine is not None:
            self._note_lock(*mine)
            self.emit(SendValidators({"type": "recovery", "body": ["lock", mine[0].wire(),
                                                                                  mine[1].wire()]}))
        self._build_recovery()
        pending = self._recovery
        if pending is not None and pending.tx.keys == tx.keys:
            self._consent(now)
        self.drain(now)
        return self.recovery_status() or {"height": height, "keep": [node_id_for(k) for k in tx.keys],
                                          "state": "recovered" if self.state.height >= height else "dropped",
                                          "signed": [], "missing": []}

    def _note_lock(self, vote: Vote, block: Block) -> None:
        best = self._recovery_lock
        if best is None or vote.round > best[0].round:
            self._recovery_lock = (vote, block)

    def _build_recovery(self) -> None:
        """As the designated member of the set our operator named: build the recovery block carrying the
        highest lock we know of, unless the one we hold already carries it."""
        state, intent = self.state, self._recovery_intent
        if intent is None or intent[0] != state.height:
            return
        probe = Recover(state.height, state.last_block_id, intent[1])
        after = probe.next_set(state.validators)
        assert after is not None
        if after.proposer(state.height + 1, RECOVERY_ROUND) != self.public_key:
            return
        lock = self._recovery_lock
        if lock is not None and lock[0].validator not in after:
            lock = None
        pending = self._recovery
        carried = -1 if lock is None else lock[0].round
        if pending is not None and pending.tx.keys == probe.keys and pending.tx.carried_round >= carried:
            return
        tx = Recover(state.height, state.last_block_id, intent[1], None if lock is None else (lock[0], lock[1].header))
        items = [encode_item(tx), *(lock[1].txs if lock is not None else [])]
        time_ms = lock[1].header.time_ms if lock is not None else max(self.now_ms, state.time_ms + 1)
        header = Header(self.chain_id, state.height + 1, time_ms, state.last_block_id, self.public_key, state.hash,
                        after.hash, Block.txs_hash(items), self.last_commit)
        block = Block(header, items)
        if self.check.recovery_problem(block, tx) is None:
            self._recovery = PendingRecovery(block, tx, after)

    def _consent(self, now: float) -> None:
        """Sign the pending recovery block if our own lock allows it (else hand our lock to its builder): durable
        in the WAL before it leaves; from then on we sign nothing more at this height with the old set."""
        pending = self._recovery
        assert pending is not None
        block, carried = pending.block, pending.tx.carried_round
        if pending.validators.index[self.public_key] not in pending.sigs:
            mine = self.consensus.own_lock(block.height)
            carried_id = None if pending.tx.lock is None else pending.tx.lock[1].id
            if mine is not None and (carried < mine[0].round or (carried == mine[0].round
                                                                 and carried_id != mine[1].id)):
                log.warning("the recovery block offered for height %d carries a lock of round %d, ours is of round "
                            "%d: handing ours to its builder", block.height, carried, mine[0].round)
                self.emit(SendTo(node_id_for(block.header.proposer),
                                     {"type": "recovery", "body": ["lock", mine[0].wire(), mine[1].wire()]}))
                return
            signed = self._recovery_signed.get(carried)
            if signed is not None and signed != block.id:
                return              # one recovery block per carried round, never two
            vote = Vote.create(self.chain_id, PRECOMMIT, block.height, RECOVERY_ROUND, block.id, self.public_key,
                               self.sign)
            pending.sigs[pending.validators.index[self.public_key]] = vote.sig
            pending.consented = True
            self._recovery_signed[carried] = block.id
            self.emit(WalRecord(["recovery", block.height, block.wire(), vote.sig]))
            self._freeze()
            log.warning("consented to recover height %d (carrying a lock of round %d): %d validators kept (%s)",
                        block.height, carried, len(pending.validators),
                        ", ".join(n[:12] for n in pending.validators.node_ids))
        self._recovery_progress(now, resend=True)

    def _freeze(self) -> None:
        """Once we consented to a recovery at H + 1, never sign H + 1 with the old set (its consensus would
        otherwise go on signing rounds, and a new lock there could outrank the one the recovery carries)."""
        if self._recovery_signed_at == self.state.height + 1 and self._recovery_signed:
            self.consensus.sign_from = max(self.consensus.sign_from, self.state.height + 2)

    @property
    def _recovery_signed(self) -> dict[int, bytes]:
        """The recovery blocks we signed at the next height, by the lock round they carry."""
        height = self.state.height + 1
        if self._recovery_signed_at != height:
            self._recovery_signed_at, self._recovery_signed_by_round = height, {}
        return self._recovery_signed_by_round

    def _restore_recovery(self, records: list) -> None:
        """After a restart: our WAL says which recovery blocks we signed at the next height; hold to them."""
        best: PendingRecovery | None = None
        for record in records:
            if len(record) != 4 or record[1] != self.state.height + 1 or type(record[3]) is not bytes:
                continue
            try:
                block = Block.from_wire(record[2])
                tx = recovery_of(self.check.decode(block))
            except (Malformed, InvalidTx):
                continue
            if tx is None or self.check.recovery_problem(block, tx) is not None:
                continue
            after = tx.next_set(self.state.validators)
            assert after is not None and self.public_key in after
            self._recovery_signed[tx.carried_round] = block.id
            if best is None or tx.carried_round > best.tx.carried_round:
                best = PendingRecovery(block, tx, after)
                best.sigs[after.index[self.public_key]] = record[3]
                best.consented = True
                self._recovery_intent = (self.state.height, tx.keys)
        if best is not None:
            self._recovery = best
            log.warning("resuming our consent to recover height %d", best.block.height)

    def _on_recovery(self, body: Any, sender: str | None, now: float) -> None:
        """A recovery block for our next height with the precommits on it someone gathered (`offer`), or a kept
        validator's lock for its builder (`lock`)."""
        if type(body) is not list or len(body) != 3 or body[0] not in ("offer", "lock"):
            raise Malformed("bad_recovery")
        if body[0] == "lock":
            vote, block = Vote.from_wire(body[1]), Block.from_wire(body[2])
            state = self.state
            if vote.height != state.height + 1:
                return
            if vote.kind != PRECOMMIT or vote.block_id != block.id or block.height != vote.height \
                    or vote.validator not in state.validators or not vote.valid(self.chain_id, self.verify):
                self.penalize(sender, PENALTY_INVALID, "bad_recovery_lock")
                return
            if block.header.prev_id == state.last_block_id:
                self._note_lock(vote, block)
                self._build_recovery()
                if self._recovery is not None and self._recovery_intent is not None \
                        and self._recovery.tx.keys == self._recovery_intent[1]:
                    self._consent(now)
            return
        block = Block.from_wire(body[1])
        sigs = body[2]
        if type(sigs) is not list or len(sigs) > 1024 or not all(
                type(i) is list and len(i) == 2 and type(i[0]) is int and type(i[1]) is bytes for i in sigs):
            raise Malformed("bad_recovery")
        state = self.state
        if block.height != state.height + 1:
            return                  # decided here already, or ahead of us: catch-up settles it
        tx = recovery_of(self.check.decode(block))
        if tx is None:
            raise Malformed("not_a_recovery_block")
        why = self.check.recovery_problem(block, tx, self.now_ms)
        if why is not None:
            if why != "time_in_future":
                log.warning("recovery block from %s refused: %s", (sender or "us")[:12], why)
            return
        pending = self._recovery
        if pending is None or pending.block.id != block.id:
            if pending is not None and pending.consented and tx.carried_round <= pending.tx.carried_round:
                return              # we signed one carrying as high a lock already
            after = tx.next_set(state.validators)
            assert after is not None
            pending = self._recovery = PendingRecovery(block, tx, after)
        data = vote_bytes(self.chain_id, PRECOMMIT, block.height, RECOVERY_ROUND, block.id)
        added = False
        for index, sig in sigs:
            if index in pending.sigs:
                continue
            if index >= len(pending.validators) or not self.verify(pending.validators.keys[index], sig, data):
                self.penalize(sender, PENALTY_INVALID, "bad_recovery_signature")
                return
            pending.sigs[index] = sig
            added = True
        intent = self._recovery_intent
        if intent == (state.height, tx.keys) and self.public_key in pending.validators:
            self._consent(now)
        else:
            self._recovery_progress(now, resend=added)

    def _recovery_progress(self, now: float, resend: bool = False) -> None:
        """A complete recovery is applied and broadcast like a decision; an incomplete one we signed is passed
        on to the other validators (at once when it gained a signature, then every RESEND_INTERVAL)."""
        pending = self._recovery
        if pending is None:
            return
        if pending.block.height != self.state.height + 1:
            self._recovery = None
            return
        if pending.complete:
            block = pending.block
            commit = Commit(block.height, RECOVERY_ROUND, block.id, tuple(sorted(pending.sigs.items())))
            if not self.check.commit_ok(commit, block):
                log.error("the recovery block at height %d does not check out: dropped", block.height)
                self._recovery = None
                return
            log.warning("recovered: height %d is certified by all %d validators of the new set", block.height,
                        len(pending.validators))
            self.counters["recoveries"] = self.counters.get("recoveries", 0) + 1
            self.apply(block, commit, announce=True, refused=self.check.refused_txs(self.check.decode(block)))
            self.start_height(now)
            return
        if pending.consented and (resend or now >= pending.next_send):
            pending.next_send = now + RESEND_INTERVAL
            self.emit(SendValidators({"type": "recovery", "body": ["offer", *pending.wire()]}))

    def recovery_status(self) -> dict[str, Any] | None:
        """The recovery under way here (None: none)."""
        pending, intent = self._recovery, self._recovery_intent
        if pending is None:
            if intent is None or intent[0] != self.state.height:
                return None
            keep = ValidatorSet(self.state.validators.epoch + 1, intent[1])
            designated = keep.proposer(intent[0] + 1, RECOVERY_ROUND)
            return {"height": intent[0] + 1, "keep": list(keep.node_ids), "state": "waiting_for_block",
                    "builder": node_id_for(designated), "signed": [], "missing": list(keep.node_ids)}
        vs = pending.validators
        signed = [vs.node_ids[i] for i in sorted(pending.sigs)]
        return {"height": pending.block.height, "block_id": pending.block.id.hex(), "keep": list(vs.node_ids),
                "state": "consented" if pending.consented else "offered", "carried_lock_round": pending.tx.carried_round,
                "builder": node_id_for(pending.block.header.proposer), "signed": signed,
                "missing": [n for n in vs.node_ids if n not in signed]}

    def within_tx_budget(self, sender: str | None, now: float) -> bool:
        """Whether a transaction from neighbour `sender` may be looked at (tx_budget.py); our own, and a
        validator's relays, always."""
        if sender is None or not self.is_validator or sender in self.state.validators.node_ids:
            return True
        return self.tx_budget.take(sender, now)

    def _on_gossiped_tx(self, tx: SignedTx, sender: str | None, now: float) -> None:
        if not self.is_validator or tx.id in self.mempool:
            return
        why = self._admit(tx, lane=sender or OWN_LANE)
        if why == "bad_signature":
            self.penalize(sender, PENALTY_INVALID, "bad_tx_signature")
        elif why is None and self.consensus.step == WAITING:
            self.consensus.kick(now)

    def _on_membership(self, tx: MembershipTx, sender: str | None) -> None:
        """A request from the network: only signed kinds travel (a proposer makes removals and promotions
        itself); one that could not apply now is not kept."""
        if not self.is_validator or tx.id in self.mempool.membership_ids():
            return
        if not isinstance(tx, (Join, Approve, Leave)) \
                or not tx.signature_valid(self.chain_id, self.verify, self.state.genesis.admission_key):
            self.penalize(sender, PENALTY_INVALID, "bad_membership_signature")
            return
        state = self.state
        if state.membership_problem(tx, state.height + 1, state.time_ms) is None:
            self.mempool.add_membership(tx)
            if self.consensus.step == WAITING:
                self.consensus.kick(self.now)

    # ------------------------------------------------------------------ local transactions
    def submit(self, tx: SignedTx, now: float, own: bool = True, lane: str = OWN_LANE) -> str | None:
        """A transaction from our API (`own`: we keep handing it on until a block has it) or from a
        follower's RPC (`lane`: that follower, whose share of our mempool it takes). Returns why it was
        refused, or None once it is queued."""
        self.set_now(now)
        if self.halted:
            return "halted"
        why = self.precheck(tx, recording=tx.id in self._own or not own)
        if why is not None:
            return why
        if self.is_validator:
            why = self._admit(tx, checked=True, lane=lane)
            if why is not None and why != "duplicate":
                return why
            self.emit(SendValidators({"type": "tx", "body": tx.wire()}))
            if self.consensus.step == WAITING:
                self.consensus.kick(now)
        else:
            self.emit(Forward(tx))
            self.counters["forwarded"] += 1
        if own and tx.id not in self._own:       # the caller made it durable in the outbox first
            self._own[tx.id] = [tx, now + self.config.resubmit_interval]
        self.drain(now)
        return None

    def precheck(self, tx: SignedTx, *, recording: bool = False) -> str | None:
        """Why `tx` cannot be queued, or None. With `recording`, a transaction that expired unordered (within
        the grace) is still accepted: a block records it as expired."""
        if tx.chain_id != self.chain_id:
            return "wrong_chain"
        if not (self.mempool.is_verified(tx) or tx.signature_valid()):
            return "bad_signature"
        self.mempool.remember_verified(tx)
        why = self.state.app.precheck(tx, self.chain_id, self.now_ms)
        if why == "expired" and recording and tx.expires + self.config.expired_grace_ms > self.now_ms \
                and self.state.app.order(tx.order_id(0)) is None:
            return None
        return why

    def _admit(self, tx: SignedTx, checked: bool = False, lane: str = OWN_LANE) -> str | None:
        if not checked:
            why = self.precheck(tx, recording=True)
            if why is not None:
                return why
        height, ops = self.state.height + 1, len(tx.ops)
        if tx.id not in self.mempool and not self.account_rate.allows(tx.account, ops, height):
            self.account_rate.refused += 1
            return "account_rate"
        why = self.mempool.add(tx, lane)
        if why is None:
            self.account_rate.record(tx.account, ops, height)
        return why

    # ------------------------------------------------------------------ peers and time
    def tick(self, now: float) -> None:
        self.set_now(now)
        if self.halted:
            return
        if self.is_validator:
            self.consensus.tick(now)
            if self.consensus.step == WAITING and self._wake_at is not None and now >= self._wake_at:
                self.consensus.kick(now)
        self._resubmit_own(now)
        if self._recovery is not None:
            self._recovery_progress(now)
        self._maybe_join(now)
        self.sync.tick(now)
        self.drain(now)

    def busy(self) -> bool:
        """Work of its own that the tick carries forward: transactions to resubmit, a mempool to order."""
        return bool(self._own) or len(self.mempool) > 0

    def next_deadline(self) -> float | None:
        times = [t for t in (self.consensus.next_deadline() if self.is_validator else None, self._wake_at,
                             self.sync.next_deadline()) if t is not None]
        return min(times, default=None)

    def _resubmit_own(self, now: float) -> None:
        if not self._own:
            return
        time_ms = self.state.time_ms
        for tx_id, entry in list(self._own.items()):
            tx, due = entry
            if tx.expires + self.config.expired_grace_ms <= time_ms:
                del self._own[tx_id]
                self.counters["expired_own"] += 1
                self.emit(OwnDone(tx_id, "expired"))
                continue
            if now < due:
                continue
            entry[1] = now + self.config.resubmit_interval
            if self.is_validator:
                # hand it to the other validators again: our own proposals may not be the ones that win
                # (receivers that already hold it recognise it by its signature without parsing it)
                if tx.id not in self.mempool:
                    self._admit(tx)
                self.counters["resubmitted"] += 1
                self.emit(SendValidators({"type": "tx", "body": tx.wire()}))
                continue
            self.counters["resubmitted"] += 1
            self.emit(Forward(tx))

    def _maybe_join(self, now: float) -> None:
        """With the network's join token, ask for standby (then a proposer promotes us when the seat rule
        allows). Without one, a node never asks: seats are granted by the validators' approvals."""
        state = self.state
        if self._admission_sign is None or self.config.role != "auto" or state.genesis.pinned \
                or self.is_validator or self.public_key in state.seats.standby or now < self._next_join:
            return
        claimed = self.sync.best_claimed(now, self.config.live_after)
        best = -1 if claimed is None else claimed[0]
        if best < 0 or best > state.height + 1:
            return      # not caught up (or hearing from nobody): a seat would only slow the others down
        self._next_join = now + self.config.join_retry
        tx = Join.create(self.chain_id, self.public_key, state.height, self._admission_sign)
        self.emit(SendValidators({"type": "membership", "body": tx.wire()}))

    def request_leave(self, now: float) -> Leave | None:
        """Give our seat back (a graceful stop), to the longest-waiting live standby if there is one. None
        when we hold no seat or the set is pinned."""
        self.set_now(now)
        state = self.state
        if not self.is_validator or state.genesis.pinned:
            return None
        live = [key for key in state.seats.standby_order() if key != self.public_key and self.sync.live_and_caught_up(key)]
        successor = live[0] if live else None
        if len(state.validators) <= 1 and successor is None:
            return None
        tx = Leave.create(self.chain_id, self.public_key, state.height, successor, self.sign)
        self._offer_membership(tx, now)
        return tx

    def approve(self, action: str, key: bytes, now: float) -> Approve:
        """Our signed approval that `key` gets (`add`) or loses (`remove`) a seat; raises ValueError when it
        cannot apply now (with the reason)."""
        self.set_now(now)
        state = self.state
        tx = Approve.create(self.chain_id, action, key, self.public_key, state.height, self.sign)
        why = state.membership_problem(tx, state.height + 1, state.time_ms)
        if why is not None:
            raise ValueError(why)
        self._offer_membership(tx, now)
        return tx

    def _offer_membership(self, tx: MembershipTx, now: float) -> None:
        self.mempool.add_membership(tx)
        self.emit(SendValidators({"type": "membership", "body": tx.wire()}))
        if self.is_validator and self.consensus.step == WAITING:
            self.consensus.kick(now)
        self.drain(now)

    def own_pending(self) -> int:
        return len(self._own)

    # ------------------------------------------------------------------ heights
    def start_height(self, now: float) -> None:
        self._validator_seen = {k: t for k, t in self._validator_seen.items() if k in self.state.validators}
        if self._recovery is not None and self._recovery.block.height != self.state.height + 1:
            self._recovery = None
        if self._recovery_lock is not None and self._recovery_lock[0].height != self.state.height + 1:
            self._recovery_lock = None
        self._freeze()
        if not self.is_validator:
            self._wake_at = None
            return
        restore = self._take_restore(self.state.height + 1)
        idle = len(self.mempool) == 0 and not self._own
        self._wake_at = max(now, self._last_block_seconds() + self.config.empty_block_interval) if idle else None
        self.consensus.start_height(_Context(self), now, wait=idle, restore=restore)

    def _take_restore(self, height: int) -> list | None:
        """The WAL records of `height` to resume with. Records of a later height are kept until the chain gets
        there: a node recovering damaged blocks starts below the height it was signing at."""
        records = self._restore or []
        if not any((wal_record_height(r) or 0) > height for r in records):
            self._restore = None
        if not any(wal_record_height(r) == height for r in records):
            return None
        return [r for r in records if wal_record_height(r) in (None, height)]

    def _last_block_seconds(self) -> float:
        return self.state.time_ms / 1000.0

    def drain(self, now: float) -> None:
        effects = self.consensus.effects
        while effects:
            self.consensus.effects = []
            for effect in effects:
                match effect:
                    case SendConsensus(message):
                        name = "vote" if isinstance(message, Vote) else "proposal"
                        self.emit(SendValidators({"type": name, "body": message.wire()}))
                        if isinstance(message, Vote) and message.validator == self.public_key:
                            self._relay_held_disagreeing(message)
                    case WalRecord():
                        self.emit(effect)
                    case Decide(block, commit):
                        if block.height == self.state.height + 1:    # not already taken as a certified block
                            self.apply(block, commit, announce=True)
                            self.start_height(now)
                    case Evidence(first, second):
                        self._evidence.append((first, second))
                        del self._evidence[:-16]
                    case _:
                        assert_never(effect)
            effects = self.consensus.effects

    def apply(self, block: Block, commit: Commit, *, announce: bool, refused: dict[int, str] | None = None) -> None:
        txs = self.check.decode(block)
        outcome = self.state.apply_block(block, txs, refused)
        self.last_commit = commit
        self.last_commit_at = self.now
        self.counters["blocks"] += 1
        self.counters["txs"] += len(txs)
        committed = [tx.id for tx in txs if isinstance(tx, SignedTx)]
        self.mempool.remove(committed)
        for tx, _ in outcome.membership:
            self.mempool.drop_membership(tx.id)
        self._evidence = [e for e in self._evidence if e[0].validator in self.state.validators]
        holds_own = False
        for tx_id in committed:
            if self._own.pop(tx_id, None) is not None:
                self.emit(OwnDone(tx_id, "committed"))
                holds_own = True
        self.mempool.expire(block.header.time_ms)
        self.sync.prune_buffered()
        self.emit(Committed(block, commit, outcome, holds_own))
        if announce:
            self.emit(Broadcast({"type": "decision", "id": block.id.hex(),
                                               "body": [block.wire(), commit.wire()]}))

    def halt(self, reason: str) -> None:
        if self.halted is None:
            self.halted = reason
            log.critical("chain halted: %s", reason)
            self.emit(Halt(reason))

    def emit(self, effect: ChainEffect) -> None:
        """Queue an effect for the driver (taken in order by `take_effects`)."""
        self._effects.append(effect)

    def penalize(self, peer: str | None, points: float, reason: str) -> None:
        if peer is not None and peer != self.node_id:
            self.emit(Penalize(peer, points, reason))

    # ------------------------------------------------------------------ views
    now = 0.0
    now_ms = 0

    def set_now(self, now: float) -> None:
        self.now = now
        self.now_ms = int(now * 1000)

    def quorum_present(self, now: float) -> bool:
        """Do we hear from enough validators for the chain to move? (What a 202's reason is based on.)"""
        validators = self.state.validators
        if self.is_validator:
            live = sum(1 for k in validators.keys
                       if k == self.public_key or now - self._validator_seen.get(k, -1e18) <= self.config.live_after)
            return live >= validators.quorum
        return now - self.last_commit_at <= max(3.0, 3 * self.config.empty_block_interval)

    def validator_liveness(self, now: float) -> list[tuple[str, float | None, bool]]:
        """Each current validator as (node id, seconds since last heard or None if never, is it us): who a
        halt is waiting for. A validator hears the others' consensus messages; a follower hears none, so it
        counts the signers of the last commit as heard when that block became final here."""
        if self.is_validator:
            seen = self._validator_seen
        else:
            commit = self.last_commit
            signers = commit.signers(self.state.prev_validators) if commit is not None else []
            seen = dict.fromkeys(signers, self.last_commit_at)
        validators = self.state.validators
        out: list[tuple[str, float | None, bool]] = []
        for key, node_id in zip(validators.keys, validators.node_ids):
            us = key == self.public_key
            heard = now if us else seen.get(key)
            out.append((node_id, None if heard is None else max(0.0, now - heard), us))
        return out

    def take_effects(self) -> EffectBatch:
        """What the calls since the last take asked for, in order (see `effects.py` for the rules)."""
        batch, self._effects = EffectBatch(tuple(self._effects)), []
        return batch

    def status(self, now: float) -> dict[str, Any]:
        state = self.state
        return {"chain_id": self.chain_id, "role": self.role, "height": state.height,
                "epoch": state.validators.epoch, "validators": state.validators.summary(),
                "last_block_time_ms": state.time_ms, "last_block_id": state.last_block_id.hex(),
                "finality_lag_s": round(max(0.0, now - state.time_ms / 1000), 3),
                "quorum": self.quorum_present(now), "halted": self.halted, "mempool": len(self.mempool),
                "mempool_lanes": self.mempool.view(), "tx_budget": self.tx_budget.view(),
                "account_rate": {"windows": [list(w) for w in self.account_rate.windows],
                                 "refused": self.account_rate.refused, "accounts": len(self.account_rate)},
                "own_pending": len(self._own), "consensus": self.consensus.status() if self.is_validator else None,
                "recovery": self.recovery_status(), **self.counters}

