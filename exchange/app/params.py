"""ExchangeParams: the exchange rules a network is founded with (part of its genesis).

Every node of a network must fold blocks under the same rules, so these live in the genesis
and their canonical form (`to_wire`, packed with msgpack) feeds the genesis hash. The canonical
form writes markets fully expanded and credit limits at their asset's scale, so two spellings
of the same rules ("BTC-USD" and "BTC-USD:0.01:0.0001") found the same network.

Credit (issue 16) is on when `credit_limits` is a map (possibly empty): it gives each listed
asset the default largest short position every account may hold, and `credit_authority` (an
account id) may raise or lower one account's limit with a signed `grant`. With `credit_limits`
None nothing is limited and grants are refused.

`max_open_orders` caps the orders one account may have resting at once (a new order that would rest
beyond it is refused `too_many_open_orders`): accounts are free keys, so this bounds what one key can
make every node hold, and the per-account cost of a `cancel_all` or a dead-man's switch firing. A
network founded without one (None, wire format 1) has no cap.

`fresh_order_ttl_ms` makes the resting orders of an account that holds nothing (it never traded, or its
positions are all back to zero) good-til-time at most that long after the block that placed them: a crowd of
free keys cannot keep every node's book growing. A network founded before it (formats 1 and 2) has none.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import msgpack

from exchange.errors import ExchangeError
from exchange.markets import Market, MarketRegistry, parse_markets
from exchange.app.assets import AssetScales
from exchange.wire import Unchecked

WIRE_FORMAT = 1
CAPPED_FORMAT = 2            # the wire form with max_open_orders; a network without a cap keeps format 1
FRESH_FORMAT = 3             # ... and with fresh_order_ttl_ms (with or without the cap)
MAX_OPEN_ORDERS_CAP = 1_000_000
DEFAULT_MAX_OPEN_ORDERS = 1_000
DEFAULT_FRESH_ORDER_TTL_MS = 60_000
MAX_TTL_MS = 86_400_000
MAX_CLOSED_ORDER_HISTORY = 10_000_000
MAX_TRADE_HISTORY = 1_000_000
_ACCOUNT_HEX = re.compile(r"[0-9a-f]{64}")
_WIRE_KEYS = ("closed_order_history", "credit_authority", "credit_limits", "format", "markets", "order_ttl_ms",
              "trade_history")
_CAPPED_KEYS = tuple(sorted((*_WIRE_KEYS, "max_open_orders")))
_FRESH_KEYS = (tuple(sorted((*_WIRE_KEYS, "fresh_order_ttl_ms"))), tuple(sorted((*_CAPPED_KEYS, "fresh_order_ttl_ms"))))


class InvalidParams(ExchangeError):
    """Exchange parameters that no network can be founded with."""


@dataclass(frozen=True)
class ExchangeParams:
    """The rules of one network's exchange; immutable, validated on construction."""

    markets: str
    order_ttl_ms: int = 120_000
    closed_order_history: int = 100_000
    trade_history: int = 10_000
    credit_limits: Mapping[str, str] | None = None
    credit_authority: str | None = None
    max_open_orders: int | None = DEFAULT_MAX_OPEN_ORDERS
    fresh_order_ttl_ms: int | None = DEFAULT_FRESH_ORDER_TTL_MS

    def __post_init__(self) -> None:
        try:
            registry = parse_markets(self.markets)
        except ExchangeError as error:
            raise InvalidParams(error.code, f"markets: {error.message}", "markets") from None
        _bounded_int(self.order_ttl_ms, "order_ttl_ms", 1, MAX_TTL_MS)
        _bounded_int(self.closed_order_history, "closed_order_history", 0, MAX_CLOSED_ORDER_HISTORY)
        _bounded_int(self.trade_history, "trade_history", 0, MAX_TRADE_HISTORY)
        if self.max_open_orders is not None:
            _bounded_int(self.max_open_orders, "max_open_orders", 1, MAX_OPEN_ORDERS_CAP)
        if self.fresh_order_ttl_ms is not None:
            _bounded_int(self.fresh_order_ttl_ms, "fresh_order_ttl_ms", 1, MAX_TTL_MS)
        assets = AssetScales(registry)
        limits = None if self.credit_limits is None else _parse_limits(self.credit_limits, assets)
        if self.credit_authority is not None:
            if type(self.credit_authority) is not str or not _ACCOUNT_HEX.fullmatch(self.credit_authority):
                raise InvalidParams("invalid_credit_authority", "credit_authority must be an account id (64 hex)",
                                    "credit_authority")
            if limits is None:
                raise InvalidParams("credit_disabled", "credit_authority needs credit_limits (use {} for none)",
                                    "credit_authority")
        if self.credit_limits is not None:   # frozen all the way down: the rules cannot drift after founding
            object.__setattr__(self, "credit_limits", MappingProxyType(dict(self.credit_limits)))
        object.__setattr__(self, "registry", registry)
        object.__setattr__(self, "assets", assets)
        object.__setattr__(self, "default_limits", limits)

    registry: MarketRegistry = field(init=False, repr=False, compare=False)       # derived from the settings
    assets: AssetScales = field(init=False, repr=False, compare=False)
    default_limits: dict[str, int] | None = field(init=False, repr=False, compare=False)

    @property
    def credit_enabled(self) -> bool:
        return self.default_limits is not None

    def to_wire(self) -> dict[str, object]:
        """The canonical plain form (keys sorted, markets expanded, limits at asset scale)."""
        limits = self.default_limits
        wire: dict[str, object] = {
            "closed_order_history": self.closed_order_history,
            "credit_authority": self.credit_authority,
            "credit_limits": None if limits is None else {a: self.assets.format(a, v) for a, v in limits.items()},
            "format": WIRE_FORMAT,
            "markets": ",".join(_canonical_market(market) for market in self.registry),
            "order_ttl_ms": self.order_ttl_ms,
            "trade_history": self.trade_history,
        }
        if self.max_open_orders is not None:
            wire["format"], wire["max_open_orders"] = CAPPED_FORMAT, self.max_open_orders
        if self.fresh_order_ttl_ms is not None:
            wire["format"], wire["fresh_order_ttl_ms"] = FRESH_FORMAT, self.fresh_order_ttl_ms
        return dict(sorted(wire.items()))

    def digest(self) -> bytes:
        """sha256 of the canonical msgpack encoding of `to_wire()`."""
        return hashlib.sha256(msgpack.packb(self.to_wire(), use_bin_type=True)).digest()

    @classmethod
    def from_wire(cls, data: Unchecked) -> ExchangeParams:
        """Parameters from their wire form; raises InvalidParams naming the problem."""
        if not isinstance(data, dict) or tuple(sorted(data)) not in (_WIRE_KEYS, _CAPPED_KEYS, *_FRESH_KEYS):
            raise InvalidParams("malformed_params", f"params must be a map with exactly {', '.join(_WIRE_KEYS)} "
                                f"(and max_open_orders in format {CAPPED_FORMAT}, fresh_order_ttl_ms in format "
                                f"{FRESH_FORMAT})")
        expected = FRESH_FORMAT if "fresh_order_ttl_ms" in data else \
            CAPPED_FORMAT if "max_open_orders" in data else WIRE_FORMAT
        if data["format"] != expected:
            raise InvalidParams("unsupported_params", f"params format {data['format']!r} is not {expected}")
        for name in ("max_open_orders", "fresh_order_ttl_ms"):
            if name in data and data[name] is None:
                raise InvalidParams(f"invalid_{name}", f"{name} is written only when set", name)
        if type(data["markets"]) is not str:
            raise InvalidParams("invalid_markets", "markets must be a string", "markets")
        limits = data["credit_limits"]
        if limits is not None and not (isinstance(limits, dict) and all(type(k) is str for k in limits)):
            raise InvalidParams("invalid_credit_limits", "credit_limits must map asset to decimal string",
                                "credit_limits")
        return cls(markets=data["markets"], order_ttl_ms=data["order_ttl_ms"],
                   closed_order_history=data["closed_order_history"], trade_history=data["trade_history"],
                   credit_limits=None if limits is None else dict(limits),
                   credit_authority=data["credit_authority"], max_open_orders=data.get("max_open_orders"),
                   fresh_order_ttl_ms=data.get("fresh_order_ttl_ms"))


def _bounded_int(value: object, name: str, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise InvalidParams(f"invalid_{name}", f"{name} must be an integer in {low}..{high}, not {value!r}", name)


def _parse_limits(limits: object, assets: AssetScales) -> dict[str, int]:
    if not isinstance(limits, dict):
        raise InvalidParams("invalid_credit_limits", "credit_limits must map asset to decimal string", "credit_limits")
    parsed = {}
    for asset in sorted(limits, key=str):
        if asset not in assets:
            raise InvalidParams("unknown_asset", f"credit_limits names {asset!r}, which no market trades",
                                "credit_limits")
        try:
            parsed[asset] = assets.parse(asset, limits[asset], f"credit_limits.{asset}")
        except ExchangeError as error:
            raise InvalidParams(error.code, error.message, "credit_limits") from None
    return parsed


def _canonical_market(market: Market) -> str:
    return ":".join((market.symbol, market.tick.text, market.lot.text, market.format_qty(market.min_lots),
                     market.format_qty(market.max_lots), market.format_price(market.min_ticks),
                     market.format_price(market.max_ticks), market.self_trade_mode.value))
