"""Control API for the exchange: orders in, final state out.

POST /orders and /orders/batch take either plain order fields, which the node signs with one of
its own accounts (`account`: a name or id; `default` when absent), or `{"signed": {...}}`, a
transaction an external client signed with its own key (the exact bytes are documented in
exchange/app/txs.py and the README). DELETE /orders/{id} cancels with the owner's key, which
this node must hold (or the client sends a signed cancel). Every answer says whether it is final:
201/200 once a block with a quorum certificate holds it, 202 with `reason` (`no_quorum`,
`not_final_yet`) while it is not — a 202 order is in this node's outbox on disk and is handed on
until a block has it or it expires. Errors are `{"error": {"code", "message", "field"?}}`.

Over 500 lines on purpose: the order routes share body parsing, signing, the wait and the answer's
shape.
"""
from __future__ import annotations

import os
import time
from typing import Literal, overload

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from exchange.chain.api_ports import (ChainReads, ChainSubmits, Final, NotNeeded, Pending, Refusal, Refused, Submitted,
                                      TxAnswer)
from exchange.chain.ports import NotReady
from exchange.chain.mempool.own_orders import pending_view
from exchange.app.machine import ORDER_ID_PREFIX
from exchange.app.views import View
from exchange.app.txs import CLIENT_ID, MAX_OPS, CancelOp, InvalidTx, NewOrderOp, Op, SignedTx, decimal_problem, sign_tx
from exchange.errors import ExchangeError
from exchange.markets import MarketRegistry
from storage import StorageError
from node.accounts import Account
from node.api.atomic import atomic_tx
from node.api.base import NODE_KEY, ApiError, Json, JsonObject, json_response, node_of, not_ready, reads_of, submits_of
from node.api.cost_budget import CostBudget
from node.api.proofs import proved_book, proved_order, wants_proof
from node.order_batcher import OrderBatcher

ORDER_FIELDS = {"market", "side", "type", "price", "qty", "account", "stp", "client_id", "until", "trigger_price",
                "reduce_only"}
DEFAULT_WAIT = 2.0
MAX_WAIT = 30.0
MAX_TRADES = 10_000
DEFAULT_TRADES = 100
MAX_LIST = 1000
CLOSED = {"filled", "cancelled", "rejected"}


@overload
def _query_number(request: web.Request, name: str, default: int, low: float, high: float,
                  integer: Literal[True]) -> int: ...
@overload
def _query_number(request: web.Request, name: str, default: None, low: float, high: float,
                  integer: Literal[True]) -> int | None: ...
@overload
def _query_number(request: web.Request, name: str, default: float, low: float, high: float,
                  integer: Literal[False] = False) -> float: ...


def _query_number(request: web.Request, name: str, default: float | None, low: float, high: float,
                  integer: bool = False) -> float | None:
    """The query parameter `name` as a number in [low, high] (an int with `integer`), or `default`."""
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


async def _json_body(request: web.Request, allow_empty: bool = False) -> Json:
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return None
        raise ApiError(400, "empty_body", "send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _markets(reads: ChainReads) -> MarketRegistry:
    """The markets the chain trades; raises the 503 of a chain that cannot answer now."""
    try:
        return reads.markets()
    except NotReady as exc:
        raise not_ready(exc) from None


def _account(request: web.Request, name: Json) -> Account:
    accounts = node_of(request).accounts
    if accounts is None:
        raise ApiError(503, "no_accounts", "this node holds no accounts")
    if name is None:
        name = "default"
    if not isinstance(name, str):
        raise ApiError(422, "invalid_account", "account is an account name or its 64-hex id", "account")
    try:
        return accounts.get(name)
    except KeyError:
        raise ApiError(422, "unknown_account", f"this node holds no account {name!r}; create it with "
                       f"`exchange-node account new {name}` or send a transaction signed with your own key",
                       "account") from None


def _market_checked(registry: MarketRegistry, op: NewOrderOp) -> None:
    """Refuse what the state machine would reject at once, with the field that is wrong."""
    if op.market not in registry:
        raise ApiError(422, "unknown_market", f"unknown market {op.market!r}; this network trades "
                       f"{', '.join(registry.symbols)}", "market")
    market = registry.get(op.market)
    problem = op.price_problem()
    if problem is not None:
        raise ApiError(422, problem, f"a {op.type} order takes no price" if problem == "price_not_allowed"
                       else f"a {op.type} order needs a price", "price")
    try:
        if op.price is not None:
            market.parse_price(op.price)
        if op.trigger is not None:
            market.parse_price(op.trigger)
        market.parse_qty(op.qty)
    except ExchangeError as exc:
        raise ApiError(422, exc.code, exc.message, exc.field) from None


def _order_op(body: Json) -> NewOrderOp:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "each order is a JSON object")
    unknown = sorted(str(k) for k in body if k not in ORDER_FIELDS)
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
    for name in ("market", "side", "qty"):
        if body.get(name) is None:
            raise ApiError(422, "missing_field", f"{name} is required", name)
    for name in ("price", "qty", "trigger_price"):
        if isinstance(body.get(name), float):
            raise ApiError(422, "float_not_allowed", decimal_problem(body[name], name), name)
    try:
        return NewOrderOp.parse(body["market"], body["side"], body.get("type", "limit"), _text(body.get("price")),
                                _text(body["qty"]), body.get("stp"), body.get("until"), body.get("client_id"),
                                _text(body.get("trigger_price")), body.get("reduce_only") or None)
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None


