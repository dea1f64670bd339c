"""Control API for pulling quotes at once: cancel-all and the dead-man's switch.

`POST /orders/cancel-all` cancels every open order of an account (in one market and on one side when
named) with one signed operation. `POST /orders/cancel-after` arms the account's dead-man's switch:
the validators cancel all its open orders at the first block at or after the time, from block time,
so it fires even when this node is gone; a market maker refreshes it while it is alive. Both take
plain fields (the node signs with one of its accounts) or `{"signed": {...}}` from an external client,
and answer like DELETE /orders/{id}: 200 once final, 202 with `reason` while not, 409 when refused.

A cancel-all covers what rests when the chain applies it. Orders this node answered 202 that no block
holds yet may be ordered after it and then rest: the answer lists them as `pending_not_covered`.
"""
from __future__ import annotations

import os
import time
from typing import Callable, cast

from aiohttp import web

from exchange.app.results import OpResult
from exchange.app.txs import ApproveAgentOp, CancelAllOp, InvalidTx, Op, RevokeAgentOp, ScheduleCancelOp, SignedTx
from exchange.chain.api_ports import ChainReads, ChainSubmits, Pending
from node.api.base import ApiError, Json, JsonObject, json_response, reads_of, submits_of
from node.api.orders import (DEFAULT_WAIT, MAX_WAIT, _account, _finality, _json_body, _markets, _query_number,
                             _sign_local, _signed, _submit, metered)

MAX_AFTER_S = 86_400.0


def _fields(body: Json, allowed: set[str]) -> JsonObject:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "send a JSON object")
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field {unknown[0]!r}", unknown[0])
    return body


def _one_op(body: JsonObject, kind: type[CancelAllOp] | type[ScheduleCancelOp] | type[ApproveAgentOp] | type[RevokeAgentOp],
            submits: ChainSubmits) -> SignedTx:
    tx = _signed(body["signed"], submits)
    if len(tx.ops) != 1 or not isinstance(tx.ops[0], kind):
        raise ApiError(422, f"{kind.name}_expected", f"the signed transaction must hold exactly one {kind.name}",
                       "signed")
    return tx


def _parsed(make: Callable[..., Op], *values: Json) -> Op:
    try:
        return make(*values)
    except InvalidTx as exc:
        raise ApiError(422, exc.code, str(exc), exc.field) from None


async def _run(reads: ChainReads, submits: ChainSubmits, tx: SignedTx, wait: float,
               what: str, extra: JsonObject) -> tuple[JsonObject, OpResult | None]:
    """Submit a one-op transaction and shape its answer; the op's result once final (None while pending, or when
    the whole transaction was rejected)."""
    answer = await _submit(submits, tx, wait)
    if isinstance(answer, Pending):
        reason, refusal = answer.reason, answer.validator_refusal
        return {what: {"tx_id": tx.id, "status": "pending", "reason": reason, "validator_refusal": refusal, **extra},
                "final": False, "reason": reason, "validator_refusal": refusal}, None
    result = answer.result
    op = result.ops[0] if result.ops else None
    return {what: {"tx_id": tx.id, "status": op.outcome if op is not None else "rejected",
                   "reason": op.reason if op is not None else result.reason, **extra},
            "final": True, **_finality(reads)}, op


async def post_cancel_all(request: web.Request) -> web.Response:
    reads, submits = reads_of(request), submits_of(request)
    registry = _markets(reads)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = _fields(await _json_body(request, allow_empty=True), {"account", "market", "side", "signed"})
    if "signed" in body:
        tx = _one_op(body, CancelAllOp, submits)
    else:
        op = _parsed(CancelAllOp.parse, body.get("market"), body.get("side"))
        metered(submits, _account(request, body.get("account")).public_key, 1)
        tx = _sign_local(request, submits, body.get("account"), [op], os.urandom(12).hex())
    scope = cast(CancelAllOp, tx.ops[0])     # _one_op checked it, or we made it
    if scope.market is not None and scope.market not in registry:
        raise ApiError(422, "unknown_market", f"unknown market {scope.market!r}", "market")
    answer, done = await _run(reads, submits, tx, wait, "cancel_all",
                              {"account": tx.owner.hex(), "market": scope.market, "side": scope.side})
    if done is not None and done.outcome == "cancelled":     # its reason is "<count>_cancelled"
        answer["cancel_all"].update(status="done", cancelled=int((done.reason or "0").split("_", 1)[0]), reason=None)
    answer["pending_not_covered"] = [
        view["id"] for view in reads.pending_orders(tx.owner.hex())
        if scope.market in (None, view["market"]) and scope.side in (None, view["side"])]
    status = 202 if not answer["final"] else 200 if done is not None and done.outcome == "cancelled" else 409
    return json_response(answer, status)


async def post_schedule_cancel(request: web.Request) -> web.Response:
    """`{"after": seconds}` or `{"at": ms since the epoch}` arms (or moves) the switch; `{"at": null}` clears."""
    reads, submits = reads_of(request), submits_of(request)
    _markets(reads)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = _fields(await _json_body(request, allow_empty=False), {"account", "after", "at", "signed"})
    if "signed" in body:
        tx = _one_op(body, ScheduleCancelOp, submits)
    else:
        if ("after" in body) == ("at" in body):
            raise ApiError(422, "after_or_at", "send either after (seconds from now) or at (ms, or null to clear)")
        at = body.get("at")
        if "after" in body:
            after = body["after"]
            if isinstance(after, bool) or not isinstance(after, (int, float)) or not 0 < after <= MAX_AFTER_S:
                raise ApiError(422, "invalid_after", f"after is a number of seconds in (0, {MAX_AFTER_S:g}]", "after")
            at = int(time.time() * 1000 + after * 1000)
        op = _parsed(ScheduleCancelOp.parse, at)
        tx = _sign_local(request, submits, body.get("account"), [op], os.urandom(12).hex())
    switch = cast(ScheduleCancelOp, tx.ops[0])     # _one_op checked it, or we made it
    answer, done = await _run(reads, submits, tx, wait, "schedule_cancel",
                              {"account": tx.owner.hex(), "at": switch.at})
    status = 202 if not answer["final"] else 200 if done is not None and done.outcome in ("armed", "cleared") else 409
    return json_response(answer, status)


def install_cancel_all_api(app: web.Application) -> None:
    app.router.add_post("/orders/cancel-all", post_cancel_all)
    app.router.add_post("/orders/cancel-after", post_schedule_cancel)
