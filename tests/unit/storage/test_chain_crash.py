"""Crash a one-validator chain node (the real ChainService, ChainCore, ExchangeState and ChainStore on FaultyFS)
at every write, fsync and rename of its block log, WAL, outbox, snapshots and compaction, on every disk image
such a crash could leave, then restart it and check the world it answered: every order answered 202 or 201
is in the chain, every 201 keeps the height and a status it may have moved on from, no order answered 507/503
ever appears, no decision it broadcast is contradicted, and the validator key never signed two different
blocks at one height, round and step where the WAL on that disk, or a decision it broadcast, holds its
signature (a signature in neither never left the node). The run also meets a full disk, a failed fsync and a clean restart.
"""
from __future__ import annotations

import asyncio
import errno
from functools import partial

import pytest

from tests.faultyfs import FaultyFS
from exchange.chain.store.block_store import ChainStore
from tests.unit.storage.chain_node import DATA_DIR, ChainNode, Record, signature_key
from tests.unit.storage.crashpoints import CrashStats, History, enumerate_crashes

ORDERS = 9
SNAPSHOT_INTERVAL = 4
LATER = {"open": {"open", "partially_filled", "filled", "cancelled"},
         "partially_filled": {"partially_filled", "filled", "cancelled"},
         "filled": {"filled"}, "cancelled": {"cancelled"}, "rejected": {"rejected"}, "expired": {"expired"}}


# snapshots every few heights and a short block window, so a short run saves snapshots and compacts
boot = partial(ChainNode.boot, snapshot_interval=SNAPSHOT_INTERVAL, keep_blocks=2)


async def trading_run(fs: FaultyFS, history: History) -> None:
    """Orders one by one, each followed by a tick; a full disk, a failed block fsync and a clean restart on
    the way; then idle time for empty blocks (and their snapshots)."""
    record = history.record = Record()  # type: ignore[attr-defined]
    node = await boot(fs, record)
    for n in range(ORDERS):
        if n == 3:
            fs.set_capacity(fs.used_bytes() + 64)
        elif n == 4:
            fs.set_capacity(None)
        elif n == 6:
            fs.fail("fdatasync", errno.EIO, path="/blocks/")
        elif n == 7:
            await node.stop()
            node = await boot(fs, record, now=node.now)
        history.attempted.append(n)
        outcome, _ = await node.place(n)
        (history.acked if outcome == "accepted" else history.failed).append(n)
        node.step(0.4)
        node.step(0.4)
    for _ in range(4):
        node.step(1.1)
    await node.stop()


def check_world(disk: FaultyFS, history: History, stats: CrashStats) -> None:
    disk.set_capacity(None)
    disk.clear_faults()
    record: Record = history.record  # type: ignore[attr-defined]
    asyncio.run(_restart_and_check(disk, record, stats))


def durable_signatures(disk: FaultyFS) -> tuple[dict[tuple, bytes | None], int]:
    """What the WAL on this disk image says the validator signed (what it must never contradict), and the
    height of the newest stored block."""
    store = ChainStore(DATA_DIR, fs=disk)
    try:
        signed = dict(filter(None, map(signature_key, store.wal_records()))) if store.wal_trustworthy else {}
        return signed, store.last_height
    finally:
        store.close()


async def _restart_and_check(disk: FaultyFS, record: Record, stats: CrashStats) -> None:
    record.waiting.clear()
    before = {height: block_id for height, block_id in record.decisions.items()}
    in_wal, stored_height = durable_signatures(disk)
    if any(height > stored_height for _, height, _ in in_wal):
        stats.note("resumed a height the WAL held signatures of")
    bound = {**in_wal, **record.published}
    record.signed = {}
    node = await boot(disk, record, now=record.now + 1.0)
    service, store = node.service, node.store
    assert service.fatal is None and service.halted is None
    assert service.recovering is None, f"a crash was taken for damage: {service.recovering}"
    assert service.core is not None
    for log in (store.blocks_log, store.wal_log, store.outbox_log):
        assert log.report.clean, log.report.summary()
    if store.snapshots.heights():
        stats.note("restarted with a snapshot")
    if store.first_height > 1:
        stats.note("restarted from a compacted log")
    for _ in range(10):
        node.step(0.5)
        if not service.core.own_pending():
            break
    assert not service.core.own_pending(), "the outbox never emptied"
    app = service.core.state.app
    for tx in record.accepted.values():
        assert app.order(tx.order_id(0)) is not None, f"order {tx.order_id(0)}, answered 202/201, is lost"
    for order_id, shown in record.finals.items():
        assert shown is not None, order_id
        now = app.order(order_id)
        assert now is not None and now["height"] == shown["height"], (order_id, shown, now)
        assert now["status"] in LATER[shown["status"]], (order_id, shown["status"], now["status"])
    for tx in record.failed.values():
        assert app.order(tx.order_id(0)) is None, f"order {tx.order_id(0)} was answered 507/503 yet it exists"
    for height, block_id in before.items():
        stored = store.get(height)
        if height >= store.first_height:
            assert stored is not None and stored[0].id == block_id, f"the decision at height {height} changed"
    twice = {key: ids for key, ids in record.signed.items() if len(ids | ({bound[key]} if key in bound else set())) > 1}
    assert not twice, f"after the restart the validator signed another block than it had: {twice}"
    await node.stop()
    stats.note("checked")


def test_trading_run_without_crash_meets_every_fault_it_is_built_for():
    record_holder = History()
    asyncio.run(trading_run(FaultyFS(), record_holder))
    record: Record = record_holder.record  # type: ignore[attr-defined]
    assert len(record.failed) >= 2 and len(record.accepted) >= ORDERS - 3
    assert len(record.finals) >= ORDERS - 3
    assert max(record.decisions) >= 2 * SNAPSHOT_INTERVAL


@pytest.mark.timeout(600)     # ~85 s alone; CPU-bound, so it stretches on a shared machine
@pytest.mark.parametrize("part", [0, 1])
def test_a_crash_at_any_point_keeps_every_answer_and_every_signature(part: int):
    """Every point, in two halves (even and odd points), so the fast tier's two workers share them."""
    stats = enumerate_crashes(trading_run, check_world, seeds=range(2), part=(part, 2))
    assert stats.findings.get("checked") == stats.runs
    assert stats.findings.get("restarted with a snapshot", 0) > stats.runs // 4
    assert stats.findings.get("restarted from a compacted log", 0) > 0
    assert stats.findings.get("resumed a height the WAL held signatures of", 0) > stats.runs // 20
