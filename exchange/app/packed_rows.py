"""The snapshot's many rows kept packed, so a snapshot joins bytes instead of building and packing a row per order.

A snapshot is every node's work at the same height. Most of its rows do not change between two snapshots: a
resting order's row changes only when it is filled or reduced, a closed order's never, an account's only when it
trades, a replay bucket's only while transactions expiring in it still arrive. Each is packed once and packed
again only when it changed, and the document is the concatenation of those pieces under msgpack headers, which
is byte for byte what packing the whole document at once gives (msgpack encodes a value the same wherever it
sits). The rows of the orders a block touched or closed are packed at the end of that block, so a snapshot,
gathered in the loop or forked, finds them packed.

An account's or a replay bucket's kept row is checked, not trusted: it is reused only while the fields that can
change on that very object are what they were when it was packed (an account's amounts; a replay bucket's own
object and its size, since a bucket only grows until it is dropped whole). Resting orders are kept in runs per
price level, brought up to date from the orders each block touched and checked against each level's count and
volume (resting_rows.py); closed orders are final, and their rows are joined in runs (closed_rows.py). The unit
tests compare every snapshot they take with a document built the plain way.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import msgpack

from exchange.app.closed_rows import ClosedRows
from exchange.app.history import ClosedOrders
from exchange.app.positions import Positions
from exchange.app.resting_rows import RestingRows, pack_books
from exchange.app.replay import ReplayWindow
from exchange.book import OrderBook
from exchange.markets import Market
from exchange.orders import Order
from exchange.snapshot import SNAPSHOT_FORMAT


def packb(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


_PACKER = msgpack.Packer(use_bin_type=True)
array_header = _PACKER.pack_array_header
_BOOK_HEADER = _PACKER.pack_map_header(6)

_Bucket = tuple[dict[str, None], int, list[str], bytes]    # the bucket, its size then, its ids sorted, packed


class PackedRows:
    """One state's kept pieces: resting orders by market, closed orders, accounts' positions, replay buckets."""

    __slots__ = ("_resting", "_closed", "_accounts", "_buckets")

    def __init__(self) -> None:
        self._resting: dict[str, RestingRows] = {}
        self._closed = ClosedRows()
        self._accounts: dict[str, tuple[tuple[tuple[str, int], ...], bytes]] = {}
        self._buckets: dict[int, _Bucket] = {}

    def book(self, book: OrderBook, market: Market, parts: list[bytes]) -> None:
        """Appends to `parts` what joins to `packb(book_snapshot(book, market))`."""
        kept = self._resting.get(market.symbol)
        if kept is None:
            kept = self._resting[market.symbol] = RestingRows(book)
        parts += (_BOOK_HEADER, packb("format"), packb(SNAPSHOT_FORMAT), packb("market"), packb(market.symbol),
                  packb("tick"), packb(market.tick.text), packb("lot"), packb(market.lot.text))
        kept.parts(book, parts)

    def pack_resting(self, orders: Iterable[Order], books: Mapping[str, OrderBook]) -> None:
        """Brings the kept runs of resting orders up to date with the orders a block touched, at its end, so the
        snapshot finds them packed: a few rows at the end of each block rather than every row that came since, on
        every node at once, at the snapshot's height (resting_rows.py)."""
        pack_books(self._resting, orders, books)

    def closed(self, closed: ClosedOrders, parts: list[bytes]) -> None:
        """Appends to `parts` what joins to `packb([closed_row(order) for order in closed])`."""
        self._closed.parts(closed, parts)

    def pack_closed(self, closed: ClosedOrders) -> None:
        """Packs now the rows of the orders closed since the last call (a block's): see closed_rows.py."""
        self._closed.pack(closed)

    def positions(self, positions: Positions, amount_of: Callable[[int], int | str], parts: list[bytes]) -> None:
        """Appends to `parts` what joins to `packb([[account, [[asset, amount_of(amount)], ...]], ...])` over
        `positions.rows()`."""
        amounts = positions.amounts
        kept = self._accounts
        fresh: dict[str, tuple[tuple[tuple[str, int], ...], bytes]] = {}
        accounts = sorted(amounts)
        parts.append(array_header(len(accounts)))
        for account in accounts:
            held = amounts[account]
            items = tuple(held.items())
            entry = kept.get(account)
            if entry is None or entry[0] != items:
                entry = (items, packb([account, [[asset, amount_of(amount)] for asset, amount in sorted(items)]]))
            fresh[account] = entry
            parts.append(entry[1])
        self._accounts = fresh

    def replay(self, window: ReplayWindow, parts: list[bytes]) -> None:
        """Appends to `parts` what joins to `packb(window.rows())`. A bucket that grew since it was packed is
        sorted again as a merge of its sorted old ids and its new ones (its ids are in the order they came, so
        the new are its last)."""
        kept = self._buckets
        fresh: dict[int, _Bucket] = {}
        buckets = window.buckets
        keys = sorted(buckets)
        parts.append(array_header(len(keys)))
        for key in keys:
            ids = buckets[key]
            entry = kept.get(key)
            if entry is None or entry[0] is not ids or entry[1] != len(ids):
                if entry is not None and entry[0] is ids and entry[1] < len(ids):
                    ordered = entry[2] + sorted(list(ids)[entry[1]:])
                    ordered.sort()              # two sorted runs: a merge
                else:
                    ordered = sorted(ids)
                entry = (ids, len(ids), ordered, packb([key, ordered]))
            fresh[key] = entry
            parts.append(entry[3])
        self._buckets = fresh