def _text(value: Json) -> Json:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _nonce(body: Json) -> str:
    client = body.get("client_id") if isinstance(body, dict) else None
    return client if isinstance(client, str) and client else os.urandom(12).hex()


def _sign_local(request: web.Request, submits: ChainSubmits, account_name: Json, ops: list[Op], nonce: str) -> SignedTx:
    account = _account(request, account_name)
    chain_id, ttl_ms = submits.signing_terms()
    expires = int(time.time() * 1000) + ttl_ms - 1000
    try:
        tx = sign_tx(account.sign, account.public_key, chain_id, nonce, expires, ops)
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None
    submits.signed_here(tx)            # we just made the signature: no need to check it again
    return tx


def metered(submits: ChainSubmits, account: bytes, ops: int) -> None:
    """Refuse (429 `account_rate`) what the chain's account and group rates would refuse, before the transaction
    is signed, its signature checked and it is written to the outbox: a refusal costs a lookup, not that work."""
    if submits.rate_refuses(account, ops):
        raise refused(Refused(Refusal.ACCOUNT_RATE, Refusal.ACCOUNT_RATE.value))


def _signed(body: Json, submits: ChainSubmits | None = None) -> SignedTx:
    """A client's signed transaction; with `submits`, metered before its signature is checked."""
    try:
        tx = SignedTx.from_json(body)
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None
    if submits is not None:
        metered(submits, tx.account, len(tx.ops))
    if not (tx.signature_valid() if submits is None else submits.signature_valid(tx)):
        raise ApiError(401, "bad_signature", "the signature does not verify for this account and these bytes",
                       "sig")
    return tx


async def _submit(submits: ChainSubmits, tx: SignedTx, wait: float) -> Pending | Final:
    """Hand the transaction to the chain and wait up to `wait` seconds for it to be final; raises its refusal."""
    answer = await submits.answer(await _queue(submits, tx), wait)
    if isinstance(answer, Refused):
        raise refused(answer)
    assert not isinstance(answer, NotNeeded), "only a cancel held behind its order is dropped unsent"
    return answer


async def _queue(submits: ChainSubmits, tx: SignedTx, after: SignedTx | None = None) -> Submitted:
    """Hand the transaction to the chain (durable in the outbox on return) or raise the API error; `after`:
    our pending transaction it must be ordered after."""
    try:
        return await submits.submit(tx, after)
    except NotReady as exc:
        raise not_ready(exc) from None
    except StorageError as exc:
        raise storage_error(exc) from None


def storage_error(exc: StorageError) -> ApiError:
    """A disk problem is never a 500: 507 when the disk is full, 503 with Retry-After otherwise."""
    if exc.outcome_unknown:
        error = ApiError(503, "storage_outcome_unknown", f"this node's disk failed mid-write and could not undo it; "
                         f"the order may or may not have been accepted: look it up by id before resending ({exc})")
    elif exc.kind == "no_space":
        error = ApiError(507, "insufficient_storage", f"this node's disk is full; nothing was accepted ({exc})")
    else:
        error = ApiError(503, f"storage_{exc.kind}", f"this node cannot write its disk; nothing was accepted ({exc})")
    error.retry_after = exc.retry_after or 30.0
    return error


