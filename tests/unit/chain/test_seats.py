"""Seats and what every node checks when it applies a block, on the deterministic core.

A proposal that seats someone unapproved is invalid at every honest validator; a block certified by a
captured quorum (all the test's keys) cannot seat anyone unapproved, run a transaction whose signature
fails, or move time ahead of the node's clock: the follower refuses each, whoever signed the commit.
The rules of `Seats` are checked one by one, including the size rule (1 -> 4 -> 7) and approvals by
more than two thirds of the current set.
"""
from __future__ import annotations

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, Vote
from exchange.chain.state.chainstate import encode_item
from exchange.chain.core import ChainCore
from exchange.chain.effects import Committed
from exchange.chain.types.genesis import Genesis
from exchange.chain.state.membership import Alive, Approve, Grant, Join, Leave, MembershipTx, Promote, Remove, Revoke
from exchange.chain.state.seats import MAX_STANDBY, MAX_TOKEN_STANDBY, SILENT_EXPIRE_MS, Seats, Standby
from exchange.app.txs import CancelOp, SignedTx, sign_tx
from exchange.chain.types.validators import ValidatorSet
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
    self_signed = Join.create(validator.chain_id, stranger.public_key, stranger.public_key, validator.height,
                              stranger.sign)
    for change in (Promote((stranger.public_key,)), self_signed):
        state = validator.state
        header = Header(validator.chain_id, state.height + 1, state.time_ms + 10, state.last_block_id,
                        state.validators.keys[0], state.hash, state.validators.hash,
                        Block.txs_hash([encode_item(change)]), validator.last_commit)
        block = Block(header, [encode_item(change)])
        why = validator.check.validate(block, state.time_ms + 20)
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
                   max_validators=max_validators, seat_rule=rule)


NOW_MS = 1_000_000      # block time of the blocks these tests apply at


def _problem(seats: Seats, tx: MembershipTx, genesis: Genesis, validators: ValidatorSet,
             absent: bool = False, height: int = 10, time_ms: int = NOW_MS) -> str | None:
    assert tx.signature_valid(genesis.chain_id, fake_verify)
    return seats.problem(tx, validators, genesis, height, time_ms, lambda key: absent)


def _apply(seats: Seats, tx: MembershipTx, genesis: Genesis, validators: ValidatorSet, height: int = 10,
           time_ms: int = NOW_MS) -> ValidatorSet | None:
    """`tx` checked as every node checks it, then carried out."""
    why = _problem(seats, tx, genesis, validators, height=height, time_ms=time_ms)
    assert why is None, why
    return seats.apply(tx, validators, height, time_ms)


def _token(seats: Seats, genesis: Genesis, validators: ValidatorSet, issuer: FakeKeys, name: str = "token",
           uses: int = 4, ttl_ms: int = 3_600_000) -> FakeKeys:
    """A join token `issuer` granted through the log; its key signs the joins it admits."""
    token = FakeKeys(name)
    _apply(seats, Grant.create(genesis.chain_id, token.public_key, issuer.public_key, validators.epoch, uses,
                               NOW_MS + ttl_ms, 5, issuer.sign), genesis, validators)
    return token


def _join(genesis: Genesis, node: FakeKeys, token: FakeKeys, at_height: int = 5) -> Join:
    return Join.create(genesis.chain_id, node.public_key, token.public_key, at_height, token.sign)


def _alive(seats: Seats, genesis: Genesis, validators: ValidatorSet, node: FakeKeys, height: int = 10,
           time_ms: int = NOW_MS) -> None:
    """`node` shows it is live, naming the block the record holds at height - 1."""
    seats.recent_blocks.setdefault(height - 1, bytes([height % 256]) * 32)
    _apply(seats, Alive.create(genesis.chain_id, node.public_key, height - 1, seats.recent_blocks[height - 1],
                               node.sign), genesis, validators, height, time_ms)


