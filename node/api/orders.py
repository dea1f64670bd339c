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

import asyncio
import os
import time
from typing import Any, Literal, overload

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from exchange.chain.ports import NotReady
from exchange.chain.own_orders import TxOutcome, Withdrawn, pending_view
from exchange.chain.service import ChainService
from exchange.app import ExchangeState
from exchange.app.machine import ORDER_ID_PREFIX
from exchange.app.txs import CLIENT_ID, MAX_OPS, CancelOp, InvalidTx, NewOrderOp, Op, SignedTx, decimal_problem, sign_tx
from exchange.errors import ExchangeError
from storage import StorageError
from node.accounts import Account
from node.api.atomic import atomic_tx
from node.api.base import ApiError, Json, JsonObject, chain_of, json_response, node_of, not_ready
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
# A transaction handed to the chain: why it was refused (or None) and the future of its outcome once final
Queued = tuple[str | None, asyncio.Future[TxOutcome]]


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


def _state(chain: ChainService) -> ExchangeState:
    try:
        return chain.state
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


def _market_checked(state: ExchangeState, op: NewOrderOp) -> None:
    """Refuse what the state machine would reject at once, with the field that is wrong."""
    registry = state.params.registry
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


def _sign_local(request: web.Request, chain: ChainService, account_name: Json, ops: list[Op], nonce: str) -> SignedTx:
    account = _account(request, account_name)
    expires = int(time.time() * 1000) + chain.order_ttl_ms - 1000
    try:
        tx = sign_tx(account.sign, account.public_key, chain.genesis.chain_id, nonce, expires, ops)  # type: ignore[union-attr]
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None
    chain.submissions.signed_here(tx)            # we just made the signature: no need to check it again
    return tx


def metered(chain: ChainService, account: bytes, ops: int) -> None:
    """Refuse (429 `account_rate`) what the chain's account and group rates would refuse, before the transaction
    is signed, its signature checked and it is written to the outbox: a refusal costs a lookup, not that work."""
    core = chain.core
    if core is not None and core.intake.refuses_own(account, ops):
        raise _refused("account_rate")


def _signed(body: Json, chain: ChainService | None = None) -> SignedTx:
    """A client's signed transaction; with `chain`, metered before its signature is checked."""
    try:
        tx = SignedTx.from_json(body)
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None
    if chain is not None:
        metered(chain, tx.account, len(tx.ops))
    if not (tx.signature_valid() if chain is None else chain.submissions.signature_valid(tx)):
        raise ApiError(401, "bad_signature", "the signature does not verify for this account and these bytes",
                       "sig")
    return tx


# Any: the outcome is a TxResult once final, else None; only a cancel held behind its order (_queue's `after`)
# resolves to Withdrawn, and the one route that holds one (delete_order) checks for it
async def _submit(chain: ChainService, tx: SignedTx, wait: float) -> tuple[str | None, Any]:
    why, future = await _queue(chain, tx)
    if why is not None:
        return why, None
    return None, await chain.submissions.wait(future, wait)


async def _queue(chain: ChainService, tx: SignedTx, after: SignedTx | None = None) -> Queued:
    """Hand the transaction to the chain (durable in the outbox on return) or raise the API error; `after`:
    our pending transaction it must be ordered after (Submissions.submit_after)."""
    try:
        return await (chain.submissions.submit(tx) if after is None else chain.submissions.submit_after(tx, after))
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


_REFUSAL_STATUS = {"bad_signature": 401, "not_owner": 403, "duplicate_client_id": 409, "mempool_full": 503, "halted": 503,
                   "account_quota": 429, "sender_quota": 429, "account_rate": 429}


def _refused(why: str) -> ApiError:
    status = _REFUSAL_STATUS.get(why, 422)
    error = ApiError(status, why, f"the order was refused: {why.replace('_', ' ')}"
                     + ("; GET /orders?client_id=ID shows the order that holds it" if why == "duplicate_client_id" else ""))
    if status in (429, 503):
        error.retry_after = 1.0
    return error


def padded(state: ExchangeState, view: Any) -> Any:  # Any: an order view (OrderView or JsonObject)
    """A pending order's decimals written as its market writes a final order's ("0.5" -> "0.5000"), so the two
    line up in a listing; left as sent if the market cannot read them (it will refuse the order)."""
    try:
        market = state.params.registry.get(view["market"])
        return {**view, **({"price": market.format_price(market.parse_price(view["price"]))} if view.get("price") else {}),
                "qty": market.format_qty(market.parse_qty(view["qty"])),
                "remaining": market.format_qty(market.parse_qty(view["remaining"])), "filled": market.format_qty(0)}
    except (ExchangeError, KeyError, TypeError):
        return view