# Each refusal's HTTP status and what the message adds to "the order was refused: <its code>"; the one place
# they are mapped (a refusal with no entry here would fail the test that checks every member has one)
REFUSAL_HTTP: dict[Refusal, tuple[int, str]] = {
    Refusal.BAD_SIGNATURE: (401, ""),
    Refusal.NOT_OWNER: (403, ""),
    Refusal.DUPLICATE_CLIENT_ID: (409, "; GET /orders?client_id=ID shows the order that holds it"),
    Refusal.MEMPOOL_FULL: (503, ""),
    Refusal.HALTED: (503, ""),
    Refusal.ACCOUNT_QUOTA: (429, ""),
    Refusal.SENDER_QUOTA: (429, ""),
    Refusal.ACCOUNT_RATE: (429, ""),
    Refusal.INVALID: (422, ""),
}


def refused(refusal: Refused) -> ApiError:
    """The API error of the chain's refusal: its group's status, its exact code; 429 and 503 say when to retry."""
    status, hint = REFUSAL_HTTP[refusal.refusal]
    error = ApiError(status, refusal.code, f"the order was refused: {refusal.code.replace('_', ' ')}{hint}")
    if status in (429, 503):
        error.retry_after = 1.0
    return error


def padded(registry: MarketRegistry, view: View) -> View:
    """A pending order's decimals written as its market writes a final order's ("0.5" -> "0.5000"), so the two
    line up in a listing; left as sent if the market cannot read them (it will refuse the order)."""
    try:
        market = registry.get(view["market"])
        return {**view, **({"price": market.format_price(market.parse_price(view["price"]))} if view.get("price") else {}),
                "qty": market.format_qty(market.parse_qty(view["qty"])),
                "remaining": market.format_qty(market.parse_qty(view["remaining"])), "filled": market.format_qty(0)}
    except (ExchangeError, KeyError, TypeError):
        return view


def _finality(reads: ChainReads) -> JsonObject:
    return dict(reads.finality().fields())


def _answer_order(reads: ChainReads, tx: SignedTx, index: int, answer: Pending | Final) -> tuple[JsonObject, int]:
    op = tx.ops[index]
    assert isinstance(op, NewOrderOp), "an order's answer is of a new order"
    if isinstance(answer, Pending):
        view = padded(_markets(reads), pending_view(tx, index, op, answer.reason, answer.validator_refusal))
        return {"order": view, "trades": [], "final": False, "reason": answer.reason,
                "validator_refusal": answer.validator_refusal, "tx_id": tx.id, **_finality(reads)}, 202
    result = answer.result
    order_id = tx.order_id(index)
    view = reads.order(order_id) or pending_view(tx, index, op, None) | {"status": result.status}
    op_result = result.ops[index] if index < len(result.ops) else None
    body: JsonObject = {"order": view, "trades": [], "final": True, "tx_id": tx.id, "tx_status": result.status,
                        **_finality(reads)}
    if op_result is not None and op_result.reason:
        body["reason"] = op_result.reason
    body["trades"] = _trades_of(reads, order_id)
    return body, 201


def _answer_op(reads: ChainReads, tx: SignedTx, index: int, answer: Pending | Final) -> JsonObject:
    """A batch item's answer: a new order's as POST /orders gives it; for any other op (cancel, replace,
    cancel_all, schedule_cancel in a signed batch) the op, its result once final, and the order it made."""
    op = tx.ops[index]
    if isinstance(op, NewOrderOp):
        return _answer_order(reads, tx, index, answer)[0]
    body: JsonObject = {"op": op.as_json(), "tx_id": tx.id, "final": isinstance(answer, Final)}
    if isinstance(answer, Pending):
        body["reason"] = answer.reason
        body["validator_refusal"] = answer.validator_refusal
        return body
    result = answer.result
    op_result = result.ops[index] if index < len(result.ops) else None
    body["tx_status"] = result.status
    body["result"] = None if op_result is None else op_result.to_dict()
    if op_result is not None and op_result.order_id is not None:
        body["order"] = reads.order(op_result.order_id)
    return {**body, **_finality(reads)}


