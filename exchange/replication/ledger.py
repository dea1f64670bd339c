"""FinalLedger: the matching engines folded over final events in key order, with rollback.

Events are applied strictly in increasing key `(lamport, origin, seq)`. Every `snapshot_every`
events the engines' snapshots and the running hashes are kept (a few, plus the base), so a late
event whose key falls below the applied prefix rolls the ledger back to the newest snapshot below
it; the caller re-queues the events `rollback` returns and applies them again with the late one.
The trade log, the per-order outcomes and both running hashes (final prefix, trades) are rolled
back with it, so they always describe exactly the applied prefix.
"""
from __future__ import annotations

import bisect
from typing import Any, Callable

from exchange.events import OrderCancelled, OrderRejected, Trade
from exchange.markets import MarketRegistry
from exchange.matching import MatchingEngine
from exchange.orders import OrderStatus
from exchange.replication.records import GENESIS, SIDES, STP_MODES, TYPES, ReplEvent, chain_hash, pack

_FILLED, _CANCELLED, _REJECTED = OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED

# A trade as kept in the log: (id, market, price, qty, maker_id, taker_id, buy_id, sell_id, taker_side)
TradeRow = tuple


def _place(engine: MatchingEngine, event: ReplEvent) -> list:
    """Apply an order event (body `["n", market, side, kind, price, qty, account, stp]`) to `engine`."""
    _, _, side, kind, price, qty, account, stp = event.body
    return engine.place_order(event.id, SIDES[side], TYPES[kind], qty, price, account, event.key,
                              None if stp is None else STP_MODES[stp])


class _Snapshot:
    __slots__ = ("count", "last_key", "books", "prefix_hash", "trade_hash", "trade_lens", "closed_len")

    def __init__(self, count: int, last_key: Any, books: dict, prefix_hash: bytes, trade_hash: bytes,
                 trade_lens: dict[str, int], closed_len: int) -> None:
        self.count, self.last_key, self.books = count, last_key, books
        self.prefix_hash, self.trade_hash = prefix_hash, trade_hash
        self.trade_lens, self.closed_len = trade_lens, closed_len