def _finality(chain: ChainService) -> JsonObject:
    core = chain.core
    if core is None:
        return {"height": 0}
    return {"height": core.height, "epoch": core.state.validators.epoch, "role": core.role}


# Any: `result` is as _submit's
def _answer_order(chain: ChainService, tx: SignedTx, index: int, result: Any) -> tuple[JsonObject, int]:
    op = tx.ops[index]
    if result is None:
        reason, refusal = chain.submissions.pending_reason(), chain.submissions.refusal(tx.id)
        view = padded(chain.state, pending_view(tx, index, op, reason, refusal))  # type: ignore[arg-type]
        return {"order": view, "trades": [], "final": False, "reason": reason, "validator_refusal": refusal,
                "tx_id": tx.id, **_finality(chain)}, 202
    state = chain.state
    order_id = tx.order_id(index)
    view = state.order(order_id) or pending_view(tx, index, op, None) | {"status": result.status}  # type: ignore[arg-type]
    op_result = result.ops[index] if index < len(result.ops) else None
    body: JsonObject = {"order": view, "trades": [], "final": True, "tx_id": tx.id, "tx_status": result.status,
                            **_finality(chain)}
    if op_result is not None and op_result.reason:
        body["reason"] = op_result.reason
    body["trades"] = _trades_of(chain, order_id)
    return body, 201


def _answer_op(chain: ChainService, tx: SignedTx, index: int, result: Any) -> JsonObject:  # Any: as _answer_order's
    """A batch item's answer: a new order's as POST /orders gives it; for any other op (cancel, replace,
    cancel_all, schedule_cancel in a signed batch) the op, its result once final, and the order it made."""
    op = tx.ops[index]
    if isinstance(op, NewOrderOp):
        return _answer_order(chain, tx, index, result)[0]
    body: JsonObject = {"op": op.as_json(), "tx_id": tx.id, "final": result is not None}
    if result is None:
        body["reason"] = chain.submissions.pending_reason()
        body["validator_refusal"] = chain.submissions.refusal(tx.id)
        return body
    op_result = result.ops[index] if index < len(result.ops) else None
    body["tx_status"] = result.status
    body["result"] = None if op_result is None else op_result.to_dict()
    if op_result is not None and op_result.order_id is not None:
        body["order"] = chain.state.order(op_result.order_id)
    return {**body, **_finality(chain)}


async def post_order(request: web.Request) -> web.Response:
    chain = chain_of(request)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = await _json_body(request)
    state = _state(chain)
    if isinstance(body, dict) and "signed" in body:
        tx = _signed(body["signed"], chain)
        if len(tx.ops) != 1 or not isinstance(tx.ops[0], NewOrderOp):
            raise ApiError(422, "one_order_expected", "POST /orders takes one new order; use /orders/batch", "signed")
        _market_checked(state, tx.ops[0])
        why, result = await _submit(chain, tx, wait)
        index = 0
    else:
        op = _order_op(body)
        _market_checked(state, op)
        metered(chain, _account(request, body.get("account")).public_key, 1)
        if isinstance(body, dict) and body.get("client_id"):
            tx, index = _sign_local(request, chain, body.get("account"), [op], _nonce(body)), 0
            why, result = await _submit(chain, tx, wait)
        else:    # orders arriving together for one account share one transaction (one signature)
            tx, index, submitted = await _batcher(request, chain).add(_account(request, body.get("account")), op)
            why, future = await submitted
            result = None if why is not None else await chain.submissions.wait(future, wait)
    if why is not None:
        raise _refused(why)
    answer, status = _answer_order(chain, tx, index, result)
    return json_response(answer, status)


def _batcher(request: web.Request, chain: ChainService) -> OrderBatcher[Queued]:
    node = node_of(request)
    batcher = node.order_batcher
    if batcher is None:
        batcher = node.order_batcher = OrderBatcher(lambda: chain.genesis.chain_id,  # type: ignore[union-attr]
                                                    lambda: chain.order_ttl_ms, lambda tx: _queue(chain, tx),
                                                    chain.submissions.signed_here)
    return batcher


