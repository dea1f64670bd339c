"""Claimed heights (a heartbeat or an unchecked vote claiming 2^62 from a fresh key every 5 s kept
/ready at 503 for 96 % of 45 s). A claim counts only when f + 1 current validators make it or a quorum
certificate at that height checked out; a stranger's claim never makes a node behind, never keeps a standby
from its seat or a recovery from finishing, and never draws the node's sync request while f + 1 validators are
heard (within `live_after`; when they all went silent, a peer claiming more is asked, and struck if it lies);
every per-identity map of claims is bounded by count and age."""
from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from exchange.chain.types.blocks import PRECOMMIT, PREVOTE, Block, Commit, Header, Vote
from exchange.chain.boot import Recovering
from exchange.chain.sync.claims import HEARD_FOR, MAX_HEARD, STRIKES_FOR, HeightClaims
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.effects import Penalize, SendTo, SendValidators
from exchange.chain.types.genesis import Genesis
from exchange.chain.seats.join_token import JoinToken
from exchange.chain.state.seats import Token
from exchange.chain.recovery.history_recovery import HistoryRecovery
from exchange.chain.store.block_store import SIGN_FROM_UNKNOWN
from node.chain_feed import BEHIND_HEIGHTS, CATCH_UP_GRACE, FAR_BEHIND_HEIGHTS, ChainBridge
from tests.sim.chain_sim import BASE_TIME, SIM_CORE, ChainSimulation, FakeKeys, MemoryStore, Scenario, SimApp, fake_verify

LIE = 1 << 62


def _keys(count: int, name: str = "claims") -> list[FakeKeys]:
    return [FakeKeys(f"{name}-{i}") for i in range(count)]


def _core(validators: list[FakeKeys], me: FakeKeys, *, pinned: bool = True, admission: bool = False,
          config: CoreConfig = SIM_CORE) -> ChainCore:
    genesis = Genesis("t", int(BASE_TIME * 1000), validators[0].public_key, tuple(k.public_key for k in validators),
                      pinned=pinned)
    token = JoinToken.new().for_chain(genesis.chain_id) if admission else None
    core = ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=config, now=BASE_TIME,
                     join_token=token.key if token else None)
    if token is not None:       # as if validator 0 had granted it in the log
        core.state.seats.tokens[token.key.public_key] = Token(validators[0].public_key, 1, 1 << 50, False, 0)
    core.start(BASE_TIME)
    core.take_effects()
    return core


def _sync_requests(core: ChainCore) -> list[str]:
    return [e.node_id for e in core.take_effects()
            if isinstance(e, SendTo) and e.message["type"] == "chain_sync_request"]


def _lie_from_fresh_keys(core: ChainCore, count: int, now: float) -> list[str]:
    """`count` fresh keys, each a heartbeat at 2^62 and a chain_vote at 2^62 with a garbage signature, naming
    either itself or a real validator as the signer (nobody checks a vote that far ahead)."""
    liars = []
    validator = core.state.validators.keys[0]
    for n in range(count):
        liar = FakeKeys(f"liar-{n}-{os.urandom(4).hex()}")
        liars.append(liar.node_id)
        core.peer_height(liar.node_id, LIE, now)
        signer = liar.public_key if n % 2 else validator
        core.on_message("chain_vote", [PRECOMMIT, LIE, 0, None, signer, os.urandom(64)], liar.node_id, now)
    return liars


def test_fresh_keys_claiming_2_62_by_heartbeat_and_unchecked_vote_never_count_nor_draw_a_request():
    validators = _keys(4)
    follower = _core(validators, FakeKeys("claims-follower"))
    now = BASE_TIME + 1.0
    for key in validators:
        follower.peer_height(key.node_id, follower.height, now)
    liars = set(_lie_from_fresh_keys(follower, 200, now))
    assert follower.sync.network_height(now) == follower.height
    assert not set(_sync_requests(follower)) & liars, "a stranger's claim drew a sync request"
    for step in range(1, 30):                       # 3 s of ticks with no block: what counts says we are caught up
        if step % 10 == 0:                          # live validators keep saying so (a link heartbeat a second)
            for key in validators:
                follower.peer_height(key.node_id, follower.height, now + step * 0.1)
        follower.tick(now + step * 0.1)
    assert not set(_sync_requests(follower)) & liars
    assert follower.sync.network_height(now + 3) == follower.height


