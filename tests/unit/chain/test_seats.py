"""Seats and what every node checks when it applies a block (issue 24), on the deterministic core.

A proposal that seats someone unapproved is invalid at every honest validator; a block certified by a
captured quorum (all the test's keys) cannot seat anyone unapproved, run a transaction whose signature
fails, or move time ahead of the node's clock: the follower refuses each, whoever signed the commit.
The rules of `Seats` are checked one by one, including the size rule (1 -> 4 -> 7) and approvals by
more than two thirds of the current set.
"""
from __future__ import annotations

from exchange.chain.blocks import PRECOMMIT, Block, Commit, Header, Vote
from exchange.chain.chainstate import encode_item
from exchange.chain.core import ChainCore
from exchange.chain.effects import Committed
from exchange.chain.genesis import Genesis
from exchange.chain.membership import Approve, Join, Leave, MembershipTx, Promote, Remove
from exchange.chain.seats import Seats
from exchange.app.txs import CancelOp, SignedTx, sign_tx
from exchange.chain.validators import ValidatorSet
from tests.sim.chain_sim import BASE_TIME, ChainSimulation, FakeKeys, Scenario, SimApp, fake_verify


def _network() -> ChainSimulation:
    sim = ChainSimulation(5, Scenario(validators=4, followers=2, pinned=False, drop=0.0, duplicate=0.0,
                                      fault_until=1.5, settle=1.0, submit_rate=5.0))
    result = sim.run()
    assert not result["problems"], result["problems"]
    return sim


def _certified(sim: ChainSimulation, core: ChainCore, txs: list, *, ahead_ms: int = 50) -> tuple[Block, Commit]:
    """A next block for `core`, signed by every validator key the test holds (a captured quorum)."""
    state = core.state
    header = Header(core.chain_id, state.height + 1, state.time_ms + ahead_ms, state.last_block_id,
                    state.validators.keys[0], state.hash, state.validators.hash,
                    Block.txs_hash([encode_item(tx) for tx in txs]), core.last_commit)
    block = Block(header, [encode_item(tx) for tx in txs])
    keys = {k.public_key: k for k in (n.keys for n in sim.nodes)}
    sigs = tuple((i, Vote.create(core.chain_id, PRECOMMIT, block.height, 0, block.id, key, keys[key].sign).sig)
                 for i, key in enumerate(state.validators.keys))
    return block, Commit(block.height, 0, block.id, sigs)


def _follower(sim: ChainSimulation) -> ChainCore:
    node = sim.nodes[-1]
    assert node.core is not None and not node.core.is_validator
    return node.core


def test_a_certified_block_cannot_seat_an_unapproved_node():
    sim = _network()
    follower = _follower(sim)
    stranger = FakeKeys("stranger")
    before = follower.state.validators.keys
    block, commit = _certified(sim, follower, [Promote((stranger.public_key,))])
    follower.on_message("chain_decision", [block.wire(), commit.wire()], sim.nodes[0].keys.node_id, follower.now + 0.01)
    assert follower.state.validators.keys == before
    assert follower.state.height == block.height      # the block is ordered; the change in it is refused
    assert stranger.public_key not in follower.state.validators
    assert any(verdict == "not_standby" for _, verdict in _last_outcome(follower))


def _last_outcome(core: ChainCore) -> list:
    """The membership verdicts of the newest block the core applied (from its Committed effect)."""
    commits = [e for e in core.take_effects() if isinstance(e, Committed)]
    return commits[-1].outcome.membership


def test_a_proposal_seating_someone_unapproved_is_invalid_at_every_honest_validator():
    sim = _network()
    validator = sim.nodes[0].core
    assert validator is not None and validator.is_validator
    stranger = FakeKeys("stranger-2")
    self_signed = Join.create(validator.chain_id, stranger.public_key, validator.height, stranger.sign)
    for change in (Promote((stranger.public_key,)), self_signed):
        state = validator.state
        header = Header(validator.chain_id, state.height + 1, state.time_ms + 10, state.last_block_id,
                        state.validators.keys[0], state.hash, state.validators.hash,
                        Block.txs_hash([encode_item(change)]), validator.last_commit)
        block = Block(header, [encode_item(change)])
        why = validator.validate(block, state.time_ms + 20)
        assert why is not None and "membership" in why, why


