"""The stream's copy of one market's price levels, and the top-N views subscribers hold.

`BookMirror` holds every level as the exchange layer published it (integer ticks -> total lots).
A `DepthView` is what every subscriber of one (market, depth) holds: the best `depth` levels
per side. After a batch of level changes, `DepthView.refresh` works out what those subscribers
must apply (levels that changed, appeared, or left the top N with size "0"), once for all of
them, so a client's copy is always exactly the top N, and `checksum` lets it prove that.
"""
from __future__ import annotations

import zlib
from itertools import islice
from typing import Callable, Iterable

from sortedcontainers import SortedDict

SIDES = ("bids", "asks")
CHECKSUM_LEVELS = 25
Level = tuple[int, int]          # (price ticks, total lots)


class BookMirror:
    """Every price level of one market, best first per side (bids keyed by minus the price)."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def set_level(self, side: str, price: int, lots: int) -> bool:
        """Record a level's new total (0 removes it); True when that changed anything."""
        levels, key = (self.bids, -price) if side == "bids" else (self.asks, price)
        if lots > 0:
            if levels.get(key) == lots:
                return False
            levels[key] = lots
            return True
        return levels.pop(key, None) is not None

    def replace(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        self.bids = SortedDict({-price: lots for price, lots in bids if lots > 0})
        self.asks = SortedDict({price: lots for price, lots in asks if lots > 0})

    def top(self, side: str, n: int) -> list[Level]:
        if side == "bids":
            return [(-key, lots) for key, lots in islice(self.bids.items(), n)]
        return list(islice(self.asks.items(), n))


class DepthView:
    """The best `depth` levels per side as subscribers of this (market, depth) hold them, with the
    decimal strings they were sent (formatted once per level, not once per subscriber)."""

    __slots__ = ("depth", "levels", "texts", "format_price", "format_qty")

    def __init__(self, mirror: BookMirror, depth: int, format_price: Callable[[int], str],
                 format_qty: Callable[[int], str]) -> None:
        self.depth = depth
        self.format_price, self.format_qty = format_price, format_qty
        self.levels: dict[str, list[Level]] = {side: mirror.top(side, depth) for side in SIDES}
        self.texts: dict[str, list[list[str]]] = {side: [self._text(level) for level in self.levels[side]]
                                                   for side in SIDES}

    def _text(self, level: Level) -> list[str]:
        return [self.format_price(level[0]), self.format_qty(level[1])]

    def refresh(self, mirror: BookMirror, touched: dict[str, set[int]]) -> dict[str, list[list[str]]] | None:
        """Bring the view up to `mirror` after changes at the `touched` prices; returns the level updates
        (`{"bids": [[price, qty], ...], "asks": [...]}`, qty "0" = remove) or None if the view is unchanged."""
        changes: dict[str, list[list[str]]] = {}
        for side in SIDES:
            prices = touched.get(side)
            if not prices or not self._may_change(side, prices):
                continue
            old = dict(self.levels[side])
            new = mirror.top(side, self.depth)
            if new == self.levels[side]:
                continue
            fresh = dict(new)
            updates = [self._text(level) for level in new if old.get(level[0]) != level[1]]
            updates += [[self.format_price(price), "0"] for price in old if price not in fresh]
            self.levels[side] = new
            self.texts[side] = [self._text(level) for level in new]
            changes[side] = updates
        if not changes:
            return None
        return {side: changes.get(side, []) for side in SIDES}

    def _may_change(self, side: str, prices: set[int]) -> bool:
        """False when the view is full and every touched price is worse than its worst level."""
        levels = self.levels[side]
        if len(levels) < self.depth:
            return True
        worst = levels[-1][0]
        if side == "bids":
            return any(price >= worst for price in prices)
        return any(price <= worst for price in prices)

    def snapshot(self) -> dict[str, list[list[str]]]:
        return {side: self.texts[side] for side in SIDES}

    def checksum(self) -> int:
        return book_checksum(self.texts["bids"], self.texts["asks"])


def book_checksum(bids: list[list[str]], asks: list[list[str]]) -> int:
    """CRC-32 (unsigned) of the best CHECKSUM_LEVELS levels interleaved as Bitfinex does it:
    bid price, bid qty, ask price, -ask qty, ... joined with ":" (a side that runs out is skipped)."""
    parts: list[str] = []
    for i in range(min(CHECKSUM_LEVELS, max(len(bids), len(asks)))):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += (asks[i][0], "-" + asks[i][1])
    return zlib.crc32(":".join(parts).encode())