def test_the_seat_rule_grows_one_to_four_to_seven_and_approvals_need_more_than_two_thirds():
    keys = [FakeKeys(f"v{i}") for i in range(8)]
    genesis = _genesis(keys[:1])
    chain_id = genesis.chain_id
    validators, seats = genesis.first_validators(), Seats()
    token = _token(seats, genesis, validators, keys[0])
    for key in keys[1:3]:
        _apply(seats, _join(genesis, key, token), genesis, validators)
        _alive(seats, genesis, validators, key)
    assert _problem(seats, Promote((keys[1].public_key,)), genesis, validators) == "size_not_allowed"
    assert _problem(seats, Promote((keys[1].public_key, keys[2].public_key)), genesis, validators) == "size_not_allowed"
    approval = Approve.create(chain_id, "add", keys[3].public_key, keys[0].public_key, validators.epoch, 5,
                              keys[0].sign)
    _apply(seats, approval, genesis, validators)        # the founder alone is more than two thirds of one
    assert keys[3].public_key in seats.standby
    grow = Promote(tuple(k.public_key for k in keys[1:4]))
    assert _problem(seats, grow, genesis, validators) == "not_live", "a standby never seen alive takes no seat"
    _alive(seats, genesis, validators, keys[3])
    after = _apply(seats, grow, genesis, validators)
    assert after is not None and len(after) == 4 and not seats.standby
    target = keys[4].public_key
    for index, approver in enumerate(keys[:3]):
        vote = Approve.create(chain_id, "add", target, approver.public_key, after.epoch, 5, approver.sign)
        _apply(seats, vote, genesis, after)
        assert (target in seats.standby) == (index == 2), f"after {index + 1} of 4 approvals"
    outsider = Approve.create(chain_id, "add", keys[5].public_key, keys[6].public_key, after.epoch, 5, keys[6].sign)
    assert _problem(seats, outsider, genesis, after) == "approver_not_validator"
    forged_join = _join(genesis, keys[5], keys[5])       # "signed" by a key no validator granted
    assert _problem(seats, forged_join, genesis, after) == "unknown_token"


def test_leave_hands_the_seat_to_a_live_standby_and_never_seats_the_leaver_again_unasked():
    keys = [FakeKeys(f"w{i}") for i in range(6)]
    genesis = _genesis(keys[:4])
    chain_id = genesis.chain_id
    validators, seats = genesis.first_validators(), Seats()
    token = _token(seats, genesis, validators, keys[1])
    _apply(seats, _join(genesis, keys[4], token), genesis, validators)
    leave = Leave.create(chain_id, keys[0].public_key, validators.epoch, 5, keys[4].public_key, keys[0].sign)
    assert _problem(seats, leave, genesis, validators) == "successor_not_live"
    _alive(seats, genesis, validators, keys[4])
    after = _apply(seats, leave, genesis, validators)
    assert after is not None and keys[4].public_key in after and keys[0].public_key not in after
    assert keys[0].public_key not in seats.standby, "the leaver is off the list until it asks back"
    assert _problem(seats, Promote((keys[0].public_key,)), genesis, after) == "not_standby"
    _alive(seats, genesis, after, keys[0], height=12)     # it runs again and asks back
    assert seats.standby[keys[0].public_key].via == "returned"
    jail = Remove(keys[1].public_key, "absent")
    assert _problem(seats, jail, genesis, after, absent=False) == "not_absent"
    assert _problem(seats, jail, genesis, after, absent=True) is None
    jailed = seats.apply(jail, after, 13, NOW_MS)
    assert jailed is not None and len(jailed) == 3 and keys[1].public_key in seats.standby
    back = Promote((keys[1].public_key,))
    assert _problem(seats, back, genesis, jailed) == "not_live", "jailed, and not heard from since"
    _alive(seats, genesis, jailed, keys[1], height=14, time_ms=NOW_MS + 3000)
    assert _problem(seats, back, genesis, jailed, time_ms=NOW_MS + 3000) is None, "back once it shows it is live"
    stranger_successor = Remove(keys[2].public_key, "absent", successor=keys[5].public_key)
    assert _problem(seats, stranger_successor, genesis, jailed, absent=True) == "successor_not_standby"
    assert _problem(seats, Leave.create(chain_id, keys[2].public_key, jailed.epoch, 500, None, keys[2].sign), genesis,
                    jailed) == "expired"


