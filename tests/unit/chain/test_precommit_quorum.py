"""A follower makes a block final from the precommits its validators send it (`precommit_quorum.py`), before any
decision message, and only on a quorum of valid precommits of its own set for that block, sent by validators."""
from __future__ import annotations

from exchange.chain.types.blocks import PRECOMMIT, PREVOTE, Block, Proposal, Vote
from exchange.chain.core import ChainCore
from exchange.chain.effects import SendFollowers
from tests.sim.chain_sim import BASE_TIME, FakeKeys, pinned_core

PREFIX = "pq"


def _proposal() -> tuple[ChainCore, list[FakeKeys], Proposal]:
    """A follower of a pinned set of four, and the round-0 proposal of height 1 by its proposer."""
    follower, keys, genesis = pinned_core(PREFIX, 4, FakeKeys("pq-follower"))
    author = _author(keys, follower)
    proposer, _, _ = pinned_core(PREFIX, 4, author)
    block = proposer.builder.build_block()
    return follower, keys, Proposal.create(genesis.chain_id, 1, 0, -1, block, author.public_key, author.sign)


def _author(keys: list[FakeKeys], core: ChainCore) -> FakeKeys:
    first = core.state.validators.proposer(1, 0)
    return next(key for key in keys if key.public_key == first)


def _precommit(core: ChainCore, key: FakeKeys, block: Block, kind: int = PRECOMMIT, round_: int = 0) -> list:
    return Vote.create(core.chain_id, kind, block.height, round_, block.id, key.public_key, key.sign).wire()


def test_a_quorum_of_precommits_makes_the_block_final_at_a_follower_without_a_decision():
    follower, keys, proposal = _proposal()
    now = BASE_TIME + 0.1
    follower.on_message("chain_block", proposal.wire(), _author(keys, follower).node_id, now)
    for key in keys[:2]:
        follower.on_message("chain_precommit", _precommit(follower, key, proposal.block), key.node_id, now)
    assert follower.state.height == 0, "two of four is no quorum"
    follower.on_message("chain_precommit", _precommit(follower, keys[2], proposal.block), keys[2].node_id, now)
    assert follower.state.height == 1 and follower.state.last_block_id == proposal.block.id
    assert follower.precommits.decided == 1 and follower.counters["decisions_received"] == 1
    assert follower.last_commit is not None and len(follower.last_commit.sigs) == 3


def test_precommits_before_the_block_count_once_it_comes():
    follower, keys, proposal = _proposal()
    now = BASE_TIME + 0.1
    for key in keys[:3]:
        follower.on_message("chain_precommit", _precommit(follower, key, proposal.block), key.node_id, now)
    assert follower.state.height == 0
    follower.on_message("chain_block", proposal.wire(), _author(keys, follower).node_id, now)
    assert follower.state.height == 1


def test_what_does_not_prove_a_quorum_is_not_counted():
    follower, keys, proposal = _proposal()
    now = BASE_TIME + 0.1
    stranger = FakeKeys("pq-stranger")
    follower.on_message("chain_block", proposal.wire(), _author(keys, follower).node_id, now)
    block = proposal.block
    # relayed by a peer that is no validator; a prevote; a stranger's signature; one signed by another key
    follower.on_message("chain_precommit", _precommit(follower, keys[0], block), stranger.node_id, now)
    follower.on_message("chain_precommit", _precommit(follower, keys[0], block, PREVOTE), keys[0].node_id, now)
    follower.on_message("chain_precommit", _precommit(follower, stranger, block), keys[0].node_id, now)
    forged = _precommit(follower, keys[3], block)
    forged[5] = keys[2].sign(b"something else")
    follower.on_message("chain_precommit", forged, keys[3].node_id, now)
    follower.on_message("chain_precommit", _precommit(follower, keys[1], block), keys[1].node_id, now)
    follower.on_message("chain_precommit", _precommit(follower, keys[2], block), keys[2].node_id, now)
    assert follower.state.height == 0, "only two valid precommits of the set came"
    # precommits for the same block in another round do not add up with round 0's
    follower.on_message("chain_precommit", _precommit(follower, keys[0], block, round_=1), keys[0].node_id, now)
    assert follower.state.height == 0
    follower.on_message("chain_precommit", _precommit(follower, keys[3], block), keys[3].node_id, now)
    assert follower.state.height == 1


def test_a_block_no_quorum_precommitted_is_not_taken():
    follower, keys, proposal = _proposal()
    now = BASE_TIME + 0.1
    follower.on_message("chain_block", proposal.wire(), _author(keys, follower).node_id, now)
    other = bytes(32)
    for key in keys[:3]:
        vote = Vote.create(follower.chain_id, PRECOMMIT, 1, 0, other, key.public_key, key.sign).wire()
        follower.on_message("chain_precommit", vote, key.node_id, now)
    assert follower.state.height == 0, "a quorum for a block it was never sent"


def test_validators_send_their_proposal_and_precommits_to_followers():
    follower, keys, _ = pinned_core(PREFIX, 4, FakeKeys("pq-follower"))
    core, _, _ = pinned_core(PREFIX, 4, _author(keys, follower))       # the proposer of height 1, round 0
    core.consensus.kick(BASE_TIME)
    core.drain(BASE_TIME)
    sent = [e.message["type"] for e in core.take_effects() if isinstance(e, SendFollowers)]
    assert sent == ["chain_block"], "its proposal; its prevote is no use to a follower"


def test_a_block_from_anyone_but_a_validator_is_not_even_parsed():
    follower, keys, proposal = _proposal()
    stranger = FakeKeys("pq-stranger")
    follower.on_message("chain_block", ["not", "a", "proposal"], stranger.node_id, BASE_TIME + 0.1)
    assert follower.counters["invalid_messages"] == 0, "a stranger's bytes cost a lookup, not a parse or a penalty"
    follower.on_message("chain_block", ["not", "a", "proposal"], keys[0].node_id, BASE_TIME + 0.1)
    assert follower.counters["invalid_messages"] == 1, "a validator's malformed block is its own doing"