def test_a_captured_quorum_cannot_run_a_forged_order_or_move_time():
    sim = _network()
    follower = _follower(sim)
    victim = sim.account
    forged = sign_tx(lambda data: bytes(64), victim.public_key, follower.chain_id, "forged",
                     int((BASE_TIME + 100) * 1000), [CancelOp.parse("BTC-USD", "o1")])
    assert isinstance(forged, SignedTx) and not forged.signature_valid()
    block, commit = _certified(sim, follower, [forged])
    height = follower.height
    follower.on_message("chain_decision", [block.wire(), commit.wire()], sim.nodes[0].keys.node_id, follower.now + 0.01)
    assert follower.height == height + 1
    assert isinstance(follower.state.app, SimApp)
    assert forged.id not in follower.state.app.resolved, "a forged transaction ran"
    assert follower.counters["refused_certified_txs"] == 1
    future, future_commit = _certified(sim, follower, [], ahead_ms=24 * 3600 * 1000)
    follower.on_message("chain_decision", [future.wire(), future_commit.wire()], sim.nodes[0].keys.node_id,
                        follower.now + 0.01)
    assert follower.height == height + 1, "a block 24 h ahead was applied"
    assert follower.counters["future_certified_blocks"] >= 1


def _genesis(validators: list[FakeKeys], rule: str = "bft", max_validators: int = 7) -> Genesis:
    return Genesis("t", 0, validators[0].public_key, tuple(v.public_key for v in validators),
                   max_validators=max_validators, admission_key=FakeKeys("admission").public_key, seat_rule=rule)


def _problem(seats: Seats, tx: MembershipTx, genesis: Genesis, validators: ValidatorSet,
             absent: bool = False) -> str | None:
    assert tx.signature_valid(genesis.chain_id, fake_verify, genesis.admission_key)
    return seats.problem(tx, validators, genesis, 10, lambda key: absent)


def test_the_seat_rule_grows_one_to_four_to_seven_and_approvals_need_more_than_two_thirds():
    keys = [FakeKeys(f"v{i}") for i in range(8)]
    genesis = _genesis(keys[:1])
    chain_id = genesis.chain_id
    admission = FakeKeys("admission")
    validators, seats = genesis.first_validators(), Seats()
    for key in keys[1:3]:
        join = Join.create(chain_id, key.public_key, 5, admission.sign)
        assert _problem(seats, join, genesis, validators) is None
        seats.apply(join, validators, 10)
    assert _problem(seats, Promote((keys[1].public_key,)), genesis, validators) == "size_not_allowed"
    assert _problem(seats, Promote((keys[1].public_key, keys[2].public_key)), genesis, validators) == "size_not_allowed"
    approval = Approve.create(chain_id, "add", keys[3].public_key, keys[0].public_key, 5, keys[0].sign)
    assert _problem(seats, approval, genesis, validators) is None
    seats.apply(approval, validators, 10)         # the founder alone is more than two thirds of one
    assert keys[3].public_key in seats.standby
    grow = Promote(tuple(k.public_key for k in keys[1:4]))
    assert _problem(seats, grow, genesis, validators) is None
    after = seats.apply(grow, validators, 10)
    assert after is not None and len(after) == 4 and not seats.standby
    target = keys[4].public_key
    for index, approver in enumerate(keys[:3]):
        vote = Approve.create(chain_id, "add", target, approver.public_key, 5, approver.sign)
        assert _problem(seats, vote, genesis, after) is None
        seats.apply(vote, after, 10)
        assert (target in seats.standby) == (index == 2), f"after {index + 1} of 4 approvals"
    outsider = Approve.create(chain_id, "add", keys[5].public_key, keys[6].public_key, 5, keys[6].sign)
    assert _problem(seats, outsider, genesis, after) == "approver_not_validator"
    forged_join = Join.create(chain_id, keys[5].public_key, 5, keys[5].sign)     # not the admission key
    assert not forged_join.signature_valid(chain_id, fake_verify, genesis.admission_key)


