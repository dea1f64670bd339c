"""The matching engine for one market: deterministic price-time matching with self-trade prevention.

`apply(command)` validates, matches and returns the events it caused; the same
commands in the same order always give the same events and the same book. It
never raises on bad input: anything invalid becomes an OrderRejected event with a
reason code. Trades execute at the resting order's price. A taker meeting a
resting order of its own owner follows the taker's self-trade mode (the market's
default when the order names none).
"""
from __future__ import annotations

from heapq import heappop, heappush
from typing import Any, Callable

from exchange.book import _COMPACT_SLACK, EMPTY_SIDE_KEY, OrderBook, PriceLevel, new_level
from exchange.commands import CancelOrder, NewOrder, ReduceOrder, ReplaceOrder
from exchange.events import Event, OrderAccepted, OrderCancelled, OrderReduced, OrderRejected, Trade
from exchange.markets import Market
from exchange.orders import Order, OrderStatus, OrderType, SelfTradeMode, Side
from exchange.snapshot import BookSnapshot, book_digest, book_snapshot, restore_book

MAX_ORDER_ID_CHARS = 128
# CPython 3.11 runs `a <= b` on ints as a specialised instruction only while both fit one 30-bit digit;
# the fast acceptance check caps its upper bounds there (bigger sizes and prices take the detailed check).
_ONE_DIGIT_INT = (1 << 30) - 1
_NO_LIMIT = 1 << 256  # a limit key beyond every price (but below an empty side's key): market orders

_BUY, _SELL = Side.BUY, Side.SELL
_LIMIT, _MARKET, _IOC, _FOK, _POST_ONLY = (OrderType.LIMIT, OrderType.MARKET, OrderType.IOC,
                                           OrderType.FOK, OrderType.POST_ONLY)
_OPEN, _PARTIAL, _FILLED, _CANCELLED, _REJECTED = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED,
                                                   OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)
_CANCEL_NEWEST, _CANCEL_OLDEST, _CANCEL_BOTH, _DECREMENT = (
    SelfTradeMode.CANCEL_NEWEST, SelfTradeMode.CANCEL_OLDEST, SelfTradeMode.CANCEL_BOTH,
    SelfTradeMode.DECREMENT_AND_CANCEL)
_REMAINDER_REASON = {_MARKET: "market_remainder", _IOC: "ioc_remainder", _FOK: "fok_remainder"}


