"""API-shaped views with decimal strings (prices and sizes formatted per market), for the control API.

The engine speaks integer ticks and lots; people and scripts read "100.05". These
helpers produce the shapes docs/api.md documents for the control API.
"""
from __future__ import annotations

from typing import NotRequired, TypedDict

from exchange.events import Trade
from exchange.markets import Market
from exchange.matching import MatchingEngine
from exchange.orders import Order


class OrderDisplay(TypedDict):
    id: str
    status: str
    market: str
    side: str
    type: str
    price: str | None
    qty: str
    remaining: str
    filled: str
    account: str
    reason: str | None


class TradeDisplay(TypedDict):
    id: str
    market: str
    price: str
    qty: str
    maker_order_id: str
    taker_order_id: str
    buy_order_id: str
    sell_order_id: str
    taker_side: str


class DepthDisplay(TypedDict):
    """Levels as `[price, qty]` decimal strings, best first; `digest` unless left out."""

    market: str
    bids: list[list[str]]
    asks: list[list[str]]
    digest: NotRequired[str]


def order_view(order: Order, market: Market) -> OrderDisplay:
    """`{"id", "status", "market", "side", "type", "price", "qty", "remaining", ...}` with decimal strings."""
    return {
        "id": order.id, "status": order.status.value, "market": order.market, "side": order.side.value,
        "type": order.type.value, "price": None if order.price is None else market.format_price(order.price),
        "qty": market.format_qty(order.quantity), "remaining": market.format_qty(order.remaining),
        "filled": market.format_qty(order.quantity - order.remaining), "account": order.owner,
        "reason": order.reason,
    }


def trade_view(trade: Trade, market: Market) -> TradeDisplay:
    """`{"id", "market", "price", "qty", "maker_order_id", "taker_order_id", "buy_order_id", "sell_order_id"}`."""
    return {
        "id": trade.id, "market": trade.market, "price": market.format_price(trade.price),
        "qty": market.format_qty(trade.quantity), "maker_order_id": trade.maker_order_id,
        "taker_order_id": trade.taker_order_id, "buy_order_id": trade.buy_order_id,
        "sell_order_id": trade.sell_order_id, "taker_side": trade.taker_side.value,
    }


def depth_view(engine: MatchingEngine, limit: int | None = None, with_digest: bool = True) -> DepthDisplay:
    """`{"market", "bids": [["price", "qty"], ...], "asks": [...], "digest"}`, best first, top `limit` levels."""
    market = engine.market
    depth = engine.depth(limit)
    price, qty = market.format_price, market.format_qty
    view: DepthDisplay = {"market": market.symbol,
                          "bids": [[price(ticks), qty(lots)] for ticks, lots in depth["bids"]],
                          "asks": [[price(ticks), qty(lots)] for ticks, lots in depth["asks"]]}
    if with_digest:
        view["digest"] = engine.digest()
    return view