def test_leave_hands_the_seat_to_a_standby_and_absence_jails_without_losing_the_approval():
    keys = [FakeKeys(f"w{i}") for i in range(6)]
    genesis = _genesis(keys[:4])
    chain_id = genesis.chain_id
    validators, seats = genesis.first_validators(), Seats()
    seats.apply(Join.create(chain_id, keys[4].public_key, 5, FakeKeys("admission").sign), validators, 10)
    leave = Leave.create(chain_id, keys[0].public_key, 5, keys[4].public_key, keys[0].sign)
    assert _problem(seats, leave, genesis, validators) is None
    after = seats.apply(leave, validators, 10)
    assert after is not None and keys[4].public_key in after and keys[0].public_key not in after
    assert keys[0].public_key in seats.standby, "a validator that left keeps its approval"
    jail = Remove(keys[1].public_key, "absent")
    assert _problem(seats, jail, genesis, after, absent=False) == "not_absent"
    assert _problem(seats, jail, genesis, after, absent=True) is None
    jailed = seats.apply(jail, after, 11)
    assert jailed is not None and len(jailed) == 3 and keys[1].public_key in seats.standby
    back = Promote((keys[1].public_key,))
    assert _problem(seats, back, genesis, jailed) is None, "a jailed validator gets a seat back when it returns"
    stranger_successor = Remove(keys[2].public_key, "absent", successor=keys[5].public_key)
    assert _problem(seats, stranger_successor, genesis, jailed, absent=True) == "successor_not_standby"
    assert _problem(seats, Leave.create(chain_id, keys[2].public_key, 500, None, keys[2].sign), genesis,
                    jailed) == "expired"


def test_seats_survive_a_snapshot_and_are_in_the_state_hash():
    keys = [FakeKeys(f"s{i}") for i in range(3)]
    genesis = _genesis(keys[:1])
    seats = Seats()
    seats.apply(Join.create(genesis.chain_id, keys[1].public_key, 1, FakeKeys("admission").sign),
                genesis.first_validators(), 2)
    copy = Seats.from_wire(seats.wire())
    assert copy.wire() == seats.wire() and copy.hash() == seats.hash() != Seats().hash()


def test_an_equivocating_validator_is_seen_by_every_validator_and_removed():
    """It tells each half of the set something else; votes that differ from a validator's own are relayed, so
    every honest validator holds both signatures, and the next proposer removes (and bans) it."""
    sim = ChainSimulation(9, Scenario(validators=4, followers=1, pinned=False, byzantine={3: "equivocate"},
                                      drop=0.0, duplicate=0.0, fault_until=3.0, settle=3.0))
    result = sim.run()
    assert not result["problems"], result["problems"]
    liar = sim.nodes[3].keys.public_key
    honest = [n.core for n in sim.nodes[:3] + sim.nodes[4:] if n.core is not None]
    for core in honest:
        assert liar not in core.state.validators, "the equivocator kept its seat"
        assert liar in core.state.seats.banned
    assert all(n.core is not None and n.core.counters.get("votes_relayed", 0) > 0 for n in sim.nodes[:3])
    assert len({core.state.hash for core in honest if core.height == honest[0].height}) == 1


def test_a_standby_is_caught_up_by_its_height_when_it_spoke_not_by_the_blocks_made_since():
    """Blocks come faster than heartbeats under steady traffic: a standby that was at our height when it
    last spoke stays a successor until its next heartbeat; one that was three blocks behind then is not."""
    sim = _network()
    core = next(n.core for n in sim.nodes if n.core is not None and n.core.is_validator)
    standby, behind = FakeKeys("standby"), FakeKeys("behind")
    for key in (standby, behind):
        core.state.seats.standby[key.public_key] = core.state.height
    now = core.now
    core.peer_height(behind.node_id, core.state.height - 3, now)
    core.peer_height(standby.node_id, core.state.height, now)
    core.state.height += 5          # blocks applied since it spoke, with no heartbeat in between
    leave = core.request_leave(now + 0.5)
    assert leave is not None and leave.successor == standby.public_key
    core.state.height -= 5
    del core.state.seats.standby[standby.public_key]
    leave = core.request_leave(now + 0.5)
    assert leave is not None and leave.successor is None, "a standby behind when it spoke is no successor"
