"""Our API's transactions made durable together share a height: the real service, core and store of a lone
validator in process (`tests/unit/storage/chain_node.py`), driven through `Submissions.submit` as the API drives
it."""
from __future__ import annotations

import asyncio

from exchange.app.results import TxResult
from tests.faultyfs import FaultyFS
from tests.unit.storage.chain_node import ChainNode, Record


async def _concurrent_orders(count: int) -> tuple[ChainNode, int, list]:
    node = await ChainNode.boot(FaultyFS(), Record())
    core = node.service.core
    assert core is not None
    start = core.height
    txs = [node.make_tx(n) for n in range(count)]
    answers = await asyncio.gather(*(node.service.submissions.submit(tx) for tx in txs))
    assert [why for why, _ in answers] == [None] * count
    outcomes = await asyncio.wait_for(asyncio.gather(*(future for _, future in answers)), 5)
    return node, start, outcomes


async def test_orders_made_durable_together_go_in_one_block_and_each_caller_gets_its_result():
    node, start, outcomes = await _concurrent_orders(8)
    core = node.service.core
    assert core is not None
    # one at a time, each started a height of its own: eight blocks, each with its votes, WAL sync and block sync
    assert core.height == start + 1
    block, _ = next(node.store.blocks(start + 1))
    assert len(block.txs) == 8
    assert all(isinstance(outcome, TxResult) for outcome in outcomes)
    assert len({outcome.tx_id for outcome in outcomes}) == 8
    await node.stop()


async def test_a_refused_transaction_of_a_batch_leaves_the_outbox_and_the_rest_go_on():
    node = await ChainNode.boot(FaultyFS(), Record())
    good, bad = node.make_tx(1), node.make_tx(2)
    core = node.service.core
    assert core is not None
    original = core.intake.admit

    def admit(tx, checked=False, lane="self"):      # the mempool refuses `bad` once it is durable
        return "mempool_full" if tx.id == bad.id else original(tx, checked, lane)
    core.intake.admit = admit
    (why_good, future_good), (why_bad, future_bad) = await asyncio.gather(
        node.service.submissions.submit(good), node.service.submissions.submit(bad))
    assert (why_good, why_bad) == (None, "mempool_full")
    assert future_bad.done() and future_bad.result() is None
    assert isinstance(await asyncio.wait_for(future_good, 5), TxResult)
    assert [tx.id for tx in node.store.outbox()] == []
    await node.stop()
