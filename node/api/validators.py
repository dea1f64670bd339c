"""Control API for validator seats: who validates, and the operator's approvals (private routes).

GET /validators lists the set with each member's state, the standbys and pending approvals;
POST /validators/add and /validators/remove `{"node_id"}` record this validator's signed approval
(the change applies once more than two thirds of the validators approved).
POST /validators/tokens `{"uses": N, "ttl": "24h" | seconds}` issues a join token through the ordered log (a node
started with it gets a seat without approvals, at most N times, until it expires); GET /validators/tokens lists
the tokens (never their secrets); DELETE /validators/tokens/{id} revokes one (the standbys it admitted leave).
GET /validators/join-token, where the founder's one token used to be, answers 410 naming what replaced it.
POST /validators/recover `{"keep": [node_id, ...]}` is this validator's consent to the way out of a permanent
halt (validators gone for good): the kept validators take the chain on from the last certified block, once
every one of them consented (exchange/chain/recovery/halt.py).
"""
from __future__ import annotations

import re

import orjson
from aiohttp import web

from config import parsers as p
from exchange.chain.ports import NotReady
from exchange.chain.state.seats import MAX_TOKEN_TTL_MS, MAX_TOKEN_USES
from node.api.base import NODE_ID, ApiError, json_response, not_ready, reads_of, submits_of

DEFAULT_TOKEN_TTL = 86400.0
parse_ttl = p.duration(at_most=MAX_TOKEN_TTL_MS / 1000)
TOKEN_ID = re.compile(r"^[0-9a-f]{8,16}$")          # the id `token list` shows, or its first 8+ characters


async def get_validators(request: web.Request) -> web.Response:
    try:
        return json_response(reads_of(request).seats())
    except NotReady as exc:
        raise not_ready(exc) from None


async def _approve(request: web.Request, action: str) -> web.Response:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    node_id = body.get("node_id") if isinstance(body, dict) else None
    if not isinstance(node_id, str) or not NODE_ID.match(node_id):
        raise ApiError(400, "invalid_node_id", "node_id must be a 40-hex node id", "node_id")
    try:
        return json_response(submits_of(request).approve_seat(action, node_id), status=202)
    except NotReady as exc:
        raise not_ready(exc) from None
    except ValueError as exc:
        raise ApiError(409, "not_approvable", str(exc), "node_id") from None


async def post_add(request: web.Request) -> web.Response:
    return await _approve(request, "add")


async def post_remove(request: web.Request) -> web.Response:
    return await _approve(request, "remove")


async def post_recover(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    keep = body.get("keep") if isinstance(body, dict) else None
    if not isinstance(keep, list) or not keep or not all(isinstance(n, str) and NODE_ID.match(n) for n in keep) \
            or len(set(keep)) != len(keep):
        raise ApiError(400, "invalid_keep", "keep must be a list of distinct 40-hex node ids", "keep")
    try:
        return json_response(submits_of(request).consent_recovery(keep), status=202)
    except NotReady as exc:
        raise not_ready(exc) from None
    except ValueError as exc:
        raise ApiError(409, "not_recoverable", str(exc), "keep") from None


async def post_token(request: web.Request) -> web.Response:
    """Issue a join token: 201 with the token (shown this once), its id, issuer, uses, expiry and whether a
    certified block holds the grant yet."""
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object such as {\"uses\": 1, \"ttl\": \"24h\"}")
    unknown = sorted(set(body) - {"uses", "ttl"})
    if unknown:
        raise ApiError(400, "invalid_field", f"unknown field {unknown[0]!r}: a token takes uses and ttl", unknown[0])
    uses = body.get("uses", 1)
    if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_TOKEN_USES:
        raise ApiError(400, "invalid_uses", f"uses must be a whole number of joins from 1 to {MAX_TOKEN_USES}", "uses")
    try:
        ttl = parse_ttl(body.get("ttl", DEFAULT_TOKEN_TTL))
    except p.InvalidValue as exc:
        raise ApiError(400, "invalid_ttl", f"ttl {exc}", "ttl") from None
    try:
        issued = await submits_of(request).issue_token(uses, ttl)
    except NotReady as exc:
        raise not_ready(exc) from None
    except ValueError as exc:
        raise ApiError(409, "not_issuable", str(exc)) from None
    return json_response(issued, status=201)


async def get_tokens(request: web.Request) -> web.Response:
    try:
        return json_response({"tokens": reads_of(request).tokens()})
    except NotReady as exc:
        raise not_ready(exc) from None


async def delete_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token_id"].lower()
    if not TOKEN_ID.match(token_id):
        raise ApiError(400, "invalid_token_id", "a token id is 16 hex characters, as `validators token list` shows "
                                                "(its first 8 or more will do)")
    reads, submits = reads_of(request), submits_of(request)
    try:
        if not any(token["id"].startswith(token_id) for token in reads.tokens()):
            raise ApiError(404, "unknown_token", f"no token {token_id} on this chain (`validators token list` "
                                                 f"shows them)")
        return json_response(await submits.revoke_token(token_id))
    except NotReady as exc:
        raise not_ready(exc) from None
    except ValueError as exc:
        raise ApiError(409, "not_revocable", str(exc)) from None


async def get_join_token(request: web.Request) -> web.Response:
    raise ApiError(410, "gone", "a network has no one join token any more: a validator issues each with "
                                "`exchange-node validators token new` (POST /validators/tokens)")


def install_validator_api(app: web.Application) -> None:
    app.router.add_get("/validators", get_validators)
    app.router.add_post("/validators/add", post_add)
    app.router.add_post("/validators/remove", post_remove)
    app.router.add_post("/validators/recover", post_recover)
    app.router.add_post("/validators/tokens", post_token)
    app.router.add_get("/validators/tokens", get_tokens)
    app.router.add_delete("/validators/tokens/{token_id}", delete_token)
    app.router.add_get("/validators/join-token", get_join_token)
