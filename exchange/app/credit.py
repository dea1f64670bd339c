"""CreditBook: how short each account may go per asset, and how much its open orders could take.

An order is refused `credit_limit` when, filled entirely at its limit price, it together with
every open order of the account could take the account's position in an asset below minus its
limit. Open orders therefore reserve their worst case while they rest (a buy: remaining lots x
its price in the quote asset; a sell: remaining lots in the base asset), and release it as they
fill, shrink or leave the book; only the asset an order gives away is checked (a buy can only
lower the quote position, a sell the base one). A market buy has no price: its worst case is
the cost of the cheapest `qty` lots of other accounts' orders resting on the book when it
arrives (its own orders are skipped, since self-trade prevention never fills against them), an
exact upper bound of what it can pay, as it never rests. The limit of an account in an asset is
its granted one if the authority has granted it one, else the network default for the asset;
an asset with neither is not limited. Lowering a limit below what an account already holds or
has reserved cancels nothing: it only refuses orders that would add to the shortfall.
"""
from __future__ import annotations

from exchange.app.assets import MarketUnits
from exchange.orders import Order, Side
from exchange.wire import Wire

_BUY = Side.BUY


class CreditBook:
    """Default limits, granted limits and open-order exposure, all integers at asset scale."""

    __slots__ = ("defaults", "grants", "exposure")

    def __init__(self, defaults: dict[str, int]) -> None:
        self.defaults = dict(defaults)
        self.grants: dict[str, dict[str, int]] = {}      # account -> asset -> limit
        self.exposure: dict[str, dict[str, int]] = {}    # account -> asset -> reserved by open orders

    def limit(self, account: str, asset: str) -> int | None:
        granted = self.grants.get(account)
        if granted is not None and asset in granted:
            return granted[asset]
        return self.defaults.get(asset)

    def grant(self, account: str, asset: str, limit: int) -> None:
        self.grants.setdefault(account, {})[asset] = limit

    def allows(self, account: str, asset: str, position: int, extra: int) -> bool:
        """Would `extra` more worst-case outflow of `asset` keep `account` within its limit?"""
        limit = self.limit(account, asset)
        if limit is None:
            return True
        reserved = self.exposure.get(account, {}).get(asset, 0)
        return position - reserved - extra >= -limit

    def reserve(self, order: Order, units: MarketUnits, lots: int) -> None:
        asset, amount = worst_case(order.side, order.price, lots, units)
        held = self.exposure.setdefault(order.owner, {})
        held[asset] = held.get(asset, 0) + amount

    def release(self, order: Order, units: MarketUnits, lots: int) -> None:
        asset, amount = worst_case(order.side, order.price, lots, units)
        held = self.exposure[order.owner]
        left = held[asset] - amount
        if left:
            held[asset] = left
        else:
            del held[asset]
            if not held:
                del self.exposure[order.owner]

    def grant_rows(self) -> list[Wire]:
        """Canonical content: `[[account, [[asset, limit], ...]], ...]`, all sorted."""
        return [[account, sorted([asset, limit] for asset, limit in self.grants[account].items())]
                for account in sorted(self.grants)]


def worst_case(side: Side, price: int | None, lots: int, units: MarketUnits) -> tuple[str, int]:
    """(asset, amount) an order of `lots` at limit `price` can give away at most."""
    if side is _BUY:
        assert price is not None  # a buy is costed at its limit (a market buy's cost comes from the book instead)
        return units.quote, lots * price * units.quote_unit
    return units.base, lots * units.base_unit
