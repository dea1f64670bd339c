"""ChainCore: one node's part in the chain, with no I/O. It owns the replicated state (`ChainState`), the
consensus instance (`tendermint.py`), the mempool and the effects; the rest is done by its parts, each with
its own bookkeeping, each seeing the core only through a narrow Protocol of its own (`SyncCore`,
`CheckCore`, ...: read-only views but for the shared `counters`), and the other parts it uses passed in:

- `consensus/block_check.py`   whether a block can be the next one (proposals in full, certified blocks' txs);
- `consensus/block_builder.py` the block this validator proposes, and the one set change it carries;
- `consensus/precommit_quorum.py` a follower's commit from the precommits it is sent;
- `sync/blocksync.py`          sync requests and answers, catch-ups, blocks held until their turn; which
                               claimed heights count (`claims.py`) and what a peer may ask of us (`sync_budget.py`);
- `mempool/intake.py`          transactions in (API, followers' RPC, gossip) and our own until a block has them;
- `seats/seat_requests.py`     our own join, leave and approvals;
- `recovery/halt.py`           the way out of a permanent halt (validators gone for good).

Inputs are plain calls with the wall-clock time passed in (seconds): messages from neighbours
(`on_message`), transactions from the local API (`submit`), peers' chain heights from heartbeats
(`peer_height`), and `tick`. Outputs are the typed effects of `effects.py` (`ChainEffect`), collected
in emission order and taken as one `EffectBatch` by the caller (`take_effects`), which carries them out
under the durability order that module states: a WAL record before any later send, a block stored
before anything its finality lets out.

A validator runs Tendermint over `ChainState`; a follower only applies blocks whose commit (quorum
certificate) it has verified against the validator set its own state derived, so followers — however
many — can neither affect safety nor slow finality. Every message arriving here is checked before it is
acted on; what fails a check that needs no local knowledge (shape, signature, certificate) is blamed on
the neighbour that sent it, since honest nodes check before they forward.

Over 500 lines on purpose: what stays here is the state the parts share and the one batch of effects.
"""
from __future__ import annotations

import logging
import random
from collections import OrderedDict
from typing import Callable, assert_never

from exchange.chain.consensus.block_builder import BlockBuilder
from exchange.chain.consensus.block_check import BlockCheck
from exchange.chain.sync.blocksync import BlockSync
from exchange.chain.types.blocks import PRECOMMIT, Block, BlockSource, Commit, Malformed, Proposal, Vote
from exchange.chain.state.chainstate import Application, ChainState
from exchange.crypto import node_id_for
from exchange.chain.effects import (PENALTY_INVALID, PENALTY_MALFORMED, Broadcast, ChainEffect, Committed, Decide,
                                    EffectBatch, Evidence, Halt, HoldReading, Penalize, SendConsensus, SendFollowers,
                                    SendValidators, WalRecord)
from exchange.chain.types.genesis import Genesis
from exchange.chain.mempool.intake import TxIntake
from exchange.chain.state.membership import MembershipTx
from exchange.chain.mempool.pool import OWN_LANE, Mempool
from exchange.chain.consensus.precommit_quorum import PrecommitQuorum
from exchange.chain.recovery.halt import HaltRecovery
from exchange.chain.seats.seat_requests import SeatRequests, TokenKey
from exchange.chain.state.snapshot_maker import InlineSnapshots, SnapshotLost, SnapshotMaker, snapshot_digest
from exchange.chain.state.snapshot_proof import SnapshotCertificate, certificate_problem
from exchange.chain.config import CoreConfig
from exchange.chain.consensus.tendermint import WAITING, Tendermint, wal_record_height
from exchange.app.txs import InvalidTx, SignedTx
from exchange.wire import Wire

log = logging.getLogger("exchange.chain")