def test_a_validator_gone_silent_at_our_height_does_not_keep_us_from_a_peer_that_has_the_blocks():
    """Simulator seed 10979: a standby cut off while the set grew to include it; the only validator it knew
    crashed for good just after its last heartbeat. Its claim (at our height) stayed "heard" for CLAIMS_WITHIN
    (10 s), so the peers that had the blocks (strangers to our old set) were not asked, and the new set's
    quorum, which needed this node, waited as long. Heard means within `live_after`, as for the quorum view."""
    validators = _keys(1, "claims-gone")
    node = _core(validators, FakeKeys("claims-gone-standby"))
    peer = FakeKeys("claims-gone-peer").node_id        # a validator of a later set, unknown to our old one
    now = BASE_TIME + 1.0
    node.last_commit_at = now
    node.peer_height(validators[0].node_id, node.height, now)    # its last word, then it went down
    node.peer_height(peer, node.height + 9, now)
    node.take_effects()
    step = 0.1
    asked = []
    t = now
    while t < now + node.config.live_after + 2 * node.config.sync_retry:
        t += step
        node.tick(t)
        asked += _sync_requests(node)
    assert peer in asked, "nobody asked while the silent validator's claim was still within CLAIMS_WITHIN"


def test_one_lying_validator_of_four_cannot_raise_what_counts_and_f_plus_1_can():
    validators = _keys(4)
    follower = _core(validators, FakeKeys("claims-follower-2"))
    now = BASE_TIME + 1.0
    for key in validators:
        follower.peer_height(key.node_id, 0, now)
    follower.peer_height(validators[0].node_id, LIE, now)
    assert follower.sync.network_height(now) == 0, "f = 1: one validator's claim is not enough"
    follower.take_effects()
    follower.peer_height(validators[1].node_id, 50, now)
    assert follower.sync.network_height(now) == 50, "the second highest of f + 1 = 2 claims"
    follower.peer_height(validators[2].node_id, 70, now)
    assert follower.sync.network_height(now) == 70
    assert follower.sync.network_height(now + 11) is None, "claims older than 10 s count for nothing"


def test_what_counts_draws_the_request_from_a_validator_that_claims_it_not_from_a_louder_stranger():
    validators = _keys(4)
    follower = _core(validators, FakeKeys("claims-follower-3"))
    now = BASE_TIME + 1.0
    liars = set(_lie_from_fresh_keys(follower, 20, now))
    follower.take_effects()
    for key in validators[:2]:
        follower.peer_height(key.node_id, 40, now)
    asked = _sync_requests(follower)
    assert asked and asked[0] in {k.node_id for k in validators[:2]} and not set(asked) & liars, asked


def test_a_lying_validators_claim_is_put_to_the_test_and_discounted_when_not_backed():
    validators = _keys(4)
    follower = _core(validators, FakeKeys("claims-follower-4"))
    liar = validators[3].node_id
    now = BASE_TIME + 1.0
    for step in range(3):                           # asked at once, and again each time the last went unanswered
        follower.peer_height(liar, LIE, now + step * 1.1)
        assert liar in _sync_requests(follower)
    assert follower.sync.claims.discounted(liar, now + 2.5), "two requests unanswered: two strikes"
    assert follower.sync.validators_highest(now + 2.5) is None
    follower.peer_height(liar, LIE, now + 3.3)
    assert liar not in _sync_requests(follower), "a discounted validator is not asked again at once"


def test_ready_stays_200_while_fresh_keys_claim_2_62_and_says_catching_up_on_f_plus_1_validators():
    validators = _keys(4)
    follower = _core(validators, FakeKeys("claims-follower-5"))
    clock = [BASE_TIME + 1.0]
    follower.last_commit_at = clock[0]
    chain = SimpleNamespace(core=follower, fatal=None, halted=None, recovering=None, storage_problem=None,
                            finality_observers=[], block_listeners=[], config=CoreConfig(),
                            founding_status="founded", halt_watch=None)
    bridge = ChainBridge(chain, None, SimpleNamespace(observe_finality=lambda *a: None),  # type: ignore[arg-type]
                         stall_after=15.0, clock=lambda: clock[0])
    for key in validators:
        follower.peer_height(key.node_id, follower.height, clock[0])
    _lie_from_fresh_keys(follower, 50, clock[0])
    follower.peer_height(validators[0].node_id, LIE, clock[0])      # and one validator of four lies too
    assert bridge.ready() == (True, bridge.ready()[1]) and bridge.ready()[0], bridge.ready()
    follower.peer_height(validators[1].node_id, 30, clock[0])
    ready, reason = bridge.ready()
    assert not ready and reason == f"catching up: height {follower.height}, peers at 30", reason


