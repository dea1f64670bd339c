"""A book's resting orders kept packed in runs per price level, so a snapshot costs a piece per run, not per order.

A price level is a queue: an order joins it at the back, and leaves it from anywhere (filled, cancelled, reduced
to nothing, expired); a resting order's row changes only when it is filled or reduced in place. Every one of
those is a change to an order the block touched (`ExchangeState._touched_orders`, the same record the order
updates of each block are made from). So at the end of each block (`pack`) the orders the block touched are
found in their level's runs: a new resting order joins its level's last run, a touched order's row is packed
again if its sizes changed, and a run that holds a touched order drops those that left and is joined again.
A run of RUN orders is one piece; a snapshot of a level is its price, its count and its runs' pieces.

What the snapshot trusts is checked where it is cheap: each level's runs must count the level's live orders and
add up to its volume, or the level's runs are rebuilt from the level itself at that snapshot (a missed change
costs time, not the bytes). An order's place in the queue is never rechecked: orders join a level only at its
back, in the order the block touched them first, which is the order they were placed. The unit tests compare
every snapshot they take with the document built the plain way, whatever the run length.
"""
from __future__ import annotations

import logging
from typing import Iterable, Mapping

import msgpack

from exchange.book import BookSide, OrderBook, PriceLevel
from exchange.orders import Order, OrderStatus
from exchange.snapshot import order_row

log = logging.getLogger("exchange.app")

RUN = 64        # orders of a level joined into one kept piece

_CANCELLED = OrderStatus.CANCELLED
_PACKER = msgpack.Packer(use_bin_type=True)
_PAIR = _PACKER.pack_array_header(2)


class _Run:
    __slots__ = ("orders", "joined", "volume")

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self.joined = b""
        self.volume = 0


class _LevelRuns:
    __slots__ = ("level", "runs", "price_piece")

    def __init__(self, level: PriceLevel) -> None:
        self.level = level
        self.runs: list[_Run] = []
        self.price_piece: bytes = _PACKER.pack(level.price)

    def count(self) -> int:
        return sum(len(run.orders) for run in self.runs)

    def volume(self) -> int:
        return sum(run.volume for run in self.runs)


