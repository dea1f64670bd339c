"""Tendermint consensus, one height at a time: Algorithm 1 of Buchman, Kwon & Milosevic, "The latest
gossip on BFT consensus" (arXiv:1807.04938, revised Nov 2019), as an I/O-free state machine.

Line numbers in comments refer to that algorithm. Inputs are plain calls with the current time
passed in (`on_proposal`, `on_vote`, `tick`); outputs are appended to `effects`, in order, as the
typed effects of `effects.py`:

    WalRecord(record)            for the write-ahead log; durable before any later send leaves the node
    SendConsensus(message)       our Proposal or Vote (or one we relay), to every validator
    Decide(block, commit)        the height is decided (line 49)
    Evidence(first, second)      a validator signed two different votes for one (height, round, kind)

Safety (no two correct validators decide different blocks at one height) needs fewer than a third
of the validators to be faulty; it never depends on timing. Liveness needs messages between correct
validators to arrive eventually: `rebroadcast_interval` re-sends our messages of the current height
while it is undecided (the paper assumes a gossip layer that does this).

Departures from the pseudocode, all on the side of the paper's own assumptions:
- line 58 reads `step_p = propose` (the published text has a known typo, `prevote`);
- `proposer(h, r)` is `ValidatorSet.proposer` (any deterministic function is allowed);
- messages are kept per (round, kind) only for rounds up to `round_window` ahead of ours; beyond
  that only each validator's highest round is kept, which is all the round-skip rule (line 55)
  needs, so a Byzantine validator cannot make us store unbounded rounds;
- a height may wait for transactions before round 0 starts (`start_height(..., wait=True)`), as
  CometBFT's `create_empty_blocks=false` does; any message of the height, or `kick`, starts it.

Over 500 lines on purpose: Algorithm 1 is one state machine, kept whole so it reads against the paper
line by line.
"""
from __future__ import annotations

import logging
from typing import Callable, Protocol

from exchange.chain.config import ConsensusConfig
from exchange.chain.types.blocks import PRECOMMIT, PREVOTE, Block, Commit, Proposal, Vote
from exchange.chain.effects import ConsensusEffect, Decide, Evidence, SendConsensus, WalRecord
from exchange.chain.types.validators import ValidatorSet
from exchange.wire import Wire

log = logging.getLogger("exchange.consensus")

WAITING, PROPOSE, PREVOTE_STEP, PRECOMMIT_STEP = 0, 1, 2, 3
STEP_NAMES = {WAITING: "waiting", PROPOSE: "propose", PREVOTE_STEP: "prevote", PRECOMMIT_STEP: "precommit"}
_T_PROPOSE, _T_PREVOTE, _T_PRECOMMIT, _T_REBROADCAST = "propose", "prevote", "precommit", "rebroadcast"


class HeightContext(Protocol):
    """What the chain tells consensus about the height being decided."""

    chain_id: str
    height: int
    validators: ValidatorSet
    recent_signers: tuple[bytes, ...]

    def valid(self, block: Block) -> bool: ...
    def get_value(self, round_: int) -> Block: ...


class _Votes:
    """One (round, kind)'s votes, tallied per block id (None = nil) over distinct validators.

    As in the paper, a message counts wherever it was sent: a Byzantine validator that signed two
    different votes is counted in both tallies (safety holds for up to f such validators). Its extra
    votes are kept only for block ids that someone else also voted for, or the round's proposal, so
    a validator signing junk cannot make us store more than a few votes per round."""

    __slots__ = ("by_validator", "tally", "first")

    def __init__(self) -> None:
        self.by_validator: dict[bytes, dict[bytes | None, Vote]] = {}
        self.tally: dict[bytes | None, int] = {}
        self.first: dict[bytes, Vote] = {}

    def add(self, vote: Vote, proposal_id: bytes | None = None) -> Vote | None:
        """Record a vote; returns an earlier conflicting vote of the same validator, if any."""
        mine = self.by_validator.get(vote.validator)
        if mine is None:
            self.by_validator[vote.validator] = {vote.block_id: vote}
            self.first[vote.validator] = vote
            self.tally[vote.block_id] = self.tally.get(vote.block_id, 0) + 1
            return None
        if vote.block_id in mine:
            return None
        supported = self.tally.get(vote.block_id, 0) > 0 or vote.block_id is None or vote.block_id == proposal_id
        if len(mine) < 2 or supported:
            mine[vote.block_id] = vote
            self.tally[vote.block_id] = self.tally.get(vote.block_id, 0) + 1
        return self.first[vote.validator]

    def count(self, block_id: bytes | None) -> int:
        return self.tally.get(block_id, 0)

    @property
    def total(self) -> int:
        return len(self.by_validator)

    def quorum_value(self, quorum: int) -> tuple[bool, bytes | None]:
        for block_id, n in self.tally.items():
            if n >= quorum:
                return True, block_id
        return False, None

    def for_block(self, block_id: bytes | None) -> list[Vote]:
        return [votes[block_id] for votes in self.by_validator.values() if block_id in votes]


