"""Trade history by time: pages of trades with cursors, and OHLCV candles, from the kept trade log.

Both read the market's trade rows the state keeps (`trade_history` of them per market, part of every
snapshot), stamped with their block's consensus time, so every node at one height answers the same,
whichever way it reached that height. Candles are computed on request (integer ticks and lots, formatted
at the market's scales); a candle exists only for an interval that had trades, opening at the interval's
start in block time (UTC, since the Unix epoch).
"""
from __future__ import annotations

from typing import Final, Iterable, Sequence

from exchange.app.history import TradeRow
from exchange.markets import Market
from exchange.app.views import View
from exchange.units import format_scaled

INTERVALS_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000,
                "1d": 86_400_000}
_TIME: Final = 9      # TradeRow fields (Final, so mypy types the tuple's items they index)
_PRICE: Final = 1
_QTY: Final = 2
_ID: Final = 0


class CursorExpired(LookupError):
    """The trade a cursor names has left the kept history: the page cannot continue without a gap."""


def trades_between(rows: Sequence[TradeRow], start_ms: int | None, end_ms: int | None, cursor: str | None,
                   limit: int, account: str | None = None) -> tuple[list[TradeRow], str | None]:
    """Rows with start <= time < end (oldest first), after the trade `cursor` names, at most `limit`; and the
    cursor of the next page (None when this one reached the end)."""
    begin = 0
    if cursor is not None:
        begin = next((i + 1 for i, row in enumerate(rows) if row[_ID] == cursor), -1)
        if begin < 0:
            raise CursorExpired(cursor)
    chosen: list[TradeRow] = []
    for row in rows[begin:] if begin else rows:
        at = row[_TIME]
        if (start_ms is not None and at < start_ms) or (account is not None and account not in (row[6], row[7])):
            continue
        if end_ms is not None and at >= end_ms:
            break
        if len(chosen) == limit:
            return chosen, chosen[-1][_ID]
        chosen.append(row)
    return chosen, None


def candles(rows: Iterable[TradeRow], interval_ms: int, start_ms: int | None, end_ms: int | None,
            market: Market) -> list[View]:
    """OHLCV per interval with trades in [start, end): open, high, low, close, base volume, quote volume,
    trade count; oldest first."""
    built: list[list[int]] = []     # [open time, open, high, low, close, lots, ticks x lots, trades]
    for row in rows:
        at = row[_TIME]
        if (start_ms is not None and at < start_ms) or (end_ms is not None and at >= end_ms):
            continue
        price, qty = row[_PRICE], row[_QTY]
        opens = at - at % interval_ms
        if built and built[-1][0] == opens:
            candle = built[-1]
            candle[2], candle[3], candle[4] = max(candle[2], price), min(candle[3], price), price
            candle[5] += qty
            candle[6] += price * qty
            candle[7] += 1
        else:
            built.append([opens, price, price, price, price, qty, price * qty, 1])
    tick, lot = market.tick, market.lot
    return [{"t": c[0], "open": market.format_price(c[1]), "high": market.format_price(c[2]),
             "low": market.format_price(c[3]), "close": market.format_price(c[4]), "volume": market.format_qty(c[5]),
             "quote_volume": format_scaled(c[6] * tick.mantissa * lot.mantissa, tick.scale + lot.scale),
             "trades": c[7]} for c in built]
