"""API-shaped views of the state, with prices and sizes as decimal strings per market.

Shapes are the control API's (docs/api.md); order and trade views add the account ids, and trades
add the block height and time they executed at.
"""
from __future__ import annotations

from typing import Any, cast

from exchange.app.history import TradeRow
from exchange.markets import Market, MarketRegistry
from exchange.orders import Order, OrderStatus

# The fields of an order that change after it is placed: (quantity, remaining, status, reason).
OrderMoment = tuple[int, int, OrderStatus, str | None]
# An order, trade, candle, book or position view as the control API and the market-data stream send it (its keys
# are docs/api.md's, listed in each builder's docstring). A plain dict rather than a TypedDict: the node adds keys
# to these views and merges them into the answers it types as JSON objects (node.api.base.JsonObject).
View = dict[str, Any]
# The created_key the state machine gives every order: (height, index of its tx in the block, index of its op).
OrderKey = tuple[int, int, int]


def order_key(order: Order) -> OrderKey:
    """`order`'s (height, tx index, op index): the engine keeps a created_key as an opaque object, and every order of
    the exchange application was given this triple (`ExchangeState._new`, the snapshot restore)."""
    return cast("OrderKey", order.created_key)



def order_view(order: Order, registry: MarketRegistry) -> View:
    """`{"id", "status", "market", "side", "type", "price", "qty", "remaining", "filled", "account", ...}`."""
    return order_view_as(order, registry, order_moment(order))


def order_moment(order: Order) -> OrderMoment:
    """The fields of an order that change after it is placed, as they are now."""
    return order.quantity, order.remaining, order.status, order.reason


def order_view_as(order: Order, registry: MarketRegistry, moment: OrderMoment) -> View:
    """The view of `order` as it was when `order_moment` took `moment`."""
    market = registry.get(order.market) if order.market in registry else None
    quantity, remaining, status, reason = moment
    height, tx_index, op_index = order_key(order)
    return {
        "id": order.id, "status": status.value, "market": order.market,
        "side": None if order.side is None else order.side.value,
        "type": None if order.type is None else order.type.value,
        "price": _units(market, order.price, "price"), "qty": _units(market, quantity, "qty"),
        "remaining": _units(market, remaining, "qty"),
        "filled": _units(market, None if quantity is None else quantity - remaining, "qty"),
        "account": order.owner, "reason": reason,
        "stp": None if order.self_trade is None else order.self_trade.value,
        "height": height, "tx_index": tx_index, "op_index": op_index,
    }


def _units(market: Market | None, value: int | None, kind: str) -> str | None:
    if market is None or value is None:
        return None
    return market.format_price(value) if kind == "price" else market.format_qty(value)


def trade_view(row: TradeRow, market: Market) -> View:
    """`{"id", "market", "price", "qty", "maker_order_id", "taker_order_id", "buy_order_id", "sell_order_id", ...}`."""
    trade_id, price, qty, maker_id, taker_id, taker_side, maker_account, taker_account, height, time_ms = row
    taker_buys = taker_side == "buy"
    return {
        "id": trade_id, "market": market.symbol, "price": market.format_price(price), "qty": market.format_qty(qty),
        "maker_order_id": maker_id, "taker_order_id": taker_id,
        "buy_order_id": taker_id if taker_buys else maker_id, "sell_order_id": maker_id if taker_buys else taker_id,
        "taker_side": taker_side, "maker_account": maker_account, "taker_account": taker_account,
        "buyer": taker_account if taker_buys else maker_account,
        "seller": maker_account if taker_buys else taker_account,
        "height": height, "time_ms": time_ms,
    }

