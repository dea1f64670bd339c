"""Control API for validator seats: who validates, and the operator's approvals (private routes).

GET /validators lists the set with each member's state, the standbys and pending approvals;
POST /validators/add and /validators/remove `{"node_id"}` record this validator's signed approval
(the change applies once more than two thirds of the validators approved); GET /validators/join-token
hands the operator the founder's join token (a node started with it gets a seat without approvals).
POST /validators/recover `{"keep": [node_id, ...]}` is this validator's consent to the way out of a permanent
halt (validators gone for good): the kept validators take the chain on from the last certified block, once
every one of them consented (exchange/chain/recovery.py).
"""
from __future__ import annotations



import orjson
from aiohttp import web

from exchange.chain.join_token import read_token
from exchange.chain.ports import NotReady
from node.api.base import NODE_ID, ApiError, chain_of, json_response, not_ready



async def get_validators(request: web.Request) -> web.Response:
    try:
        return json_response(chain_of(request).seats.view())
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
        return json_response(chain_of(request).seats.approve(action, node_id), status=202)
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
        return json_response(chain_of(request).seats.recover(keep), status=202)
    except NotReady as exc:
        raise not_ready(exc) from None
    except ValueError as exc:
        raise ApiError(409, "not_recoverable", str(exc), "keep") from None


async def get_join_token(request: web.Request) -> web.Response:
    chain = chain_of(request)
    token = read_token(chain.store.root.parent)
    if token is None:
        raise ApiError(404, "no_join_token", "this node holds no join token (only the founder of a network that "
                                             "is not pinned writes one)")
    return json_response({"token": token.text(), "chain_id": token.chain_id})


def install_validator_api(app: web.Application) -> None:
    app.router.add_get("/validators", get_validators)
    app.router.add_post("/validators/add", post_add)
    app.router.add_post("/validators/remove", post_remove)
    app.router.add_post("/validators/recover", post_recover)
    app.router.add_get("/validators/join-token", get_join_token)
