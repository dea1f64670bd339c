"""A market's ticker: best bid and ask, the last trade, and 24-hour volume, high and low.

The 24 hours are this node's view: trades are counted into one-minute buckets as the node
publishes them (so a node that started an hour ago reports an hour). Memory is at most 1,440
buckets per market; high and low are kept current per trade and recomputed over the buckets only
when the oldest minute falls out of the window.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, TypedDict

WINDOW_MINUTES = 24 * 60


class _Minute:
    __slots__ = ("minute", "lots", "trades", "high", "low")

    def __init__(self, minute: int, price: int) -> None:
        self.minute, self.lots, self.trades, self.high, self.low = minute, 0, 0, price, price


class TickerView(TypedDict):
    """A market's ticker as the `ticker` channel sends it (decimal strings; None where there is none)."""

    bid: str | None
    bid_qty: str | None
    ask: str | None
    ask_qty: str | None
    last_price: str | None
    last_qty: str | None
    last_taker_side: str | None
    volume_24h: str
    trades_24h: int
    high_24h: str | None
    low_24h: str | None


class Ticker:
    __slots__ = ("minutes", "lots", "trades", "high", "low", "last")

    def __init__(self) -> None:
        self.minutes: deque[_Minute] = deque()
        self.lots = 0
        self.trades = 0
        self.high: int | None = None
        self.low: int | None = None
        self.last: tuple[int, int, str] | None = None   # (price, lots, taker side)

    def add_trade(self, price: int, lots: int, taker_side: str, now: float) -> None:
        minute = int(now // 60)
        self._expire(minute)
        if not self.minutes or self.minutes[-1].minute < minute:
            self.minutes.append(_Minute(minute, price))
        bucket = self.minutes[-1]
        bucket.lots += lots
        bucket.trades += 1
        bucket.high, bucket.low = max(bucket.high, price), min(bucket.low, price)
        self.lots += lots
        self.trades += 1
        self.high = price if self.high is None else max(self.high, price)
        self.low = price if self.low is None else min(self.low, price)
        self.last = (price, lots, taker_side)

    def _expire(self, minute: int) -> None:
        expired = False
        while self.minutes and self.minutes[0].minute <= minute - WINDOW_MINUTES:
            gone = self.minutes.popleft()
            self.lots -= gone.lots
            self.trades -= gone.trades
            expired = True
        if expired:
            self.high = max((m.high for m in self.minutes), default=None)
            self.low = min((m.low for m in self.minutes), default=None)

    def view(self, best_bid: tuple[int, int] | None, best_ask: tuple[int, int] | None, now: float,
             price: Callable[[int], str], qty: Callable[[int], str]) -> TickerView:
        self._expire(int(now // 60))
        last = self.last
        return {
            "bid": None if best_bid is None else price(best_bid[0]),
            "bid_qty": None if best_bid is None else qty(best_bid[1]),
            "ask": None if best_ask is None else price(best_ask[0]),
            "ask_qty": None if best_ask is None else qty(best_ask[1]),
            "last_price": None if last is None else price(last[0]),
            "last_qty": None if last is None else qty(last[1]),
            "last_taker_side": None if last is None else last[2],
            "volume_24h": qty(self.lots), "trades_24h": self.trades,
            "high_24h": None if self.high is None else price(self.high),
            "low_24h": None if self.low is None else price(self.low),
        }
