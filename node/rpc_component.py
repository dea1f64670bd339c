"""NodeRpc: the node's RPC side: RpcService over the peer links, built-in services,
signed hint gossip, and (when GRENACHE_RPC_PORT is set) the Grenache HTTP endpoint announced on Grape.

`node.rpc.register(service, handler)`, `await node.rpc.request(service, payload, timeout)` and
`await node.rpc.request_peer(node_id, service, payload, timeout)` are what the rest of the node uses;
`node.rpc.request_grenache(service, payload)` calls Grenache workers found on Grape.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client.core import Metric

from node.api import rpc as api_rpc
from node.configs import NodeRpcConfig
from node.identity import NodeIdentity
from p2p.grenache.grape import GrapeClient
from p2p.grenache.workers import GrenacheEndpoint, GrenacheWorkers
from p2p.rpc.builtins import Builtins, FaultSpec
from p2p.rpc.gossip import HintGossip
from p2p.rpc.server import Handler
from p2p.rpc.service import RpcResult, RpcService
from p2p.rpc.views import RoutingView

if TYPE_CHECKING:
    from node.api.base import ApiNode
    from p2p.router import MessageRouter

log = logging.getLogger("node.rpc")

# A value an RPC carries, a request's payload or its answer, as msgpack decoded it: p2p/rpc hands it on
# untouched and whoever knows the service (its handler, its caller) checks it.
RpcValue = Any


class NodeRpc:
    def __init__(self, node: ApiNode, config: NodeRpcConfig, router: MessageRouter) -> None:
        self.node = node
        self.config = config
        self.router = router                    # requests to unlinked nodes, and hint gossip
        self.service = RpcService(node.peers, config.service)
        self.builtins = Builtins(node.node_id, fault=FaultSpec.parse(config.test_service_fault))
        self.builtins.register_all(self.service, test_services=config.test_services)   # test.echo: DEBUG_API only
        self.gossip: HintGossip | None = None
        self.grape: GrapeClient | None = None          # created on first use
        self.grenache: GrenacheWorkers | None = None   # client side
        self.endpoint: GrenacheEndpoint | None = None  # server side (GRENACHE_RPC_PORT)
        node.api_extensions.append(api_rpc.extend)
        node.metric_sources.append(self.metrics)

    # -- API for the rest of the node ----------------------------------------------------------
    def register(self, service: str, handler: Handler) -> None:
        self.service.register(service, handler)

    def unregister(self, service: str) -> None:
        self.service.unregister(service)

    async def request(self, service: str, payload: object = None, timeout: float | None = None) -> RpcValue:
        return await self.service.request(service, payload, timeout)

    async def call(self, service: str, payload: object = None, timeout: float | None = None) -> RpcResult:
        return await self.service.call(service, payload, timeout)

    async def request_peer(self, node_id: str, service: str, payload: object = None,
                           timeout: float | None = None) -> RpcValue:
        return await self.service.request_peer(node_id, service, payload, timeout)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything; if a part fails (the Grenache endpoint's port is busy), stop what started."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        node, config = self.node, self.config
        self.service.use_router(self.router)
        self.service.start()
        self.gossip = HintGossip(self.service, node.identity, verify=NodeIdentity.verify,
                                 node_id_for=NodeIdentity.node_id_for, network=config.network_id,
                                 rate=config.hint_rate, max_age=config.hint_ttl)
        self.gossip.attach(self.router)
        self.gossip.start()
        if config.grenache_rpc_port is not None:
            self.endpoint = GrenacheEndpoint(self.service.server, self._grape(), config.grenache_services,
                                             host=config.grenache_rpc_host, port=config.grenache_rpc_port,
                                             announce_interval=config.grenache_announce_interval,
                                             limits=config.grenache_limits)
            await self.endpoint.start()

    async def stop(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self.grenache is not None:
            await self.grenache.close()
        if self.grape is not None:
            await self.grape.close()
        if self.gossip is not None:
            await self.gossip.stop()
        await self.service.stop()

    # -- Grenache --------------------------------------------------------------------------------
    def _grape(self) -> GrapeClient:
        if self.grape is None:
            self.grape = GrapeClient(self.config.grape_urls)
        return self.grape

    def workers(self) -> GrenacheWorkers:
        """GrenacheWorkers over the node's grapes (created on first use)."""
        if self.grenache is None:
            service = self.config.service
            self.grenache = GrenacheWorkers(self._grape(), default_timeout=service.default_timeout,
                                            max_attempts=service.max_attempts,
                                            protection=self.service.protection)
        return self.grenache

    async def request_grenache(self, service: str, payload: object = None,
                               timeout: float | None = None) -> RpcValue:
        """Call a Grenache worker announced for `service` on Grape (adaptive choice, retries)."""
        return await self.workers().request(service, payload, timeout)

    # -- observability -------------------------------------------------------------------------
    def snapshot(self) -> RoutingView:
        snap = self.service.snapshot()
        snap["hints"] = self.gossip.snapshot() if self.gossip is not None else None
        snap["grenache"] = {"workers": self.grenache.snapshot() if self.grenache is not None else None,
                            "endpoint": self.endpoint.snapshot() if self.endpoint is not None else None}
        return snap

    def metrics(self) -> Iterator[Metric]:
        yield from api_rpc.rpc_metric_families(self)
