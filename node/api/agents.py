"""Control API for agent keys: an account approves a key to trade for it within a scope, lists and revokes them.

`POST /agents` approves (or re-scopes) a key: plain fields, which the node signs with one of its accounts, or
`{"signed": {...}}` holding one `approve_agent` the account signed itself. `DELETE /agents/{agent}` revokes one
the same two ways. `GET /agents?account=` lists an account's agents as the state holds them. An agent trades
through the order routes with its own signature and `"for"` naming the account (docs/signed-orders.md); what
it may do is the state machine's to judge (exchange/app/agents.py). Answers are cancel-all's: 200 once final,
202 with `reason` while not, 409 when refused (`reason` says why).
"""
from __future__ import annotations

import os

from aiohttp import web

from exchange.app.txs import AGENT_OPERATIONS, ApproveAgentOp, RevokeAgentOp
from node.api.base import ApiError, Json, json_response, reads_of, submits_of
from node.api.cancel_all import _fields, _one_op, _parsed, _run
from node.api.orders import (DEFAULT_WAIT, MAX_WAIT, _account, _finality, _json_body, _markets, _query_account,
                             _query_number, _sign_local, metered)

APPROVE_FIELDS = {"account", "agent", "markets", "operations", "cap", "expires", "signed"}


def _comma_list(value: Json, field: str) -> str | None:
    """A JSON list of names as the op's comma list (None stays None: every market)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and "," not in item for item in value):
        raise ApiError(422, f"invalid_{field}", f"{field} is a list of names, or null", field)
    return ",".join(value)


async def post_agent(request: web.Request) -> web.Response:
    reads, submits = reads_of(request), submits_of(request)
    _markets(reads)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    body = _fields(await _json_body(request), APPROVE_FIELDS)
    if "signed" in body:
        tx = _one_op(body, ApproveAgentOp, submits)
    else:
        operations = _comma_list(body.get("operations", list(AGENT_OPERATIONS)), "operations")
        op = _parsed(ApproveAgentOp.parse, body.get("agent"), _comma_list(body.get("markets"), "markets"),
                     operations, body.get("cap"), body.get("expires"))
        metered(submits, _account(request, body.get("account")).public_key, 1)
        tx = _sign_local(request, submits, body.get("account"), [op], os.urandom(12).hex())
    approval = tx.ops[0]
    assert isinstance(approval, ApproveAgentOp)     # _one_op checked it, or we made it
    answer, op_result = await _run(reads, submits, tx, wait, "approve_agent",
                                   {"account": tx.account_hex, "agent": approval.agent})
    status = 202 if not answer["final"] else 200 if op_result is not None and op_result.outcome == "approved" else 409
    return json_response(answer, status)


async def delete_agent(request: web.Request) -> web.Response:
    reads, submits = reads_of(request), submits_of(request)
    _markets(reads)
    wait = _query_number(request, "wait", DEFAULT_WAIT, 0.0, MAX_WAIT)
    agent = request.match_info["agent"]
    body = _fields(await _json_body(request, allow_empty=True), {"signed"})
    if "signed" in body:
        tx = _one_op(body, RevokeAgentOp, submits)
        revoke = tx.ops[0]
        if not isinstance(revoke, RevokeAgentOp) or revoke.agent != agent:
            raise ApiError(422, "revoke_expected", "the signed transaction must revoke exactly this agent", "signed")
    else:
        op = _parsed(RevokeAgentOp.parse, agent)
        tx = _sign_local(request, submits, request.query.get("account"), [op], os.urandom(12).hex())
    answer, op_result = await _run(reads, submits, tx, wait, "revoke_agent", {"account": tx.account_hex, "agent": agent})
    status = 202 if not answer["final"] else 200 if op_result is not None and op_result.outcome == "revoked" else 409
    return json_response(answer, status)


async def list_agents(request: web.Request) -> web.Response:
    reads = reads_of(request)
    _markets(reads)
    account = _query_account(request) or _account(request, None).id
    return json_response({"account": account, "agents": reads.agents_of(account), **_finality(reads)})


def install_agent_api(app: web.Application) -> None:
    app.router.add_post("/agents", post_agent)
    app.router.add_get("/agents", list_agents)
    app.router.add_delete("/agents/{agent}", delete_agent)
