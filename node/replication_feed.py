"""The operator surface's view of today's replicated book (`exchange.replication.ReplicationService`).

It is the stream's `MarketSource`, turns each final event into the feed's level changes, trades
and own-order updates (from the ledger's listener), times own events from submission to finality
for `FinalityTracker.observe_finality`, and exposes the replica's readiness and metrics. When the
BFT chain replaces the replicated book, a module with these same four duties replaces this one.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exchange.events import OrderAccepted, OrderCancelled, OrderReduced, Trade
from exchange.orders import Side
from node.finality import FinalityTracker
from node.marketdata.book import Level
from node.marketdata.feed import MarketFeed, TradePrint
from node.metrics import CounterNames, split_counters

BOOK_SIDE = {Side.BUY: "bids", Side.SELL: "asks", "buy": "bids", "sell": "asks"}
REMEMBERED = 10_000      # own events awaiting finality, and trade ids already published (rollback replays)
REPLICATION_COUNTERS = CounterNames("exchange_node_replication", "Replication")


def _bounded_put(table: OrderedDict, key: Any, value: Any) -> None:
    table[key] = value
    if len(table) > REMEMBERED:
        table.popitem(last=False)


class ReplicationBridge:
    def __init__(self, service: Any, node_id: str, finality: FinalityTracker,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.node_id = node_id
        self.finality = finality
        self.clock = clock
        self.feed: MarketFeed | None = None
        self._submitted: OrderedDict[str, float] = OrderedDict()     # own event id -> when submitted
        self._final_first: OrderedDict[str, float] = OrderedDict()   # own event id -> final before submit returned
        self._published_trades: OrderedDict[str, None] = OrderedDict()
        self._count = 0
        self._rollbacks = 0
        submit_many = service.submit_many

        async def timed_submit_many(creators: list) -> list:
            """The replicated book records no submission time; the chain layer times its transactions itself."""
            started = self.clock()
            made = await submit_many(creators)
            for event, _ in made:
                final_at = self._final_first.pop(event.id, None)
                if final_at is not None:
                    self.finality.observe_finality(final_at - started)
                else:
                    _bounded_put(self._submitted, event.id, started)
            return made

        service.submit_many = timed_submit_many

    # --- MarketSource ----------------------------------------------------------------------------
    def levels(self, market: str) -> tuple[list[Level], list[Level]]:
        depth = self.service.replica.engine(market).depth(None)
        return depth["bids"], depth["asks"]

    def recent_trades(self, market: str, limit: int) -> list[TradePrint]:
        rows = self.service.replica.ledger.trades.get(market, [])[-limit:]
        return [TradePrint(r[0], r[2], r[3], r[8], r[4], r[5], r[6], r[7]) for r in rows]

    def open_orders(self) -> list[dict[str, Any]]:
        replica, service = self.service.replica, self.service
        return [service.order_json(order_id)
                for engine in replica.ledger.engines.values() for order_id in list(engine.book.orders)
                if self._own(order_id)]

    def _own(self, order_id: str) -> bool:
        event = self.service.replica.orders.get(order_id)
        return event is not None and event.origin == self.node_id

    # --- feeding the stream ----------------------------------------------------------------------
    def attach(self, feed: MarketFeed) -> None:
        """Start publishing final events to `feed` (call after the replica has loaded its log)."""
        self.feed = feed
        ledger = self.service.replica.ledger
        self._count, self._rollbacks = ledger.count, ledger.rollbacks
        ledger.listeners.append(self._on_final)
        feed.resync(trades=True)

    def _on_final(self, event: Any, results: list) -> None:
        feed = self.feed
        ledger = self.service.replica.ledger
        if ledger.count != self._count + 1 or ledger.rollbacks != self._rollbacks:
            feed.resync()            # rolled back or replaced by a snapshot: the book is reread whole
        self._count, self._rollbacks = ledger.count, ledger.rollbacks
        if event.origin == self.node_id:
            self._time_own(event.id)
        body = event.body
        market = body[1]
        engine = ledger.engines.get(market)
        if engine is None or market not in feed.markets:
            return
        touched: set[tuple[str, int]] = set()
        order_ids = [event.id if body[0] == "n" else body[2]]
        for item in results:
            kind = type(item)
            if kind is Trade:
                touched.add((BOOK_SIDE[item.maker.side], item.price))
                order_ids.append(item.maker_order_id)
                if item.id not in self._published_trades:
                    _bounded_put(self._published_trades, item.id, None)
                    feed.publish_trade(market, TradePrint(item.id, item.price, item.quantity, item.taker_side.value,
                                                          item.maker_order_id, item.taker_order_id,
                                                          item.buy_order_id, item.sell_order_id))
            elif kind is OrderAccepted and item.order.price is not None:
                touched.add((BOOK_SIDE[item.order.side], item.order.price))
            elif kind is OrderCancelled or kind is OrderReduced:
                order_ids.append(item.order_id)
        orders = self.service.replica.orders
        for order_id in order_ids:
            placed = orders.get(order_id)
            if placed is not None and placed.body[0] == "n" and placed.body[4] is not None:
                touched.add((BOOK_SIDE[placed.body[2]], placed.body[4]))
        book = engine.book
        for side, price in touched:
            level = (book.bids.levels.get(-price) if side == "bids" else book.asks.levels.get(price))
            feed.publish_level(market, side, price, level.volume if level is not None else 0)
        own = [self.service.order_json(order_id) for order_id in dict.fromkeys(order_ids) if self._own(order_id)]
        if own:
            feed.publish_orders(own)

    def _time_own(self, event_id: str) -> None:
        started = self._submitted.pop(event_id, None)
        if started is not None:
            self.finality.observe_finality(self.clock() - started)
        else:
            _bounded_put(self._final_first, event_id, self.clock())

    # --- readiness and metrics -------------------------------------------------------------------
    def ready(self) -> tuple[bool, str]:
        replica = self.service.replica
        if not self.service.started:
            return False, "the event log is still loading"
        if not replica.ready(self.service.clock()):
            return False, "listening to the network before finalising (start-up grace)"
        return True, f"watermark {replica.watermark}, {len(replica.pending)} events pending"

    def status(self) -> dict[str, Any]:
        replica = self.service.replica
        return {"final_events": replica.final_count, "pending_events": len(replica.pending),
                "watermark": replica.watermark, "lamport": replica.lamport}

    def metrics(self) -> Iterator[Metric]:
        replica = self.service.replica
        yield GaugeMetricFamily("exchange_node_watermark", "Stability watermark (Lamport time)", value=replica.watermark)
        yield GaugeMetricFamily("exchange_node_lamport", "Lamport clock", value=replica.lamport)
        yield GaugeMetricFamily("exchange_node_final_events",
                                "Events folded into the final book (falls when a rollback undoes events)",
                                value=replica.final_count)
        yield GaugeMetricFamily("exchange_node_pending_events", "Verified events above the watermark",
                                value=len(replica.pending))
        yield GaugeMetricFamily("exchange_node_members", "Live members in the watermark",
                                value=len(replica.members(self.service.clock())))
        rollbacks = CounterMetricFamily("exchange_node_replication_rollbacks", "Ledger rollbacks (late events)")
        rollbacks.add_metric([], replica.ledger.rollbacks)
        yield rollbacks
        yield from split_counters(REPLICATION_COUNTERS, replica.counters)