def _trades_of(chain: ChainService, order_id: str) -> list[JsonObject]:
    """The order's trades among the market's recent ones (those the state keeps)."""
    state = chain.state
    order = state.order(order_id)
    if order is None or order["filled"].strip("0.") == "":
        return []
    return [t for t in state.trades(order["market"], 1000)
            if order_id in (t.get("maker_order_id"), t.get("taker_order_id"))]


async def post_order_batch(request: web.Request) -> web.Response:
    """`{"orders": [...], "account"?}` (up to 250): one transaction per account, one signature for all of
    its orders; `{"atomic": true, "orders": [...]}`: one account's orders, cancels and replaces run all or none
    (node/api/atomic.py); or `{"signed": {...}}` with up to 250 operations. Answers 200 with per-order results in
    request order; `?wait=` (default 0) waits for finality."""
    chain = chain_of(request)
    wait = _query_number(request, "wait", 0.0, 0.0, MAX_WAIT)
    body = await _json_body(request)
    state = _state(chain)
    if isinstance(body, dict) and "signed" in body:
        txs = [(_signed(body["signed"], chain), None)]
        slots: list[tuple[int, int] | None] = [(0, i) for i in range(len(txs[0][0].ops))]
        results: list[JsonObject] = [{} for _ in slots]
    elif isinstance(body, dict) and body.get("atomic") is True:      # all or none of them (node/api/atomic.py)
        txs = [(atomic_tx(request, chain, state, body), None)]
        slots, results = [(0, i) for i in range(len(txs[0][0].ops))], [{} for _ in txs[0][0].ops]
    else:
        if not isinstance(body, dict) or not isinstance(body.get("orders"), list):
            raise ApiError(400, "invalid_body", 'the body must be {"orders": [...]}', "orders")
        if not 0 < len(body["orders"]) <= MAX_OPS:
            raise ApiError(422, "invalid_batch_size", f"send 1 to {MAX_OPS} orders", "orders")
        refused = _metered_batch(request, chain, body)
        if refused and all(isinstance(name, str) and name in refused
                           for name in (_item_account(item, body) for item in body["orders"])):
            raise next(iter(refused.values()))      # every account of it over its rate: one cheap 429
        results = []
        groups: dict[str, list[tuple[int, NewOrderOp]]] = {}
        for item in body["orders"]:
            try:
                name = _item_account(item, body)
                if name in refused:
                    raise refused[name]
                op = _order_op(item)
                _market_checked(state, op)
                groups.setdefault(name, []).append((len(results), op))
                results.append({})
            except ApiError as exc:
                results.append({"error": _error_dict(exc)})
        txs, slots = [], [None] * len(results)
        for name, items in groups.items():
            tx = _sign_local(request, chain, name, [op for _, op in items], os.urandom(12).hex())
            for op_index, (slot, _) in enumerate(items):
                slots[slot] = (len(txs), op_index)
            txs.append((tx, None))
    answers = []
    for tx, _ in txs:
        why, future = await _queue(chain, tx)
        answers.append((tx, why, future))
    finals = []
    for _tx, why, future in answers:
        finals.append(None if why is not None or future is None else await chain.submissions.wait(future, wait))
    for slot, where in enumerate(slots):
        if where is None:
            continue
        tx_index, op_index = where
        tx, why, _ = answers[tx_index]
        if why is not None:
            results[slot] = {"error": _error_dict(_refused(why))}
            continue
        results[slot] = _answer_op(chain, tx, op_index, finals[tx_index])
    return json_response({"results": results})


def _item_account(item: Json, body: JsonObject) -> Json:
    """The account a batch's order names (the batch's, or `default`); None for an item that is no object."""
    return item.get("account", body.get("account")) or "default" if isinstance(item, dict) else None


def _metered_batch(request: web.Request, chain: ChainService, body: JsonObject) -> dict[str, ApiError]:
    """The accounts of a batch whose orders the rates refuse (`metered`), counted before any order is parsed."""
    counts: dict[str, int] = {}
    for item in body["orders"]:
        name = _item_account(item, body)
        if isinstance(name, str):
            counts[name] = counts.get(name, 0) + 1
    refused: dict[str, ApiError] = {}
    for name, ops in counts.items():
        account = _account(request, name).public_key
        try:
            metered(chain, account, ops)
        except ApiError as exc:
            refused[name] = exc
    return refused


def _error_dict(exc: ApiError) -> JsonObject:
    error: JsonObject = {"code": exc.code, "message": exc.message}
    if exc.field is not None:
        error["field"] = exc.field
    return error


