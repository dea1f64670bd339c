"""Markets and the registry built from the `MARKETS` setting.

`MARKETS` is a comma-separated list of entries; whitespace around entries is ignored.
Each entry is either a bare symbol, taking the built-in defaults, or colon-separated
fields, where an empty field also means "the default":

    SYMBOL
    SYMBOL:tick:lot
    SYMBOL:tick:lot:min_qty:max_qty
    SYMBOL:tick:lot:min_qty:max_qty:min_price:max_price
    SYMBOL:tick:lot:min_qty:max_qty:min_price:max_price:self_trade_mode

    e.g.  MARKETS="BTC-USD,ETH-USD:0.01:0.001,DOGE-USD:0.00001:1:1:1000000::10"

SYMBOL is BASE-QUOTE (letters and digits, upper-cased). Defaults: tick 0.01,
lot 0.0001, min_qty one lot, max_qty 1000000, prices from one tick to
1000000000, self-trade mode cancel_newest. Sizes and prices must be multiples of
the lot and tick. An empty or missing setting means `BTC-USD`. A bad entry raises
InvalidMarketSpec naming the entry and the problem.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterator

from exchange.errors import ExchangeError, InvalidMarketSpec, InvalidPrice, InvalidQuantity, UnknownMarket
from exchange.orders import SelfTradeMode
from exchange.units import Step, format_units, parse_step, to_units

DEFAULT_MARKETS = "BTC-USD"
DEFAULT_TICK = "0.01"
DEFAULT_LOT = "0.0001"
DEFAULT_MAX_QTY = "1000000"
DEFAULT_MAX_PRICE = "1000000000"
DEFAULT_SELF_TRADE = SelfTradeMode.CANCEL_NEWEST.value
_SYMBOL = re.compile(r"([A-Z0-9]{1,12})-([A-Z0-9]{1,12})")
_FIELD_COUNTS = (1, 3, 5, 7, 8)


@dataclass(frozen=True, slots=True)
class Market:
    """A market's rules as configured (decimal strings) and as the engine uses them (integers)."""

    symbol: str
    tick_size: str = DEFAULT_TICK
    lot_size: str = DEFAULT_LOT
    min_qty: str | None = None       # None: one lot
    max_qty: str = DEFAULT_MAX_QTY
    min_price: str | None = None     # None: one tick
    max_price: str = DEFAULT_MAX_PRICE
    self_trade_mode: SelfTradeMode = SelfTradeMode.CANCEL_NEWEST
    base: str = field(init=False)
    quote: str = field(init=False)
    tick: Step = field(init=False, repr=False)
    lot: Step = field(init=False, repr=False)
    min_lots: int = field(init=False, repr=False)
    max_lots: int = field(init=False, repr=False)
    min_ticks: int = field(init=False, repr=False)
    max_ticks: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        match = _SYMBOL.fullmatch(self.symbol)
        if match is None:
            raise InvalidMarketSpec("invalid_symbol", f"market symbol {self.symbol!r} is not BASE-QUOTE", "symbol")
        tick = _config_step(self.symbol, self.tick_size, "tick_size")
        lot = _config_step(self.symbol, self.lot_size, "lot_size")
        derived = {
            "base": match.group(1), "quote": match.group(2), "tick": tick, "lot": lot,
            "min_lots": _config_units(self.symbol, self.min_qty or lot.text, lot, "min_qty"),
            "max_lots": _config_units(self.symbol, self.max_qty, lot, "max_qty"),
            "min_ticks": _config_units(self.symbol, self.min_price or tick.text, tick, "min_price"),
            "max_ticks": _config_units(self.symbol, self.max_price, tick, "max_price"),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)
        if self.min_lots > self.max_lots:
            raise InvalidMarketSpec("min_above_max", f"{self.symbol}: min_qty is above max_qty", "min_qty")
        if self.min_ticks > self.max_ticks:
            raise InvalidMarketSpec("min_above_max", f"{self.symbol}: min_price is above max_price", "min_price")

    def parse_price(self, value: object) -> int:
        """User price (decimal string or int) -> ticks, checked against the tick and the band."""
        return self._parse(value, "price", self.tick, InvalidPrice, "price_not_multiple_of_tick",
                           self.price_problem, self.min_ticks, self.max_ticks)

    def parse_qty(self, value: object) -> int:
        """User quantity (decimal string or int) -> lots, checked against the lot and the size limits."""
        return self._parse(value, "qty", self.lot, InvalidQuantity, "qty_not_multiple_of_lot",
                           self.qty_problem, self.min_lots, self.max_lots)

    @staticmethod
    def _parse(value: object, name: str, step: Step, error: type[ExchangeError], not_multiple: str,
               problem: Callable[[int], str | None], low: int, high: int) -> int:
        units = to_units(value, step, name, error, not_multiple)
        reason = problem(units)
        if reason is not None:
            raise error(reason, f"{name} {value} is outside {format_units(low, step)}..{format_units(high, step)}",
                        name)
        return units

    def price_problem(self, ticks: int) -> str | None:
        """The reason code if integer `ticks` is outside the band, else None."""
        if ticks < self.min_ticks:
            return "price_below_band"
        if ticks > self.max_ticks:
            return "price_above_band"
        return None

    def qty_problem(self, lots: int) -> str | None:
        """The reason code if integer `lots` is outside the size limits, else None."""
        if lots < self.min_lots:
            return "qty_below_min"
        if lots > self.max_lots:
            return "qty_above_max"
        return None

    def format_price(self, ticks: int) -> str:
        return format_units(ticks, self.tick)

    def format_qty(self, lots: int) -> str:
        return format_units(lots, self.lot)


