"""Proved reads wait for the block that certifies them: woken when it is stored, bounded per address and in all."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

from exchange.chain.service import ChainService
from node.api import proofs
from node.api.base import ApiError
from node.api.proofs import NextBlocks


def _chain() -> Any:
    return SimpleNamespace(block_listeners=[])


def test_a_stored_block_wakes_the_reads_waiting_for_it_or_a_lower_height():
    async def run() -> None:
        chain = _chain()
        waits = NextBlocks(cast(ChainService, chain))
        low = asyncio.ensure_future(waits.wait(5, "10.0.0.1", 5.0))
        high = asyncio.ensure_future(waits.wait(7, "10.0.0.1", 0.05))
        await asyncio.sleep(0)
        chain.block_listeners[0](SimpleNamespace(height=6), None)
        assert await low is True and await high is False      # 7 is not stored: the read gives up
        assert waits.count == 0 and not waits.by_address and not waits.waiting
    asyncio.run(run())


def test_waiting_reads_are_bounded_per_address_and_in_all(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(proofs, "MAX_WAITING", 5)
    monkeypatch.setattr(proofs, "MAX_WAITING_PER_ADDRESS", 3)

    async def run() -> None:
        chain = _chain()
        waits = NextBlocks(cast(ChainService, chain))
        held = [asyncio.ensure_future(waits.wait(9, "10.0.0.1", 5.0)) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as one:
            await waits.wait(9, "10.0.0.1", 5.0)
        assert one.value.status == 429
        held += [asyncio.ensure_future(waits.wait(9, "10.0.0.2", 5.0)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as all_:
            await waits.wait(9, "10.0.0.3", 5.0)
        assert all_.value.status == 503
        chain.block_listeners[0](SimpleNamespace(height=9), None)
        assert await asyncio.gather(*held) == [True] * 5 and waits.count == 0
    asyncio.run(run())