async def get_order(request: web.Request) -> web.Response:
    """A final order, or one of ours answered 202 that no block holds yet (status `pending`, `final`: false)."""
    chain = chain_of(request)
    order_id = request.match_info["order_id"]
    if wants_proof(request):
        return await proved_order(request, order_id)
    order = _state(chain).order(order_id)
    if order is not None:
        return json_response({"order": order, "final": True, **_finality(chain)})
    pending = chain.submissions.pending_order(order_id)
    if pending is None:
        raise ApiError(404, "unknown_order", "no such order (or it left the closed-order history)", "id")
    return json_response({"order": padded(chain.state, pending[1]), "final": False, "reason": pending[1]["reason"],
                          "validator_refusal": pending[1]["validator_refusal"], **_finality(chain)})


async def list_orders(request: web.Request) -> web.Response:
    chain = chain_of(request)
    state = _state(chain)
    limit = _query_number(request, "limit", 100, 0, MAX_LIST, integer=True)
    account = _query_account(request)
    if "client_id" in request.query:
        return json_response({"orders": _by_client_id(request, chain, account)[:limit], **_finality(chain)})
    status = request.query.get("status") or None
    pending = [padded(state, view) for view in chain.submissions.pending_orders(account)] \
        if status in (None, "pending") else []
    try:
        orders = [] if status == "pending" else state.orders(account, status, limit)
    except ExchangeError as exc:
        raise ApiError(400, exc.code, exc.message, exc.field) from None
    return json_response({"orders": (pending + orders)[:limit], **_finality(chain)})


def _query_account(request: web.Request) -> str | None:
    """The `account` query parameter as an id (a name of this node's accounts becomes its id), or None."""
    account = request.query.get("account") or None
    if account is not None and len(account) != 64:
        account = _account(request, account).id
    return account


def _by_client_id(request: web.Request, chain: ChainService, account: str | None) -> list[JsonObject]:
    """`GET /orders?client_id=ID`: the order that holds the client id (one per account; only `account`'s when
    named), final ones from the state, then ours that no block holds yet."""
    client_id = request.query.get("client_id", "")
    if CLIENT_ID.fullmatch(client_id) is None:
        raise ApiError(400, "invalid_client_id", "client_id is 1 to 36 of A-Z a-z 0-9 _ -", "client_id")
    state = _state(chain)
    found: list[JsonObject] = state.orders_by_client_id(client_id, account)
    for view in chain.submissions.pending_orders(account):
        pending = chain.submissions.pending_order(view["id"])
        if pending is None:
            continue
        tx = pending[0]
        op = tx.ops[int(view["id"][ORDER_ID_PREFIX:], 16)]
        if isinstance(op, NewOrderOp) and op.client_id == client_id:
            found.append({**padded(state, view), "client_id": client_id})
    return found


async def delete_by_client_id(request: web.Request) -> web.Response:
    """`DELETE /orders?client_id=ID[&account=A]`: cancel the order that holds the client id, as DELETE
    /orders/{id} does (404 `unknown_client_id` when none does, 409 `ambiguous_client_id` when orders of
    several accounts do and no account is named)."""
    chain = chain_of(request)
    found = [view for view in _by_client_id(request, chain, _query_account(request)) if view.get("id")]
    if not found:
        raise ApiError(404, "unknown_client_id", "no open or recent order holds this client id", "client_id")
    if len(found) > 1:
        raise ApiError(409, "ambiguous_client_id", f"orders of {len(found)} accounts hold this client id: "
                       f"name the account (?account=)", "account")
    return await _cancel_order(request, chain, found[0]["id"])


async def delete_order(request: web.Request) -> web.Response:
    """Cancel an order. A cancel of one of our orders that no block holds yet (status `pending`) is held
    until a block has the order, so the chain orders it after the order: it goes to the chain if the order
    then rests on the book, and resolves `not_needed` (nothing to cancel) if the order never rested."""
    chain = chain_of(request)
    return await _cancel_order(request, chain, request.match_info["order_id"])


