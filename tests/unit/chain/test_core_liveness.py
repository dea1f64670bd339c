"""What a validator tells its users about the quorum (`/status` quorum, a 202's reason): it counts the
validators it hears from, not the signers of votes that other validators re-send."""
from __future__ import annotations

from exchange.chain.blocks import PREVOTE, Vote
from exchange.chain.core import ChainCore
from exchange.chain.genesis import Genesis
from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify


def _validator_core(count: int) -> tuple[ChainCore, list[FakeKeys], Genesis]:
    keys = [FakeKeys(f"liveness-{i}") for i in range(count)]
    genesis = Genesis(network_id="t", created_ms=int(BASE_TIME * 1000), founder=keys[0].public_key,
                      validators=tuple(k.public_key for k in keys), pinned=True)
    core = ChainCore(genesis, SimApp(), public_key=keys[0].public_key, sign=keys[0].sign, verify=fake_verify,
                     blocks=MemoryStore(), now=BASE_TIME)
    core.start(BASE_TIME)
    core.take_effects()
    return core, keys, genesis


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
