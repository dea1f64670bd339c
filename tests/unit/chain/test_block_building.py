"""A proposer's block is valid by construction: measured as validation measures it, even when a full mempool
of the smallest transactions offers more than a block can hold (the wrapping of each transaction
and the header once made such blocks `block_too_large` at every validator, and the chain stopped)."""
from __future__ import annotations

from exchange.chain.types.blocks import Commit
from exchange.chain.core import ChainCore
from exchange.chain.config import CoreConfig
from exchange.crypto import SigningKey
from exchange.chain.types.genesis import Genesis
from exchange.app.txs import CancelOp, sign_tx
from tests.sim.chain_sim import BASE_TIME, FakeKeys, MemoryStore, SimApp, fake_verify


def test_a_full_mempool_of_the_smallest_transactions_still_yields_a_valid_block():
    keys = FakeKeys("proposer")
    genesis = Genesis("t", int(BASE_TIME * 1000), keys.public_key, (keys.public_key,),
                      exchange={"order_ttl_ms": 120_000})
    config = CoreConfig(max_block_bytes=400_000, max_block_txs=4000, block_seconds_target=0)     # unpaced: at its limits
    core = ChainCore(genesis, SimApp(), public_key=keys.public_key, sign=keys.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=config, now=BASE_TIME)
    accounts = [SigningKey(bytes([i]) * 32) for i in range(5)]      # an account holds at most 1,000 in the pool
    expires = int((BASE_TIME + 60) * 1000)
    for n in range(2500):       # ~200 bytes each: more than a block holds, and over 1,365 of them fit
        account = accounts[n % len(accounts)]
        tx = sign_tx(account.sign, account.public_key, core.chain_id, f"{n}", expires, [CancelOp.parse("BTC-USD", "o")])
        assert core.mempool.add(tx, lane=f"peer-{n % 16}") is None      # a lane fills a share of a block
    core.set_now(BASE_TIME + 1)
    block = core.builder.build_block()
    assert block.size <= config.max_block_bytes + 4096
    assert len(block.txs) > 1500, "the block should be nearly full"
    assert core.check.validate(block, int((BASE_TIME + 1) * 1000)) is None


def test_refused_proposals_are_counted_by_reason_and_blocks_decided_after_round_0_are_counted():
    """What the flood tests read on every node: proposals refused by reason (`block_too_large` was the halt)
    and blocks whose certificate is from a round after 0 (the chain did not decide in its first round)."""
    keys = FakeKeys("proposer")
    genesis = Genesis("t", int(BASE_TIME * 1000), keys.public_key, (keys.public_key,),
                      exchange={"order_ttl_ms": 120_000})
    core = ChainCore(genesis, SimApp(), public_key=keys.public_key, sign=keys.sign, verify=fake_verify,
                     blocks=MemoryStore(), config=CoreConfig(max_block_bytes=20_000, max_block_txs=4000), now=BASE_TIME)
    account = SigningKey(bytes([7]) * 32)
    expires = int((BASE_TIME + 60) * 1000)
    txs = [sign_tx(account.sign, account.public_key, core.chain_id, f"{n}", expires, [CancelOp.parse("BTC-USD", "o")])
           for n in range(200)]       # ~40 KB: twice what a block may carry
    core.set_now(BASE_TIME + 1)
    oversized = core.builder._assemble(core.now_ms, list(txs))
    assert core.check.validate(oversized, core.now_ms) == "block_too_large"
    assert core.check.validate(oversized, core.now_ms) == "block_too_large"       # the same block again: counted once
    wrong = core.builder._assemble(core.now_ms + 10_000, [])
    assert core.check.validate(wrong, core.now_ms) == "time_in_future"
    assert core.status(BASE_TIME + 1)["refused_proposals"] == {"block_too_large": 1, "time_in_future": 1}

    block = core.builder.build_block()
    core.apply(block, Commit(block.header.height, 0, block.id, ()), announce=False)
    assert core.status(BASE_TIME + 1)["blocks_past_round_0"] == 0
    core.set_now(BASE_TIME + 2)
    block = core.builder.build_block()
    core.apply(block, Commit(block.header.height, 2, block.id, ()), announce=False)
    assert core.status(BASE_TIME + 2)["blocks_past_round_0"] == 1