class MatchingEngine:
    """One market's book and the rules that change it."""

    __slots__ = ("market", "book", "_symbol", "_handlers", "_orders", "_bids", "_asks", "_default_mode",
                 "_min_lots", "_max_lots", "_min_ticks", "_max_ticks")

    def __init__(self, market: Market) -> None:
        self.market = market
        self._symbol = market.symbol
        self._default_mode = market.self_trade_mode
        self._min_lots, self._max_lots = market.min_lots, min(market.max_lots, _ONE_DIGIT_INT)
        self._min_ticks, self._max_ticks = market.min_ticks, min(market.max_ticks, _ONE_DIGIT_INT)
        self._use_book(OrderBook(market.symbol))
        # Any: each handler takes the command type it is keyed by, which a dict's type cannot say
        self._handlers: dict[type, Callable[[Any], list[Event]]] = {
            ReduceOrder: self.reduce, ReplaceOrder: self.replace,   # (new and cancel: `apply` calls them directly)
        }

    def _use_book(self, book: OrderBook) -> None:
        self.book = book
        self._orders, self._bids, self._asks = book.orders, book.bids, book.asks

    # ----------------------------------------------------------------- commands

    def apply(self, command: object) -> list[Event]:
        """Apply any command; unknown objects are rejected, not raised."""
        if type(command) is NewOrder:
            return self.place_order(command.order_id, command.side, command.order_type, command.quantity,
                                    command.price, command.owner, command.created_key, command.self_trade)
        if type(command) is CancelOrder:
            return self.cancel_order(command.order_id, command.owner)
        handler = self._handlers.get(type(command))
        if handler is None:
            return [OrderRejected.of("unknown", getattr(command, "order_id", None), "unknown_command")]
        return handler(command)

    def place(self, command: NewOrder) -> list[Event]:
        """Validate a new order, match it, then rest or cancel what is left according to its type."""
        return self.place_order(command.order_id, command.side, command.order_type, command.quantity,
                                command.price, command.owner, command.created_key, command.self_trade)

    def place_order(self, order_id: str, side: Side, order_type: OrderType, quantity: int, price: int | None = None,
                    owner: str = "", created_key: object = None, mode: SelfTradeMode | None = None) -> list[Event]:
        """`place` from plain arguments: hot callers (the replicated ledger) skip building a NewOrder."""
        # Fast acceptance of the common well-formed limit order; anything else gets the detailed check.
        # (The side is checked where the book side is chosen, below.)
        if not (type(quantity) is int and self._min_lots <= quantity <= self._max_lots
                and type(price) is int and self._min_ticks <= price <= self._max_ticks
                and type(order_id) is str and order_id and len(order_id) <= MAX_ORDER_ID_CHARS
                and order_id not in self._orders
                and (order_type is _LIMIT or (type(order_type) is OrderType and order_type is not _MARKET))
                and type(owner) is str and (mode is None or type(mode) is SelfTradeMode)):
            reason = self._new_order_problem(order_id, side, order_type, quantity, price, owner, mode)
            if reason is not None:
                return [OrderRejected.of("new", order_id, reason)]
        # below, `price` is None exactly for a market order (the checks above prove it): it takes at any price
        if side is _BUY:
            opposite, own = self._asks, self._bids
            limit_key = price if price is not None else _NO_LIMIT
            own_key = -limit_key
        elif side is _SELL:
            opposite, own = self._bids, self._asks
            if price is not None:
                limit_key, own_key = -price, price
            else:
                limit_key = own_key = _NO_LIMIT   # never rests
        else:  # every other field passed, so this names the side (or an earlier field, if the detailed check ran)
            return [OrderRejected.of("new", order_id, self._new_order_problem(order_id, side, order_type, quantity,
                                                                               price, owner, mode))]
        # Order.new(order_id, symbol, side, order_type, price, quantity, owner, created_key, mode), inlined: this
        # runs for every order placed (`python -m bench matching` shows the cost of the call);
        # tests/unit/exchange/test_fast_paths.py pins this copy, the level handling and the loop to the plain pieces
        order = Order()
        order.id = order_id
        order.market = self._symbol
        order.side = side
        order.type = order_type
        order.price = price
        order.quantity = order.remaining = quantity
        order.owner = owner
        order.created_key = created_key
        order.self_trade = self._default_mode if mode is None else mode
        order.status = _OPEN
        order.reason = None
        if order_type is not _LIMIT:
            reason = self._refusal(order)
            if reason is not None:
                order.status, order.reason = _REJECTED, reason
                return [OrderRejected.of("new", order_id, reason)]
        accepted = OrderAccepted()  # events are built field by field: `Cls()` is one C-level allocation
        accepted.order = order
        accepted.quantity = quantity
        events: list[Event] = [accepted]
        # Fill from the best opposite levels while they cross `limit_key`: the matching loop, inlined (half of all
        # orders run it). Its compares are written `if key > limit_key` before short jumps: CPython 3.11 specialises
        # an int compare only when a short conditional jump follows it, and the loop is too long for `while key <=`.
        key = opposite.best
        if key > limit_key:
            pass  # nothing to take
        else:
            levels = opposite.levels
            append = events.append
            remaining = quantity
            while True:
                if key > limit_key:
                    break
                level = levels[key]
                level_price = level.price
                while True:
                    maker = level[0]
                    if maker.status is _CANCELLED:
                        level.popleft()
                        continue
                    if maker.owner == owner:
                        order.remaining = remaining
                        if not self._prevent_self_trade(order, maker, events):
                            return events
                        remaining = order.remaining
                        if not level.live:  # the level went with the maker
                            key = opposite.best
                            break
                        continue
                    trade = Trade()  # built field by field: `Cls()` is one C-level allocation, slot stores are cheap
                    trade.price = level_price
                    trade.taker = order
                    trade.maker = maker
                    append(trade)
                    available = maker.remaining
                    if available > remaining:  # the taker is done; the maker keeps the rest and its place
                        maker.remaining = trade.maker_remaining = available - remaining
                        maker.status = _PARTIAL
                        level.volume -= remaining
                        order.remaining = trade.taker_remaining = 0
                        trade.quantity = remaining
                        order.status = _FILLED
                        return events
                    remaining -= available
                    trade.quantity = available
                    trade.taker_remaining = remaining
                    trade.maker_remaining = maker.remaining = 0
                    maker.status = _FILLED
                    level.popleft()
                    del self._orders[maker.id]
                    level.volume -= available
                    level.live -= 1
                    if not level.live:  # BookSide.drop_level of the best level, inlined
                        del levels[key]
                        opposite.ordered = None
                        heap = opposite.heap
                        heappop(heap)
                        while heap and heap[0] not in levels:
                            heappop(heap)
                        key = opposite.best = heap[0] if heap else EMPTY_SIDE_KEY
                        break
                    if not remaining:
                        break
                if not remaining:
                    break
            order.remaining = remaining
            if not remaining:
                order.status = _FILLED
                return events
            if remaining != order.quantity:
                order.status = _PARTIAL
        if order_type is _LIMIT or order_type is _POST_ONLY:
            levels = own.levels
            resting = levels.get(own_key)
            if resting is None:
                assert price is not None  # a limit or post-only order
                level = levels[own_key] = new_level(PriceLevel)
                level.price = price
                level.live = 1
                level.volume = order.remaining
                level.append(order)
                heappush(own.heap, own_key)
                own.ordered = None
                if own_key < own.best:
                    own.best = own_key
            else:
                resting.append(order)
                resting.live += 1
                resting.volume += order.remaining
            self._orders[order_id] = order
        else:
            reason = _REMAINDER_REASON[order_type]
            order.status, order.reason = _CANCELLED, reason
            events.append(OrderCancelled.of(order_id, order.remaining, reason))
        return events

    def cancel(self, command: CancelOrder) -> list[Event]:
        """Cancel a resting order."""
        return self.cancel_order(command.order_id, command.owner)

    def cancel_order(self, order_id: str, owner: str | None = None) -> list[Event]:
        """`cancel` from plain arguments; with `owner` set, only that owner may cancel."""
        order = self._orders.get(order_id) if type(order_id) is str else None
        if order is None or (owner is not None and owner != order.owner):
            rejected = OrderRejected()
            rejected.operation = "cancel"
            rejected.order_id = order_id
            rejected.reason = "unknown_order" if order is None else "not_owner"
            return [rejected]
        # BookSide.discard, inlined
        order.status = _CANCELLED
        price = order.price
        assert price is not None  # a resting order
        if order.side is _BUY:
            side, key = self._bids, -price
        else:
            side, key = self._asks, price
        level = side.levels[key]
        live = level.live = level.live - 1
        level.volume -= order.remaining
        if not live:
            side.drop_level(key)
        elif len(level) > 2 * live + _COMPACT_SLACK:
            level.compact()
        del self._orders[order_id]
        order.reason = "requested"
        cancelled = OrderCancelled()
        cancelled.order_id = order_id
        cancelled.remaining = order.remaining
        cancelled.reason = "requested"
        return [cancelled]

    def reduce(self, command: ReduceOrder) -> list[Event]:
        """Shrink a resting order in place (time priority kept); shrinking it to nothing cancels it."""
        order, reason = self._resting(command.order_id, command.owner)
        if order is None:
            return [OrderRejected.of("reduce", command.order_id, reason)]
        lots = command.reduce_by
        if type(lots) is not int or lots <= 0:
            return [OrderRejected.of("reduce", order.id, "invalid_reduce_by")]
        if lots >= order.remaining:
            self.book.remove(order)
            order.reason = "reduced_to_zero"
            return [OrderCancelled.of(order.id, order.remaining, "reduced_to_zero")]
        self.book.side_of(order.side).shrink(order, lots)
        return [OrderReduced.of(order.id, lots, order.remaining, "requested")]

    def replace(self, command: ReplaceOrder) -> list[Event]:
        """Cancel a resting order and place a new one with the same side, type and owner (new priority)."""
        old, missing = self._resting(command.order_id, command.owner)
        if old is None:
            return [OrderRejected.of("replace", command.order_id, missing)]
        replacement = NewOrder(command.new_order_id, old.side, old.type, command.quantity, command.price,
                               old.owner, command.created_key, old.self_trade)
        reason = self._new_order_problem(replacement.order_id, old.side, old.type, replacement.quantity,
                                         replacement.price, old.owner, old.self_trade)
        if reason is None:  # the old order is on the same side, so removing it cannot change a refusal
            reason = self._refusal(Order.new(replacement.order_id, self._symbol, old.side, old.type,
                                             replacement.price, replacement.quantity, old.owner, None, old.self_trade))
        if reason is not None:
            return [OrderRejected.of("replace", command.order_id, reason)]
        self.book.remove(old)
        old.reason = "replaced"
        return [OrderCancelled.of(old.id, old.remaining, "replaced"), *self.place(replacement)]

    # ------------------------------------------------------------------- views

    def best_bid(self) -> int | None:
        return self.book.best_bid()

    def best_ask(self) -> int | None:
        return self.book.best_ask()

    def spread(self) -> int | None:
        return self.book.spread()

    def depth(self, limit: int | None = None) -> dict[str, list[tuple[int, int]]]:
        return self.book.depth(limit)

    def l3(self) -> dict[str, list[Order]]:
        return self.book.l3()

    def order(self, order_id: str) -> Order | None:
        """A resting order by id (filled and cancelled orders are gone from the book)."""
        return self.book.orders.get(order_id) if isinstance(order_id, str) else None

    def digest(self) -> str:
        """sha256 hex of the canonical encoding of the whole book; computed on demand."""
        return book_digest(self.book, self.market)

    def snapshot(self) -> BookSnapshot:
        """Plain msgpack-able data from which `restore` rebuilds an identical book."""
        return book_snapshot(self.book, self.market)

    def restore(self, snapshot: object) -> None:
        """Replace the book with the one in `snapshot`; raises InvalidSnapshot if it does not fit this market."""
        self._use_book(restore_book(snapshot, self.market))

    # --------------------------------------------------------------- internals

    def _new_order_problem(self, order_id: object, side: object, order_type: object, quantity: object,
                           price: object, owner: object, self_trade: object) -> str | None:
        """The reason code that makes these order fields unacceptable, or None."""
        if type(order_id) is not str or not order_id or len(order_id) > MAX_ORDER_ID_CHARS:
            return "invalid_order_id"
        if order_id in self.book.orders:
            return "duplicate_order_id"
        if side is not _BUY and side is not _SELL:
            return "invalid_side"
        if type(order_type) is not OrderType:
            return "invalid_order_type"
        if type(quantity) is not int:
            return "float_not_allowed" if type(quantity) is float else "invalid_quantity"
        reason = self.market.qty_problem(quantity)
        if reason is not None:
            return reason
        if order_type is _MARKET:
            if price is not None:
                return "price_not_allowed"
        elif type(price) is not int:
            return "price_required" if price is None else (
                "float_not_allowed" if type(price) is float else "invalid_price")
        else:
            reason = self.market.price_problem(price)
            if reason is not None:
                return reason
        if type(owner) is not str:
            return "invalid_owner"
        if self_trade is not None and type(self_trade) is not SelfTradeMode:
            return "invalid_self_trade_mode"
        return None

    def _refusal(self, order: Order) -> str | None:
        """Why a post-only or fill-or-kill order must be refused before it touches the book, or None."""
        if order.type is _POST_ONLY:
            opposite = self.book.asks if order.side is _BUY else self.book.bids
            if opposite.best <= _limit_key(order):
                return "post_only_would_take"
        elif order.type is _FOK and not self._fillable(order):
            return "fok_not_fillable"
        return None

    def _fillable(self, order: Order) -> bool:
        """Would matching fill `order` completely? Walks the crossing liquidity without changing it."""
        opposite = self.book.asks if order.side is _BUY else self.book.bids
        limit_key = _limit_key(order)
        needed = order.remaining
        skips_own = order.self_trade is _CANCEL_OLDEST
        levels = opposite.levels
        for key in opposite.ordered_keys():
            if key > limit_key:
                return False
            level = levels[key]
            for maker in level.live_orders():
                if maker.owner == order.owner:
                    if skips_own:
                        continue
                    return False
                needed -= maker.remaining
                if needed <= 0:
                    return True
        return False

    def _prevent_self_trade(self, taker: Order, maker: Order, events: list[Event]) -> bool:
        """Apply the taker's self-trade mode against `maker`; return whether the taker keeps matching."""
        mode = taker.self_trade
        if mode is _CANCEL_OLDEST or mode is _CANCEL_BOTH:
            self._cancel_resting(maker, "self_trade", events)
            if mode is _CANCEL_OLDEST:
                return True
        elif mode is _DECREMENT:
            overlap = min(taker.remaining, maker.remaining)
            if maker.remaining > overlap:
                self.book.side_of(maker.side).shrink(maker, overlap)
                events.append(OrderReduced.of(maker.id, overlap, maker.remaining, "self_trade"))
            else:
                self._cancel_resting(maker, "self_trade", events)
            if taker.remaining > overlap:
                taker.remaining -= overlap
                taker.quantity -= overlap
                events.append(OrderReduced.of(taker.id, overlap, taker.remaining, "self_trade"))
                return True
        taker.status, taker.reason = _CANCELLED, "self_trade"
        events.append(OrderCancelled.of(taker.id, taker.remaining, "self_trade"))
        return False

    def _cancel_resting(self, order: Order, reason: str, events: list[Event]) -> None:
        self.book.remove(order)
        order.reason = reason
        events.append(OrderCancelled.of(order.id, order.remaining, reason))

    def _resting(self, order_id: object, owner: object) -> tuple[Order | None, str]:
        """The live order a cancel/reduce/replace refers to, or None and the reason code."""
        order = self.book.orders.get(order_id) if type(order_id) is str else None
        if order is None:
            return None, "unknown_order"
        if owner is not None and owner != order.owner:
            return None, "not_owner"
        return order, ""


def _limit_key(order: Order) -> int:
    """The sort key on the opposite side beyond which `order` will not trade."""
    if order.type is _MARKET:
        return _NO_LIMIT
    price = order.price
    assert price is not None  # every other type is priced (the engine's checks refuse one that is not)
    return price if order.side is _BUY else -price
