"""The limit order book: price levels per side, FIFO queues inside a level, an id index.

Each side keeps a dict from a sort key to a PriceLevel plus a binary heap of those
keys, arranged so the best level has the smallest key: asks are keyed by price,
bids by minus price. The matching hot path only ever needs the best level, so the
heap (C-level heappush/heappop) replaces a sorted container there; the heap may
hold keys of levels already gone (they are skipped when they reach the top and
the heap is rebuilt when they outnumber the live ones), and the views that need
every level in order (depth, L3, snapshot, fill-or-kill checks) sort the keys
once and reuse that until a level appears or goes. A level is a deque of its
orders in arrival order. Removing an order by id is O(1): it is marked cancelled
and the level's live count and volume drop at once; the dead entry is skipped and
dropped when it reaches the head, and a level whose dead entries outnumber its
live ones is compacted, so memory stays proportional to live orders. A level is
deleted the moment its last live order goes.
"""
from __future__ import annotations

from collections import deque
from heapq import heapify, heappop, heappush
from typing import Iterator

from exchange.orders import Order, OrderStatus, Side

_CANCELLED = OrderStatus.CANCELLED
_COMPACT_SLACK = 16
_HEAP_SLACK = 64
EMPTY_SIDE_KEY = 1 << 300  # `best` of an empty side: above every price key and every taker's limit


class PriceLevel(deque[Order]):
    """All resting orders at one price, oldest first (the level is the queue itself);
    `live` and `volume` count only live orders."""

    __slots__ = ("price", "live", "volume")

    def __init__(self, price: int) -> None:  # deque.__new__ already made an empty queue
        self.price = price
        self.live = 0
        self.volume = 0

    @property
    def queue(self) -> PriceLevel:
        return self

    def live_orders(self) -> Iterator[Order]:
        return (order for order in self if order.status is not _CANCELLED)

    def compact(self) -> None:
        live = [order for order in self if order.status is not _CANCELLED]
        self.clear()
        self.extend(live)

    # levels are compared and hashed by identity; the ignore: typeshed declares deque unhashable (__hash__ None)
    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__


new_level = deque.__new__  # `new_level(PriceLevel)`: an empty level without the Python __init__ (set the fields)


class BookSide:
    """One side of the book; `sign` turns a price into its sort key, `best` caches the smallest live key."""

    __slots__ = ("side", "sign", "levels", "heap", "best", "ordered")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = -1 if side is Side.BUY else 1
        self.levels: dict[int, PriceLevel] = {}
        self.heap: list[int] = []   # every live key, maybe stale ones too; heap[0] is `best` when levels exist
        self.best = EMPTY_SIDE_KEY
        self.ordered: list[int] | None = []  # live keys sorted, or None when a level came or went since

    def best_price(self) -> int | None:
        return self.levels[self.best].price if self.levels else None

    def add(self, order: Order) -> None:
        price = order.price
        assert price is not None  # resting orders are priced
        key = price * self.sign
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = PriceLevel(price)
            self.new_key(key)
        level.append(order)
        level.live += 1
        level.volume += order.remaining

    def new_key(self, key: int) -> None:
        """Index a level just stored in `levels` under `key`."""
        heappush(self.heap, key)
        self.ordered = None
        if key < self.best:
            self.best = key

    def drop_level(self, key: int) -> None:
        """Delete an emptied level and keep `best` current."""
        levels = self.levels
        del levels[key]
        self.ordered = None
        heap = self.heap
        if key == self.best:
            heappop(heap)  # the top is `key` itself (or a stale twin of it)
            while heap and heap[0] not in levels:
                heappop(heap)
            self.best = heap[0] if heap else EMPTY_SIDE_KEY
        elif len(heap) > 2 * len(levels) + _HEAP_SLACK:
            heap[:] = levels
            heapify(heap)

    def discard(self, order: Order) -> None:
        """Take a live order out of its level, marking it cancelled."""
        order.status = _CANCELLED
        price = order.price
        assert price is not None  # resting orders are priced
        key = price * self.sign
        level = self.levels[key]
        level.live -= 1
        level.volume -= order.remaining
        if not level.live:
            self.drop_level(key)
        elif len(level) > 2 * level.live + _COMPACT_SLACK:
            level.compact()

    def shrink(self, order: Order, lots: int) -> None:
        """Reduce a live order's size in place; it keeps its queue position."""
        price = order.price
        assert price is not None  # resting orders are priced
        self.levels[price * self.sign].volume -= lots
        order.remaining -= lots
        order.quantity -= lots

    def ordered_keys(self) -> list[int]:
        """The live keys, best first (sorted on demand, cached until a level comes or goes)."""
        ordered = self.ordered
        if ordered is None:
            ordered = self.ordered = sorted(self.levels)
        return ordered

    def depth(self, limit: int | None = None) -> list[tuple[int, int]]:
        """(price, total lots) per level, best first, at most `limit` levels."""
        keys = self.ordered_keys() if limit is None else self.ordered_keys()[:max(limit, 0)]
        levels = self.levels
        return [(levels[key].price, levels[key].volume) for key in keys]

    def iter_levels(self) -> Iterator[PriceLevel]:
        levels = self.levels
        return iter([levels[key] for key in self.ordered_keys()])

    def iter_orders(self) -> Iterator[Order]:
        """Live orders in priority order: best level first, oldest first within it."""
        for level in self.iter_levels():
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
