"""A proposer's blocks hold what the network decides within the pace's target (block_pace.py), learnt from the
heights it saw decided; the limit changes only what this validator proposes."""
from __future__ import annotations

from exchange.app.txs import CancelOp, sign_tx
from exchange.chain.consensus.block_pace import FLOOR, START, BlockPace
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.effects import Committed
from exchange.chain.types.genesis import Genesis
from exchange.chain.mempool.pool import Mempool
from exchange.crypto import SigningKey
from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify
from tests.unit.chain.test_mempool_lanes import tx


def test_a_slow_height_sets_the_limit_to_what_would_have_fitted_and_quick_full_ones_raise_it_back() -> None:
    assert BlockPace(0.2, 3968).limit == START
    pace = BlockPace(0.2, 3968, start=1024)
    pace.observe(1024, 0.8)                         # four times the target: a quarter would have fitted
    assert pace.limit == 256 and pace.lowered == 1
    pace.observe(10, 5.0)                           # a height of a few: fixed costs, says nothing of the limit
    assert pace.limit == 256
    limits = []
    for _ in range(40):                             # full heights decided within half the target
        pace.observe(pace.limit, 0.05)
        limits.append(pace.limit)
    assert limits == sorted(limits) and limits[-1] == 3968, limits
    assert all(b - a <= max(FLOOR, a // 4) for a, b in zip(limits, limits[1:])), limits    # by a quarter at most
    pace.observe(3968, 0.1)                         # full, within the target but not half of it: kept
    assert pace.limit == 3968


def test_quick_heights_of_a_few_transactions_do_not_raise_the_limit() -> None:
    pace = BlockPace(0.2, 3968)
    for _ in range(100):
        pace.observe(3, 0.01)
    assert pace.limit == START


def test_the_limit_stays_within_its_floor_and_ceiling_and_zero_target_means_no_pace() -> None:
    pace = BlockPace(0.2, 3968)
    pace.observe(START, 1000.0)
    assert pace.limit == FLOOR
    off = BlockPace(0, 3968)
    off.observe(3968, 100.0)
    assert off.limit == 3968 and off.view()["lowered"] == 0


def test_reap_takes_up_to_the_paced_limit_while_each_lane_keeps_its_share_of_a_full_block() -> None:
    pool = Mempool(lane_block_share=1 / 16)
    for _ in range(300):
        assert pool.add(tx(), "flooder") is None
    honest = tx()
    assert pool.add(honest, "honest") is None
    reaped = pool.reap(100, 10**9, lane_of=3968)
    assert len(reaped) == 100 and honest in reaped      # the honest lane's turn comes in the first round
    assert len(pool.reap(3968, 10**9, lane_of=3968)) == 3968 // 16 + 1     # a lane's share of a full block


def test_a_validator_proposes_less_after_a_slow_height_and_more_after_quick_full_ones() -> None:
    """A one-validator chain with a backlog: the first height, started with transactions waiting, is decided a
    second later (five times the target); the next blocks, decided at once, grow back by a quarter each (FLOOR at least)."""
    keys = FakeKeys("proposer")
    genesis = Genesis("t", int(BASE_TIME * 1000), keys.public_key, (keys.public_key,),
                      exchange={"order_ttl_ms": 120_000})
    core = ChainCore(genesis, SimApp(), public_key=keys.public_key, sign=keys.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=CoreConfig(block_seconds_target=0.2), now=BASE_TIME)
    accounts = [SigningKey(bytes([i]) * 32) for i in range(5)]      # an account holds at most 1,000 in the pool
    expires = int((BASE_TIME + 60) * 1000)
    for n in range(2000):
        account = accounts[n % len(accounts)]
        tx = sign_tx(account.sign, account.public_key, core.chain_id, f"{n}", expires, [CancelOp.parse("BTC-USD", "o")])
        assert core.mempool.add(tx, lane=f"peer-{n % 16}") is None
    core.start(BASE_TIME)
    core.tick(BASE_TIME + 1.0)
    sizes = [len(effect.block.txs) for effect in core.take_effects().effects if isinstance(effect, Committed)]
    assert sizes[:6] == [START, FLOOR, 2 * FLOOR, 3 * FLOOR, 4 * FLOOR, 5 * FLOOR], sizes     # FLOOR or a quarter
    assert sum(sizes) == 2000 and core.builder.pace.view()["lowered"] == 1