def test_every_signed_request_counts_once_and_only_in_its_own_epoch():
    keys = [FakeKeys(f"r{i}") for i in range(7)]
    genesis = _genesis(keys[:4])
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    newcomer = keys[5].public_key
    approvals = [Approve.create(chain_id, "add", newcomer, k.public_key, validators.epoch, 5, k.sign) for k in keys[:3]]
    for approval in approvals:
        _apply(seats, approval, genesis, validators)
    assert newcomer in seats.standby
    removals = [Approve.create(chain_id, "remove", newcomer, k.public_key, validators.epoch, 6, k.sign)
                for k in keys[:3]]
    for removal in removals:
        _apply(seats, removal, genesis, validators, height=11)
    assert newcomer not in seats.standby and newcomer in seats.removed
    for approval in approvals:      # re-sent by anyone: each already counted
        assert _problem(seats, approval, genesis, validators, height=12) == "replayed"
    token = _token(seats, genesis, validators, keys[0])
    assert _problem(seats, _join(genesis, keys[5], token), genesis, validators) == "removed", \
        "a node the validators removed comes back by their approval only, not by a token"
    leave = Leave.create(chain_id, keys[3].public_key, validators.epoch, 6, None, keys[3].sign)
    after = _apply(seats, leave, genesis, validators, height=12)
    assert after is not None and keys[3].public_key not in after
    assert _problem(seats, leave, genesis, after, height=13) == "replayed"
    # an approval signed in the old set and never ordered counts in no later one
    stale = Approve.create(chain_id, "add", keys[6].public_key, keys[0].public_key, validators.epoch, 12, keys[0].sign)
    assert _problem(seats, stale, genesis, after, height=13) == "wrong_epoch"
    grant = Grant.create(chain_id, FakeKeys("again").public_key, keys[0].public_key, after.epoch, 1, NOW_MS + 1000,
                         12, keys[0].sign)
    _apply(seats, grant, genesis, after, height=13)
    assert _problem(seats, grant, genesis, after, height=14) == "replayed"
    seats.end_block(12 + 200 + 1, NOW_MS, bytes(32))      # past its TTL the record is dropped, and so is the grant
    assert _problem(seats, grant, genesis, after, height=214) == "expired"


def test_tokens_expire_run_out_are_revoked_and_vanish_with_their_issuer():
    keys = [FakeKeys(f"t{i}") for i in range(4)]
    nodes = [FakeKeys(f"n{i}") for i in range(4)]
    genesis = _genesis(keys)
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    one_use = _token(seats, genesis, validators, keys[0], "one", uses=1, ttl_ms=60_000)
    _apply(seats, _join(genesis, nodes[0], one_use), genesis, validators)
    assert _problem(seats, _join(genesis, nodes[1], one_use), genesis, validators) == "token_used_up"
    short = _token(seats, genesis, validators, keys[0], "short", uses=3, ttl_ms=1_000)
    assert _problem(seats, _join(genesis, nodes[1], short), genesis, validators, time_ms=NOW_MS + 2_000) \
        == "token_expired"
    revoked = _token(seats, genesis, validators, keys[1], "revoked", uses=3)
    _apply(seats, _join(genesis, nodes[2], revoked), genesis, validators)
    _apply(seats, Revoke.create(chain_id, revoked.public_key, keys[2].public_key, validators.epoch, 5, keys[2].sign),
           genesis, validators)
    assert nodes[2].public_key not in seats.standby, "a revoked token's standbys leave the list"
    assert _problem(seats, _join(genesis, nodes[3], revoked), genesis, validators) == "token_revoked"
    orphan = _token(seats, genesis, validators, keys[3], "orphan", uses=3)
    leave = Leave.create(chain_id, keys[3].public_key, validators.epoch, 5, None, keys[3].sign)
    after = _apply(seats, leave, genesis, validators)
    assert after is not None
    assert _problem(seats, _join(genesis, nodes[3], orphan), genesis, after) == "token_issuer_gone"
    too_long = Grant.create(chain_id, FakeKeys("long").public_key, keys[0].public_key, after.epoch, 1,
                            NOW_MS + 8 * 86_400_000, 5, keys[0].sign)
    assert _problem(seats, too_long, genesis, after) == "bad_expiry"
    too_many = Grant.create(chain_id, FakeKeys("many").public_key, keys[0].public_key, after.epoch, 17,
                            NOW_MS + 1000, 5, keys[0].sign)
    assert _problem(seats, too_many, genesis, after) == "bad_uses"


