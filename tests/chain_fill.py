"""Put N orders into a one-validator node's DATA_DIR through its own chain code, in process: the real
ChainService, ChainCore, ExchangeState and ChainStore on the real disk, but no HTTP and no network, and a
clock that moves a fixed step per block. A real `exchange-node start --data-dir DIR` then takes over the
directory (same key, same genesis) as if it had made those blocks itself, so restart time, disk use and
memory are measured on what a node under that load would hold.

Each block holds one transaction of one account: a buyer's and a seller's in turn, at one price, so each block
fills the one before it (the last is a sell, so the newest orders are filled) and the book stays steady (plus
`resting` orders placed first, far from the price, that stay open all along). `fill(dir, orders, heights=...)`
spreads the orders evenly over the heights; every `snapshot_interval` heights (500, the chain's) a snapshot is
saved and the block log is compacted behind it unless `compact=False`.

    result = asyncio.run(fill(Path(dir), 100_000, heights=4000, progress=print))
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from exchange.chain.config import CoreConfig
from exchange.crypto import SigningKey
from exchange.chain.types.genesis import Genesis
from exchange.chain.service import ChainService
from exchange.app import ExchangeParams
from exchange.chain.store.block_store import KEEP_BLOCKS_BEHIND_SNAPSHOT as KEEP_BLOCKS, ChainStore
from exchange.app.txs import NewOrderOp, Op, sign_tx
from node.identity import NodeIdentity
from tests.harness import rss_kib

NETWORK_ID = "exchange-mainnet"
MARKETS = "BTC-USD"
BLOCK_SECONDS = 0.25
SNAPSHOT_INTERVAL = 500      # the chain's default (Genesis.snapshot_interval)
BUYER = SigningKey(hashlib.sha256(b"fill-buyer").digest())
SELLER = SigningKey(hashlib.sha256(b"fill-seller").digest())


class NoNetwork:
    def send(self, node_id: str, message: dict) -> None: pass
    def broadcast(self, message: dict) -> None: pass
    def penalize(self, node_id: str, points: float, reason: str) -> None: pass
    def network_of(self, node_id: str) -> str | None:
        return None
    def hold_reading(self, node_id: str, seconds: float) -> None: pass
    def keep_linked(self, node_ids: set[str]) -> None: pass
    def linked_providers(self, service: str) -> list[str]: return []
    def offer(self, service: str, handler: Any) -> None: pass
    def withdraw(self, service: str) -> None: pass

    async def call(self, service: str, payload: Any, timeout: float, peer: str | None = None) -> Any:
        raise ConnectionError("alone")


@dataclass
class FillResult:
    orders: int = 0
    heights: int = 0
    seconds: float = 0.0
    refused: dict[str, int] = field(default_factory=dict)
    recent_order_ids: list[str] = field(default_factory=list)    # a few orders of the last two transactions
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


async def fill(data_dir: Path, orders: int, *, heights: int, resting: int = 1000, compact: bool = True,
               checkpoints: int = 10, progress: Callable[[dict[str, Any]], None] | None = None) -> FillResult:
    identity = NodeIdentity.load_or_create(data_dir)
    start = time.time() - heights * BLOCK_SECONDS - 5
    clock = [start]
    store = ChainStore(data_dir, keep_blocks=KEEP_BLOCKS if compact else 1 << 40)
    if store.load_genesis() is None:
        params = ExchangeParams(markets=MARKETS)
        store.save_genesis(Genesis(network_id=NETWORK_ID, created_ms=int(start * 1000) - 1000,
                                   founder=identity.public_key_bytes, validators=(identity.public_key_bytes,),
                                   pinned=True, exchange=params.to_wire(), snapshot_interval=SNAPSHOT_INTERVAL))
    service = ChainService(identity, NoNetwork(), store, network_id=NETWORK_ID, markets=MARKETS, found_after=0.0,
                           snapshot_interval=SNAPSHOT_INTERVAL, clock=lambda: clock[0],
                           # it fills the store as fast as it can: the account rates are not what it measures
                           config=CoreConfig(account_ops_rate=0, group_ops_rate=0))
    result = FillResult()
    try:
        await service.start()
        for task in service._tasks:
            task.cancel()
        await asyncio.gather(*service._tasks, return_exceptions=True)
        service._tasks = []
        core = service.core
        assert core is not None
        began = time.perf_counter()

        sent = [0]

        async def submit(key: SigningKey, ops: list[Op]) -> None:
            sent[0] += 1
            tx = sign_tx(key.sign, key.public_key, core.chain_id, f"f{sent[0]}", int(clock[0] * 1000) + 60_000, ops)
            why, _ = await service.submissions.submit(tx)
            if why is not None:
                result.refused[why] = result.refused.get(why, 0) + 1
            result.recent_order_ids = result.recent_order_ids[-3:] + [tx.order_id(i) for i in range(min(3, len(ops)))]
            clock[0] += BLOCK_SECONDS
            core.tick(clock[0])
            service.pump()

        for side, key, price in (("buy", BUYER, "90.00"), ("sell", SELLER, "110.00")):
            for first in range(0, resting // 2, 250):
                await submit(key, [NewOrderOp("BTC-USD", side, "limit", price, "1", None)]
                             * min(250, resting // 2 - first))
        every = max(1, heights // checkpoints)
        placed = 0
        for height in range(heights):
            count = (height + 1) * orders // heights - placed
            if count:
                key, side = (BUYER, "buy") if height % 2 == 0 else (SELLER, "sell")
                for first in range(0, count, 250):
                    await submit(key, [NewOrderOp("BTC-USD", side, "limit", "100.00", "1", None)]
                                 * min(250, count - first))
                placed += count
            if (height + 1) % every == 0 or height + 1 == heights:
                gc.collect()
                stats = store.stats()
                point = {"orders": placed, "height": core.height, "seconds": time.perf_counter() - began,
                         "rss_kib": rss_kib(), "disk_bytes": disk_bytes(data_dir / "chain"),
                         "blocks_bytes": stats["blocks"]["bytes"], "blocks_first": stats["blocks"]["first_index"],
                         "snapshot_bytes": stats["snapshots"]["bytes"],
                         "open_orders": len(core.state.app.orders(None, "open", 1 << 30))}   # type: ignore[attr-defined]
                result.checkpoints.append(point)
                if progress is not None:
                    progress(point)
        result.orders, result.heights = placed, core.height
        result.seconds = time.perf_counter() - began
    finally:
        await service.stop()
        await store.outbox_commit.close()
    return result

