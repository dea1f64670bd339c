"""A follower's decision from the precommits it receives, without waiting for a validator's decision message.

Validators send the followers linked to them their proposals (`chain_block`) and their precommits for a block
(`chain_precommit`) as they send them to each other (`ChainCore.drain`: `SendFollowers`). A follower that holds a
block of the next height and precommits for it, in one round, from a quorum of its validator set (each signature
checked against the set its own state derived) makes them into a `Commit` and takes the block as it takes a
decision (`BlockSync.on_certified`, which checks the block and the certificate again against its state). The
block is then final here one message delay after the validators' precommits leave, not two (the decision left
only once a validator had counted the quorum and stored the block).

Safety is the certificate's, as for a decision: a quorum of precommits for one block of a height is what makes it
final in Tendermint, and no two blocks of a height gather one while at most f validators are faulty, whoever
puts the signatures together. Nothing here is trusted that the certificate does not prove: a block is held only
to be matched with a quorum for its id (the id hashes the header, which binds its transactions), and a precommit
counts only with a valid signature of a member of the set.

What a peer can make a follower hold is bounded: messages only from a current validator (the sender its link or a
relay's origin signature proves, not the signer; anyone else's are not even parsed), only of the next height;
per validator its newest proposal rounds (MAX_ROUNDS) and its precommit of the highest round; everything is
dropped when the height moves on.
"""
from __future__ import annotations

from typing import Protocol

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Proposal, Vote
from exchange.chain.consensus.block_check import BlockCheck
from exchange.chain.state.view import CoreBasics

MAX_ROUNDS = 2      # proposals kept per validator (its newest rounds): a proposer re-proposes in a later round


class QuorumCore(CoreBasics, Protocol):
    """The core as the precommit quorum uses it: the state whose validators sign.
    Read-only (a part writes only the basics' `counters`)."""

    @property
    def is_validator(self) -> bool: ...


class CertifiedBlocks(Protocol):
    """Where a block certified here from precommits goes: block sync, as any certified block."""

    def on_certified(self, block: Block, commit: Commit, sender: str | None, now: float) -> None: ...


class PrecommitQuorum:
    """The next height's blocks and precommits a follower was sent, until a quorum makes one final."""

    def __init__(self, core: QuorumCore, check: BlockCheck, sync: CertifiedBlocks) -> None:
        self.core = core
        self.check = check
        self.sync = sync
        self._height = 0
        self._blocks: dict[str, dict[int, Block]] = {}          # sender -> round -> block proposed
        self._precommits: dict[bytes, Vote] = {}                # validator key -> its highest-round precommit
        self.decided = 0            # heights made final here from precommits (for /status)

    def _at(self, height: int) -> bool:
        """Whether `height` is the next one; a new next height drops what was held for the last."""
        following = self.core.state.height + 1
        if following != self._height:
            self._height = following
            self._blocks.clear()
            self._precommits.clear()
        return height == following and not self.core.is_validator

    def _from_validator(self, sender: str | None) -> bool:
        return sender is not None and sender in self.core.state.validators.node_ids

    def on_block_wire(self, body: object, sender: str | None, now: float) -> None:
        """`chain_block`: parsed only when a current validator sent it to a follower (a block is big)."""
        if self._from_validator(sender) and not self.core.is_validator:
            self.on_block(Proposal.from_wire(body), sender, now)

    def on_precommit_wire(self, body: object, sender: str | None, now: float) -> None:
        """`chain_precommit`: parsed only when a current validator sent it to a follower."""
        if self._from_validator(sender) and not self.core.is_validator:
            self.on_precommit(Vote.from_wire(body), sender, now)

    def on_block(self, proposal: Proposal, sender: str | None, now: float) -> None:
        """A validator's proposal, sent to its linked followers."""
        if not (self._from_validator(sender) and self._at(proposal.height)):
            return
        assert sender is not None
        rounds = self._blocks.setdefault(sender, {})
        if proposal.round in rounds:
            return
        rounds[proposal.round] = proposal.block
        while len(rounds) > MAX_ROUNDS:
            del rounds[min(rounds)]
        self._try(proposal.round, proposal.block.id, sender, now)

    def on_precommit(self, vote: Vote, sender: str | None, now: float) -> None:
        """A validator's precommit for a block, sent to its linked followers."""
        if vote.kind != PRECOMMIT or vote.block_id is None:
            return
        if not (self._from_validator(sender) and self._at(vote.height)):
            return
        validators = self.core.state.validators
        if vote.validator not in validators.index:
            return
        held = self._precommits.get(vote.validator)
        if held is not None and held.round >= vote.round:
            return
        if not vote.valid(self.core.chain_id, self.core.verify):
            return          # the sender's link said it came from a validator: a bad signature is its own doing
        self._precommits[vote.validator] = vote
        self._try(vote.round, vote.block_id, sender, now)

    def _try(self, round_: int, block_id: bytes, sender: str | None, now: float) -> None:
        validators = self.core.state.validators
        votes = [v for v in self._precommits.values() if v.round == round_ and v.block_id == block_id]
        if len(votes) < validators.quorum:
            return
        block = next((rounds[round_] for rounds in self._blocks.values()
                      if round_ in rounds and rounds[round_].id == block_id), None)
        if block is None:
            return
        sigs = tuple(sorted((validators.index[v.validator], v.sig) for v in votes))
        commit = Commit(block.height, round_, block_id, sigs)
        self.check.trust_commit(commit, validators)     # each signature was just checked
        height = self.core.state.height
        self.sync.on_certified(block, commit, sender, now)
        if self.core.state.height > height:
            self.decided += 1