def test_one_token_cannot_fill_the_list_and_an_approved_join_displaces_dead_keys():
    keys = [FakeKeys(f"q{i}") for i in range(4)]
    genesis = _genesis(keys)
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    admitted = 0
    for round_ in range(8):
        token = _token(seats, genesis, validators, keys[round_ % 4], f"leak{round_}", uses=16)
        for n in range(16):
            why = _problem(seats, _join(genesis, FakeKeys(f"phantom{round_}-{n}"), token), genesis, validators)
            if why is None:
                seats.apply(_join(genesis, FakeKeys(f"phantom{round_}-{n}"), token), validators, 10, NOW_MS)
                admitted += 1
            else:
                assert why in ("issuer_standby_quota", "token_standby_full"), why
    assert admitted == MAX_TOKEN_STANDBY, "token-admitted standbys are capped, per issuer and in all"
    for n in range(MAX_STANDBY - MAX_TOKEN_STANDBY):     # the rest of the list: approved nodes that never came alive
        target = FakeKeys(f"approved-dead{n}").public_key
        for approver in keys[:3]:
            seats.apply(Approve.create(chain_id, "add", target, approver.public_key, validators.epoch, 9,
                                       approver.sign), validators, 10, NOW_MS)
    assert len(seats.standby) == MAX_STANDBY
    honest = FakeKeys("honest")
    for approver in keys[:3]:
        _apply(seats, Approve.create(chain_id, "add", honest.public_key, approver.public_key, validators.epoch, 9,
                                     approver.sign), genesis, validators)
    assert honest.public_key in seats.standby and len(seats.standby) == MAX_STANDBY, \
        "an approved join displaces a key nobody runs rather than being refused"
    seats.end_block(11, NOW_MS + SILENT_EXPIRE_MS + 1, bytes(32))
    assert not seats.standby, "standbys silent since they were admitted expire"


def test_a_seat_goes_to_an_unproven_standby_only_while_the_rest_keep_a_quorum_without_it():
    """A standby shows it holds the chain, not that it will vote: two stops handing seats to two that never vote
    would leave two of four voting. The second successor is refused while the first has not signed; one that
    never signs is removed after its probation and kept out until approved."""
    keys = [FakeKeys(f"p{i}") for i in range(4)]
    mutes = [FakeKeys(f"mute{i}") for i in range(2)]
    genesis = _genesis(keys)
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    token = _token(seats, genesis, validators, keys[0], uses=2)
    for mute in mutes:
        _apply(seats, _join(genesis, mute, token), genesis, validators)
        _alive(seats, genesis, validators, mute)
    first = Leave.create(chain_id, keys[1].public_key, validators.epoch, 9, mutes[0].public_key, keys[1].sign)
    after = _apply(seats, first, genesis, validators)
    assert after is not None and mutes[0].public_key in seats.probation
    second = Leave.create(chain_id, keys[2].public_key, after.epoch, 9, mutes[1].public_key, keys[2].sign)
    assert _problem(seats, second, genesis, after) == "successor_unproven"
    jail = Remove(mutes[0].public_key, "absent")
    assert _problem(seats, jail, genesis, after, height=20, time_ms=NOW_MS + 20_000) == "not_absent", \
        "within its probation"
    assert _problem(seats, jail, genesis, after, height=26, time_ms=NOW_MS + 20_000) is None
    without = seats.apply(jail, after, 26, NOW_MS + 20_000)
    assert without is not None and mutes[0].public_key not in without
    assert mutes[0].public_key not in seats.standby and mutes[0].public_key in seats.removed, \
        "a member that never signed is not jailed for another turn: back only by approval"
    alone = _genesis(keys[:1]).first_validators()
    assert seats.successor_safe(alone, keys[0].public_key, mutes[1].public_key), \
        "the only validator's seat goes to a standby: the other way nobody is left to finalise"
    proven = Seats()
    proven.probation[mutes[0].public_key] = (10, NOW_MS)
    proven.signed([mutes[0].public_key])
    assert not proven.probation, "a member seen signing is off probation"


def test_a_validator_that_left_can_be_kept_out_while_it_is_away():
    keys = [FakeKeys(f"d{i}") for i in range(4)]
    genesis = _genesis(keys)
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    leave = Leave.create(chain_id, keys[3].public_key, validators.epoch, 9, None, keys[3].sign)
    after = _apply(seats, leave, genesis, validators)
    assert after is not None and keys[3].public_key in seats.departed
    for approver in keys[:3]:       # the three that remain (a quorum of three is three)
        _apply(seats, Approve.create(chain_id, "remove", keys[3].public_key, approver.public_key, after.epoch, 9,
                                     approver.sign), genesis, after)
    assert keys[3].public_key not in seats.departed and keys[3].public_key in seats.removed
    seats.recent_blocks[9] = bytes(32)
    back = Alive.create(chain_id, keys[3].public_key, 9, bytes(32), keys[3].sign)
    assert _problem(seats, back, genesis, after) == "not_standby", "it asks back in vain"