async def post_order(request: web.Request) -> web.Response:
    reads, submits = reads_of(request), submits_of(request)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = await _json_body(request)
    registry = _markets(reads)
    if isinstance(body, dict) and "signed" in body:
        tx = _signed(body["signed"], submits)
        if len(tx.ops) != 1 or not isinstance(tx.ops[0], NewOrderOp):
            raise ApiError(422, "one_order_expected", "POST /orders takes one new order; use /orders/batch", "signed")
        _market_checked(registry, tx.ops[0])
        answer = await _submit(submits, tx, wait)
        index = 0
    else:
        op = _order_op(body)
        _market_checked(registry, op)
        metered(submits, _account(request, body.get("account")).public_key, 1)
        if isinstance(body, dict) and body.get("client_id"):
            tx, index = _sign_local(request, submits, body.get("account"), [op], _nonce(body)), 0
            answer = await _submit(submits, tx, wait)
        else:    # orders arriving together for one account share one transaction (one signature)
            tx, index, submitted = await _batcher(request).add(_account(request, body.get("account")), op)
            answer = _settled(await submits.answer(await submitted, wait))
    body_out, status = _answer_order(reads, tx, index, answer)
    return json_response(body_out, status)


def _settled(answer: TxAnswer) -> Pending | Final:
    """A new order's answer, or its refusal raised (a new order is never held, so never dropped unsent)."""
    if isinstance(answer, Refused):
        raise refused(answer)
    assert not isinstance(answer, NotNeeded), "only a cancel held behind its order is dropped unsent"
    return answer


ORDER_BATCHER = web.AppKey("order_batcher", OrderBatcher[Submitted])


def _batcher(request: web.Request) -> OrderBatcher[Submitted]:
    batcher = request.app.get(ORDER_BATCHER)
    if batcher is None:
        raise ApiError(503, "exchange_unavailable", "this node runs no exchange")
    return batcher


def order_batcher(submits: ChainSubmits) -> OrderBatcher[Submitted]:
    """The API's one batcher of node-signed orders (node/order_batcher.py), handing each transaction to `submits`."""
    return OrderBatcher(lambda: submits.signing_terms()[0], lambda: submits.signing_terms()[1],
                        lambda tx: _queue(submits, tx), submits.signed_here)


def _trades_of(reads: ChainReads, order_id: str) -> list[JsonObject]:
    """The order's trades among the market's recent ones (those the state keeps)."""
    order = reads.order(order_id)
    if order is None or order["filled"].strip("0.") == "":
        return []
    return [t for t in reads.trades(order["market"], 1000)
            if order_id in (t.get("maker_order_id"), t.get("taker_order_id"))]


