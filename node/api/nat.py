"""Control API of NAT traversal: GET /nat (reachability, our addresses and how each was learnt, relay service
and reservations, hole punching, port mapping) and, with DEBUG_API on, POST /debug/nat/punch {"node_id",
"relay"}: drop the link to a node, link again through a relay and time the hole punch (benchmarks)."""
from __future__ import annotations


from aiohttp import web

from node.api.base import NODE_ID, ApiError, body_number, json_response, node_of, read_json_object, require_debug
from p2p.nat.service import NatService



def _nat(request: web.Request) -> NatService:
    nat = node_of(request).nat
    if nat is None:
        raise ApiError(503, "no_peer_port", "this node has no peer port, so nothing to reach")
    return nat


async def get_nat(request: web.Request) -> web.Response:
    return json_response({"nat": _nat(request).status()})


async def post_punch(request: web.Request) -> web.Response:
    require_debug(request)
    body = await read_json_object(request)
    ids = {}
    for field in ("node_id", "relay"):
        value = body.get(field)
        if not isinstance(value, str) or not NODE_ID.match(value):
            raise ApiError(400, "invalid_field", f"{field} must be a node id (40 hex characters)", field)
        ids[field] = value
    timeout = body_number(body, "timeout", 10.0, 0.5, 60.0)
    return json_response(await _nat(request).punch_trial(ids["node_id"], ids["relay"], timeout))


def install_nat_api(app: web.Application) -> None:
    app.router.add_get("/nat", get_nat)
    app.router.add_post("/debug/nat/punch", post_punch)