def test_an_issuers_token_records_and_token_standbys_stay_within_its_quota():
    keys = [FakeKeys(f"b{i}") for i in range(4)]
    genesis = _genesis(keys)
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    for n in range(40):     # issue and revoke, over and over
        token = _token(seats, genesis, validators, keys[0], f"churn{n}", uses=1)
        _apply(seats, Revoke.create(chain_id, token.public_key, keys[0].public_key, validators.epoch, 5 + n % 3,
                                    keys[0].sign), genesis, validators)
    assert sum(1 for t in seats.tokens.values() if t.issuer == keys[0].public_key) <= 32
    short = _token(seats, genesis, validators, keys[1], "short", uses=8, ttl_ms=1_000)
    for n in range(8):
        _apply(seats, _join(genesis, FakeKeys(f"held{n}"), short), genesis, validators)
    for n in range(8):      # its standbys keep showing they are live ...
        seats.standby[FakeKeys(f"held{n}").public_key].alive_ms = NOW_MS + 3_600_000
    seats.end_block(11, NOW_MS + 1_000 + 3_600_000 + 1, bytes(32))     # ... while the token's record is gone
    assert short.public_key not in seats.tokens and len(seats.standby) == 8
    later = _token(seats, genesis, validators, keys[1], "later", uses=3)
    assert _problem(seats, _join(genesis, FakeKeys("ninth"), later), genesis, validators,
                    time_ms=NOW_MS + 3_600_000) == "issuer_standby_quota"


def test_approvals_that_cannot_complete_free_their_approvers():
    keys = [FakeKeys(f"a{i}") for i in range(4)]
    genesis = _genesis(keys)
    chain_id, validators, seats = genesis.chain_id, genesis.first_validators(), Seats()
    token = _token(seats, genesis, validators, keys[1], uses=8)
    for n in range(8):
        target = FakeKeys(f"target{n}")
        _apply(seats, Approve.create(chain_id, "add", target.public_key, keys[0].public_key, validators.epoch, 6,
                                     keys[0].sign), genesis, validators)
        _apply(seats, _join(genesis, target, token), genesis, validators)    # in by token first
    assert not seats.approvals, "an add that can no longer complete holds no approver's slot"
    slow = Approve.create(chain_id, "add", FakeKeys("slow").public_key, keys[0].public_key, validators.epoch, 7,
                          keys[0].sign)
    _apply(seats, slow, genesis, validators)
    seats.end_block(12, NOW_MS + 86_400_000 + 1, bytes(32))
    assert not seats.approvals, "an approval short of a quorum for a day is dropped"


def test_seats_survive_a_snapshot_and_are_in_the_state_hash():
    keys = [FakeKeys(f"s{i}") for i in range(3)]
    genesis = _genesis(keys[:1])
    validators, seats = genesis.first_validators(), Seats()
    token = _token(seats, genesis, validators, keys[0])
    _apply(seats, _join(genesis, keys[1], token), genesis, validators)
    _alive(seats, genesis, validators, keys[1], height=11)
    seats.end_block(11, NOW_MS, bytes(32))
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


def test_a_standby_claiming_a_height_it_does_not_have_is_no_successor():
    """Only the chain's record of a standby's `alive`s, each naming a block it holds, makes it a successor: a
    claimed height (in heartbeats, however high) counts for nothing, and an `alive` naming a block this chain
    does not have is refused."""
    sim = _network()
    core = next(n.core for n in sim.nodes if n.core is not None and n.core.is_validator)
    liar, live = FakeKeys("liar"), FakeKeys("live")
    state = core.state
    for key in (liar, live):
        state.seats.standby[key.public_key] = Standby(state.height, state.time_ms, "token", b"", 0)
    core.peer_height(liar.node_id, 1 << 62, core.now)
    lie = Alive.create(core.chain_id, liar.public_key, state.height, bytes(32), liar.sign)
    assert state.membership_problem(lie, state.height + 1, state.time_ms) == "unknown_block"
    leave = core.seat_requests.request_leave(core.now + 0.5)
    assert leave is not None and leave.successor is None, "a claimed height made a successor"
    truth = Alive.create(core.chain_id, live.public_key, state.height, state.last_block_id, live.sign)
    assert state.membership_problem(truth, state.height + 1, state.time_ms) is None
    state.seats.apply(truth, state.validators, state.height + 1, state.time_ms)
    leave = core.seat_requests.request_leave(core.now + 0.5)
    assert leave is not None and leave.successor == live.public_key
