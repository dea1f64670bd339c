"""The limit order book: sorted price levels per side, FIFO queues inside a level, an id index.

Each side keeps a SortedDict from a sort key to a PriceLevel, arranged so the best
level is always first: asks are keyed by price, bids by minus price. A level's
queue is a deque in arrival order. Removing an order by id is O(1): it is marked
cancelled and the level's live count and volume drop at once; the dead entry is
skipped and dropped when it reaches the head, and a level whose dead entries
outnumber its live ones is compacted, so memory stays proportional to live orders.
A level is deleted the moment its last live order goes.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator

from sortedcontainers import SortedDict

from exchange.orders import Order, OrderStatus, Side

_CANCELLED = OrderStatus.CANCELLED
_COMPACT_SLACK = 16
EMPTY_SIDE_KEY = 1 << 300  # `best` of an empty side: above every price key and every taker's limit


class PriceLevel:
    """All resting orders at one price, oldest first; `live` and `volume` count only live orders."""

    __slots__ = ("price", "queue", "live", "volume")

    def __init__(self, price: int) -> None:
        self.price = price
        self.queue: deque[Order] = deque()
        self.live = 0
        self.volume = 0

    def live_orders(self) -> Iterator[Order]:
        return (order for order in self.queue if order.status is not _CANCELLED)

    def compact(self) -> None:
        self.queue = deque(self.live_orders())


class BookSide:
    """One side of the book; `sign` turns a price into its sort key, `best` caches the first key."""

    __slots__ = ("side", "sign", "levels", "keys", "best")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = -1 if side is Side.BUY else 1
        self.levels: SortedDict = SortedDict()
        self.keys = self.levels.keys()
        self.best = EMPTY_SIDE_KEY

    def best_price(self) -> int | None:
        return self.levels[self.best].price if self.levels else None

    def add(self, order: Order) -> None:
        key = order.price * self.sign
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = PriceLevel(order.price)
            if key < self.best:
                self.best = key
        level.queue.append(order)
        level.live += 1
        level.volume += order.remaining

    def drop_level(self, key: int) -> None:
        """Delete an emptied level and keep `best` current."""
        del self.levels[key]
        if key == self.best:
            self.best = self.keys[0] if self.levels else EMPTY_SIDE_KEY

    def discard(self, order: Order) -> None:
        """Take a live order out of its level, marking it cancelled."""
        order.status = _CANCELLED
        key = order.price * self.sign
        level = self.levels[key]
        level.live -= 1
        level.volume -= order.remaining
        if not level.live:
            self.drop_level(key)
        elif len(level.queue) > 2 * level.live + _COMPACT_SLACK:
            level.compact()

    def shrink(self, order: Order, lots: int) -> None:
        """Reduce a live order's size in place; it keeps its queue position."""
        self.levels[order.price * self.sign].volume -= lots
        order.remaining -= lots
        order.quantity -= lots

    def depth(self, limit: int | None = None) -> list[tuple[int, int]]:
        """(price, total lots) per level, best first, at most `limit` levels."""
        levels = self.levels.values() if limit is None else self.levels.values()[:max(limit, 0)]
        return [(level.price, level.volume) for level in levels]

    def iter_levels(self) -> Iterator[PriceLevel]:
        return iter(self.levels.values())

    def iter_orders(self) -> Iterator[Order]:
        """Live orders in priority order: best level first, oldest first within it."""
        for level in self.levels.values():
            yield from level.live_orders()

    def __len__(self) -> int:
        return len(self.levels)


class OrderBook:
    """Both sides plus the index of resting orders by id."""

    __slots__ = ("symbol", "bids", "asks", "orders")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)
        self.orders: dict[str, Order] = {}

    def side_of(self, side: Side) -> BookSide:
        return self.bids if side is Side.BUY else self.asks

    def rest(self, order: Order) -> None:
        (self.bids if order.side is Side.BUY else self.asks).add(order)
        self.orders[order.id] = order

    def remove(self, order: Order) -> None:
        """Remove a resting order and mark it cancelled."""
        (self.bids if order.side is Side.BUY else self.asks).discard(order)
        del self.orders[order.id]

    def best_bid(self) -> int | None:
        return self.bids.best_price()

    def best_ask(self) -> int | None:
        return self.asks.best_price()

    def spread(self) -> int | None:
        """Best ask minus best bid in ticks, or None when a side is empty."""
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else ask - bid

    def depth(self, limit: int | None = None) -> dict[str, list[tuple[int, int]]]:
        """L2: aggregated levels, best first."""
        return {"bids": self.bids.depth(limit), "asks": self.asks.depth(limit)}

    def l3(self) -> dict[str, list[Order]]:
        """L3: every resting order, in priority order."""
        return {"bids": list(self.bids.iter_orders()), "asks": list(self.asks.iter_orders())}

    def is_crossed(self) -> bool:
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask

    def __len__(self) -> int:
        return len(self.orders)