# the chain's message types, the same string from the emitting part to the wire to `on_message`
FORWARD_FANOUT = 3
FOLLOWER_BLOCK_SILENCE = 3.0    # s without a final block after which a follower hearing no quorum says so
MESSAGE_TYPES = ("chain_vote", "chain_proposal", "chain_tx", "chain_membership", "chain_decision",
                 "chain_sync_request", "chain_sync_response", "chain_recovery", "chain_block", "chain_precommit")


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
                 join_token: TokenKey | None = None,
                 snapshots: SnapshotMaker | None = None,
                 network_of: Callable[[str], str | None] | None = None) -> None:
        self.genesis = genesis
        # the network (/24, /48, or relay) a neighbour's link comes from, whose share of the transaction budget it
        # spends (tx_budget.py); None: not known, the neighbour's own
        self.network_of: Callable[[str], str | None] = network_of or (lambda node_id: None)
        self.chain_id = genesis.chain_id
        self.public_key = public_key
        self.node_id = node_id_for(public_key)
        self.sign = sign
        self.verify = verify
        self.blocks = blocks
        self.config = config or CoreConfig()
        self.rng = rng or random.Random(0)
        self.state = ChainState(genesis, app, snapshots)
        pool = self.config
        self.mempool = Mempool(pool.mempool_max_txs, pool.mempool_max_bytes, lane_share=pool.mempool_lane_share,
                               account_max_txs=pool.mempool_account_txs, lane_block_share=pool.block_lane_share)
        self.consensus = Tendermint(key=public_key, sign=sign, verify=verify, config=self.config.consensus)
        self._effects: list[ChainEffect] = []
        self.holds_waiting = False
        self.last_commit: Commit | None = None
        self.last_commit_at = now
        self.started_at = now
        self.halted: str | None = None
        self.check = BlockCheck(self)
        self.sync = BlockSync(self, self.check)
        self.precommits = PrecommitQuorum(self, self.check, self.sync)
        self.builder = BlockBuilder(self, self.check)
        self.halt_recovery = HaltRecovery(self, self.check)
        self.intake = TxIntake(self)
        self.seat_requests = SeatRequests(self, self.sync, join_token, now)
        self._handlers = self._message_handlers()
        self._validator_seen: dict[bytes, float] = {}                 # validator key -> last consensus message
        self._wake_at: float | None = None
        self._paced_from: float | None = None     # when this height started, if transactions were waiting
        self._restore: list[Wire] | None = None
        # votes handed on (they differed from ours): (validator, height, round, kind, block id)
        self._relayed: OrderedDict[tuple[bytes, int, int, int, bytes | None], None] = OrderedDict()
        self.counters = {"blocks": 0, "txs": 0, "blocks_past_round_0": 0, "decisions_received": 0, "invalid_blocks": 0,
                         "invalid_messages": 0, "synced_blocks": 0, "forwarded": 0, "resubmitted": 0, "expired_own": 0,
                         "heights_after_at_budget_wait": 0}

    # ------------------------------------------------------------------ lifecycle
    def start(self, now: float, wal: list[Wire] | None = None) -> None:
        """Begin at the state's next height (after `load_block` replayed stored blocks)."""
        self.set_now(now)
        self.last_commit_at = now
        consents = [r for r in wal or [] if type(r) is list and r and r[0] == "recovery"]
        self._restore = [r for r in wal or [] if not (type(r) is list and r and r[0] == "recovery")] or None
        self.halt_recovery.restore(consents)
        self.start_height(now)

    def resume_signing(self, sign_from: int, now: float, wal: list[Wire] | None = None) -> None:
        """Sign again from height `sign_from` (once damaged history is recovered). If the height in progress is
        one of those, its consensus starts over from what `wal` says we signed there: its rounds ran without
        our votes while we could not sign, and their rules do not fire twice."""
        self.consensus.sign_from = sign_from
        self.halt_recovery.freeze()
        if self.is_validator and not self.halted and self.state.height + 1 >= sign_from:
            self._restore = wal or None
            self.start_height(now)
            self.drain(now)

    def install_snapshot(self, data: bytes, commit_at: Commit, next_block: Block, next_commit: Commit,
                         proofs: list[tuple[Block, Commit]], app_factory: Callable[[bytes], Application],
                         now: float, certificate: SnapshotCertificate | None = None) -> str | None:
        """Start over from a peer's snapshot at height S: every part is checked against validator sets proven
        from our genesis (epochs.py) before anything of ours changes. On a lagged network the snapshot's bytes
        are certified by the state hash of S + snapshot_lag (`certificate`). Returns why it was refused, or None."""
        from exchange.chain.sync.epochs import BadProof, replay_epochs, set_at

        self.set_now(now)
        try:
            sets = replay_epochs(self.genesis, proofs, self.verify)
            # the candidate records the bytes' digest in a maker of its own: ours learns it only once every check
            # below has passed (a refused snapshot must not change what our state hash will certify)
            candidate = ChainState(self.genesis, self.state.app, InlineSnapshots())
            candidate.restore(data, app_factory)
        except (BadProof, ValueError, Malformed, InvalidTx) as exc:
            return f"bad snapshot or proof: {exc}"
        height = candidate.height
        if height <= self.state.height:
            return "not ahead of us"
        if candidate.snapshot_lag:
            why = certificate_problem(certificate, height, candidate.snapshot_lag, snapshot_digest(data),
                                      lambda at: set_at(sets, at), self.chain_id, self.verify)
            if why is not None:
                return why
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
        if candidate.snapshot_lag:
            self.state.snapshots.known(height, data)
        candidate.snapshots = self.state.snapshots
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

    def submit(self, tx: SignedTx, now: float, own: bool = True, lane: str = OWN_LANE) -> str | None:
        """A transaction from our API or a follower's RPC (`intake.py`): why it was refused, or None."""
        return self.intake.submit(tx, now, own, lane)

    def peer_height(self, node_id: str, height: int, now: float) -> None:
        """A neighbour's chain height, from its heartbeat (`blocksync.py`)."""
        self.sync.peer_height(node_id, height, now)

    def decode(self, block: Block) -> list[SignedTx | MembershipTx]:
        return self.check.decode(block)

    @property
    def height(self) -> int:
        return self.state.height

    @property
    def is_validator(self) -> bool:
        return self.public_key in self.state.validators

    @property
    def role(self) -> str:
        return "validator" if self.is_validator else "follower"

    def upcoming_proposers(self) -> tuple[str, ...]:
        """Who a follower hands its transactions to (`Forward`): the next FORWARD_FANOUT heights' proposers,
        since our view may lag the validators' by up to that many heights minus one."""
        return self.state.validators.upcoming_proposers(self.state.height, FORWARD_FANOUT)

    # ------------------------------------------------------------------ validation
    # ------------------------------------------------------------------ proposing
    # ------------------------------------------------------------------ network input
    def on_message(self, kind: str, body: object, sender: str | None, now: float, paced: bool = False) -> None:
        """One chain message (`kind`: its wire type, one of MESSAGE_TYPES) from neighbour `sender` (None: from
        ourselves or a trusted local source). `paced`: a `chain_tx` a validator relays from a neighbour at its
        budget (`TxIntake.paces`)."""
        self.set_now(now)
        if self.halted:
            return
        handler = self._on_paced_tx if paced and kind == "chain_tx" else self._handlers.get(kind)
        if handler is None:
            return
        try:
            handler(body, sender, now)
        except (Malformed, InvalidTx) as exc:
            self.counters["invalid_messages"] += 1
            self.penalize(sender, PENALTY_MALFORMED,
                          f"malformed_{kind.removeprefix('chain_')}:{getattr(exc, 'code', exc)}")
        self.drain(now)

    def _message_handlers(self) -> dict[str, Callable[[object, str | None, float], None]]:
        """Every chain message type this core handles, and where it goes: the one place they are wired."""
        return {
            "chain_vote": lambda body, sender, now: self._on_vote(Vote.from_wire(body), sender, now),
            "chain_proposal": lambda body, sender, now: self._on_proposal(Proposal.from_wire(body), sender, now),
            "chain_decision": self._on_decision,
            "chain_tx": self._on_tx,
            "chain_membership": lambda body, sender, now: self.intake.on_membership(MembershipTx.from_wire(body),
                                                                                     sender),
            "chain_sync_request": lambda body, sender, now: self.sync.on_sync_request(body, sender),
            "chain_sync_response": self.sync.on_sync_response,
            "chain_recovery": self.halt_recovery.on_message,
            "chain_block": self.precommits.on_block_wire,
            "chain_precommit": self.precommits.on_precommit_wire,
        }

    def _on_decision(self, body: object, sender: str | None, now: float) -> None:
        if type(body) is not list or len(body) != 2:
            raise Malformed("bad_decision")
        self.sync.on_certified(Block.from_wire(body[0]), Commit.from_wire(body[1]), sender, now)

    def _on_tx(self, body: object, sender: str | None, now: float, paced: bool = False) -> None:
        if not self.holds_wire(body) and self.intake.within_tx_budget(sender, now):
            self.intake.on_gossiped_tx(SignedTx.from_wire(body), sender, now, paced)

    def _on_paced_tx(self, body: object, sender: str | None, now: float) -> None:
        self._on_tx(body, sender, now, paced=True)

    def holds_wire(self, body: object) -> bool:
        """A transaction's wire form whose signature the mempool holds already: no need to parse it again, and no
        budget spent on it (a follower hands each transaction to two proposers, the first relays it to the second)."""
        return type(body) is list and len(body) == 6 and type(body[5]) is bytes and body[5] in self.mempool.by_sig

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
        self.emit(SendValidators({"type": "chain_vote", "body": vote.wire()}))

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
    # ------------------------------------------------------------------ local transactions
    # ------------------------------------------------------------------ peers and time
    def tick(self, now: float) -> None:
        self.set_now(now)
        if self.halted:
            return
        if self.is_validator:
            self.consensus.tick(now)
            wake = self._idle_wake()
            if wake is not None and now >= wake:
                if len(self.mempool):   # transactions from neighbours at their budget waited for this height
                    self._paced_from = now
                    self.counters["heights_after_at_budget_wait"] += 1
                self.consensus.kick(now)
        self.intake.resubmit_own(now)
        self.halt_recovery.tick(now)
        self.seat_requests.tick(now)
        self.sync.tick(now)
        self.drain(now)

    def busy(self) -> bool:
        """Work of its own that the tick carries forward: transactions to resubmit, a mempool to order."""
        return bool(self.intake.own) or len(self.mempool) > 0

    def next_deadline(self) -> float | None:
        times = [t for t in (self.consensus.next_deadline() if self.is_validator else None, self._idle_wake(),
                             self.sync.next_deadline()) if t is not None]
        return min(times, default=None)

    def _idle_wake(self) -> float | None:
        """When the waiting step ends by itself (the empty-block time); None once a round is under way, whether
        the tick or a message started it: a wake time that has passed is then no deadline to tick at."""
        if not self.is_validator or self.consensus.step != WAITING or self.consensus.decided:
            return None
        return self._wake_at

    def own_pending(self) -> int:
        return len(self.intake.own)

    # ------------------------------------------------------------------ heights
    def start_height(self, now: float) -> None:
        self._validator_seen = {k: t for k, t in self._validator_seen.items() if k in self.state.validators}
        self.halt_recovery.new_height()
        if not self.is_validator:
            self._wake_at = self._paced_from = None
            return
        restore = self._take_restore(self.state.height + 1)
        urgent = self._urgent_waiting(now)
        self._paced_from = now if urgent else None
        self._wake_at = None
        if not urgent:
            self._wake_at = max(now, self._last_block_seconds() + self.config.empty_block_interval)
            if len(self.mempool):       # only from neighbours at their budget
                self._wake_at = min(self._wake_at, now + self.config.at_budget_wait)
        self.consensus.start_height(_Context(self), now, wait=not urgent, restore=restore)

    def _urgent_waiting(self, now: float) -> bool:
        """Whether work waits that starts a height at once: our own pending transactions, or one in the mempool
        from a lane that does not pace (`TxIntake.paces`: our API, a validator's plain relays, a neighbour below its
        share). A height costs every node the same votes, WAL syncs and block whatever it holds, so a flooder
        whose transactions each started one made the network decide heights back to back for it; waiting
        `at_budget_wait` for someone else's height, its transactions fill fewer, at the same rate."""
        if self.intake.own:
            return True
        if self.config.at_budget_wait <= 0:
            return len(self.mempool) > 0
        paces = self.intake.paces
        return any(not paces(lane, now) for lane in self.mempool.lane_names())

    def tx_waiting(self, lane: str, now: float) -> None:
        """A transaction from `lane` was admitted: while the height waits for work, start it now, or, if `lane` is
        a neighbour at its budget, within `at_budget_wait` (what others send meanwhile still starts it at once)."""
        if not self.is_validator or self.consensus.step != WAITING or self.consensus.decided:
            return
        wait = self.config.at_budget_wait
        if wait <= 0 or not self.intake.paces(lane, now):
            self.consensus.kick(now)
        elif self._wake_at is None or self._wake_at > now + wait:
            self._wake_at = now + wait

    def _take_restore(self, height: int) -> list[Wire] | None:
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
                        name = "chain_vote" if isinstance(message, Vote) else "chain_proposal"
                        self.emit(SendValidators({"type": name, "body": message.wire()}))
                        if isinstance(message, Proposal):
                            self.emit(SendFollowers({"type": "chain_block", "body": message.wire()}))
                        elif message.kind == PRECOMMIT and message.block_id is not None \
                                and message.validator == self.public_key:
                            self.emit(SendFollowers({"type": "chain_precommit", "body": message.wire()}))
                        if isinstance(message, Vote) and message.validator == self.public_key:
                            self._relay_held_disagreeing(message)
                    case WalRecord():
                        self.emit(effect)
                    case Decide(block, commit):
                        if block.height == self.state.height + 1:    # not already taken as a certified block
                            if self._paced_from is not None and commit.round == 0:
                                self.builder.pace.observe(len(block.txs), now - self._paced_from)
                            self.apply(block, commit, announce=True)
                            self.start_height(now)
                    case Evidence(first, second):
                        self.builder.note_evidence(first, second)
                    case _:
                        assert_never(effect)
            effects = self.consensus.effects

    def apply(self, block: Block, commit: Commit, *, announce: bool, refused: dict[int, str] | None = None) -> None:
        txs = self.check.decode(block)
        try:
            outcome = self.state.apply_block(block, txs, refused)
        except SnapshotLost as exc:
            self.halt(f"cannot certify the snapshot due at height {block.header.height}: {exc}; restart this node "
                      f"to rebuild it from its stored blocks")
            return
        self.last_commit = commit
        self.last_commit_at = self.now
        self.counters["blocks"] += 1
        self.counters["txs"] += len(txs)
        if commit.round > 0:        # its round 0 made no decision: a proposal late, refused or missing
            self.counters["blocks_past_round_0"] += 1
        committed = [tx.id for tx in txs if isinstance(tx, SignedTx)]
        self.mempool.remove(committed)
        for tx, _ in outcome.membership:
            self.mempool.drop_membership(tx.id)
        self.builder.forget_outsiders()
        holds_own = self.intake.committed(committed)
        self.mempool.expire(block.header.time_ms)
        self.sync.prune_buffered()
        self.emit(Committed(block, commit, outcome, holds_own))
        if announce:
            self.emit(Broadcast({"type": "chain_decision", "id": block.id.hex(),
                                               "body": [block.wire(), commit.wire()]}))

    def halt(self, reason: str) -> None:
        if self.halted is None:
            self.halted = reason
            log.critical("chain halted: %s", reason)
            self.emit(Halt(reason))

    def emit(self, effect: ChainEffect) -> None:
        """Queue an effect for the driver (taken in order by `take_effects`)."""
        self._effects.append(effect)
        if type(effect) is HoldReading:
            self.holds_waiting = True

    def take_holds(self) -> list[HoldReading]:
        """The reading holds queued since the last take, out of turn: a driver carries them out before the
        neighbour's next message is handed over (they order nothing else), so what it sent past its budget
        waits unread instead of being read only to be dropped."""
        if not self.holds_waiting:
            return []
        self.holds_waiting = False
        holds = [effect for effect in self._effects if type(effect) is HoldReading]
        self._effects = [effect for effect in self._effects if type(effect) is not HoldReading]
        return holds

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
        """Do we hear from enough validators for the chain to move? (What a 202's reason is based on.) A validator
        counts those it heard within `live_after`, itself included. A follower hears them through their blocks,
        and through the heartbeats of those it is linked to: a block slower than FOLLOWER_BLOCK_SILENCE (a full
        one on a busy machine) is not a halt while a quorum of validators say they are at our height or past it."""
        validators = self.state.validators
        live = sum(1 for k in validators.keys if (k == self.public_key and self.is_validator)
                   or now - self._validator_seen.get(k, -1e18) <= self.config.live_after)
        if self.is_validator:
            return live >= validators.quorum
        return live >= validators.quorum \
            or now - self.last_commit_at <= max(FOLLOWER_BLOCK_SILENCE, 3 * self.config.empty_block_interval)

    def validator_liveness(self, now: float) -> list[tuple[str, float | None, bool]]:
        """Each current validator as (node id, seconds since last heard or None if never, is it us): who a
        halt is waiting for. A validator hears the others' consensus messages; a follower hears none, so it
        counts the signers of the last commit as heard when that block became final here, and the validators
        it is linked to when their heartbeats say they are at its height or past it."""
        if self.is_validator:
            seen = self._validator_seen
        else:       # the last block's signers when it became final here, or a heartbeat heard since
            commit = self.last_commit
            signers = commit.signers(self.state.prev_validators) if commit is not None else []
            seen = dict.fromkeys(signers, self.last_commit_at)
            for key, at in self._validator_seen.items():
                seen[key] = max(at, seen.get(key, at))
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

    def status(self, now: float) -> dict[str, object]:
        """The core's part of /status: a JSON object its counters are spread into (their keys grow with use)."""
        state = self.state
        return {"chain_id": self.chain_id, "role": self.role, "height": state.height,
                "epoch": state.validators.epoch, "validators": state.validators.summary(),
                "last_block_time_ms": state.time_ms, "last_block_id": state.last_block_id.hex(),
                "finality_lag_s": round(max(0.0, now - state.time_ms / 1000), 3),
                "quorum": self.quorum_present(now), "halted": self.halted, "mempool": len(self.mempool),
                "mempool_lanes": self.mempool.view(), **self.intake.view(),
                "consensus": self.consensus.status() if self.is_validator else None,
                "refused_proposals": dict(self.check.refused), "block_pace": self.builder.pace.view(),
                "recovery": self.halt_recovery.status(), "sync_budget": self.sync.budget.view(),
                "snapshots": state.snapshot_view(), "decided_from_precommits": self.precommits.decided, **self.counters}

