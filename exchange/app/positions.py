"""Positions: every account's signed amount of every asset, moved only by trades (issue 16).

Amounts are integers at the asset's scale (`AssetScales`). A trade of `qty` lots at `price`
ticks gives the buyer `qty * base_unit` of the base asset and takes `price * qty * quote_unit`
of the quote asset, and the seller the opposite, so with no fees every asset sums to zero over
all accounts after every trade. Zero amounts are dropped, so two states with the same trades
hold the same map whatever order they reached it in.
"""
from __future__ import annotations

from exchange.app.assets import MarketUnits
from exchange.wire import Wire


class Positions:
    """account id -> {asset: amount}; only non-zero amounts are kept."""

    __slots__ = ("amounts",)

    def __init__(self) -> None:
        self.amounts: dict[str, dict[str, int]] = {}

    def settle(self, buyer: str, seller: str, units: MarketUnits, price: int, qty: int) -> None:
        """Move the base and quote amounts of one trade between the two accounts."""
        base = qty * units.base_unit
        quote = price * qty * units.quote_unit
        self.add(buyer, units.base, base)
        self.add(buyer, units.quote, -quote)
        self.add(seller, units.base, -base)
        self.add(seller, units.quote, quote)

    def add(self, account: str, asset: str, delta: int) -> None:
        held = self.amounts.get(account)
        if held is None:
            held = self.amounts[account] = {}
        amount = held.get(asset, 0) + delta
        if amount:
            held[asset] = amount
        else:
            del held[asset]
            if not held:
                del self.amounts[account]

    def get(self, account: str, asset: str) -> int:
        held = self.amounts.get(account)
        return 0 if held is None else held.get(asset, 0)

    def of(self, account: str) -> dict[str, int]:
        return dict(self.amounts.get(account, {}))

    def totals(self) -> dict[str, int]:
        """Each asset summed over every account (zero for every asset while there are no fees)."""
        totals: dict[str, int] = {}
        for held in self.amounts.values():
            for asset, amount in held.items():
                totals[asset] = totals.get(asset, 0) + amount
        return totals

    def rows(self) -> list[Wire]:
        """Canonical content: `[[account, [[asset, amount], ...]], ...]`, all sorted."""
        return [[account, sorted([asset, amount] for asset, amount in self.amounts[account].items())]
                for account in sorted(self.amounts)]

    @classmethod
    def from_rows(cls, rows: list[Wire]) -> Positions:
        positions = cls()
        for account, held in rows:
            positions.amounts[account] = {asset: amount for asset, amount in held}
        return positions
