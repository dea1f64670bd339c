"""MarketFeed: what the exchange layer tells the stream, and the market channels built from it.

The exchange layer calls, whenever state becomes final:

    feed.publish_level(market, side, price_ticks, total_lots)    # side "bids"/"asks"; 0 lots = level gone
    feed.publish_trade(market, TradePrint(...), ts=None)         # ts: seconds since the epoch (default: now)
    feed.publish_orders([order_dict, ...])                       # this node's orders, API shape (GET /orders/{id})
    feed.resync(market=None)                                     # the state was replaced: reload from the source

and hands it a `MarketSource` to read snapshots from at start and on `resync`. Publishing only
records; one flush per event-loop pass turns everything published in that pass into at most one
message per subscription (per-level book updates with a checksum, new trades, a ticker, order
updates), each encoded once and shared by every subscriber of the same channel.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Iterable, NamedTuple, Protocol, TypedDict

import orjson

from exchange.markets import Market
from node.marketdata.book import SIDES, BookMirror, DepthView, Level
from node.marketdata.session import StreamSession, Subscription
from exchange.app.candles import INTERVALS_MS as CANDLE_INTERVALS_MS
from node.marketdata.ticker import Ticker, TickerView
from node.api.base import Json, JsonObject

BOOK_DEPTHS = (1, 10, 25, 100, 250)
DEFAULT_DEPTH = 25
CANDLES_KEPT = 500        # candles a new candles subscriber gets first (oldest first)
TRADES_KEPT = 100         # trades per market a new trades subscriber gets first (oldest first)


class TradePrint(NamedTuple):
    """One final trade in integer ticks and lots (the stream formats it per market)."""

    id: str
    price: int
    qty: int
    taker_side: str          # "buy" or "sell"
    maker_order_id: str
    taker_order_id: str
    buy_order_id: str
    sell_order_id: str


class TradeView(TypedDict):
    """A trade as the `trades` channel sends it: decimal strings, `ts` when this node learnt it (s)."""

    id: str
    market: str
    price: str
    qty: str
    taker_side: str
    maker_order_id: str
    taker_order_id: str
    buy_order_id: str
    sell_order_id: str
    ts: float


class MarketSource(Protocol):
    """Where the feed reads the current state: at start, and when told to `resync`."""

    def levels(self, market: str) -> tuple[list[Level], list[Level]]:
        """Every (price ticks, total lots) level of the final book: (bids, asks), best first."""

    def recent_trades(self, market: str, limit: int) -> list[TradePrint]:
        """The last `limit` final trades, oldest first."""

    def open_orders(self) -> list[JsonObject]:
        """This node's open orders in the API's order shape."""

    def candles(self, market: str, interval_ms: int, start_ms: int | None) -> list[JsonObject]:
        """OHLCV candles of the kept trades by block time, from the one open at `start_ms` (None: all)."""


class SubscribeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _MarketState:
    """One market's mirror, views, recent trades, ticker, subscribers and unflushed changes."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.mirror = BookMirror()
        self.views: dict[int, DepthView] = {}
        self.book_subs: dict[int, list[Subscription]] = {}
        self.trade_subs: list[Subscription] = []
        self.ticker_subs: list[Subscription] = []
        self.candle_subs: dict[str, list[Subscription]] = {}     # interval -> subscribers
        self.candle_open: dict[str, int] = {}                     # interval -> the newest candle's open time sent
        self.trades: deque[TradeView] = deque(maxlen=TRADES_KEPT)
        self.ticker = Ticker()
        self.ticker_sent: TickerView | None = None
        self.touched: dict[str, set[int]] = {side: set() for side in SIDES}
        self.new_trades: list[tuple[TradePrint, float]] = []

    def trade_json(self, trade: TradePrint, ts: float) -> TradeView:
        market = self.market
        return {"id": trade.id, "market": market.symbol, "price": market.format_price(trade.price),
                "qty": market.format_qty(trade.qty), "taker_side": trade.taker_side,
                "maker_order_id": trade.maker_order_id, "taker_order_id": trade.taker_order_id,
                "buy_order_id": trade.buy_order_id, "sell_order_id": trade.sell_order_id, "ts": round(ts, 6)}

    def ticker_json(self, now: float) -> TickerView:
        mirror, market = self.mirror, self.market
        bid, ask = mirror.top("bids", 1), mirror.top("asks", 1)
        return self.ticker.view(bid[0] if bid else None, ask[0] if ask else None, now,
                                market.format_price, market.format_qty)


def _dumps(data: object) -> bytes:
    return orjson.dumps(data)