def _config_step(symbol: str, text: str, name: str) -> Step:
    try:
        return parse_step(text, name, InvalidMarketSpec)
    except InvalidMarketSpec as error:
        raise InvalidMarketSpec(error.code, f"{symbol}: {name} {text!r}: {error.message}", name) from None


def _config_units(symbol: str, text: str, step: Step, name: str) -> int:
    try:
        return to_units(text, step, name, InvalidMarketSpec, "not_a_multiple")
    except InvalidMarketSpec as error:
        raise InvalidMarketSpec(error.code, f"{symbol}: {name} {text!r}: {error.message}", name) from None


class MarketRegistry:
    """The configured markets by symbol, in configuration order."""

    __slots__ = ("_markets",)

    def __init__(self, markets: list[Market]) -> None:
        self._markets: dict[str, Market] = {}
        for market in markets:
            if market.symbol in self._markets:
                raise InvalidMarketSpec("duplicate_market", f"market {market.symbol} is configured twice", "MARKETS")
            self._markets[market.symbol] = market

    def get(self, symbol: object) -> Market:
        market = self._markets.get(symbol) if isinstance(symbol, str) else None
        if market is None:
            raise UnknownMarket("unknown_market", f"unknown market {symbol!r}", "market")
        return market

    @property
    def symbols(self) -> list[str]:
        return list(self._markets)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._markets

    def __iter__(self) -> Iterator[Market]:
        return iter(self._markets.values())

    def __len__(self) -> int:
        return len(self._markets)


def parse_markets(spec: str | None) -> MarketRegistry:
    """Build the registry from the `MARKETS` setting (format in the module docstring)."""
    if spec is None or not spec.strip():
        spec = DEFAULT_MARKETS
    return MarketRegistry([parse_market_entry(entry.strip()) for entry in spec.split(",")])


def parse_market_entry(entry: str) -> Market:
    """One `SYMBOL[:tick:lot[...]]` entry -> Market."""
    if not entry:
        raise InvalidMarketSpec("empty_entry", "MARKETS has an empty entry (stray comma?)", "MARKETS")
    fields = [part.strip() for part in entry.split(":")]
    if len(fields) not in _FIELD_COUNTS:
        raise InvalidMarketSpec(
            "wrong_field_count",
            f"market entry {entry!r} has {len(fields)} fields; expected SYMBOL or "
            "SYMBOL:tick:lot[:min_qty:max_qty[:min_price:max_price[:self_trade_mode]]]", "MARKETS")
    fields += [""] * (8 - len(fields))
    symbol, tick, lot, min_qty, max_qty, min_price, max_price, mode = fields
    try:
        self_trade = SelfTradeMode(mode or DEFAULT_SELF_TRADE)
    except ValueError:
        allowed = ", ".join(m.value for m in SelfTradeMode)
        raise InvalidMarketSpec("invalid_self_trade_mode", f"{symbol}: self-trade mode {mode!r} is not one of {allowed}",
                                "self_trade_mode") from None
    return Market(symbol=symbol.upper(), tick_size=tick or DEFAULT_TICK, lot_size=lot or DEFAULT_LOT,
                  min_qty=min_qty or None, max_qty=max_qty or DEFAULT_MAX_QTY, min_price=min_price or None,
                  max_price=max_price or DEFAULT_MAX_PRICE, self_trade_mode=self_trade)