async def post_order_batch(request: web.Request) -> web.Response:
    """`{"orders": [...], "account"?}` (up to 250): one transaction per account, one signature for all of
    its orders; `{"atomic": true, "orders": [...]}`: one account's orders, cancels and replaces run all or none
    (node/api/atomic.py); or `{"signed": {...}}` with up to 250 operations. Answers 200 with per-order results in
    request order; `?wait=` (default 0) waits for finality."""
    reads, submits = reads_of(request), submits_of(request)
    wait = _query_number(request, "wait", 0.0, 0.0, MAX_WAIT)
    body = await _json_body(request)
    registry = _markets(reads)
    if isinstance(body, dict) and "signed" in body:
        txs = [_signed(body["signed"], submits)]
        slots: list[tuple[int, int] | None] = [(0, i) for i in range(len(txs[0].ops))]
        results: list[JsonObject] = [{} for _ in slots]
    elif isinstance(body, dict) and body.get("atomic") is True:      # all or none of them (node/api/atomic.py)
        txs = [atomic_tx(request, submits, registry, body)]
        slots, results = [(0, i) for i in range(len(txs[0].ops))], [{} for _ in txs[0].ops]
    else:
        if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
            raise ApiError(400, "invalid_body", 'the body must be {"orders": [...]}', "orders")
        if not 0 < len(body["orders"]) <= MAX_OPS:
            raise ApiError(422, "invalid_batch_size", f"send 1 to {MAX_OPS} orders", "orders")
        over_rate = _metered_batch(request, submits, body)
        if over_rate and all(isinstance(name, str) and name in over_rate
                             for name in (_item_account(item, body) for item in body["orders"])):
            raise next(iter(over_rate.values()))      # every account of it over its rate: one cheap 429
        results = []
        groups: dict[str, list[tuple[int, NewOrderOp]]] = {}
        for item in body["orders"]:
            try:
                name = _item_account(item, body)
                if name in over_rate:
                    raise over_rate[name]
                op = _order_op(item)
                _market_checked(registry, op)
                groups.setdefault(name, []).append((len(results), op))
                results.append({})
            except ApiError as exc:
                results.append({"error": _error_dict(exc)})
        txs, slots = [], [None] * len(results)
        for name, items in groups.items():
            tx = _sign_local(request, submits, name, [op for _, op in items], os.urandom(12).hex())
            for op_index, (slot, _) in enumerate(items):
                slots[slot] = (len(txs), op_index)
            txs.append(tx)
    submitted = [await _queue(submits, tx) for tx in txs]
    answers = [await submits.answer(one, wait) for one in submitted]
    for slot, where in enumerate(slots):
        if where is None:
            continue
        tx_index, op_index = where
        answer = answers[tx_index]
        if isinstance(answer, Refused):
            results[slot] = {"error": _error_dict(refused(answer))}
            continue
        assert not isinstance(answer, NotNeeded), "a batch holds no cancel held behind its order"
        results[slot] = _answer_op(reads, txs[tx_index], op_index, answer)
    return json_response({"results": results})


def _item_account(item: Json, body: JsonObject) -> Json:
    """The account a batch's order names (the batch's, or `default`); None for an item that is no object."""
    return item.get("account", body.get("account")) or "default" if isinstance(item, dict) else None


def _metered_batch(request: web.Request, submits: ChainSubmits, body: JsonObject) -> dict[str, ApiError]:
    """The accounts of a batch whose orders the rates refuse (`metered`), counted before any order is parsed."""
    counts: dict[str, int] = {}
    for item in body["orders"]:
        name = _item_account(item, body)
        if isinstance(name, str):
            counts[name] = counts.get(name, 0) + 1
    over_rate: dict[str, ApiError] = {}
    for name, ops in counts.items():
        account = _account(request, name).public_key
        try:
            metered(submits, account, ops)
        except ApiError as exc:
            over_rate[name] = exc
    return over_rate


def _error_dict(exc: ApiError) -> JsonObject:
    error: JsonObject = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        error["field"] = exc.field
    return error


async def get_order(request: web.Request) -> web.Response:
    """A final order, or one of ours answered 202 that no block holds yet (status `pending`, `final`: false)."""
    reads = reads_of(request)
    order_id = request.match_info["order_id"]
    if wants_proof(request):
        return await proved_order(request, order_id)
    registry = _markets(reads)
    order = reads.order(order_id)
    if order is not None:
        return json_response({"order": order, "final": True, **_finality(reads)})
    pending = reads.pending_order(order_id)
    if pending is None:
        raise ApiError(404, "unknown_order", "no such order (or it left the closed-order history)", "id")
    return json_response({"order": padded(registry, pending.view), "final": False, "reason": pending.view["reason"],
                          "validator_refusal": pending.view["validator_refusal"], **_finality(reads)})


async def list_orders(request: web.Request) -> web.Response:
    reads = reads_of(request)
    registry = _markets(reads)
    limit = _query_number(request, "limit", 100, 0, MAX_LIST, integer=True)
    account = _query_account(request)
    if "client_id" in request.query:
        return json_response({"orders": _by_client_id(request, reads, account)[:limit], **_finality(reads)})
    status = request.query.get("status") or None
    pending = [padded(registry, view) for view in reads.pending_orders(account)] \
        if status in (None, "pending") else []
    try:
        orders = [] if status == "pending" else reads.orders(account, status, limit)
    except ExchangeError as exc:
        raise ApiError(400, exc.code, exc.message, exc.field) from None
    return json_response({"orders": (pending + orders)[:limit], **_finality(reads)})