class RestingRows:
    """One book's resting orders: each order's packed row, and the runs of each level."""

    __slots__ = ("_rows", "_levels", "_where")

    def __init__(self, book: OrderBook) -> None:
        self._rows: dict[Order, tuple[int, int, bytes]] = {}     # (quantity, remaining) when packed, the row
        self._levels: dict[PriceLevel, _LevelRuns] = {}
        self._where: dict[Order, tuple[_LevelRuns, _Run]] = {}
        for side in (book.bids, book.asks):
            for level in side.levels.values():
                self._from_level(level)

    def pack(self, orders: Iterable[Order], book: OrderBook) -> None:
        """Brings the runs up to date with `orders`, this book's orders a block touched, in the order it first
        touched them. Only those orders are looked at: the others in their runs are as the last block left them."""
        dirty: dict[int, tuple[_LevelRuns, _Run]] = {}
        left: set[Order] = set()
        where, resting = self._where, book.orders
        for order in orders:
            entry = where.get(order)
            if entry is not None:
                dirty[id(entry[1])] = entry
                if resting.get(order.id) is order:
                    self._row(order)
                else:
                    left.add(order)
            elif resting.get(order.id) is order and (level := _level_of(book, order)) is not None:
                # placed in this block and resting: it joins its level at the back
                runs = self._levels.get(level)
                if runs is None:
                    runs = self._levels[level] = _LevelRuns(level)
                if not runs.runs or len(runs.runs[-1].orders) >= RUN:
                    runs.runs.append(_Run())
                run = runs.runs[-1]
                run.orders.append(order)
                self._row(order)
                where[order] = entry = (runs, run)
                dirty[id(run)] = entry
        for runs, run in dirty.values():
            self._rebuild(runs, run, left)
        for order in left:
            del where[order]
            self._rows.pop(order, None)

    def parts(self, book: OrderBook, parts: list[bytes]) -> None:
        """Appends to `parts` the bids and asks of `book_snapshot(book, market)`."""
        self._side(book.bids, "bids", book, parts)
        self._side(book.asks, "asks", book, parts)
        kept = self._levels
        if len(kept) > len(book.bids) + len(book.asks):       # levels gone unnoticed: forget them
            live = {*book.bids.levels.values(), *book.asks.levels.values()}
            for level in [level for level in kept if level not in live]:
                self._forget(kept.pop(level))

    def _side(self, side: BookSide, name: str, book: OrderBook, parts: list[bytes]) -> None:
        levels = list(side.iter_levels())
        parts += (_PACKER.pack(name), _PACKER.pack_array_header(len(levels)))
        kept = self._levels
        for level in levels:
            runs = kept.get(level)
            if runs is None or runs.count() != level.live or runs.volume() != level.volume:
                log.warning("the kept runs of the %s level at %d of %s did not match it: rebuilt", name, level.price,
                            book.symbol)
                runs = self._from_level(level)
            parts += (_PAIR, runs.price_piece, _PACKER.pack_array_header(level.live))
            parts += (run.joined for run in runs.runs)

    def _from_level(self, level: PriceLevel) -> _LevelRuns:
        """The runs of `level` built from the level itself (its first snapshot here, or a mismatch)."""
        old = self._levels.pop(level, None)
        if old is not None:
            self._forget(old)
        runs = self._levels[level] = _LevelRuns(level)
        where = self._where
        run = _Run()
        for order in level:
            if order.status is _CANCELLED:
                continue
            if len(run.orders) >= RUN:
                self._join(run)
                runs.runs.append(run)
                run = _Run()
            run.orders.append(order)
            self._row(order)
            where[order] = (runs, run)
        if run.orders:
            self._join(run)
            runs.runs.append(run)
        return runs

    def _rebuild(self, runs: _LevelRuns, run: _Run, left: set[Order]) -> None:
        """`run` without the orders in `left`, joined again."""
        if left:
            run.orders = [order for order in run.orders if order not in left]
        if run.orders:
            self._join(run)
            return
        runs.runs.remove(run)
        if not runs.runs and self._levels.get(runs.level) is runs:
            del self._levels[runs.level]

    def _row(self, order: Order) -> bytes:
        """`order`'s packed row, packed again if its sizes changed since."""
        row = self._rows.get(order)
        if row is None or row[0] != order.quantity or row[1] != order.remaining:
            row = self._rows[order] = (order.quantity, order.remaining, _PACKER.pack(order_row(order)))
        return row[2]

    def _join(self, run: _Run) -> None:
        rows = self._rows
        run.joined = b"".join([rows[order][2] for order in run.orders])
        run.volume = sum(order.remaining for order in run.orders)

    def _forget(self, runs: _LevelRuns) -> None:
        where, rows = self._where, self._rows
        for run in runs.runs:
            for order in run.orders:
                if where.get(order, (None,))[0] is runs:
                    del where[order]
                    rows.pop(order, None)


def _level_of(book: OrderBook, order: Order) -> PriceLevel | None:
    price = order.price
    if price is None:
        return None
    side = book.side_of(order.side)
    return side.levels.get(price * side.sign)


def pack_books(rows: dict[str, RestingRows], orders: Iterable[Order], books: Mapping[str, OrderBook]) -> None:
    """`RestingRows.pack` for each book with the touched orders of its market (a book's runs are built whole the
    first time, from the book)."""
    by_market: dict[str, list[Order]] = {}
    for order in orders:
        by_market.setdefault(order.market, []).append(order)
    for market, touched in by_market.items():
        book = books.get(market)
        if book is not None:
            kept = rows.get(market)
            if kept is None:
                kept = rows[market] = RestingRows(book)
            kept.pack(touched, book)