class FinalLedger:
    def __init__(self, markets: MarketRegistry, snapshot_every: int = 1000, keep_snapshots: int = 8) -> None:
        self.markets = markets
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self.engines = {market.symbol: MatchingEngine(market) for market in markets}
        self.applied: list[ReplEvent] = []          # final events after `base_count`, in key order
        self.keys: list[Any] = []                   # their keys (for bisect)
        self.prefix_hashes: list[bytes] = []        # running final-prefix hash after each applied event
        self.base_count = 0                         # events folded into a snapshot we started from
        self.base_prefix_hash = GENESIS
        self.trade_hash = GENESIS
        self.trades: dict[str, list[TradeRow]] = {m: [] for m in self.engines}
        self.trade_count = 0
        self.closed: dict[str, tuple[str, int, str | None]] = {}   # order id -> (status, remaining, reason)
        self.closed_order: list[tuple[int, str]] = []               # (count when closed, id), in order
        self.listeners: list[Callable[[ReplEvent, list], None]] = []
        self.rollbacks = 0
        self.replayed = 0
        self._digest_cache: tuple | None = None
        self._base = self._take_snapshot(last_key=None)
        self._snapshots: list[_Snapshot] = []

    # --- views ---------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Number of final events (including those inside a starting snapshot)."""
        return self.base_count + len(self.applied)

    @property
    def prefix_hash(self) -> bytes:
        return self.prefix_hashes[-1] if self.prefix_hashes else self.base_prefix_hash

    def prefix_hash_at(self, count: int) -> bytes | None:
        if count == self.base_count:
            return self.base_prefix_hash
        index = count - self.base_count - 1
        return self.prefix_hashes[index] if 0 <= index < len(self.prefix_hashes) else None

    @property
    def last_key(self) -> Any:
        return self.keys[-1] if self.keys else self._base.last_key

    def digest(self) -> str:
        """One hex digest over every market's book digest (markets in configuration order); cached per prefix."""
        return self._digests()[1]

    def market_digest(self, symbol: str) -> str:
        """The final book digest of one market (the same cache as `digest`)."""
        return self._digests()[0][symbol]

    def _digests(self) -> tuple[dict[str, str], str]:
        stamp = (self.count, self.prefix_hash)
        if self._digest_cache is None or self._digest_cache[0] != stamp:
            books = {symbol: engine.digest() for symbol, engine in self.engines.items()}
            combined = chain_hash(b"books", b"".join(bytes.fromhex(d) for d in books.values())).hex()
            self._digest_cache = (stamp, books, combined)
        return self._digest_cache[1], self._digest_cache[2]

    # --- folding -------------------------------------------------------------------------------
    def apply(self, event: ReplEvent) -> list:
        """Apply the next final event (its key must be above `last_key`); returns the engine's events."""
        body = event.body
        engine = self.engines.get(body[1])
        closed, closed_order, count = self.closed, self.closed_order, self.count + 1
        results: list = []
        if engine is not None:
            if body[0] == "n":
                market, qty = body[1], body[5]
                results = _place(engine, event)
                order = results[0].order if results and type(results[0]) is not OrderRejected else None
                for item in results:
                    kind_ = type(item)
                    if kind_ is Trade:
                        self._record_trade(item, market)
                        maker = item.maker
                        if maker.remaining == 0 and maker.id not in closed:
                            closed[maker.id] = ("filled", 0, None)
                            closed_order.append((count, maker.id))
                    elif kind_ is OrderCancelled and item.order_id != event.id and item.order_id not in closed:
                        closed[item.order_id] = ("cancelled", item.remaining, item.reason)
                        closed_order.append((count, item.order_id))
                if order is None:
                    reason = results[0].reason if results else "rejected"
                    closed[event.id] = ("rejected", qty, reason)
                    closed_order.append((count, event.id))
                elif order.status is _FILLED or order.status is _CANCELLED:
                    closed[event.id] = (order.status.value, order.remaining, order.reason)
                    closed_order.append((count, event.id))
            else:
                order_id, account = body[2], body[3]
                results = engine.cancel_order(order_id, account)
                for item in results:
                    if type(item) is OrderCancelled and item.order_id not in closed:
                        closed[item.order_id] = ("cancelled", item.remaining, item.reason)
                        closed_order.append((count, item.order_id))
        self.applied.append(event)
        self.keys.append(event.key)
        self.prefix_hashes.append(chain_hash(self.prefix_hash, event.hash))
        if len(self.applied) % self.snapshot_every == 0:
            self._snapshots.append(self._take_snapshot(event.key))
            if len(self._snapshots) > self.keep_snapshots:
                del self._snapshots[0]
        for listener in self.listeners:
            listener(event, results)
        return results

    @staticmethod
    def apply_to_engine(event: ReplEvent, engine: MatchingEngine) -> list:
        """Apply one event to a scratch engine (the provisional view); no bookkeeping."""
        body = event.body
        if body[0] == "n":
            return _place(engine, event)
        return engine.cancel_order(body[2], body[3])

    def _record_trade(self, trade: Trade, market: str) -> None:
        row = (trade.id, market, trade.price, trade.quantity, trade.maker_order_id, trade.taker_order_id,
               trade.buy_order_id, trade.sell_order_id, trade.taker_side.value)
        self.trades[market].append(row)
        self.trade_count += 1
        self.trade_hash = chain_hash(self.trade_hash, pack(row))

    # --- rollback ------------------------------------------------------------------------------
    def rollback(self, key: Any) -> list[ReplEvent] | None:
        """Undo every applied event with a key above `key`; returns them (to re-apply), or None if the
        needed history is older than this ledger's base snapshot."""
        base_key = self._base.last_key
        if base_key is not None and key <= base_key:
            return None
        position = bisect.bisect_left(self.keys, key)    # applied[position:] must be undone
        snapshot = self._base
        for candidate in reversed(self._snapshots):
            if candidate.count - self.base_count <= position:
                snapshot = candidate
                break
        keep = snapshot.count - self.base_count
        undone = self.applied[keep:]
        self._restore(snapshot)
        self._snapshots = [s for s in self._snapshots if s.count <= snapshot.count]
        self.rollbacks += 1
        self.replayed += len(undone)
        return undone

    def _take_snapshot(self, last_key: Any = None) -> _Snapshot:
        return _Snapshot(self.count, last_key,
                         {symbol: engine.snapshot() for symbol, engine in self.engines.items()},
                         self.prefix_hash, self.trade_hash, {m: len(t) for m, t in self.trades.items()},
                         len(self.closed_order))

    def _restore(self, snapshot: _Snapshot) -> None:
        for symbol, engine in self.engines.items():
            engine.restore(snapshot.books[symbol])
        keep = snapshot.count - self.base_count
        del self.applied[keep:], self.keys[keep:], self.prefix_hashes[keep:]
        self.trade_hash = snapshot.trade_hash
        for market, rows in self.trades.items():
            dropped = len(rows) - snapshot.trade_lens.get(market, 0)
            self.trade_count -= dropped
            del rows[snapshot.trade_lens.get(market, 0):]
        while len(self.closed_order) > snapshot.closed_len:
            _, order_id = self.closed_order.pop()
            self.closed.pop(order_id, None)

    # --- snapshot transfer (a joining node starts from a peer's final state) --------------------
    def export_state(self) -> dict[str, Any]:
        return {"count": self.count, "last_key": list(self.last_key) if self.last_key else None,
                "prefix_hash": self.prefix_hash, "trade_hash": self.trade_hash,
                "books": {symbol: engine.snapshot() for symbol, engine in self.engines.items()}}

    def import_state(self, state: dict[str, Any]) -> None:
        """Replace everything with a peer's exported final state (raises on a malformed one)."""
        books = state["books"]
        for symbol, engine in self.engines.items():
            engine.restore(books[symbol])
        self.applied, self.keys, self.prefix_hashes = [], [], []
        self.base_count = int(state["count"])
        self.base_prefix_hash = bytes(state["prefix_hash"])
        self.trade_hash = bytes(state["trade_hash"])
        self.trades = {m: [] for m in self.engines}
        self.trade_count = 0
        self.closed, self.closed_order = {}, []
        last_key = state.get("last_key")
        self._base = self._take_snapshot(tuple(last_key) if last_key else None)
        self._snapshots = []
