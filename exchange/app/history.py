"""Bounded history for lookups: closed orders and recent trades (issue 19: nothing grows with time).

Both forget their oldest entries first, in the order they were recorded, which every node
shares because it is the order of the blocks; so the kept window is part of the canonical
state and of its snapshot. Measured in CPython 3.11: about 350 bytes per kept closed order
and per kept trade, so the defaults (100,000 closed orders, 10,000 trades per market) hold
about 35 MB plus 3.5 MB per market.
"""
from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Callable, Iterator

from exchange.orders import Order

# How many closed orders of fresh accounts that never rested a node keeps outside the state, for look-ups only
# (ExchangeState.recent_fresh): at ~350 bytes each about 1.4 MB, whatever free keys send.
FRESH_UNRESTED_KEPT = 4_096

# A trade as kept: (id, price, qty, maker_order_id, taker_order_id, taker_side, maker_account, taker_account,
# height, time_ms); prices in ticks, quantities in lots.
TradeRow = tuple[str, int, int, str, str, str, str, str, int, int]


class ClosedOrders:
    """Orders that left the book (filled, cancelled, rejected), at most `limit`, oldest forgotten first."""

    __slots__ = ("limit", "orders", "added", "_arrival", "on_forget")

    def __init__(self, limit: int, on_forget: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.orders: dict[str, Order] = {}
        self.added = 0                      # orders ever recorded: the next one's place in the whole sequence
        self._arrival: deque[str] = deque()
        self.on_forget = on_forget          # told the id of each order the history forgets

    def add(self, order: Order) -> None:
        """Record a closed order (a second record under the same id is ignored)."""
        orders = self.orders
        if order.id in orders:
            return
        orders[order.id] = order
        self.added += 1
        self._arrival.append(order.id)
        if len(self._arrival) > self.limit:
            forgotten = self._arrival.popleft()
            del orders[forgotten]
            if self.on_forget is not None:
                self.on_forget(forgotten)

    def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.orders

    def __len__(self) -> int:
        return len(self._arrival)

    def __iter__(self) -> Iterator[Order]:
        """Oldest first."""
        orders = self.orders
        return (orders[order_id] for order_id in self._arrival)

    def newest(self, count: int) -> list[Order]:
        """The `count` most recently recorded orders still kept, oldest first."""
        orders = self.orders
        newest_first = [orders[order_id] for order_id in islice(reversed(self._arrival), count)]
        newest_first.reverse()
        return newest_first


def trade_log(limit: int) -> deque[TradeRow]:
    """One market's recent trades, oldest first, the oldest dropped beyond `limit`."""
    return deque(maxlen=limit)