class MarketFeed:
    def __init__(self, markets: Iterable[Market], source: MarketSource,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        self.markets: dict[str, _MarketState] = {m.symbol: _MarketState(m) for m in markets}
        self.order_subs: list[Subscription] = []
        self._new_orders: dict[str, JsonObject] = {}
        self._dirty: set[_MarketState] = set()
        self._flush_handle: asyncio.Handle | None = None
        self.published = {"levels": 0, "trades": 0, "orders": 0}
        for symbol in self.markets:
            self._load(symbol)

    # --- the publisher's side -------------------------------------------------------------------
    def publish_level(self, market: str, side: str, price: int, lots: int) -> None:
        state = self.markets[market]
        if state.mirror.set_level(side, price, lots):
            state.touched[side].add(price)
            self.published["levels"] += 1
            self._mark(state)

    def publish_trade(self, market: str, trade: TradePrint, ts: float | None = None) -> None:
        state = self.markets[market]
        state.new_trades.append((trade, self.clock() if ts is None else ts))
        self.published["trades"] += 1
        self._mark(state)

    def publish_orders(self, orders: Iterable[JsonObject]) -> None:
        for order in orders:
            self._new_orders[order["id"]] = order      # the latest state of an order wins within one pass
            self.published["orders"] += 1
        if self._new_orders:
            self._schedule()

    def resync(self, market: str | None = None, *, trades: bool = False) -> None:
        """Reload the book from the source (the exchange state was replaced, e.g. rolled back or restored
        from a snapshot); subscribers get ordinary updates for whatever differs. With `trades`, the recent
        trades new subscribers start from are reloaded too (no update is sent for those)."""
        for symbol in ([market] if market else list(self.markets)):
            state = self.markets[symbol]
            if trades:
                state.trades.clear()
                self._load_trades(state)
            bids, asks = self.source.levels(symbol)
            before = {side: {p for p, _ in state.mirror.top(side, 1 << 30)} for side in SIDES}
            state.mirror.replace(bids, asks)
            after = {"bids": {p for p, _ in bids}, "asks": {p for p, _ in asks}}
            for side in SIDES:
                state.touched[side] |= before[side] | after[side]
            self._mark(state)

    def _load(self, symbol: str) -> None:
        state = self.markets[symbol]
        bids, asks = self.source.levels(symbol)
        state.mirror.replace(bids, asks)
        self._load_trades(state)

    def _load_trades(self, state: _MarketState) -> None:
        now = self.clock()
        for trade in self.source.recent_trades(state.market.symbol, TRADES_KEPT):
            state.trades.append(state.trade_json(trade, now))

    def _mark(self, state: _MarketState) -> None:
        self._dirty.add(state)
        self._schedule()

    def _schedule(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    # --- one batch -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send everything published since the last flush: one message per subscription at most."""
        self._flush_handle = None
        now = self.clock()
        dirty, self._dirty = self._dirty, set()
        for state in dirty:
            self._flush_market(state, now)
        if self._new_orders:
            orders, self._new_orders = list(self._new_orders.values()), {}
            if self.order_subs:
                body = _dumps({"type": "update", "orders": orders})
                for sub in self.order_subs:
                    sub.send(body)

    def _flush_market(self, state: _MarketState, now: float) -> None:
        touched = state.touched
        top_moved = False
        traded = bool(state.new_trades)
        if touched["bids"] or touched["asks"]:
            for depth, view in state.views.items():
                changes = view.refresh(state.mirror, touched)
                if changes is not None:
                    body = _dumps({"type": "update", **changes, "checksum": view.checksum()})
                    for sub in state.book_subs[depth]:
                        sub.send(body)
            top_moved = True
            state.touched = {side: set() for side in SIDES}
        if state.new_trades:
            fresh = [state.trade_json(trade, ts) for trade, ts in state.new_trades]
            for trade, ts in state.new_trades:
                state.ticker.add_trade(trade.price, trade.qty, trade.taker_side, ts)
            state.new_trades = []
            state.trades.extend(fresh)
            if state.trade_subs:
                body = _dumps({"type": "update", "trades": fresh})
                for sub in state.trade_subs:
                    sub.send(body)
            top_moved = True
        if state.candle_subs and traded:
            self._flush_candles(state)
        if top_moved and state.ticker_subs:
            ticker = state.ticker_json(now)
            if ticker != state.ticker_sent:
                state.ticker_sent = ticker
                body = _dumps({"type": "update", "ticker": ticker})
                for sub in state.ticker_subs:
                    sub.send(body)

    def _flush_candles(self, state: _MarketState) -> None:
        """The candles the new trades changed (the newest, and any opened since), as block time says."""
        for interval, subs in state.candle_subs.items():
            size = CANDLE_INTERVALS_MS[interval]
            changed = self.source.candles(state.market.symbol, size, state.candle_open.get(interval))
            if not changed:
                continue
            state.candle_open[interval] = changed[-1]["t"]
            body = _dumps({"type": "update", "candles": changed})
            for sub in subs:
                sub.send(body)

    # --- the subscribers' side -------------------------------------------------------------------
    def market_state(self, market: Json) -> _MarketState:
        state = self.markets.get(market) if isinstance(market, str) else None
        if state is None:
            raise SubscribeError("unknown_market", f"unknown market {market!r}; markets: {', '.join(self.markets)}")
        return state

    def subscribe_book(self, session: StreamSession, market: Json, depth: Json) -> Subscription:
        state = self.market_state(market)
        depth = DEFAULT_DEPTH if depth is None else depth
        if type(depth) is not int or depth not in BOOK_DEPTHS:
            raise SubscribeError("invalid_depth", f"depth must be one of {', '.join(map(str, BOOK_DEPTHS))}")
        view = state.views.get(depth)
        if view is None:
            market_ = state.market
            view = state.views[depth] = DepthView(state.mirror, depth, market_.format_price, market_.format_qty)
            state.book_subs[depth] = []
        sub = Subscription(session, session.new_chan(), "book", (market, depth),
                           {"channel": "book", "market": market, "depth": depth})
        state.book_subs[depth].append(sub)
        return sub

    def book_snapshot(self, sub: Subscription) -> None:
        market, depth = sub.key
        view = self.markets[market].views[depth]
        sub.send(_dumps({"type": "snapshot", **view.snapshot(), "checksum": view.checksum()}))

    def subscribe_trades(self, session: StreamSession, market: Json) -> Subscription:
        return self._subscribe_market(session, market, "trades")

    def subscribe_ticker(self, session: StreamSession, market: Json) -> Subscription:
        return self._subscribe_market(session, market, "ticker")

    def _subscribe_market(self, session: StreamSession, market: Json, channel: str) -> Subscription:
        state = self.market_state(market)
        sub = Subscription(session, session.new_chan(), channel, market, {"channel": channel, "market": market})
        (state.trade_subs if channel == "trades" else state.ticker_subs).append(sub)
        return sub

    def trades_snapshot(self, sub: Subscription) -> None:
        sub.send(_dumps({"type": "snapshot", "trades": list(self.markets[sub.key].trades)}))

    def ticker_snapshot(self, sub: Subscription) -> None:
        state = self.markets[sub.key]
        ticker = state.ticker_json(self.clock())
        if len(state.ticker_subs) == 1:      # the first subscriber: updates are compared with this from now on
            state.ticker_sent = ticker
        sub.send(_dumps({"type": "snapshot", "ticker": ticker}))

    def subscribe_candles(self, session: StreamSession, market: Json, interval: Json) -> Subscription:
        state = self.market_state(market)
        if not isinstance(interval, str) or interval not in CANDLE_INTERVALS_MS:
            raise SubscribeError("invalid_interval", f"interval must be one of {', '.join(CANDLE_INTERVALS_MS)}")
        sub = Subscription(session, session.new_chan(), "candles", (market, interval),
                           {"channel": "candles", "market": market, "interval": interval})
        state.candle_subs.setdefault(interval, []).append(sub)
        return sub

    def candles_snapshot(self, sub: Subscription) -> None:
        market, interval = sub.key
        state = self.markets[market]
        candles = self.source.candles(market, CANDLE_INTERVALS_MS[interval], None)[-CANDLES_KEPT:]
        if candles and len(state.candle_subs[interval]) == 1:
            state.candle_open[interval] = candles[-1]["t"]
        elif not candles:
            state.candle_open.pop(interval, None)
        sub.send(_dumps({"type": "snapshot", "candles": candles}))

    def subscribe_orders(self, session: StreamSession) -> Subscription:
        if not session.authenticated:
            raise SubscribeError("auth_required", 'send {"event": "auth", "token": ...} before subscribing to orders')
        sub = Subscription(session, session.new_chan(), "orders", None, {"channel": "orders"})
        self.order_subs.append(sub)
        return sub

    def orders_snapshot(self, sub: Subscription) -> None:
        sub.send(_dumps({"type": "snapshot", "orders": self.source.open_orders()}))

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.channel == "orders":
            _discard(self.order_subs, sub)
            return
        if sub.channel == "candles":
            market, interval = sub.key
            state = self.markets[market]
            _discard(state.candle_subs.get(interval, []), sub)
            if not state.candle_subs.get(interval):
                state.candle_subs.pop(interval, None)
                state.candle_open.pop(interval, None)
            return
        if sub.channel == "book":
            market, depth = sub.key
            state = self.markets[market]
            subs = state.book_subs.get(depth, [])
            _discard(subs, sub)
            if not subs:                     # nobody holds this depth any more: stop maintaining it
                state.book_subs.pop(depth, None)
                state.views.pop(depth, None)
            return
        state = self.markets[sub.key]
        _discard(state.trade_subs if sub.channel == "trades" else state.ticker_subs, sub)

    def subscriber_counts(self) -> dict[str, int]:
        counts = {"book": 0, "trades": 0, "ticker": 0, "candles": 0, "orders": len(self.order_subs)}
        for state in self.markets.values():
            counts["book"] += sum(len(subs) for subs in state.book_subs.values())
            counts["trades"] += len(state.trade_subs)
            counts["ticker"] += len(state.ticker_subs)
            counts["candles"] += sum(len(subs) for subs in state.candle_subs.values())
        return counts


def _discard(subs: list[Subscription], sub: Subscription) -> None:
    try:
        subs.remove(sub)
    except ValueError:
        pass
