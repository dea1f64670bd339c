"""A validator that restarts from its consensus WAL resumes with what it had: its lock and its valid value.

Simulator seeds 3742 and 9689 (4 validators, one equivocating): an honest validator locked a block and
precommitted it, crashed, and came back. Its last WAL record was the precommit's, written before the lock rule
(lines 36-43) had set the valid value, so it came back locked at round r with valid_round -1. As proposer it
then offered a fresh block, which it prevoted nil itself (locked on another), and never re-proposed the block
it was locked on; with the equivocator locked on that block too, no round could gather a quorum again and
every accepted transaction stayed unordered."""
from __future__ import annotations

from exchange.chain.types.blocks import PREVOTE, Proposal, Vote
from exchange.chain.core import ChainCore
from exchange.chain.effects import SendValidators, WalRecord
from tests.sim.chain_sim import BASE_TIME, SIM_CORE, FakeKeys, MemoryStore, SimApp, fake_verify, pinned_core

PREFIX = "walvalid"


def test_a_lock_restored_from_the_wal_keeps_its_valid_value_and_is_re_proposed():
    keys = [FakeKeys(f"{PREFIX}-{i}") for i in range(4)]
    proposer_core, _, genesis = pinned_core(PREFIX, 4)
    validators = proposer_core.state.validators
    now = BASE_TIME + 0.1
    proposer = next(k for k in keys if k.public_key == validators.proposer(1, 0))
    me = next(k for k in keys if k is not proposer)
    proposer_core, _, _ = pinned_core(PREFIX, 4, me=proposer)
    core, _, _ = pinned_core(PREFIX, 4, me=me)

    proposer_core.consensus.kick(now)
    proposer_core.drain(now)
    wire = next(e.message["body"] for e in proposer_core.take_effects()
                if isinstance(e, SendValidators) and e.message["type"] == "chain_proposal")
    block = Proposal.from_wire(wire).block
    core.on_message("chain_proposal", wire, proposer.node_id, now)
    for signer in [proposer] + [k for k in keys if k not in (proposer, me)][:1]:
        vote = Vote.create(genesis.chain_id, PREVOTE, 1, 0, block.id, signer.public_key, signer.sign)
        core.on_message("chain_vote", vote.wire(), signer.node_id, now)
    assert core.consensus.locked_round == 0 and core.consensus.valid_round == 0
    wal = [e.record for e in core.take_effects() if isinstance(e, WalRecord)]

    again = ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                      blocks=MemoryStore(), config=SIM_CORE, now=now + 1)
    again.start(now + 1, wal=wal)
    again.take_effects()
    consensus = again.consensus
    assert consensus.locked is not None and consensus.locked.id == block.id and consensus.locked_round == 0
    assert consensus.valid_value is not None and consensus.valid_value.id == block.id, "the valid value was lost"
    assert consensus.valid_round == 0

    ours = next(r for r in range(1, 5) if validators.proposer(1, r) == me.public_key)
    consensus._start_round(ours, now + 2)           # our turn to propose: the block we are locked on, with its round
    proposal = consensus.proposals[ours]
    assert proposal.block.id == block.id and proposal.valid_round == 0
