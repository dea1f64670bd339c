"""A MarketSource over plain dicts, and a transport that records writes, for the stream's unit tests."""
from __future__ import annotations

from typing import Any

import orjson

from exchange.markets import parse_markets
from node.marketdata.feed import TradePrint

MARKETS = parse_markets("BTC-USD,ETH-USD:0.01:0.001")


class DictSource:
    def __init__(self) -> None:
        self.books: dict[str, dict[str, dict[int, int]]] = {m.symbol: {"bids": {}, "asks": {}} for m in MARKETS}
        self.trades: dict[str, list[TradePrint]] = {m.symbol: [] for m in MARKETS}
        self.orders: list[dict[str, Any]] = []

    def levels(self, market: str):
        book = self.books[market]
        return (sorted(book["bids"].items(), reverse=True), sorted(book["asks"].items()))

    def recent_trades(self, market: str, limit: int):
        return self.trades[market][-limit:]

    def open_orders(self):
        return list(self.orders)

    def candles(self, market: str, interval_ms: int, start_ms):
        return []


class RecordingTransport:
    """Stands in for an asyncio transport: keeps what was written, reports a settable unread backlog."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.backlog = 0
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def messages(self) -> list[dict[str, Any]]:
        """Decode the text frames written so far (server frames: no mask)."""
        data = b"".join(self.writes)
        out, i = [], 0
        while i < len(data):
            assert data[i] == 0x81, "a FIN text frame"
            n = data[i + 1]
            i += 2
            if n == 126:
                n = int.from_bytes(data[i:i + 2], "big")
                i += 2
            elif n == 127:
                n = int.from_bytes(data[i:i + 8], "big")
                i += 8
            out.append(orjson.loads(data[i:i + n]))
            i += n
        return out


def trade(n: int, price: int, qty: int, side: str = "buy") -> TradePrint:
    return TradePrint(f"t{n}", price, qty, side, f"m{n}", f"k{n}", f"b{n}", f"s{n}")
