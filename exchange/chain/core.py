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

from exchange.chain.block_builder import BlockBuilder
from exchange.chain.block_check import BlockCheck
from exchange.chain.blocksync import BlockSync
from exchange.chain.blocks import Block, Commit, Malformed, Proposal, Vote
from exchange.chain.chainstate import Application, ChainState
from exchange.chain.core_view import BlockSource
from exchange.chain.crypto import node_id_for
from exchange.chain.effects import (PENALTY_INVALID, PENALTY_MALFORMED, Broadcast, ChainEffect, Committed, Decide,
                                    EffectBatch, Evidence, Forward, Halt, OwnDone, Penalize, SendConsensus,
                                    SendValidators, WalRecord)
from exchange.chain.genesis import Genesis
from exchange.chain.membership import Approve, Join, Leave, MembershipTx
from exchange.chain.mempool import OWN_LANE, Mempool
from exchange.chain.account_rate import AccountRate
from exchange.chain.tx_budget import TxBudget
from exchange.chain.recovery import HaltRecovery
from exchange.chain.tendermint import WAITING, ConsensusConfig, Tendermint, wal_record_height
from exchange.chain.txs import InvalidTx, SignedTx

log = logging.getLogger("exchange.chain")

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
        return self.core.builder.build_block()


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
        self.builder = BlockBuilder(self)
        self.halt_recovery = HaltRecovery(self)
        self._validator_seen: dict[bytes, float] = {}                 # validator key -> last consensus message
        self._own: OrderedDict[str, list] = OrderedDict()             # our pending txs: id -> [tx, next retry]
        self._next_join = now
        self._wake_at: float | None = None
        self._restore: list | None = None
        self._relayed: OrderedDict[tuple, None] = OrderedDict()      # votes handed on (they differed from ours)
        self.counters = {"blocks": 0, "txs": 0, "decisions_received": 0, "invalid_blocks": 0, "invalid_messages": 0,
                         "synced_blocks": 0, "forwarded": 0, "resubmitted": 0, "expired_own": 0}

    # ------------------------------------------------------------------ lifecycle
    def start(self, now: float, wal: list | None = None) -> None:
        """Begin at the state's next height (after `load_block` replayed stored blocks)."""
        self.set_now(now)
        self.last_commit_at = now
        consents = [r for r in wal or [] if type(r) is list and r and r[0] == "recovery"]
        self._restore = [r for r in wal or [] if not (type(r) is list and r and r[0] == "recovery")] or None
        self.halt_recovery.restore(consents)
        self.start_height(now)

    def resume_signing(self, sign_from: int, now: float, wal: list | None = None) -> None:
        """Sign again from height `sign_from` (once damaged history is recovered). If the height in progress is
        one of those, its consensus starts over from what `wal` says we signed there: its rounds ran without
        our votes while we could not sign, and their rules do not fire twice."""
        self.consensus.sign_from = sign_from
        self.halt_recovery.freeze()
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

    def build_block(self) -> Block:
        """The block we would propose at the next height now (`block_builder.py`)."""
        return self.builder.build_block()

    def recover(self, keep: tuple[bytes, ...], now: float) -> dict[str, Any]:
        """Our operator's consent to a recovery keeping the validators `keep` (`recovery.py`); raises
        ValueError (why) when it cannot be given."""
        return self.halt_recovery.consent(keep, now)

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
                self.halt_recovery.on_message(body, sender, now)
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
        self.halt_recovery.tick(now)
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
        self.halt_recovery.new_height()
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
                        self.builder.note_evidence(first, second)
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
        self.builder.forget_outsiders()
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
                "recovery": self.halt_recovery.status(), **self.counters}