async def _cancel_order(request: web.Request, chain: ChainService, order_id: str) -> web.Response:
    state = _state(chain)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = await _json_body(request, allow_empty=True)
    order = state.order(order_id)
    pending = None if order is not None else chain.submissions.pending_order(order_id)
    view = order or (pending[1] if pending is not None else None)
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
        tx = _sign_local(request, chain, account.id, [CancelOp.parse(view["market"], order_id)], os.urandom(12).hex())
    if view["status"] in CLOSED:
        raise ApiError(409, "order_closed", f"order is already {view['status']}", "id")
    if "cancel" in view:
        raise ApiError(409, "cancel_pending", f"a cancel of this order ({view['cancel']['tx_id']}) already waits for "
                       f"the order to be final", "id")
    if pending is None:
        why, result = await _submit(chain, tx, wait)
    else:
        why, future = await _queue(chain, tx, after=pending[0])
        result = None if why is not None else await chain.submissions.wait(future, wait)
    if why is not None:
        raise _refused(why)
    if result is None:
        now = state.order(order_id) or (chain.submissions.pending_order(order_id) or (None, view))[1]
        return json_response({"order": now, "cancel": {"tx_id": tx.id, "status": "pending",
                                                       "reason": chain.submissions.pending_reason(),
                                                       "validator_refusal": chain.submissions.refusal(tx.id)},
                              "final": False}, 202)
    if isinstance(result, Withdrawn):
        now = state.order(order_id) or {**view, "status": "never_landed", "final": True}
        return json_response({"order": now, "cancel": {"tx_id": tx.id, "status": "not_needed", "reason": result.reason},
                              "final": True, **_finality(chain)})
    op = result.ops[0] if result.ops else None
    done = op is not None and op.outcome == "cancelled"
    cancel = {"tx_id": tx.id, "status": "done" if done else "rejected",
              "reason": None if done else (op.reason if op is not None else result.reason)}
    return json_response({"order": state.order(order_id), "cancel": cancel, "final": True, **_finality(chain)},
                         200 if done else 409)


def _market(state: ExchangeState, name: str) -> str:
    if name not in state.params.registry:
        raise ApiError(404, "unknown_market", f"unknown market {name!r}", "market")
    return name


async def get_book(request: web.Request) -> web.Response:
    chain = chain_of(request)
    state = _state(chain)
    market = _market(state, request.match_info["market"])
    if wants_proof(request):
        return await proved_book(request, market)
    depth = _query_number(request, "depth", 50, 0, 100_000, integer=True)
    wanted = _query_number(request, "digest", 1, 0, 1, integer=True) == 1
    # the digest encodes the whole book (every resting order) once per height it changed at: that work has a
    # share of the loop (cost_budget.py), and a reader asking past it gets the levels without the digest
    cached = state.has_digest(market)
    budget = request.app[BOOK_DIGEST_BUDGET]
    with_digest = wanted and (cached or budget.allows())
    started = time.perf_counter()
    view = state.book(market, depth, with_digest=with_digest)
    if with_digest and not cached:
        budget.spent(time.perf_counter() - started)
    view.update(_finality(chain), final=True, state_hash=chain.core.state.hash.hex())  # type: ignore[union-attr]
    if wanted and not with_digest:
        view["digest_deferred"] = True
    return json_response(view)


async def get_account(request: web.Request) -> web.Response:
    chain = chain_of(request)
    state = _state(chain)
    account = request.match_info["account"]
    if len(account) != 64:
        account = _account(request, account).id
    view = state.position(account)
    view["open_orders"] = state.open_count(account)
    view["max_open_orders"] = state.params.max_open_orders
    view["cancel_all_at"] = state.switch(account)      # the dead-man's switch, block time in ms, or null
    view["pending_orders"] = [padded(state, order) for order in chain.submissions.pending_orders(account)]
    return json_response({**view, **_finality(chain)})


@web.middleware
async def retry_after(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503/507 answers say when to come back."""
    try:
        return await handler(request)
    except ApiError as exc:
        response = exc.response()
        wait = exc.retry_after
        if wait is not None:
            response.headers["Retry-After"] = str(max(1, round(wait)))
        return response


async def debug_commits(request: web.Request) -> web.Response:
    """`GET /debug/chain/commits?from=H` (DEBUG_API only): when each block became final here, and how many
    operations it held — benchmarks measure finality on every node with it."""
    if not node_of(request).configs.api.debug_api:
        raise ApiError(404, "not_found", "debug endpoints are off (DEBUG_API)")
    chain = chain_of(request)
    start = _query_number(request, "from", 0, 0, 1 << 62, integer=True)
    return json_response({"commits": [list(c) for c in chain.commit_log if c[0] >= start]})


BOOK_DIGEST_BUDGET = web.AppKey("book_digest_budget", CostBudget)


def install_order_api(app: web.Application) -> None:
    app[BOOK_DIGEST_BUDGET] = CostBudget()
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
