"""NodeRpc: the node's RPC side, built from Settings: RpcService over the peer links, built-in services,
signed hint gossip, and (when GRENACHE_RPC_PORT is set) the Grenache HTTP endpoint announced on Grape.

`node.rpc.register(service, handler)`, `await node.rpc.request(service, payload, timeout)` and
`await node.rpc.request_peer(node_id, service, payload, timeout)` are what the rest of the node uses;
`node.rpc.request_grenache(service, payload)` calls Grenache workers found on Grape.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

from p2p.rpc.builtins import Builtins, FaultSpec
from p2p.rpc.server import Handler
from p2p.rpc.service import RpcConfig, RpcResult, RpcService

log = logging.getLogger("node.rpc")


def rpc_config(settings: Any) -> RpcConfig:
    return RpcConfig(default_timeout=settings.rpc_timeout, max_in_flight_per_peer=settings.rpc_max_in_flight,
                     serve_in_flight_per_peer=settings.rpc_max_in_flight, max_attempts=settings.rpc_max_attempts,
                     warmup_period=settings.rpc_warmup, warmup_rate=settings.rpc_warmup_rate,
                     warmup_start=settings.rpc_warmup_start,
                     hint_ttl=settings.hint_ttl)


class NodeRpc:
    def __init__(self, node: Any) -> None:
        from node import api_rpc

        self.node = node
        settings = node.settings
        self.service = RpcService(node.peers, rpc_config(settings))
        self.builtins = Builtins(node.node_id, fault=FaultSpec.parse(settings.test_service_fault))
        self.builtins.register_all(self.service)
        self.service.attach()   # before any link opens, so the handshake carries our services
        self.gossip: Any = None
        self.grape: Any = None       # GrapeClient, created on first use
        self.grenache: Any = None    # GrenacheWorkers (client side)
        self.endpoint: Any = None    # GrenacheEndpoint (server side, GRENACHE_RPC_PORT)
        node.api_extensions.append(api_rpc.extend)
        node.metric_sources.append(self.metrics)

    # -- API for the rest of the node ----------------------------------------------------------
    def register(self, service: str, handler: Handler) -> None:
        self.service.register(service, handler)

    def unregister(self, service: str) -> None:
        self.service.unregister(service)

    async def request(self, service: str, payload: Any = None, timeout: float | None = None) -> Any:
        return await self.service.request(service, payload, timeout)

    async def call(self, service: str, payload: Any = None, timeout: float | None = None) -> RpcResult:
        return await self.service.call(service, payload, timeout)

    async def request_peer(self, node_id: str, service: str, payload: Any = None, timeout: float | None = None) -> Any:
        return await self.service.request_peer(node_id, service, payload, timeout)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        node = self.node
        settings = node.settings
        router = getattr(node, "router", None)
        self.service.use_router(router)
        self.service.start()
        if router is not None and hasattr(router, "broadcast"):
            from node.identity import NodeIdentity
            from p2p.rpc.gossip import HintGossip

            self.gossip = HintGossip(self.service, node.identity, verify=NodeIdentity.verify,
                                     node_id_for=NodeIdentity.node_id_for, network=settings.network_id,
                                     rate=settings.hint_rate, max_age=settings.hint_ttl)
            self.gossip.attach(router)
            self.gossip.start()
        if settings.grenache_rpc_port is not None:
            from p2p.grenache.workers import GrenacheEndpoint

            self.endpoint = GrenacheEndpoint(self.service.server, self._grape(), settings.grenache_services,
                                             host=settings.p2p_host, port=settings.grenache_rpc_port,
                                             announce_interval=min(settings.grape_announce_interval, 60.0))
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
    def _grape(self) -> Any:
        if self.grape is None:
            from p2p.grenache.grape import GrapeClient

            self.grape = GrapeClient(self.node.settings.grape_urls)
        return self.grape

    def workers(self) -> Any:
        """GrenacheWorkers over the node's grapes (created on first use)."""
        if self.grenache is None:
            from p2p.grenache.workers import GrenacheWorkers

            settings = self.node.settings
            self.grenache = GrenacheWorkers(self._grape(), default_timeout=settings.rpc_timeout,
                                            max_attempts=settings.rpc_max_attempts,
                                            protection=self.service.protection)
        return self.grenache

    async def request_grenache(self, service: str, payload: Any = None, timeout: float | None = None) -> Any:
        """Call a Grenache worker announced for `service` on Grape (adaptive choice, retries)."""
        return await self.workers().request(service, payload, timeout)

    # -- observability -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        snap = self.service.snapshot()
        snap["hints"] = self.gossip.snapshot() if self.gossip is not None else None
        snap["grenache"] = {"workers": self.grenache.snapshot() if self.grenache is not None else None,
                            "endpoint": self.endpoint.snapshot() if self.endpoint is not None else None}
        return snap

    def metrics(self) -> Iterator[Any]:
        from node.api_rpc import rpc_metric_families

        yield from rpc_metric_families(self)
