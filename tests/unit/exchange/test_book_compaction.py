"""The book's lazy structures (price-key heap with stale keys, level queues with cancelled slots)
compact with the real constants: many levels and orders cancelled away from the best price must
leave views, matching and the reference matcher in agreement."""
from __future__ import annotations

import random

from exchange.commands import CancelOrder, NewOrder
from exchange.markets import parse_market_entry
from exchange.matching import MatchingEngine
from exchange.orders import OrderType, Side
from tests.unit.exchange.reference import ReferenceMatcher, describe


def test_heap_and_queue_compaction_keep_the_book_right():
    engine = MatchingEngine(parse_market_entry("TEST-USD:0.01:0.1:0.1:1000000:1:1000000"))
    reference = ReferenceMatcher()
    rng = random.Random(7)
    live: list[str] = []

    def apply(command) -> None:
        got = [describe(e) for e in engine.apply(command)]
        want = reference.apply(command)
        assert got == want, (command, got, want)

    for i in range(3000):  # 600 distinct bid levels below 10,000 and asks above 20,000: no crossing
        side = Side.BUY if i % 2 else Side.SELL
        price = 10_000 - (i % 600) if side is Side.BUY else 20_000 + (i % 600)
        apply(NewOrder(f"o{i}", side, OrderType.LIMIT, 1 + i % 5, price, f"acct{i % 9}"))
        live.append(f"o{i}")
    rng.shuffle(live)
    for order_id in live[:2900]:  # cancel most orders, emptying most levels away from the top
        apply(CancelOrder(order_id))
    for i in range(400):  # re-open emptied prices (stale twins of their keys may still sit in the heap)
        side = Side.BUY if i % 2 else Side.SELL
        price = 10_000 - (i % 600) if side is Side.BUY else 20_000 + (i % 600)
        apply(NewOrder(f"r{i}", side, OrderType.LIMIT, 2, price, "again"))
        if i % 3:
            apply(CancelOrder(f"r{i}"))
    for book_side in (engine.book.bids, engine.book.asks):
        assert len(book_side.heap) <= 2 * len(book_side.levels) + 64  # stale keys were compacted
    book = engine.book.depth()
    assert book["bids"] == sorted(book["bids"], key=lambda level: -level[0])
    assert book["asks"] == sorted(book["asks"], key=lambda level: level[0])
    # a sweep across the remaining levels trades exactly like the reference
    apply(NewOrder("sweep-buy", Side.BUY, OrderType.MARKET, 10_000, None, "taker"))
    apply(NewOrder("sweep-sell", Side.SELL, OrderType.MARKET, 10_000, None, "taker"))
    assert engine.best_bid() is None and engine.best_ask() is None
