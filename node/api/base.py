"""What every control API route shares: JSON responses and errors, the node behind a request, JSON
bodies and bounded numbers in them, and the DEBUG_API gate.

Errors are always JSON `{"error": {"code", "message", "field"?}}` with a 4xx/5xx status.
"""
from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Protocol, overload

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from exchange.chain.api_ports import ChainReads, ChainSubmits
    from exchange.chain.ports import NotReady
    from prometheus_client.core import Metric
    from node.accounts import AccountStore
    from node.configs import NodeConfigs
    from node.identity import NodeIdentity
    from p2p.public.refusals import RefusalLog
    from node.rpc_component import NodeRpc
    from p2p.dht.service import DhtService
    from p2p.discovery import DiscoveryOrchestrator
    from p2p.nat.service import NatService
    from p2p.peers import PeerManager, PeerView
    from p2p.router import MessageRouter

log = logging.getLogger("node.api.server")

# A JSON value as orjson decodes a request body or a stream request: the route that reads one checks each
# field it uses (read_json_object, body_number, SignedTx.from_json, NewOrderOp.parse ...), so it has no
# static type.
Json = Any
# A JSON object: a request body read_json_object has seen to be an object, or an answer a route builds from
# the views docs/api.md describes; it is read or written field by field.
JsonObject = dict[str, Any]


class ApiNode(Protocol):
    """What the control API, the metrics and the RPC component read of the node they serve (node/app.py's
    ExchangeNode is one)."""

    node_id: str
    identity: NodeIdentity
    started_at: float
    configs: NodeConfigs
    peers: PeerManager
    router: MessageRouter
    discovery: DiscoveryOrchestrator
    rpc: NodeRpc
    public_refusals: RefusalLog                   # who the API and the stream refused, and why
    api_extensions: list[Callable[[web.Application], None]]
    metric_sources: list[Callable[[], Iterable[Metric]]]      # read at every scrape of /metrics

    @property
    def chain_reads(self) -> ChainReads | None: ...        # None: a node that runs no exchange

    @property
    def chain_submits(self) -> ChainSubmits | None: ...    # None with chain_reads

    @property
    def accounts(self) -> AccountStore | None: ...

    @property
    def dht(self) -> DhtService | None: ...               # None: DISCOVERY_DHT off, or no peer port

    @property
    def nat(self) -> NatService | None: ...               # None: no peer port

    def status(self) -> JsonObject: ...

    def peer_list(self) -> list[PeerView]: ...


NODE_KEY = web.AppKey("node", ApiNode)
NODE_ID = re.compile(r"^[0-9a-f]{40}$")          # a node id as the routes take it
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class ApiError(Exception):
    """An error answer; `retry_after` (seconds) becomes the Retry-After header (orders.py's middleware)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.retry_after = retry_after

    def response(self) -> web.Response:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return json_response({"error": error}, self.status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        return ApiError(exc.status, code, exc.reason or code).response()
    except Exception as exc:
        transport = request.transport
        if isinstance(exc, ConnectionError) and (transport is None or transport.is_closing()):
            # the client left, or the guard cut it, while its request was read: nobody is there to answer
            log.debug("control API client gone: %s %s", request.method, request.path)
            return ApiError(400, "client_gone", "the connection closed before the request was read").response()
        log.exception("control API handler failed: %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal error; see the node log").response()


def node_of(request: web.Request) -> ApiNode:
    return request.app[NODE_KEY]


async def read_json_object(request: web.Request) -> JsonObject:
    """The request body as a JSON object; an empty body is an empty object."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    return body


@overload
def body_number(body: JsonObject, name: str, default: float, low: float, high: float) -> float: ...
@overload
def body_number(body: JsonObject, name: str, default: None, low: float, high: float) -> float | None: ...


def body_number(body: JsonObject, name: str, default: float | None, low: float, high: float) -> float | None:
    """A finite number in [low, high] (not a bool), or `default` when absent."""
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ApiError(400, "invalid_field", f"{name} must be a number in [{low:g}, {high:g}]", name)
    return float(value)


def require_debug(request: web.Request) -> ApiNode:
    node = node_of(request)
    if not node.configs.api.debug_api:
        raise ApiError(404, "not_found", "debug endpoints are off (start the node with DEBUG_API=true)")
    return node


def reads_of(request: web.Request) -> ChainReads:
    """What the API may read of the exchange the node runs, or 503 for a node that runs none."""
    reads = node_of(request).chain_reads
    if reads is None:
        raise ApiError(503, "exchange_unavailable", "this node runs no exchange")
    return reads


def submits_of(request: web.Request) -> ChainSubmits:
    """What the API may hand the exchange the node runs, or 503 for a node that runs none."""
    submits = node_of(request).chain_submits
    if submits is None:
        raise ApiError(503, "exchange_unavailable", "this node runs no exchange")
    return submits


def not_ready(exc: NotReady) -> ApiError:
    """The chain cannot answer now (no chain yet, halted, recovering): 503 with its Retry-After."""
    return ApiError(503, exc.code, str(exc), retry_after=exc.retry_after)
