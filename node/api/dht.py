"""Control API of the DHT (private routes): GET /dht (the routing table's size and buckets, the records
kept, counters), GET /dht/nodes/{id}[?fresh=1] (the newest valid record of a node, found by lookup, and a link to it; 404 when
none; with fresh, asked of the network even when a copy is kept here),
GET /dht/providers/{service} (live records of nodes that serve it)."""
from __future__ import annotations

import re
from typing import TypedDict

from aiohttp import web

from node.api.base import NODE_ID, ApiError, json_response, node_of
from p2p.dht.records import NodeRecord
from p2p.dht.service import DhtService

SERVICE = re.compile(r"^[\w.:-]{1,128}$")


def _dht(request: web.Request) -> DhtService:
    dht = node_of(request).dht
    if dht is None:
        raise ApiError(503, "dht_off", "this node takes no part in the DHT (DISCOVERY_DHT=false, or no peer port)")
    return dht


async def get_dht(request: web.Request) -> web.Response:
    return json_response({"dht": _dht(request).view()})


async def get_node(request: web.Request) -> web.Response:
    node_id = request.match_info["node_id"].lower()
    if not NODE_ID.match(node_id):
        raise ApiError(400, "invalid_node_id", "a node id is 40 hex characters", "node_id")
    fresh = request.query.get("fresh", "0") not in ("0", "false", "")
    record = await _dht(request).find_node(node_id, link=True, fresh=fresh)
    if record is None:
        raise ApiError(404, "no_record", f"no live record of node {node_id} in the DHT")
    return json_response({"record": record_view(record)})


async def get_providers(request: web.Request) -> web.Response:
    service = request.match_info["service"]
    if not SERVICE.match(service):
        raise ApiError(400, "invalid_service", "a service name is 1-128 letters, digits and . _ : -", "service")
    records = await _dht(request).find_providers(service)
    return json_response({"service": service, "providers": [record_view(r) for r in records]})


class AddressView(TypedDict):
    host: str
    port: int
    how: str


class RecordView(TypedDict):
    """A node record as GET /dht/nodes/{node_id} and /dht/providers/{service} answer it."""

    node_id: str
    addresses: list[AddressView]
    services: list[str]
    protocol: int
    seq: int
    expires_ms: int


def record_view(record: NodeRecord) -> RecordView:
    return {"node_id": record.node_id,
            "addresses": [{"host": host, "port": port, "how": how} for host, port, how in record.addresses],
            "services": list(record.services), "protocol": record.protocol, "seq": record.seq,
            "expires_ms": record.expires_ms}


def install_dht_api(app: web.Application) -> None:
    app.router.add_get("/dht", get_dht)
    app.router.add_get("/dht/nodes/{node_id}", get_node)
    app.router.add_get("/dht/providers/{service}", get_providers)