def test_ready_lets_a_node_that_was_level_trail_a_few_heights_for_a_grace_and_not_longer_nor_far():
    """A follower applying a burst's full blocks trails the validators by a few heights for a second or so: it
    follows the chain live and stays ready. Trailing for longer than CATCH_UP_GRACE, or by more than
    FAR_BEHIND_HEIGHTS at any moment, it is catching up. (The network's height is scripted here: what f + 1
    validators' claims make of it is the tests above.)"""
    clock = [BASE_TIME]
    network = [0]
    core = SimpleNamespace(height=100, halted=None, role="follower", quorum_present=lambda now: True,
                           state=SimpleNamespace(validators=SimpleNamespace(epoch=1)))
    core.sync = SimpleNamespace(network_height=lambda now: core.height + network[0])
    chain = SimpleNamespace(core=core, fatal=None, halted=None, recovering=None, storage_problem=None,
                            finality_observers=[], block_listeners=[], config=CoreConfig(),
                            founding_status="founded", halt_watch=None)
    bridge = ChainBridge(chain, None, SimpleNamespace(observe_finality=lambda *a: None),  # type: ignore[arg-type]
                         stall_after=15.0, clock=lambda: clock[0])

    def at(seconds: float, ahead: int) -> tuple[bool, str]:
        """`seconds` on, the network `ahead` heights past us, having applied a block just now."""
        clock[0] += seconds
        core.height += 1
        network[0] = ahead
        for listener in chain.block_listeners:
            listener(None, None)
        return bridge.ready()

    assert at(1.0, 0)[0]
    assert at(0.5, BEHIND_HEIGHTS + 1)[0], "a few heights behind, level half a second ago: following"
    assert at(CATCH_UP_GRACE - 1.0, FAR_BEHIND_HEIGHTS)[0], "still within the grace"
    ready, reason = at(1.0, BEHIND_HEIGHTS + 1)
    assert not ready and reason == f"catching up: height {core.height}, peers at {core.height + BEHIND_HEIGHTS + 1}"
    assert at(0.1, BEHIND_HEIGHTS)[0], "level again"
    ready, reason = at(0.1, FAR_BEHIND_HEIGHTS + 1)
    assert not ready and "catching up" in reason, "far behind: catching up however lately it was level"
    network[0] = BEHIND_HEIGHTS + 1
    clock[0] += CATCH_UP_GRACE + 1.0
    assert bridge.ready()[0] is False, "behind since, with no block applied meanwhile: catching up"


def _standby(liars: int, validator_claims: list[int]) -> tuple[ChainCore, list[Any]]:
    validators = _keys(4, "join")
    joiner = _core(validators, FakeKeys("join-standby"), pinned=False, admission=True)
    now = BASE_TIME + 5.0
    for key, height in zip(validators, validator_claims):
        joiner.peer_height(key.node_id, height, now)
    _lie_from_fresh_keys(joiner, liars, now)
    joiner.take_effects()
    joiner.tick(now + 0.01)
    return joiner, [e for e in joiner.take_effects()
                    if isinstance(e, SendValidators) and e.message["type"] == "chain_membership"]


def test_a_caught_up_standby_asks_for_its_seat_whatever_fresh_keys_or_one_validator_claim():
    _, joins = _standby(liars=100, validator_claims=[0, 0, 0, LIE])
    assert len(joins) == 1, "fresh keys and one lying validator kept a caught-up node from asking for a seat"
    _, joins = _standby(liars=0, validator_claims=[0, 0, 40, 40])
    assert joins == [], "f + 1 validators ahead: not caught up, no seat asked for"
    _, joins = _standby(liars=100, validator_claims=[])
    assert joins == [], "no validator heard: fresh keys alone say nothing"


