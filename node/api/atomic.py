"""`POST /orders/batch` with `"atomic": true`: one account's new orders, cancels and replaces in one transaction
that the chain runs all or none of (exchange/app/machine.py, atomic batches).

The body is `{"atomic": true, "account"?, "orders": [...]}`; each item is a new order's fields as `POST /orders`
takes them, or `{"op": "cancel", "market", "order_id"}`, or `{"op": "replace", "market", "order_id", "price",
"qty"}`. The node signs with the account (this node must hold it); a client with its own key posts the same
operations signed, `{"op": "atomic"}` first. A bad item refuses the whole request (422), before anything is signed.
"""
from __future__ import annotations

import os

from aiohttp import web

from exchange.app.txs import MAX_OPS, AtomicOp, InvalidTx, Op, SignedTx, op_from_json
from exchange.chain.api_ports import ChainSubmits
from exchange.markets import MarketRegistry
from node.api.base import ApiError, Json, JsonObject


def atomic_tx(request: web.Request, submits: ChainSubmits, registry: MarketRegistry, body: JsonObject) -> SignedTx:
    """The signed atomic transaction of a batch body (raises ApiError naming the item that is wrong)."""
    from node.api.orders import _account, _sign_local, metered     # orders.py calls this module: imported here

    items = body.get("orders")
    if not isinstance(items, list) or not 0 < len(items) < MAX_OPS:
        raise ApiError(422, "invalid_batch_size", f"send 1 to {MAX_OPS - 1} operations", "orders")
    ops: list[Op] = [AtomicOp()]
    for index, item in enumerate(items):
        try:
            ops.append(_batch_op(registry, item))
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"orders[{index}]: {exc.message}", exc.field) from None
    metered(submits, _account(request, body.get("account")).public_key, len(ops))
    return _sign_local(request, submits, body.get("account"), ops, os.urandom(12).hex())


def _batch_op(registry: MarketRegistry, item: Json) -> Op:
    from node.api.orders import _market_checked, _order_op

    if not isinstance(item, dict):
        raise ApiError(400, "invalid_body", "each operation is a JSON object")
    kind = item.get("op", "new")
    if kind == "new":
        op = _order_op({k: v for k, v in item.items() if k != "op"})
        _market_checked(registry, op)
        return op
    if kind not in ("cancel", "replace"):
        raise ApiError(422, "invalid_op", "an atomic batch holds new orders, cancels and replaces only", "op")
    try:
        return op_from_json(item)
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None
