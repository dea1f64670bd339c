"""The exchange state's commitment: Merkle maps over the books, orders and accounts, one state root over them,
kept up to date block by block (`exchange/commitments/layout.py` says where each thing sits).

At a block's end `apply_block` rewrites only what the block touched: the orders whose records changed (and those
the closed-order history forgot), the book levels that moved, the block's trades, and the accounts of all of these.
`build` makes the same maps from a whole state at once (a restore, a state sync), and because each map's root
is a function of its entries alone, the two agree: every node, however it got its state, has one root.

An account's fills are the trades the markets' trade logs keep (the same window a node serves), so a restored
node, which has the logs and nothing older, holds the same fills as one that saw every block.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from hashlib import sha256
from typing import TYPE_CHECKING

from exchange.app.history import TradeRow
from exchange.app.views import order_key
from exchange.commitments import layout
from exchange.commitments.gcpause import cycle_collection_paused
from exchange.commitments.layout import ASKS, BIDS, book_key, fill_key, name_key, pack, price_key, trade_key
from exchange.commitments.tree import MerkleMap
from exchange.orders import Order, OrderStatus, Side

if TYPE_CHECKING:
    from exchange.app.machine import ExchangeState, Venue

UNTRIGGERED = "untriggered"
_RESTING = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
APP_DOMAIN = b"exchange-node/app-hash/v1\n"


def app_hash(results_chain: bytes, state_root: bytes) -> bytes:
    """What the chain certifies for the application: its results chain and its state root, in one hash."""
    return sha256(APP_DOMAIN + results_chain + state_root).digest()


def order_record(order: Order, status: str | None = None) -> bytes:
    """An order's committed record (`layout.py`): what its status read shows, in integer ticks and lots."""
    side, kind = order.side, order.type
    return pack([order.owner, order.market, None if side is None else side._value_, None if kind is None else kind._value_,
                 order.price, order.quantity, order.remaining, status or order.status._value_, order.reason])


def _side(order: Order) -> int:
    return BIDS if order.side is Side.BUY else ASKS


class MarketMaps:
    """One market's three maps; `kept` follows the market's trade log so a fill leaves with its trade."""

    __slots__ = ("symbol", "levels", "book", "trades", "block_trades", "kept")

    def __init__(self, symbol: str, trade_limit: int) -> None:
        self.symbol = symbol
        self.levels = MerkleMap(layout.LEVEL_KEY_BYTES)
        self.book = MerkleMap(layout.BOOK_KEY_BYTES)
        self.trades = MerkleMap(layout.TRADE_KEY_BYTES)
        self.block_trades = 0                          # entries in `trades` (the last block with trades here)
        self.kept: deque[TradeRow] = deque(maxlen=trade_limit)   # mirrors the market's trade log

    def record(self) -> bytes:
        return pack([self.levels.root(), self.book.root(), self.trades.root()])


class AccountMaps:
    """One account's three maps; an account whose maps are all empty leaves the accounts map."""

    __slots__ = ("open", "fills", "positions")

    def __init__(self) -> None:
        self.open = MerkleMap(layout.NAME_KEY_BYTES)
        self.fills = MerkleMap(layout.FILL_KEY_BYTES)
        self.positions = MerkleMap(layout.NAME_KEY_BYTES)

    def record(self) -> bytes:
        return pack([self.open.root(), self.fills.root(), self.positions.root()])

    def empty(self) -> bool:
        return not (len(self.open) or len(self.fills) or len(self.positions))


