"""What a validator tells its users about the quorum (`/status` quorum, a 202's reason): it counts the
validators it hears from, not the signers of votes that other validators re-send."""
from __future__ import annotations

from exchange.chain.types.blocks import PREVOTE, Vote
from exchange.chain.core import FOLLOWER_BLOCK_SILENCE, ChainCore
from exchange.chain.types.genesis import Genesis
from exchange.chain.consensus.tendermint import WAITING
from tests.sim.chain_sim import BASE_TIME, FakeKeys, pinned_core


def _validator_core(count: int) -> tuple[ChainCore, list[FakeKeys], Genesis]:
    return pinned_core("liveness", count)


def test_votes_re_sent_by_one_validator_do_not_make_the_others_look_live():
    # 4 validators, quorum 3: we (0) still hear validator 1, which re-sends the prevotes of 2 and 3 it got
    # before they were cut off. Only 0 and 1 are here: no quorum, and the node must say so.
    core, keys, genesis = _validator_core(4)
    now = BASE_TIME + 0.1
    for signer in keys[1:]:
        vote = Vote.create(genesis.chain_id, PREVOTE, 1, 0, None, signer.public_key, signer.sign)
        core.on_message("chain_vote", vote.wire(), keys[1].node_id, now)
    assert core.quorum_present(now) is False
    core.on_message("chain_vote", Vote.create(genesis.chain_id, PREVOTE, 1, 0, None, keys[2].public_key,
                                        keys[2].sign).wire(), keys[2].node_id, now)
    assert core.quorum_present(now) is True        # 0, 1 and 2 are heard from: 3 of 4


def test_a_validator_heard_long_ago_no_longer_counts():
    core, keys, genesis = _validator_core(4)
    for signer in keys[1:]:
        vote = Vote.create(genesis.chain_id, PREVOTE, 1, 0, None, signer.public_key, signer.sign)
        core.on_message("chain_vote", vote.wire(), signer.node_id, BASE_TIME + 0.1)
    assert core.quorum_present(BASE_TIME + 0.2) is True
    assert core.quorum_present(BASE_TIME + 0.2 + core.config.live_after + 0.1) is False


def test_an_idle_chains_validators_are_live_by_their_heartbeats_at_our_height():
    """No block is being decided (a long EMPTY_BLOCK_INTERVAL): no votes flow, yet validators whose links say
    they are at our height are live; one that says an older height is not (it cannot vote on ours)."""
    core, keys, _ = _validator_core(4)
    now = BASE_TIME + 10.0
    assert core.quorum_present(now) is False, "nothing heard: no quorum"
    core.peer_height(keys[1].node_id, core.state.height, now)
    core.peer_height(keys[2].node_id, core.state.height - 1, now)
    assert core.quorum_present(now) is False, "a validator behind us is not counted"
    core.peer_height(keys[3].node_id, core.state.height, now)
    assert core.quorum_present(now) is True
    assert core.quorum_present(now + core.config.live_after + 0.1) is False, "heartbeats that stop stop counting"


def test_a_follower_hearing_a_quorum_of_validators_at_its_height_is_not_halted_by_one_slow_block():
    """Issue 25: a full block takes seconds on a busy machine, and a follower that heard validators only through
    their blocks called the chain halted (/ready 503, 202 no_quorum) after 3 s without one. The validators it is
    linked to say their height in their heartbeats: a quorum of them at its height or past it is a live chain;
    without them the 3 s rule stands, and heartbeats that stop stop counting."""
    me = FakeKeys("follow-me")
    core, keys, _ = pinned_core("follow", 4, me)
    assert core.role == "follower"
    silence = FOLLOWER_BLOCK_SILENCE + 1.0
    assert core.quorum_present(BASE_TIME + 1.0) is True, "a block (here the start) within 3 s"
    assert core.quorum_present(BASE_TIME + silence) is False, "no block for longer, nobody heard"
    now = BASE_TIME + silence
    core.peer_height(keys[0].node_id, core.state.height, now)
    core.peer_height(keys[1].node_id, core.state.height + 1, now)
    core.peer_height(keys[2].node_id, core.state.height - 1, now)
    assert core.quorum_present(now) is False, "two at our height or past it, one behind: 2 of the 3 a quorum takes"
    core.peer_height(keys[3].node_id, core.state.height, now)
    assert core.quorum_present(now) is True
    heard = {node: age for node, age, _ in core.validator_liveness(now)}
    assert heard[keys[2].node_id] is None and heard[keys[3].node_id] == 0.0
    assert core.quorum_present(now + core.config.live_after + 0.1) is False, "heartbeats that stop stop counting"
    core.peer_height(me.node_id, core.state.height, now)        # a follower's own id is no validator's
    stranger = FakeKeys("stranger")
    core.peer_height(stranger.node_id, core.state.height + 5, now + core.config.live_after + 0.1)
    assert core.quorum_present(now + core.config.live_after + 0.1) is False, "a stranger's heartbeat counts for nothing"


def test_a_round_under_way_does_not_keep_an_idle_wake_time_that_has_passed():
    """An idle validator waits for the empty-block time (`_wake_at`) before it starts a round; a vote can start
    the round sooner. Once the round is under way, the passed wake time is no deadline: a ticker woken at every
    passed deadline would spin the event loop until the height is decided (a halted chain, two of four left,
    burned a core on each survivor)."""
    core, keys, genesis = _validator_core(4)
    height = core.state.height + 1
    now = BASE_TIME + 0.1
    vote = Vote.create(genesis.chain_id, PREVOTE, height, 0, None, keys[1].public_key, keys[1].sign)
    core.on_message("chain_vote", vote.wire(), keys[1].node_id, now)
    assert core.consensus.step != WAITING, "a vote of the height starts its round"
    for later in (now + 0.5, now + 2.0, now + 10.0):      # past the empty-block time: no quorum, no decision
        core.tick(later)
        deadline = core.next_deadline()
        assert deadline is not None and deadline > later, (later, deadline, core.consensus.step)
