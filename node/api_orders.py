"""Control API for the replicated exchange: POST /orders, GET|DELETE /orders/{id}, GET /book/{m}, GET /trades/{m}.

Shapes follow ARCHITECTURE.md section 7 (prices and sizes as decimal strings). Input problems are
4xx JSON errors `{"error": {"code", "message", "field"?}}`: 400 when the body is not a JSON object
or a query parameter is unusable, 422 when a field's value is not acceptable (the exchange core's
reason codes, e.g. `price_not_multiple_of_tick`, `float_not_allowed`, `unknown_market`).
"""
from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from exchange.errors import ExchangeError
from exchange.events import OrderCancelled, OrderRejected
from exchange.markets import MarketRegistry
from exchange.replication.records import MAX_ACCOUNT, SIDES, STP_MODES, TYPES
from node.api import ApiError, json_response, node_of

ORDER_FIELDS = {"market", "side", "type", "price", "qty", "account", "stp"}
DEFAULT_WAIT = 2.0
MAX_WAIT = 30.0
MAX_TRADES = 10_000
MAX_BATCH = 250                  # keeps a batch body under the API's 64 KiB request limit
DEFAULT_TRADES = 100
CLOSED = {"filled", "cancelled", "rejected"}


def parse_order_body(body: Any, markets: MarketRegistry) -> dict[str, Any]:
    """Validate a POST /orders body; returns the replica's order fields (integer ticks and lots) or raises ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(str(k) for k in body if k not in ORDER_FIELDS)
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
    for name in ("market", "side", "qty"):
        if body.get(name) is None:
            raise ApiError(422, "missing_field", f"{name} is required", name)
    market_name = body["market"]
    if not isinstance(market_name, str) or market_name not in markets:
        raise ApiError(422, "unknown_market", f"unknown market {market_name!r}; this node trades "
                       f"{', '.join(markets.symbols)}", "market")
    market = markets.get(market_name)
    side = body["side"]
    if not isinstance(side, str) or side not in SIDES:
        raise ApiError(422, "invalid_side", "side must be buy or sell", "side")
    kind = body.get("type", "limit")
    if not isinstance(kind, str) or kind not in TYPES:
        raise ApiError(422, "invalid_type", f"type must be one of {', '.join(TYPES)}", "type")
    account = body.get("account", "")
    if account is None:
        account = ""
    if not isinstance(account, str) or len(account) > MAX_ACCOUNT:
        raise ApiError(422, "invalid_account", f"account must be a string of at most {MAX_ACCOUNT} characters",
                       "account")
    stp = body.get("stp")
    if stp is not None and (not isinstance(stp, str) or stp not in STP_MODES):
        raise ApiError(422, "invalid_stp", f"stp must be one of {', '.join(STP_MODES)}", "stp")
    price = body.get("price")
    try:
        if kind == "market":
            if price is not None:
                raise ApiError(422, "price_not_allowed", "a market order takes no price", "price")
        elif price is None:
            raise ApiError(422, "price_required", f"a {kind} order needs a price", "price")
        else:
            price = market.parse_price(price)
        qty = market.parse_qty(body["qty"])
    except ExchangeError as exc:
        raise ApiError(422, exc.code, exc.message, exc.field) from None
    return {"market": market_name, "side": side, "kind": kind, "price": price, "qty": qty, "account": account,
            "stp": stp}


def _query_number(request: web.Request, name: str, default: float, low: float, high: float,
                  integer: bool = False) -> Any:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be a number", name) from None
    if not low <= value <= high:     # also refuses nan
        raise ApiError(400, f"invalid_{name}", f"{name} must be between {low:g} and {high:g}", name)
    return value


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "empty_body", "send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


@web.middleware
async def overload_as_503(request: web.Request, handler):
    from exchange.replication.service import Overloaded

    try:
        return await handler(request)
    except Overloaded as exc:
        response = ApiError(503, "overloaded", str(exc)).response()
        response.headers["Retry-After"] = "1"
        return response


def _exchange(request: web.Request) -> Any:
    exchange = getattr(node_of(request), "exchange", None)
    if exchange is None:
        raise ApiError(503, "exchange_unavailable", "this node runs no exchange")
    return exchange


def _market(exchange: Any, name: str) -> str:
    if name not in exchange.markets:
        raise ApiError(404, "unknown_market", f"unknown market {name!r}", "market")
    return name


async def post_order(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    fields = parse_order_body(await _json_body(request), exchange.markets)
    event, future = await exchange.place(**fields)
    results = await exchange.wait_final(event, future, wait)
    order = exchange.order_json(event.id)
    if results is None:
        return json_response({"order": order, "trades": []}, 202)
    return json_response({"order": order, "trades": exchange.trades_json(results, fields["market"])}, 201)


async def post_order_batch(request: web.Request) -> web.Response:
    """`{"orders": [body, ...]}` (at most MAX_BATCH): every valid order behind one fsync. Answers 200 with
    `{"results": [{"order": ..., "trades": [...]} | {"error": ...}]}` in request order; `?wait=` (default 0)
    waits for finality like POST /orders."""
    exchange = _exchange(request)
    wait = _query_number(request, "wait", 0.0, 0.0, MAX_WAIT)
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
        raise ApiError(400, "invalid_body", 'the body must be {"orders": [...]}', "orders")
    if not 0 < len(body["orders"]) <= MAX_BATCH:
        raise ApiError(422, "invalid_batch_size", f"send 1 to {MAX_BATCH} orders", "orders")
    results: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    slots: list[int] = []
    for item in body["orders"]:
        try:
            valid.append(parse_order_body(item, exchange.markets))
            slots.append(len(results))
            results.append({})
        except ApiError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.field is not None:
                error["field"] = exc.field
            results.append({"error": error})
    placed = await exchange.place_many(valid) if valid else []
    finals = await asyncio.gather(*(exchange.wait_final(e, f, wait) for e, f in placed)) if wait else [None] * len(placed)
    for slot, fields, (event, _), final in zip(slots, valid, placed, finals):
        results[slot] = {"order": exchange.order_json(event.id),
                         "trades": exchange.trades_json(final, fields["market"]) if final else []}
    return json_response({"results": results})


async def get_order(request: web.Request) -> web.Response:
    order = _exchange(request).order_json(request.match_info["order_id"])
    if order is None:
        raise ApiError(404, "unknown_order", "no such order on this node", "id")
    return json_response({"order": order})


async def delete_order(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    order_id = request.match_info["order_id"]
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    account = request.query.get("account")
    order = exchange.order_json(order_id)
    if order is None:
        raise ApiError(404, "unknown_order", "no such order on this node", "id")
    if order["status"] in CLOSED:
        raise ApiError(409, "order_closed", f"order is already {order['status']}", "id")
    event, future = await exchange.cancel(order_id, account)
    results = await exchange.wait_final(event, future, wait)
    cancel: dict[str, Any] = {"id": event.id, "status": "pending"}
    if results is not None:
        rejected = [r for r in results if isinstance(r, OrderRejected)]
        done = any(isinstance(r, OrderCancelled) for r in results)
        cancel = {"id": event.id, "status": "done" if done else "rejected",
                  "reason": rejected[0].reason if rejected else None}
    return json_response({"order": exchange.order_json(order_id), "cancel": cancel},
                         202 if results is None else 200)


async def get_book(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    market = _market(exchange, request.match_info["market"])
    depth = _query_number(request, "depth", 50, 0, 100_000, integer=True)
    provisional = request.query.get("provisional", "") in ("1", "true", "yes")
    return json_response(exchange.book_json(market, depth, provisional))


async def get_trades(request: web.Request) -> web.Response:
    exchange = _exchange(request)
    market = _market(exchange, request.match_info["market"])
    limit = _query_number(request, "limit", DEFAULT_TRADES, 0, MAX_TRADES, integer=True)
    replica = exchange.replica
    return json_response({"market": market, "trades": exchange.trade_rows_json(market, limit),
                          "trade_count": len(replica.ledger.trades.get(market, ())),
                          "trade_log_hash": replica.trade_log_hash, "watermark": replica.watermark})


def install_order_api(app: web.Application) -> None:
    app.middlewares.append(overload_as_503)
    app.router.add_post("/orders", post_order)
    app.router.add_post("/orders/batch", post_order_batch)
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_delete("/orders/{order_id}", delete_order)
    app.router.add_get("/book/{market}", get_book)
    app.router.add_get("/trades/{market}", get_trades)
