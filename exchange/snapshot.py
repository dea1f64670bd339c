"""Canonical book encoding: snapshot (plain data), restore, and a digest to compare books cheaply.

The snapshot lists each side best level first and, inside a level, orders oldest
first, so it captures everything that decides future matching. The digest is
sha256 over the msgpack encoding of the snapshot, so two books have the same
digest exactly when their snapshots are equal, and restore(snapshot) followed by
the same commands gives the same digest as the original book.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence, TypedDict, cast

import msgpack

from exchange.errors import InvalidSnapshot
from exchange.orders import Order, OrderStatus, OrderType, SelfTradeMode, Side
from exchange.wire import Unchecked, Wire

if TYPE_CHECKING:
    from exchange.book import BookSide, OrderBook
    from exchange.markets import Market

SNAPSHOT_FORMAT = 1
_RESTING_TYPES = (OrderType.LIMIT, OrderType.POST_ONLY)


class BookSnapshot(TypedDict):
    """A book as plain data: each side `[[price, [order row, ...]], ...]`, best level first, oldest order first; an
    order row is `[id, type, quantity, remaining, owner, created_key, self-trade mode]`."""

    format: int
    market: str
    tick: str
    lot: str
    bids: list[Wire]
    asks: list[Wire]


def book_snapshot(book: OrderBook, market: Market) -> BookSnapshot:
    """The whole book as plain lists, ints and strings."""
    return {
        "format": SNAPSHOT_FORMAT, "market": market.symbol, "tick": market.tick.text, "lot": market.lot.text,
        "bids": _side_rows(book.bids), "asks": _side_rows(book.asks),
    }


def book_digest(book: OrderBook, market: Market) -> str:
    """sha256 hex over the canonical msgpack encoding of the snapshot."""
    return hashlib.sha256(msgpack.packb(book_snapshot(book, market), use_bin_type=True)).hexdigest()


def restore_book(snapshot: object, market: Market) -> OrderBook:
    """Rebuild a book from `book_snapshot` output; raise InvalidSnapshot when it does not fit."""
    from exchange.book import OrderBook

    if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
        raise InvalidSnapshot("unsupported_snapshot", f"expected a format {SNAPSHOT_FORMAT} snapshot map")
    expected = (market.symbol, market.tick.text, market.lot.text)
    found = (snapshot.get("market"), snapshot.get("tick"), snapshot.get("lot"))
    if found != expected:
        raise InvalidSnapshot("market_mismatch", f"snapshot is for {found}, this engine is {expected}")
    book = OrderBook(market.symbol)
    for side, name in ((Side.BUY, "bids"), (Side.SELL, "asks")):
        for price, rows in _levels(snapshot.get(name), name):
            for row in rows:
                book.rest(_order_from_row(row, market, side, price, book))
    if book.is_crossed():
        raise InvalidSnapshot("crossed_book", "snapshot book is crossed")
    return book


def _side_rows(side: BookSide) -> list[Wire]:
    return [[level.price, [order_row(order) for order in level.live_orders()]] for level in side.iter_levels()]


# An enum member's `.value` goes through a descriptor; a dict lookup is several times cheaper, and every
# node encodes every resting order this way each snapshot interval, in its event loop.
_TYPE_VALUE = {member: member.value for member in OrderType}
_SELF_TRADE_VALUE = {member: member.value for member in SelfTradeMode}


def order_row(order: Order) -> Wire:
    key = order.created_key
    return [order.id, _TYPE_VALUE[order.type], order.quantity, order.remaining, order.owner,
            list(key) if isinstance(key, tuple) else key, _SELF_TRADE_VALUE[order.self_trade]]


def _levels(data: object, name: str) -> list[tuple[int, Sequence[Unchecked]]]:
    if not isinstance(data, list):
        raise InvalidSnapshot("malformed_snapshot", f"{name} must be a list of levels")
    levels: list[tuple[int, Sequence[Unchecked]]] = []
    for entry in data:
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or type(entry[0]) is not int
                or not isinstance(entry[1], (list, tuple)) or not entry[1]):
            raise InvalidSnapshot("malformed_snapshot", f"{name} level {entry!r} is not [price, [orders...]]")
        levels.append((entry[0], entry[1]))
    return levels


def _order_from_row(row: object, market: Market, side: Side, price: int, book: OrderBook) -> Order:
    try:
        order_id, type_name, quantity, remaining, owner, key, mode = cast(Sequence[Unchecked], row)
        order_type, self_trade = OrderType(type_name), SelfTradeMode(mode)
    except (TypeError, ValueError):
        raise InvalidSnapshot("malformed_snapshot", f"order row {row!r} is malformed") from None
    if (type(order_id) is not str or order_id in book.orders or order_type not in _RESTING_TYPES
            or type(quantity) is not int or type(remaining) is not int or not 0 < remaining <= quantity
            or type(owner) is not str or market.price_problem(price) is not None):
        raise InvalidSnapshot("malformed_snapshot", f"order row {row!r} is not a valid resting order")
    order = Order.new(order_id, market.symbol, side, order_type, price, quantity, owner,
                      tuple(key) if isinstance(key, list) else key, self_trade)
    order.remaining = remaining
    if remaining != quantity:
        order.status = OrderStatus.PARTIALLY_FILLED
    return order