class StateCommitment:
    """The maps of one ExchangeState and the root over them."""

    def __init__(self, symbols: Iterable[str], trade_limit: int) -> None:
        self.trade_limit = trade_limit
        self.markets = {symbol: MarketMaps(symbol, trade_limit) for symbol in symbols}
        self.accounts: dict[str, AccountMaps] = {}
        self.orders = MerkleMap(layout.NAME_KEY_BYTES)
        self.market_map = MerkleMap(layout.NAME_KEY_BYTES)
        self.account_map = MerkleMap(layout.NAME_KEY_BYTES)
        self.top = MerkleMap(layout.TOP_KEY_BYTES)
        self._root = b""
        self._refresh(self.markets, ())

    @property
    def root(self) -> bytes:
        return self._root

    def market_levels(self, symbol: str) -> MerkleMap | None:
        maps = self.markets.get(symbol)
        return None if maps is None else maps.levels

    def market_trades(self, symbol: str) -> MerkleMap | None:
        maps = self.markets.get(symbol)
        return None if maps is None else maps.trades

    def account_maps(self, account: str) -> tuple[MerkleMap, MerkleMap] | None:
        maps = self.accounts.get(account)
        return None if maps is None else (maps.fills, maps.positions)

    # ------------------------------------------------------------------ one block

    @cycle_collection_paused
    def apply_block(self, state: ExchangeState, touched: Iterable[Order], forgotten: Iterable[str],
                    triggers_added: Iterable[str], trades: Iterable[tuple[str, TradeRow]]) -> bytes:
        """Rewrite what the block touched; returns the new state root."""
        accounts: set[str] = set()
        orders: dict[bytes, bytes | None] = {}
        markets: set[str] = set()
        opened: dict[str, dict[bytes, bytes | None]] = {}       # per account, then per market: one update each
        booked: dict[str, dict[bytes, bytes | None]] = {}
        for order in touched:
            self._order(state, order, orders, opened, booked)
        for account, changes in opened.items():
            self._account(account).open.update(changes)
        for symbol, changes in booked.items():
            self.markets[symbol].book.update(changes)
        accounts.update(opened)
        markets.update(booked)
        for order_id in forgotten:
            if state.open_orders.get(order_id) is None and order_id not in state.closed \
                    and order_id not in state.triggers:
                orders[name_key(order_id)] = None
        for order_id in triggers_added:
            entry = state.triggers.get(order_id)
            if entry is not None:
                orders[name_key(order_id)] = order_record(entry.order, UNTRIGGERED)
        self.orders.update(orders)
        by_market: dict[str, list[TradeRow]] = {}
        traders: set[str] = set()                    # positions move only by trades
        for symbol, row in trades:
            by_market.setdefault(symbol, []).append(row)
            traders.update((row[6], row[7]))
        for symbol, maps in self.markets.items():
            rows = by_market.get(symbol, [])
            if rows or maps.block_trades:
                self._block_trades(maps, rows, accounts)
                markets.add(symbol)
            venue = state.venues[symbol]
            if venue.touched:
                self._levels(maps, venue)
                markets.add(symbol)
        for account in traders:
            self._positions(state, account)
        self._refresh(markets, accounts | traders)
        return self._root

    def _order(self, state: ExchangeState, order: Order, orders: dict[bytes, bytes | None],
               opened: dict[str, dict[bytes, bytes | None]], booked: dict[str, dict[bytes, bytes | None]]) -> None:
        order_id, account = order.id, order.owner
        key = name_key(order_id)
        resting = state.open_orders.get(order_id) is order and order.status in _RESTING
        known = resting or order_id in state.closed
        record = order_record(order) if known else None
        waiting = state.triggers.get(order_id)
        if waiting is not None:
            record = order_record(waiting.order, UNTRIGGERED)
        orders[key] = record
        opened.setdefault(account, {})[key] = record if resting else None
        if order.price is not None and order.side is not None and order.market in self.markets:
            entry = book_key(_side(order), order.price, order_key(order))
            booked.setdefault(order.market, {})[entry] = pack([order_id, account, order.remaining]) if resting else None

    def _block_trades(self, maps: MarketMaps, rows: list[TradeRow], accounts: set[str]) -> None:
        kept = rows[-self.trade_limit:] if self.trade_limit else []
        changes: dict[bytes, bytes | None] = {trade_key(i): pack(list(row)) for i, row in enumerate(kept)}
        for index in range(len(kept), maps.block_trades):
            changes[trade_key(index)] = None
        maps.trades.update(changes)
        maps.block_trades = len(kept)
        fills: dict[str, dict[bytes, bytes | None]] = {}
        for row in rows:
            if len(maps.kept) == maps.kept.maxlen and maps.kept.maxlen:
                _fill(fills, maps.kept[0], None)
            if maps.kept.maxlen:
                maps.kept.append(row)
                _fill(fills, row, pack([maps.symbol, *row]))
        self._fills(fills, accounts)

    def _fills(self, fills: dict[str, dict[bytes, bytes | None]], accounts: set[str]) -> None:
        for account, changes in fills.items():
            self._account(account).fills.update(changes)
            accounts.add(account)

    def _levels(self, maps: MarketMaps, venue: Venue) -> None:
        book, changes = venue.engine.book, {}
        for level_key in venue.touched:
            side, levels = (BIDS, book.bids.levels) if level_key < 0 else (ASKS, book.asks.levels)
            level = levels.get(level_key)
            changes[price_key(side, abs(level_key))] = (pack([level.volume, level.live]) if level is not None
                                                        and level.live > 0 else None)
        maps.levels.update(changes)

    def _positions(self, state: ExchangeState, account: str) -> None:
        held = state.positions.amounts.get(account, {})
        maps = self._account(account)
        changes: dict[bytes, bytes | None] = {name_key(asset): None for asset in state.params.assets.scales}
        changes.update({name_key(asset): pack(str(amount)) for asset, amount in held.items() if amount})
        maps.positions.update(changes)

    def _account(self, account: str) -> AccountMaps:
        maps = self.accounts.get(account)
        if maps is None:
            maps = self.accounts[account] = AccountMaps()
        return maps

    def _refresh(self, markets: Iterable[str], accounts: Iterable[str]) -> None:
        self.market_map.update({name_key(symbol): self.markets[symbol].record() for symbol in markets})
        changes: dict[bytes, bytes | None] = {}
        for account in accounts:
            maps = self.accounts[account]
            if maps.empty():
                del self.accounts[account]
                changes[name_key(account)] = None
            else:
                changes[name_key(account)] = maps.record()
        self.account_map.update(changes)
        self.top.update({layout.MARKETS: self.market_map.root(), layout.ORDERS: self.orders.root(),
                         layout.ACCOUNTS: self.account_map.root()})
        self._root = self.top.root()

    # ------------------------------------------------------------------ a whole state at once

    @classmethod
    @cycle_collection_paused
    def build(cls, state: ExchangeState) -> "StateCommitment":
        """The maps of `state` made from its rows (a restore), each built at once from its sorted entries
        (`MerkleMap.build`, the shape `update` gives): the same roots `apply_block` keeps."""
        made = cls(state.venues, state.params.trade_history)
        orders: dict[bytes, bytes | None] = {}
        opened: dict[str, dict[bytes, bytes | None]] = {}
        booked: dict[str, dict[bytes, bytes | None]] = {}
        for order in _known_orders(state):
            made._order(state, order, orders, opened, booked)
        for entry in state.triggers.entries.values():
            orders[name_key(entry.order.id)] = order_record(entry.order, UNTRIGGERED)
        made.orders = _built(layout.NAME_KEY_BYTES, orders)
        for account, changes in opened.items():
            made._account(account).open = _built(layout.NAME_KEY_BYTES, changes)
        for symbol, changes in booked.items():
            made.markets[symbol].book = _built(layout.BOOK_KEY_BYTES, changes)
        fills: dict[str, dict[bytes, bytes | None]] = {}
        for symbol, venue in state.venues.items():
            maps = made.markets[symbol]
            rows = [row for row in venue.trades if row[8] == state.height]
            for row in venue.trades:
                if maps.kept.maxlen:
                    maps.kept.append(row)
                    _fill(fills, row, pack([symbol, *row]))
            maps.trades = _built(layout.TRADE_KEY_BYTES, {trade_key(i): pack(list(row)) for i, row in enumerate(rows)})
            maps.block_trades = len(rows)
            book = venue.engine.book
            maps.levels = _built(layout.LEVEL_KEY_BYTES, {
                price_key(side, abs(key)): pack([level.volume, level.live])
                for side, levels in ((BIDS, book.bids.levels), (ASKS, book.asks.levels))
                for key, level in levels.items() if level.live > 0})
        for account, changes in fills.items():
            made._account(account).fills = _built(layout.FILL_KEY_BYTES, changes)
        accounts = {*opened, *fills, *state.positions.amounts}
        for account in accounts:
            made._positions(state, account)
        made._refresh(made.markets, accounts)
        return made


def _built(key_bytes: int, entries: dict[bytes, bytes | None]) -> MerkleMap:
    return MerkleMap.build(key_bytes, {key: value for key, value in entries.items() if value is not None})


def _fill(fills: dict[str, dict[bytes, bytes | None]], row: TradeRow, value: bytes | None) -> None:
    """Set (or with None drop) the fill of trade `row` in both its accounts' changes."""
    key = fill_key(row[8], row[0])
    for account in (row[6], row[7]):
        fills.setdefault(account, {})[key] = value


def _known_orders(state: ExchangeState) -> Iterator[Order]:
    yield from state.open_orders.values()
    yield from state.closed
