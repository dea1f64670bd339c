"""Assets and the integer scale every position in one asset is kept at, derived from the markets.

A trade moves `qty` lots of the base asset against `price * qty` ticks-times-lots of the quote
asset. Each asset gets one decimal scale, the finest any market needs for it (a lot's decimals
where it is a base, a tick's plus a lot's where it is a quote), so every trade's amounts are
exact integers at that scale and positions from different markets add up without rounding.
"""
from __future__ import annotations

from typing import cast

from dataclasses import dataclass

from exchange.errors import ExchangeError
from exchange.markets import Market, MarketRegistry
from exchange.units import format_scaled, parse_decimal


class InvalidAmount(ExchangeError):
    """An asset amount that is not a plain non-negative decimal at the asset's scale."""


@dataclass(frozen=True, slots=True)
class MarketUnits:
    """How one market's lots and ticks turn into asset units: base = lots * base_unit,
    quote = ticks * lots * quote_unit."""

    base: str
    quote: str
    base_unit: int
    quote_unit: int


class AssetScales:
    """Every asset of the configured markets with its scale, plus each market's unit multipliers."""

    __slots__ = ("scales", "markets")

    def __init__(self, registry: MarketRegistry) -> None:
        scales: dict[str, int] = {}
        for market in registry:
            _widen(scales, market.base, market.lot.scale)
            _widen(scales, market.quote, market.tick.scale + market.lot.scale)
        self.scales = dict(sorted(scales.items()))
        self.markets = {market.symbol: self._units(market) for market in registry}

    def _units(self, market: Market) -> MarketUnits:
        base_unit = market.lot.mantissa * 10 ** (self.scales[market.base] - market.lot.scale)
        quote_unit = (market.tick.mantissa * market.lot.mantissa
                      * 10 ** (self.scales[market.quote] - market.tick.scale - market.lot.scale))
        return MarketUnits(market.base, market.quote, base_unit, quote_unit)

    def __contains__(self, asset: object) -> bool:
        return asset in self.scales

    def format(self, asset: str, units: int) -> str:
        return format_scaled(units, self.scales[asset])

    def parse(self, asset: str, text: object, field: str = "amount") -> int:
        """A non-negative decimal amount of `asset` -> integer units; raises InvalidAmount if it is finer
        than the asset's scale or not a plain decimal."""
        scale = self.scales[asset]
        mantissa, digits = parse_decimal(text, field, InvalidAmount)
        while digits > scale and mantissa % 10 == 0:
            mantissa //= 10
            digits -= 1
        if digits > scale:
            raise InvalidAmount("too_precise", f"{field} {text} has more than {scale} decimals for {asset}", field)
        return cast("int", mantissa * 10 ** (scale - digits))


def _widen(scales: dict[str, int], asset: str, scale: int) -> None:
    scales[asset] = max(scales.get(asset, 0), scale)
