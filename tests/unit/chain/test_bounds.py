"""What anyone can make a node hold is bounded: certified blocks claimed for heights ahead are
kept only near our height, once their certificate checks out against our validator set, within a byte budget
and a quarter of it per sender (their parents cannot be checked until the blocks before them arrive); the
peers' chains the founding logic remembers are bounded too."""
from __future__ import annotations

import os

from exchange.chain.types.blocks import PRECOMMIT, Block, Commit, Header, vote_bytes
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.seats.founding import MAX_PEERS, Founding
from exchange.chain.types.genesis import Genesis
from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify

VALIDATOR = FakeKeys("bounds-validator")


def _follower(config: CoreConfig) -> ChainCore:
    me = FakeKeys("bounds-follower")
    genesis = Genesis("t", int(BASE_TIME * 1000), VALIDATOR.public_key, (VALIDATOR.public_key,))
    return ChainCore(genesis, SimApp(), public_key=me.public_key, sign=me.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=config, now=BASE_TIME)


def _claimed(core: ChainCore, height: int, size: int, signed: bool = True) -> tuple[Block, Commit]:
    """A block ahead, certified by our one validator (`signed`), or carrying a made-up signature."""
    items = [["a", os.urandom(size)]]
    header = Header(core.chain_id, height, int(BASE_TIME * 1000) + height, os.urandom(32), bytes(32), bytes(32),
                    bytes(32), Block.txs_hash(items), None)
    block = Block(header, items)
    sig = VALIDATOR.sign(vote_bytes(core.chain_id, PRECOMMIT, height, 0, block.id)) if signed else os.urandom(64)
    return block, Commit(height, 0, block.id, ((0, sig),))


def test_blocks_claimed_ahead_are_held_within_a_byte_budget_per_sender():
    config = CoreConfig(max_buffered_blocks=512, max_buffered_bytes=4 * 1024 * 1024)
    core = _follower(config)
    for height in range(2, 500):
        block, commit = _claimed(core, height, 100_000)
        core.on_message("chain_decision", [block.wire(), commit.wire()], "liar", BASE_TIME + 1)
    assert core.sync._buffered_bytes <= config.max_buffered_bytes // 4
    assert core.counters["buffer_refused"] > 400
    block, commit = _claimed(core, 400, 100_000)        # another sender still gets its share
    core.on_message("chain_decision", [block.wire(), commit.wire()], "honest", BASE_TIME + 1)
    assert core.sync._buffered[400][2] == "honest"
    far, far_commit = _claimed(core, 10_000, 10)
    core.on_message("chain_decision", [far.wire(), far_commit.wire()], "honest", BASE_TIME + 1)
    assert 10_000 not in core.sync._buffered, "a height far ahead of ours was held"


def test_blocks_claimed_ahead_with_made_up_signatures_are_neither_held_nor_believed():
    core = _follower(CoreConfig(max_buffered_blocks=512, max_buffered_bytes=4 * 1024 * 1024))
    for height in range(2, 300):
        block, commit = _claimed(core, height, 100_000, signed=False)
        core.on_message("chain_decision", [block.wire(), commit.wire()], f"fresh-{height}", BASE_TIME + 1)
    assert core.sync._buffered == {} and core.sync._buffered_bytes == 0
    assert core.counters["ahead_unverified"] == 298 and core.counters.get("buffer_refused", 0) == 0
    assert core.sync.highest_claim(BASE_TIME + 1) is None and core.sync.network_height(BASE_TIME + 1) is None, \
        "a made-up block counted as a claim of its height"
    assert core.sync._sync_inflight is None, "a made-up block sent us asking its sender for blocks"
    block, commit = _claimed(core, 7, 1_000)            # the certified one is still held
    core.on_message("chain_decision", [block.wire(), commit.wire()], "honest", BASE_TIME + 1)
    assert 7 in core.sync._buffered and core.sync.network_height(BASE_TIME + 1) == 7


def test_the_founding_logic_remembers_a_bounded_number_of_peers():
    founding = Founding("me", bytes(32), found_after=3.0, started=0.0)
    for n in range(5 * MAX_PEERS):
        founding.observe(f"peer{n}", b"", f"{n:064x}", 1, now=float(n) / 1000)
    assert len(founding.peers) <= MAX_PEERS
    assert f"peer{5 * MAX_PEERS - 1}" in founding.peers


def test_claimed_heights_of_fresh_keys_are_pruned_to_the_newest():
    from exchange.chain.sync.claims import MAX_HEARD
    from tests.sim.chain_sim import ChainSimulation, Scenario

    sim = ChainSimulation(3, Scenario(validators=1, followers=0, drop=0.0, duplicate=0.0, fault_until=0.0,
                                      settle=0.5, submit_rate=1.0))
    sim.run()
    core = sim.nodes[0].core
    assert core is not None
    now = core.now
    for i in range(MAX_HEARD + 10):
        core.peer_height(f"fresh-{i:05d}", core.state.height, now + i * 0.001)
    claims = core.sync.claims
    assert len(claims) <= MAX_HEARD and len(claims._lag) == len(claims)
    assert claims.heard(f"fresh-{MAX_HEARD + 9:05d}") is not None, "the newest claim is kept"