def _query_account(request: web.Request) -> str | None:
    """The `account` query parameter as an id (a name of this node's accounts becomes its id), or None."""
    account = request.query.get("account") or None
    if account is not None and len(account) != 64:
        account = _account(request, account).id
    return account


def _by_client_id(request: web.Request, reads: ChainReads, account: str | None) -> list[JsonObject]:
    """`GET /orders?client_id=ID`: the order that holds the client id (one per account; only `account`'s when
    named), final ones from the state, then ours that no block holds yet."""
    client_id = request.query.get("client_id", "")
    if CLIENT_ID.fullmatch(client_id) is None:
        raise ApiError(400, "invalid_client_id", "client_id is 1 to 36 of A-Z a-z 0-9 _ -", "client_id")
    registry = _markets(reads)
    found: list[JsonObject] = reads.orders_by_client_id(client_id, account)
    for view in reads.pending_orders(account):
        pending = reads.pending_order(view["id"])
        if pending is None:
            continue
        op = pending.tx.ops[int(view["id"][ORDER_ID_PREFIX:], 16)]
        if isinstance(op, NewOrderOp) and op.client_id == client_id:
            found.append({**padded(registry, view), "client_id": client_id})
    return found


async def delete_by_client_id(request: web.Request) -> web.Response:
    """`DELETE /orders?client_id=ID[&account=A]`: cancel the order that holds the client id, as DELETE
    /orders/{id} does (404 `unknown_client_id` when none does, 409 `ambiguous_client_id` when orders of
    several accounts do and no account is named)."""
    reads = reads_of(request)
    found = [view for view in _by_client_id(request, reads, _query_account(request)) if view.get("id")]
    if not found:
        raise ApiError(404, "unknown_client_id", "no open or recent order holds this client id", "client_id")
    if len(found) > 1:
        raise ApiError(409, "ambiguous_client_id", f"orders of {len(found)} accounts hold this client id: "
                       f"name the account (?account=)", "account")
    return await _cancel_order(request, found[0]["id"])


async def delete_order(request: web.Request) -> web.Response:
    """Cancel an order. A cancel of one of our orders that no block holds yet (status `pending`) is held
    until a block has the order, so the chain orders it after the order: it goes to the chain if the order
    then rests on the book, and resolves `not_needed` (nothing to cancel) if the order never rested."""
    return await _cancel_order(request, request.match_info["order_id"])


async def _cancel_order(request: web.Request, order_id: str) -> web.Response:
    reads, submits = reads_of(request), submits_of(request)
    _markets(reads)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = await _json_body(request, allow_empty=True)
    order = reads.order(order_id)
    pending = None if order is not None else reads.pending_order(order_id)
    view = order or (pending.view if pending is not None else None)
    if view is None:
        raise ApiError(404, "unknown_order", "no such order", "id")
    if isinstance(body, dict) and "signed" in body:
        tx = _signed(body["signed"])
        if len(tx.ops) != 1 or not isinstance(tx.ops[0], CancelOp) or tx.ops[0].order_id != order_id:
            raise ApiError(422, "cancel_expected", "the signed transaction must cancel exactly this order", "signed")
    else:
        accounts = node_of(request).accounts
        try:
            account = accounts.get(view["account"]) if accounts is not None else None
        except KeyError:
            account = None
        if account is None:
            raise ApiError(403, "not_owner", f"this node does not hold the key of account {view['account']}; "
                           f"only the owner may cancel: send a cancel signed with that key", "id")
        tx = _sign_local(request, submits, account.id, [CancelOp.parse(view["market"], order_id)], os.urandom(12).hex())
    if view["status"] in CLOSED:
        raise ApiError(409, "order_closed", f"order is already {view['status']}", "id")
    if "cancel" in view:
        raise ApiError(409, "cancel_pending", f"a cancel of this order ({view['cancel']['tx_id']}) already waits for "
                       f"the order to be final", "id")
    answer = await submits.answer(await _queue(submits, tx, after=None if pending is None else pending.tx), wait)
    if isinstance(answer, Refused):
        raise refused(answer)
    if isinstance(answer, Pending):
        still = reads.pending_order(order_id)
        now = reads.order(order_id) or (view if still is None else still.view)
        return json_response({"order": now, "cancel": {"tx_id": tx.id, "status": "pending", "reason": answer.reason,
                                                       "validator_refusal": answer.validator_refusal},
                              "final": False}, 202)
    if isinstance(answer, NotNeeded):
        now = reads.order(order_id) or {**view, "status": "never_landed", "final": True}
        return json_response({"order": now, "cancel": {"tx_id": tx.id, "status": "not_needed", "reason": answer.reason},
                              "final": True, **_finality(reads)})
    result = answer.result
    op = result.ops[0] if result.ops else None
    done = op is not None and op.outcome == "cancelled"
    cancel = {"tx_id": tx.id, "status": "done" if done else "rejected",
              "reason": None if done else (op.reason if op is not None else result.reason)}
    return json_response({"order": reads.order(order_id), "cancel": cancel, "final": True, **_finality(reads)},
                         200 if done else 409)


