"""What one of our API's orders costs the only validator: transactions made durable together share a height, and
a height's WAL records share one sync. The real service, core and store of a lone validator in process
(`tests/unit/storage/chain_node.py`), driven through `Submissions.submit` as the API drives it."""
from __future__ import annotations

import asyncio

from exchange.app.results import TxResult
from exchange.app.txs import SignedTx
from storage.fs import FileHandle
from tests.faultyfs import FaultyFS
from tests.unit.storage.chain_node import ChainNode, Record


class CountingFS(FaultyFS):
    """Counts the syncs of each directory's files."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: dict[str, int] = {}

    def fdatasync(self, handle: FileHandle) -> None:
        directory = handle.path.rsplit("/", 2)[-2]
        self.syncs[directory] = self.syncs.get(directory, 0) + 1
        super().fdatasync(handle)


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


async def test_a_refused_transaction_of_a_batch_leaves_the_outbox_and_the_rest_go_on(monkeypatch):
    node = await ChainNode.boot(FaultyFS(), Record())
    good, bad = node.make_tx(1), node.make_tx(2)
    core = node.service.core
    assert core is not None
    original = core.intake.admit

    def admit(tx: SignedTx, checked: bool = False, lane: str = "self") -> str | None:
        return "mempool_full" if tx.id == bad.id else original(tx, checked, lane)   # refused once durable
    monkeypatch.setattr(core.intake, "admit", admit)
    (why_good, future_good), (why_bad, future_bad) = await asyncio.gather(
        node.service.submissions.submit(good), node.service.submissions.submit(bad))
    assert (why_good, why_bad) == (None, "mempool_full")
    assert future_bad.done() and future_bad.result() is None
    assert isinstance(await asyncio.wait_for(future_good, 5), TxResult)
    assert [tx.id for tx in node.store.outbox()] == []
    await node.stop()


async def test_the_only_validators_height_syncs_its_wal_once():
    fs = CountingFS()
    node = await ChainNode.boot(fs, Record())
    core = node.service.core
    assert core is not None
    start = core.height
    fs.syncs.clear()
    assert (await node.place(1))[0] == "accepted"
    assert core.height == start + 1
    # its proposal, prevote and precommit: one sync, not one before each (nothing leaves a lone validator between)
    assert fs.syncs.get("wal") == 1, fs.syncs
    assert fs.syncs.get("blocks") == 1, fs.syncs
    await node.stop()


async def test_a_clients_signature_is_checked_once_from_the_api_to_the_block(monkeypatch):
    node = await ChainNode.boot(FaultyFS(), Record())
    tx = node.make_tx(1)
    checked: list[str] = []
    real = SignedTx.signature_valid

    def counting(self: SignedTx, *args: object) -> bool:
        checked.append(self.id)
        return real(self, *args)
    monkeypatch.setattr(SignedTx, "signature_valid", counting)
    submissions = node.service.submissions
    assert submissions.signature_valid(tx)          # the API's own check, before it answers 401 or goes on
    why, future = await submissions.submit(tx)
    assert why is None and isinstance(await asyncio.wait_for(future, 5), TxResult)
    assert checked == [tx.id], "the intake, the mempool or the block checks verified it again"
    await node.stop()


async def test_a_failure_handing_a_batch_to_the_core_reaches_every_caller(monkeypatch):
    node = await ChainNode.boot(FaultyFS(), Record())
    core = node.service.core
    assert core is not None

    def broken(txs: list[SignedTx], now: float) -> list[str | None]:
        raise RuntimeError("a bug in the core")
    monkeypatch.setattr(core.intake, "submit_many", broken)
    monkeypatch.setattr(asyncio.get_running_loop(), "call_exception_handler", lambda context: None)
    results = await asyncio.wait_for(asyncio.gather(
        *(node.service.submissions.submit(node.make_tx(n)) for n in range(3)), return_exceptions=True), 5)
    assert [type(r) for r in results] == [RuntimeError] * 3
    await node.stop()