class _RecoveryStore:
    missing_heights: list[int] = []
    wal_trustworthy = True

    def __init__(self) -> None:
        self.sign_from: int | None = None

    def save_sign_from(self, height: int) -> None:
        self.sign_from = height

    def wal_records(self) -> list[object]:
        return []


def _recovering(core: ChainCore) -> tuple[HistoryRecovery, _RecoveryStore, list[float]]:
    """`core` recovering a damaged tail: it signs nothing until `progress` says it has caught up."""
    core.consensus.sign_from = SIGN_FROM_UNKNOWN
    store = _RecoveryStore()
    clock = [BASE_TIME + 1.0]
    history = HistoryRecovery(store, lambda: clock[0], timeout=60.0)  # type: ignore[arg-type]
    recovering: Recovering = {"since": clock[0], "need_height": 0, "missing": "the signing record",
                              "tail_damaged": True, "damage": "test"}
    history.recovering = recovering
    return history, store, clock


def test_a_recovering_validator_finishes_while_fresh_keys_claim_2_62_and_waits_for_a_validators_higher_claim():
    validators = _keys(4, "recover")
    core = _core(validators, validators[1])
    history, store, clock = _recovering(core)
    for key in validators[2:]:
        core.peer_height(key.node_id, core.height, clock[0])
    _lie_from_fresh_keys(core, 100, clock[0])
    core.peer_height(validators[0].node_id, core.height + 50, clock[0])   # a validator ahead (or lying)
    history.progress(core, 0)
    assert history.recovering is not None, "recovered below a validator's claim: we may have signed there"
    for _ in range(3):                           # asked for its blocks, it hands over none: struck twice
        clock[0] += SIM_CORE.sync_retry + 0.1
        core.peer_height(validators[0].node_id, core.height + 50, clock[0])
        for key in validators[2:]:
            core.peer_height(key.node_id, core.height, clock[0])
        core.tick(clock[0])
    history.progress(core, 0)
    assert history.recovering is None and store.sign_from == core.height + 1, (history.recovering, store.sign_from)


def test_every_per_identity_map_of_claims_is_bounded_by_age_and_count():
    claims = HeightClaims()
    for n in range(MAX_HEARD + 500):
        claims.record(f"fresh-{n}", LIE, BASE_TIME + n * 0.001, 0)
        claims.strike(f"fresh-{n}", BASE_TIME + n * 0.001)
    assert len(claims) <= MAX_HEARD and len(claims._strikes) <= MAX_HEARD
    later = BASE_TIME + 10.0 + max(HEARD_FOR, STRIKES_FOR)
    claims.record("honest", 5, later, 5)
    claims.prune(later)
    assert len(claims) == 1 and claims._strikes == {} and set(claims._lag) == {"honest"}


def test_a_core_prunes_claims_and_help_owed_as_it_ticks():
    validators = _keys(4, "prune")
    core = _core(validators, validators[0])
    now = BASE_TIME + 1.0
    _lie_from_fresh_keys(core, 300, now)
    core.sync._maybe_behind["gone"] = (1, now)
    core.sync._catchup_sent["gone"] = (1, now)
    core.tick(now + HEARD_FOR + 1.0)
    assert len(core.sync.claims) == 0 and "gone" not in core.sync._maybe_behind and "gone" not in core.sync._catchup_sent


def _block_ahead(core: ChainCore, keys: list[FakeKeys], height: int, *, signed: bool = True) -> tuple[Block, Commit]:
    state = core.state
    header = Header(core.chain_id, height, int(BASE_TIME * 1000) + height, os.urandom(32), state.validators.keys[0],
                    os.urandom(32), state.validators.hash, Block.txs_hash([]), None)
    block = Block(header, [])
    by_key = {k.public_key: k for k in keys}
    sigs = tuple((i, Vote.create(core.chain_id, PRECOMMIT, height, 0, block.id, key, by_key[key].sign).sig
                  if signed else os.urandom(64)) for i, key in enumerate(state.validators.keys))
    return block, Commit(height, 0, block.id, sigs)