def _market(registry: MarketRegistry, name: str) -> str:
    if name not in registry:
        raise ApiError(404, "unknown_market", f"unknown market {name!r}", "market")
    return name


async def get_book(request: web.Request) -> web.Response:
    reads = reads_of(request)
    market = _market(_markets(reads), request.match_info["market"])
    if wants_proof(request):
        return await proved_book(request, market)
    depth = _query_number(request, "depth", 50, 0, 100_000, integer=True)
    wanted = _query_number(request, "digest", 1, 0, 1, integer=True) == 1
    # the digest encodes the whole book (every resting order) once per height it changed at: that work has a
    # share of the loop (cost_budget.py), and a reader asking past it gets the levels without the digest
    cached = reads.has_digest(market)
    budget = request.app[BOOK_DIGEST_BUDGET]
    with_digest = wanted and (cached or budget.allows())
    started = time.perf_counter()
    view = reads.book(market, depth, with_digest)
    if with_digest and not cached:
        budget.spent(time.perf_counter() - started)
    view.update(_finality(reads), final=True, state_hash=reads.state_hash())
    if wanted and not with_digest:
        view["digest_deferred"] = True
    return json_response(view)


async def get_account(request: web.Request) -> web.Response:
    reads = reads_of(request)
    registry = _markets(reads)
    account = request.match_info["account"]
    if len(account) != 64:
        account = _account(request, account).id
    view = reads.account(account)
    view["pending_orders"] = [padded(registry, order) for order in reads.pending_orders(account)]
    return json_response({**view, **_finality(reads)})


@web.middleware
async def retry_after(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503/507 answers say when to come back; a chain that cannot answer now (NotReady) is such a 503."""
    try:
        return await handler(request)
    except NotReady as exc:
        error = not_ready(exc)
    except ApiError as exc:
        error = exc
    response = error.response()
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return response


async def debug_commits(request: web.Request) -> web.Response:
    """`GET /debug/chain/commits?from=H` (DEBUG_API only): when each block became final here, and how many
    operations it held — benchmarks measure finality on every node with it."""
    if not node_of(request).configs.api.debug_api:
        raise ApiError(404, "not_found", "debug endpoints are off (DEBUG_API)")
    reads = reads_of(request)
    start = _query_number(request, "from", 0, 0, 1 << 62, integer=True)
    return json_response({"commits": [list(c) for c in reads.commits(start)]})


BOOK_DIGEST_BUDGET = web.AppKey("book_digest_budget", CostBudget)


def install_order_api(app: web.Application) -> None:
    app[BOOK_DIGEST_BUDGET] = CostBudget()
    submits = app[NODE_KEY].chain_submits
    if submits is not None:
        app[ORDER_BATCHER] = order_batcher(submits)
    app.middlewares.append(retry_after)
    app.router.add_post("/orders", post_order)
    app.router.add_post("/orders/batch", post_order_batch)
    app.router.add_get("/orders", list_orders)
    app.router.add_delete("/orders", delete_by_client_id)
    app.router.add_get("/orders/{order_id}", get_order)
    app.router.add_delete("/orders/{order_id}", delete_order)
    app.router.add_get("/book/{market}", get_book)
    app.router.add_get("/accounts/{account}", get_account)
    app.router.add_get("/debug/chain/commits", debug_commits)