class Tendermint:
    """The consensus state of one validator (or a non-voting observer when `key` is None)."""

    def __init__(self, *, key: bytes | None, sign: Callable[[bytes], bytes] | None,
                 verify: Callable[[bytes, bytes, bytes], bool], config: ConsensusConfig | None = None) -> None:
        self.key = key
        self._sign = sign
        self._verify = verify
        self.config = config or ConsensusConfig()
        self.effects: list[ConsensusEffect] = []
        self.ctx: HeightContext | None = None
        self.height = 0
        self.round = 0
        self.step = WAITING
        self.locked: Block | None = None
        self.locked_round = -1
        self.valid_value: Block | None = None
        self.valid_round = -1
        self.decided = False
        self.proposals: dict[int, Proposal] = {}
        self.votes: dict[tuple[int, int], _Votes] = {}
        self.far_rounds: dict[bytes, int] = {}         # validator -> highest round seen beyond the window
        self._fired: set[tuple[str, int]] = set()                 # "for the first time" rules already run
        self._own: list[Proposal | Vote] = []           # our proposal/votes of this height (re-sent)
        self._signed: dict[tuple[int, int, int], bytes | None] = {}
        self._timers: list[tuple[float, str, int, int]] = []
        self._walled: set[bytes] = set()               # block ids already written to the WAL this height
        self._equivocators: set[tuple[bytes, int, int]] = set()
        self._future: list[Proposal | Vote] = []        # messages for height + 1
        self.counters = {"proposals": 0, "votes": 0, "bad_signatures": 0, "equivocations": 0, "rounds": 0,
                         "timeouts": 0, "ignored": 0, "decisions": 0}
        self.round_started_at = 0.0
        self.sign_from = 1      # heights below this are never signed (their signing record may be lost)

    # ------------------------------------------------------------------ heights
    @property
    def is_validator(self) -> bool:
        return (self.key is not None and self.ctx is not None and self.key in self.ctx.validators
                and self.height >= self.sign_from)

    def start_height(self, ctx: HeightContext, now: float, *, wait: bool = False,
                     restore: list[Wire] | None = None) -> None:
        """Begin deciding `ctx.height` (line 10/53). With `wait`, round 0 starts only at `kick` or when a
        message of this height arrives. `restore` is this height's WAL records after a restart."""
        self.ctx = ctx
        self.height = ctx.height
        self.round, self.step = 0, WAITING
        self.locked, self.locked_round, self.valid_value, self.valid_round = None, -1, None, -1
        self.decided = False
        self.proposals, self.votes, self.far_rounds = {}, {}, {}
        self._fired, self._own, self._signed, self._timers, self._walled = set(), [], {}, [], set()
        self._equivocators = set()
        if restore:
            self._restore(restore, now)
        elif not wait:
            self._start_round(0, now)
        future, self._future = self._future, []
        for message in future:
            if message.height == self.height:
                self._receive(message, now)
            elif message.height == self.height + 1:
                self._future.append(message)
        self._run(now)

    def kick(self, now: float) -> None:
        """Transactions are waiting: leave the waiting step and start round 0."""
        if self.ctx is not None and self.step == WAITING and not self.decided:
            self._start_round(0, now)
            self._run(now)

    # ------------------------------------------------------------------ inputs
    def on_proposal(self, proposal: Proposal, now: float) -> str | None:
        """Returns why the proposal was refused ("bad_signature", "not_proposer", ...) or None."""
        return self._accept(proposal, now)

    def on_vote(self, vote: Vote, now: float) -> str | None:
        return self._accept(vote, now)

    def _accept(self, message: Proposal | Vote, now: float) -> str | None:
        ctx = self.ctx
        if ctx is None or message.height < self.height or message.height > self.height + 1:
            self.counters["ignored"] += 1
            return "other_height"
        if message.height == self.height + 1:
            if len(self._future) < 8 * (len(ctx.validators) + 1) * (self.config.round_window + 1):
                self._future.append(message)
            return None
        why = self._receive(message, now)
        if why is None:
            if self.step == WAITING and not self.decided:
                self._start_round(0, now)
            self._run(now)
        return why

    def _receive(self, message: Proposal | Vote, now: float) -> str | None:
        ctx = self.ctx
        assert ctx is not None
        validators = ctx.validators
        if isinstance(message, Vote):
            if message.validator not in validators:
                return "not_a_validator"
            if not message.valid(ctx.chain_id, self._verify):
                self.counters["bad_signatures"] += 1
                return "bad_signature"
            self.counters["votes"] += 1
            if message.round > self.round + self.config.round_window:
                if message.round > self.far_rounds.get(message.validator, -1):
                    self.far_rounds[message.validator] = message.round
                return None
            votes = self.votes.setdefault((message.round, message.kind), _Votes())
            proposal = self.proposals.get(message.round)
            conflict = votes.add(message, None if proposal is None else proposal.block.id)
            tag = (message.validator, message.round, message.kind)
            if conflict is not None and tag not in self._equivocators:
                self._equivocators.add(tag)
                self.counters["equivocations"] += 1
                log.error("validator %s equivocated at height %d round %d: %r and %r", message.validator.hex()[:12],
                          message.height, message.round, conflict, message)
                self.effects.append(Evidence(conflict, message))
            return None
        if message.proposer != validators.proposer(message.height, message.round):
            return "not_proposer"
        if not message.valid_signature(ctx.chain_id, self._verify):
            self.counters["bad_signatures"] += 1
            return "bad_signature"
        self.counters["proposals"] += 1
        if message.round > self.round + self.config.round_window:
            if message.round > self.far_rounds.get(message.proposer, -1):
                self.far_rounds[message.proposer] = message.round
            return None
        known = self.proposals.get(message.round)
        if known is None:
            self.proposals[message.round] = message
        elif known.block.id != message.block.id:
            self.counters["equivocations"] += 1
            log.error("proposer %s sent two proposals for height %d round %d", message.proposer.hex()[:12],
                      message.height, message.round)
        return None

    # ------------------------------------------------------------------ time
    def next_deadline(self) -> float | None:
        return min((t[0] for t in self._timers), default=None)

    def tick(self, now: float) -> None:
        if not self._timers:
            return
        due = [t for t in self._timers if t[0] <= now]
        if not due:
            return
        self._timers = [t for t in self._timers if t[0] > now]
        for _, kind, height, round_ in sorted(due):
            if height != self.height:
                continue
            if kind == _T_REBROADCAST:
                self._rebroadcast(now)
                continue
            self.counters["timeouts"] += 1
            if kind == _T_PROPOSE and round_ == self.round and self.step == PROPOSE:          # line 57
                self._broadcast_vote(PREVOTE, None, now)
                self.step = PREVOTE_STEP
            elif kind == _T_PREVOTE and round_ == self.round and self.step == PREVOTE_STEP:   # line 61
                self._broadcast_vote(PRECOMMIT, None, now)
                self.step = PRECOMMIT_STEP
            elif kind == _T_PRECOMMIT and round_ == self.round and not self.decided:          # line 65
                self._start_round(self.round + 1, now)
        self._run(now)

    def _schedule(self, kind: str, delay: float, now: float) -> None:
        self._timers.append((now + delay, kind, self.height, self.round))

    def _timeout(self, base: float, delta: float) -> float:
        return base + delta * self.round

    # ------------------------------------------------------------------ the algorithm
    def _start_round(self, round_: int, now: float) -> None:                                   # line 11
        ctx = self.ctx
        assert ctx is not None
        self.round = round_
        self.step = PROPOSE
        self.round_started_at = now
        self.counters["rounds"] += 1
        self.far_rounds = {v: r for v, r in self.far_rounds.items() if r > round_ + self.config.round_window}
        if not any(t[1] == _T_REBROADCAST for t in self._timers):
            self._schedule(_T_REBROADCAST, self.config.rebroadcast_interval, now)
        if self.is_validator and ctx.validators.proposer(self.height, round_) == self.key:
            block = self.valid_value if self.valid_value is not None else ctx.get_value(round_)
            self._propose(block, now)
        else:
            self._schedule(_T_PROPOSE, self._timeout(self.config.timeout_propose, self.config.timeout_propose_delta), now)

    def _propose(self, block: Block, now: float) -> None:
        ctx = self.ctx
        assert ctx is not None and self._sign is not None and self.key is not None
        key = (self.height, self.round, 0)
        if key in self._signed:
            return
        self._signed[key] = block.id
        proposal = Proposal.create(ctx.chain_id, self.height, self.round, self.valid_round, block, self.key, self._sign)
        self.proposals.setdefault(self.round, proposal)
        self._wal(proposal)
        self._own.append(proposal)
        self.effects.append(SendConsensus(proposal))

    def _broadcast_vote(self, kind: int, block_id: bytes | None, now: float) -> None:
        if not self.is_validator:
            return
        ctx = self.ctx
        assert ctx is not None and self._sign is not None and self.key is not None
        key = (self.height, self.round, kind)
        if key in self._signed:
            if self._signed[key] != block_id:
                log.error("refusing to sign a second %s at height %d round %d", kind, self.height, self.round)
            return
        self._signed[key] = block_id
        vote = Vote.create(ctx.chain_id, kind, self.height, self.round, block_id, self.key, self._sign)
        self.votes.setdefault((self.round, kind), _Votes()).add(vote)
        self._wal(vote)
        self._own.append(vote)
        self.effects.append(SendConsensus(vote))

    def _run(self, now: float) -> None:
        """Evaluate the upon-rules until none fires (each firing may enable another)."""
        while not self.decided and self.ctx is not None and self._step_once(now):
            pass

    def _step_once(self, now: float) -> bool:
        ctx = self.ctx
        assert ctx is not None
        quorum, r = ctx.validators.quorum, self.round
        if self._decide_rule(quorum):                                                         # line 49
            return False
        if self.step == WAITING:
            return False
        proposal = self.proposals.get(r)
        prevotes = self.votes.get((r, PREVOTE))
        precommits = self.votes.get((r, PRECOMMIT))
        if self.step == PROPOSE and proposal is not None:
            block, vr = proposal.block, proposal.valid_round
            if vr == -1:                                                                      # line 22
                ok = ctx.valid(block) and (self.locked_round == -1 or self._is_locked(block))
                self._broadcast_vote(PREVOTE, block.id if ok else None, now)
                self.step = PREVOTE_STEP
                return True
            old = self.votes.get((vr, PREVOTE))
            if 0 <= vr < r and old is not None and old.count(block.id) >= quorum:              # line 28
                ok = ctx.valid(block) and (self.locked_round <= vr or self._is_locked(block))
                self._broadcast_vote(PREVOTE, block.id if ok else None, now)
                self.step = PREVOTE_STEP
                return True
        if self.step == PREVOTE_STEP and prevotes is not None and prevotes.total >= quorum \
                and ("t_prevote", r) not in self._fired:                                     # line 34
            self._fired.add(("t_prevote", r))
            self._schedule(_T_PREVOTE, self._timeout(self.config.timeout_prevote, self.config.timeout_prevote_delta), now)
            return True
        if self.step >= PREVOTE_STEP and proposal is not None and prevotes is not None \
                and ("locked", r) not in self._fired and prevotes.count(proposal.block.id) >= quorum \
                and ctx.valid(proposal.block):                                                # line 36
            self._fired.add(("locked", r))
            block = proposal.block
            # lines 38-43 are one atomic step; valid is set before the precommit is signed so that the WAL
            # record written with it carries the valid value too (valid_round >= locked_round after a restart:
            # a restored lock without it made us propose a fresh block we would not prevote ourselves)
            self.valid_value, self.valid_round = block, r
            if self.step == PREVOTE_STEP:
                self.locked, self.locked_round = block, r
                self._broadcast_vote(PRECOMMIT, block.id, now)
                self.step = PRECOMMIT_STEP
            return True
        if self.step == PREVOTE_STEP and prevotes is not None and prevotes.count(None) >= quorum:  # line 44
            self._broadcast_vote(PRECOMMIT, None, now)
            self.step = PRECOMMIT_STEP
            return True
        if precommits is not None and precommits.total >= quorum and ("t_precommit", r) not in self._fired:  # line 47
            self._fired.add(("t_precommit", r))
            self._schedule(_T_PRECOMMIT, self._timeout(self.config.timeout_precommit,
                                                       self.config.timeout_precommit_delta), now)
            return True
        target = self._skip_target(ctx.validators.skip)                                        # line 55
        if target is not None:
            self._start_round(target, now)
            return True
        return False

    def _is_locked(self, block: Block) -> bool:
        return self.locked is not None and self.locked.id == block.id

    def _decide_rule(self, quorum: int) -> bool:
        ctx = self.ctx
        assert ctx is not None
        for (round_, kind), votes in self.votes.items():
            if kind != PRECOMMIT or votes.total < quorum:
                continue
            reached, block_id = votes.quorum_value(quorum)
            if not reached or block_id is None:
                continue
            proposal = self.proposals.get(round_)
            block = proposal.block if proposal is not None and proposal.block.id == block_id else None
            if block is None:
                for value in (self.valid_value, self.locked):
                    if value is not None and value.id == block_id:
                        block = value
            if block is None or not ctx.valid(block):
                continue
            sigs = tuple(sorted((ctx.validators.index[v.validator], v.sig) for v in votes.for_block(block_id)))
            self.decided = True
            self.counters["decisions"] += 1
            self._timers = []
            self.effects.append(Decide(block, Commit(self.height, round_, block_id, sigs)))
            return True
        return False

    def _skip_target(self, skip: int) -> int | None:
        """The highest round above ours that at least f+1 validators have sent a message for (line 55)."""
        senders: dict[int, set[bytes]] = {}
        for (round_, _), votes in self.votes.items():
            if round_ > self.round:
                senders.setdefault(round_, set()).update(votes.by_validator)
        for round_, proposal in self.proposals.items():
            if round_ > self.round:
                senders.setdefault(round_, set()).add(proposal.proposer)
        best = None
        for round_, who in senders.items():
            if len(who) >= skip and (best is None or round_ > best):
                best = round_
        far = sorted(self.far_rounds.values(), reverse=True)
        if len(far) >= skip and far[skip - 1] > self.round:
            # f+1 validators are at rounds at least this high: one of them is honest, and honest
            # validators only move forward, so that round has been reached by a correct process
            best = max(best or 0, far[skip - 1])
        return best

    # ------------------------------------------------------------------ liveness and restarts
    def _rebroadcast(self, now: float) -> None:
        if self.decided:
            return
        proposal = self.proposals.get(self.round)
        # the current and previous rounds, plus every round whose prevotes someone may need as a
        # proof-of-lock (line 28): our locked and valid rounds and the current proposal's valid round
        wanted = {self.round, self.round - 1, self.locked_round, self.valid_round,
                  -1 if proposal is None else proposal.valid_round}
        for message in self._own:
            if message.round in wanted:
                self.effects.append(SendConsensus(message))
        quorum = self.ctx.validators.quorum if self.ctx is not None else 1
        for round_ in wanted:
            prevotes = self.votes.get((round_, PREVOTE))
            if prevotes is None:
                continue
            reached, block_id = prevotes.quorum_value(quorum)
            if reached and block_id is not None:
                # relay the whole proof-of-lock: a validator that missed some of it (or got a Byzantine
                # validator's other vote) cannot accept a re-proposal without it (the paper's gossip)
                for vote in prevotes.for_block(block_id):
                    if vote.validator != self.key:
                        self.effects.append(SendConsensus(vote))
        self._schedule(_T_REBROADCAST, self.config.rebroadcast_interval, now)

    def _wal_block(self, block: Block) -> None:
        if block.id not in self._walled:
            self._walled.add(block.id)
            self.effects.append(WalRecord(["block", block.wire(), block.height]))

    def _wal(self, signed: Proposal | Vote) -> None:
        """Our locks and the message we are about to send: durable before it leaves the node."""
        if self.locked is not None:
            self._wal_block(self.locked)
        if self.valid_value is not None:
            self._wal_block(self.valid_value)
        state = [self.height, self.round, self.locked_round, None if self.locked is None else self.locked.id,
                 self.valid_round, None if self.valid_value is None else self.valid_value.id]
        tag = "p" if isinstance(signed, Proposal) else "v"
        self.effects.append(WalRecord(["signed", state, tag, signed.wire()]))

    def _restore(self, records: list[Wire], now: float) -> None:
        """Resume a height after a restart with exactly what we had signed: the same locks, and our signed
        messages re-sent as they were (never re-signed differently)."""
        blocks: dict[bytes, Block] = {}
        state = None
        for record in records:
            if record[0] == "block":
                block = Block.from_wire(record[1])
                blocks[block.id] = block
                self._walled.add(block.id)
                continue
            _, state, tag, wire = record
            message: Proposal | Vote = Proposal.from_wire(wire) if tag == "p" else Vote.from_wire(wire)
            if isinstance(message, Vote):
                self._signed[(message.height, message.round, message.kind)] = message.block_id
                self.votes.setdefault((message.round, message.kind), _Votes()).add(message)
            else:
                self._signed[(message.height, message.round, 0)] = message.block.id
                self.proposals.setdefault(message.round, message)
                blocks.setdefault(message.block.id, message.block)
            self._own.append(message)
        if state is None:
            self._start_round(0, now)
            return
        _, self.round, self.locked_round, locked_id, self.valid_round, valid_id = state
        self.locked = blocks.get(locked_id) if locked_id is not None else None
        self.valid_value = blocks.get(valid_id) if valid_id is not None else None
        if self.locked is not None and self.valid_round < self.locked_round:
            # a WAL written before valid was set ahead of the precommit: the lock rule set both (line 42)
            self.valid_value, self.valid_round = self.locked, self.locked_round
        own_rounds = [m.round for m in self._own]
        if max(own_rounds, default=0) > self.round:
            self.round = max(own_rounds)
        self.step = max(PROPOSE, max((PREVOTE_STEP if m.kind == PREVOTE else PRECOMMIT_STEP for m in self._own
                                      if isinstance(m, Vote) and m.round == self.round), default=PROPOSE))
        self.round_started_at = now
        for message in self._own:
            self.effects.append(SendConsensus(message))
        self._schedule(_T_REBROADCAST, self.config.rebroadcast_interval, now)
        if self.step == PROPOSE:
            self._schedule(_T_PROPOSE, self._timeout(self.config.timeout_propose, self.config.timeout_propose_delta), now)

    def own_lock(self, height: int) -> tuple[Vote, Block] | None:
        """Our highest-round precommit for a block at `height` (the lock, line 36) and that block, or None."""
        if height != self.height or self.locked is None:
            return None
        vote = next((m for m in reversed(self._own) if isinstance(m, Vote) and m.kind == PRECOMMIT
                     and m.round == self.locked_round and m.block_id == self.locked.id), None)
        return None if vote is None else (vote, self.locked)

    def status(self) -> dict[str, object]:
        """Where consensus stands, for /status, with its counters spread in."""
        return {"height": self.height, "round": self.round, "step": STEP_NAMES[self.step],
                "locked_round": self.locked_round, "valid_round": self.valid_round, **self.counters}


def wal_record_height(record: object) -> int | None:
    """The height a WAL record belongs to (None: a block record from before they carried one, or a
    record of no known shape: the checksum passed, but the reader never trusts a shape it did not check)."""
    if type(record) is not list or len(record) < 2:
        return None
    if record[0] == "signed" and type(record[1]) is list and record[1]:
        height = record[1][0]
    elif record[0] == "recovery":       # our consent to a recovery block (core.py)
        height = record[1]
    elif record[0] == "block" and len(record) > 2:
        height = record[2]
    else:
        return None
    return height if type(height) is int else None