def test_a_certificate_checked_for_a_height_ahead_counts_and_a_made_up_one_costs_its_sender():
    validators = _keys(4, "ahead")
    follower = _core(validators, FakeKeys("ahead-follower"))     # it hears no validator at all
    now = BASE_TIME + 1.0
    relay = FakeKeys("ahead-relay").node_id
    block, commit = _block_ahead(follower, validators, 40)
    follower.on_message("chain_decision", [block.wire(), commit.wire()], relay, now)
    assert follower.sync.network_height(now) == 40
    assert _sync_requests(follower) == [relay], "the node that handed over the certified block is asked"
    forger = FakeKeys("ahead-forger").node_id
    fake, fake_commit = _block_ahead(follower, validators, 90, signed=False)
    follower.on_message("chain_decision", [fake.wire(), fake_commit.wire()], forger, now + 1)
    assert follower.sync.network_height(now + 1) == 40
    assert [e.reason for e in follower.take_effects() if isinstance(e, Penalize) and e.node_id == forger] \
        == ["bad_commit_ahead"]


def test_replayed_old_votes_of_a_validator_draw_no_blocks_and_the_last_height_one():
    sim = ChainSimulation(7, Scenario(validators=4, followers=0, drop=0.0, duplicate=0.0, fault_until=2.0,
                                      settle=2.0, submit_rate=20.0))
    assert not sim.run()["problems"]
    core = sim.nodes[0].core
    assert core is not None and core.height >= 8
    target = sim.nodes[3].keys
    core.sync.claims = HeightClaims()           # the target is not linked to us: no heartbeat says what it has
    core.take_effects()
    attacker = FakeKeys("replayer").node_id
    now = core.now
    sent: list[SendTo] = []
    for height in range(1, core.height - 1):    # its precommits are in every commit: anyone can replay them
        vote = Vote.create(core.chain_id, PRECOMMIT, height, 0, os.urandom(32), target.public_key, target.sign)
        core.on_message("chain_vote", vote.wire(), attacker, now)
        now += core.config.catchup_delay + 0.01
        core.tick(now)
        sent += [e for e in core.take_effects() if isinstance(e, SendTo) and e.message["type"] == "chain_decision"]
    assert sent == [], f"{len(sent)} blocks sent for {core.height - 2} replayed old votes"
    vote = Vote.create(core.chain_id, PREVOTE, core.height, 0, None, target.public_key, target.sign)
    core.on_message("chain_vote", vote.wire(), attacker, now)
    core.tick(now + 1.0)
    sent = [e for e in core.take_effects() if isinstance(e, SendTo) and e.message["type"] == "chain_decision"]
    assert [e.node_id for e in sent] == [target.node_id], "a validator heard at the height just decided gets it"


def test_the_only_validator_recovers_to_its_followers_claim_once_a_liars_claim_is_tested():
    """The only validator has no other validator to believe: its followers hold the blocks it lost, so every
    claim counts until it is put to the test (sync asks the claimant; two unanswered requests discount it)."""
    alone = FakeKeys("recover-alone")
    core = _core([alone], alone)
    history, store, clock = _recovering(core)
    follower, liar = FakeKeys("recover-follower").node_id, FakeKeys("recover-liar").node_id
    core.peer_height(follower, core.height, clock[0])
    core.peer_height(liar, LIE, clock[0])
    history.progress(core, 0)
    assert history.recovering is not None, "a claim above ours, not yet tested"
    asked: list[str] = []
    for _ in range(4):
        clock[0] += SIM_CORE.sync_retry + 0.1
        core.peer_height(follower, core.height, clock[0])
        core.tick(clock[0])
        asked += _sync_requests(core)
        history.progress(core, 0)
        if history.recovering is None:
            break
    assert asked and set(asked) == {liar}, asked
    assert history.recovering is None and store.sign_from == core.height + 1


def test_sync_asks_a_validator_claiming_the_height_before_any_stranger_even_one_with_strikes():
    """A validator whose request was ignored (its sync budget spent) has a strike; a fresh key has none. The
    validator is still asked first: a stranger's claim costs nothing."""
    import random
    claims = HeightClaims()
    claims.record("validator", 100, 10.0, 50)
    claims.strike("validator", 10.0)
    for n in range(20):
        claims.record(f"stranger-{n}", 2**62, 10.0, 50)
    rng = random.Random(1)
    assert {claims.source(100, ["validator"], 11.0, 30.0, rng) for _ in range(20)} == {"validator"}
    assert claims.source(200, ["validator"], 11.0, 30.0, rng) != "validator"     # only strangers claim 200
