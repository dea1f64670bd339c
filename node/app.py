"""ExchangeNode: the composition root. Builds every part from Settings, starts them in order,
and shuts them down in reverse (goodbyes sent, peers saved) on SIGINT/SIGTERM."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from typing import Any

import orjson

from config import Settings
from config.version import VERSION
from exchange.chain.service import ChainService
from exchange.chain.store import ChainStore
from exchange.markets import parse_markets
from node.accounts import AccountStore
from node.api_orders import install_order_api
from node.chain_network import P2PChainNetwork, core_config
from node.identity import NodeIdentity
from node.logs import bind_node
from p2p.discovery import DiscoveryOrchestrator
from p2p.discovery.base import DiscoveryStrategy
from p2p.discovery.static import BootstrapDiscovery, PersistedDiscovery
from p2p.peer_store import PeerStore
from p2p.peers import PeerManager
from p2p.router import MessageRouter

log = logging.getLogger("node")


class NodeFailed(Exception):
    """The node stopped because it cannot go on safely (the message says why and what to do)."""


class ExchangeNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.identity = NodeIdentity.load_or_create(settings.data_dir)
        self.node_id = self.identity.node_id
        bind_node(self.node_id)
        self.started_at = time.time()
        self.store = PeerStore(settings.peers_file)
        self.peers = PeerManager(settings, self.identity, verify=NodeIdentity.verify,
                                 node_id_for=NodeIdentity.node_id_for, peer_store=self.store)
        self.discovery = DiscoveryOrchestrator(self.peers, self._strategies())
        self.api_extensions: list[Any] = []  # fn(aiohttp app), called by node/api.py build_app
        self.metric_sources: list[Any] = []  # () -> iterable of metric families, for /metrics
        self.router = MessageRouter(self.peers, settings)
        self._wire_router()
        from node.rpc_component import NodeRpc

        self.rpc = NodeRpc(self)  # RPC over links + adaptive routing; registers its API routes and metrics
        self.accounts = AccountStore(settings.data_dir)
        self.chain_store = ChainStore(settings.data_dir, keep_blocks=settings.keep_blocks)
        # legacy mode (P2P_ENABLED=false with DISCOVERY_GRENACHE): no peer port; the node reaches the network
        # through Grenache alone, as a follower, and never founds a network of its own
        self.legacy = not settings.p2p_enabled and settings.discovery_grenache
        standalone = not settings.p2p_enabled and not settings.discovery_grenache
        self.chain_network = P2PChainNetwork(self.peers, self.router, self.rpc)
        self.chain = ChainService(  # the BFT chain: validators order blocks, every node folds them into the book
            self.identity, self.chain_network, self.chain_store, network_id=settings.network_id,
            markets=settings.markets, order_ttl_ms=int(settings.order_ttl * 1000),
            max_validators=settings.max_validators, pinned_validators=settings.validators,
            found_after=0.0 if standalone else (float("inf") if self.legacy else settings.found_after),
            snapshot_interval=settings.snapshot_interval, config=core_config(settings, legacy=self.legacy),
            recovery_timeout=settings.recovery_timeout)
        self.chain.fatal_listeners.append(lambda reason: self.request_stop())
        self.chain_network.attach(self.chain)
        if settings.discovery_grenache:
            self.chain.grenache_members = self.chain_network.grenache_members
        self.api_extensions.append(install_order_api)
        self.api_address: tuple[str, int] | None = None
        from node.operator import OperatorSurface

        self.operator = OperatorSurface(self)  # console, /ws stream, /health, /ready, systemd notify
        self._api_runner: Any = None
        self._stop = asyncio.Event()

    def _wire_router(self) -> None:
        from node.api_router import install_debug_api, router_metrics

        self.metric_sources.append(lambda: router_metrics(self.router))
        if self.settings.debug_api:
            install_debug_api(self)

    def _strategies(self) -> list[DiscoveryStrategy]:
        settings = self.settings
        strategies: list[DiscoveryStrategy] = [PersistedDiscovery(self.store),
                                               BootstrapDiscovery(settings.bootstrap_peers)]
        if settings.discovery_pex:
            from p2p.discovery.pex import PeerExchange

            strategies.append(PeerExchange(self.peers))
        if settings.discovery_mdns:
            from p2p.discovery.mdns import MdnsDiscovery, mdns_announce_hosts

            strategies.append(MdnsDiscovery(
                self.node_id, settings.network_id, lambda: self.peers.listen_port,
                interfaces=settings.mdns_interfaces,
                announce_hosts=mdns_announce_hosts(settings.advertise_host, settings.p2p_host)))
        if settings.discovery_grenache:
            from p2p.discovery import DeferredStrategy
            from p2p.discovery.grape import GrapeDiscovery

            def grape() -> DiscoveryStrategy:  # built at start: it announces the bound port
                port = self.peers.listen_port
                own = {(h, port) for h in (settings.advertise_host, settings.p2p_host) if h}
                return GrapeDiscovery(settings.grape_urls, settings.grape_service, port,
                                      announce_interval=settings.grape_announce_interval, own_addresses=own)

            strategies.append(DeferredStrategy("grape", grape))
        return strategies

    @property
    def listen(self) -> str:
        if not self.settings.p2p_enabled:
            return "legacy (Grenache only, no peer port)" if self.legacy else "standalone (no peer port)"
        host = self.settings.advertise_host or self.settings.p2p_host
        return f"{host}:{self.peers.listen_port}"

    async def start(self) -> None:
        from node.api import start_api

        if self.settings.p2p_enabled:
            await self.peers.start()
            await self.router.start()
            self.discovery.start()
        elif self.legacy:
            await self.router.start()       # the Grenache path only: no peer port, no links
        await self.rpc.start()
        await self.chain.start()
        self._api_runner, self.api_address = await start_api(self, self.settings.api_host, self.settings.api_port)
        self._write_runtime_file()
        await self.operator.start()
        gc.freeze()  # startup objects (modules, settings, ...) stay: full collections then scan only runtime objects
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
        api = f"http://{self.api_address[0]}:{self.api_address[1]}"
        log.info("node %s up: peers on %s, control API on %s (network %s, event loop %s)", self.node_id,
                 self.listen, api, self.settings.network_id, loop_kind, extra={"address": api})

    def _write_runtime_file(self) -> None:
        """DATA_DIR/node.json tells CLI commands and scripts where this node's API is."""
        info = {"pid": os.getpid(), "node_id": self.node_id, "listen": self.listen,
                "api": f"http://{self.api_address[0]}:{self.api_address[1]}", "started_at": self.started_at}
        path = self.settings.data_dir / "node.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(info))
        os.replace(tmp, path)

    async def stop(self) -> None:
        log.info("shutting down")
        await self.operator.stop()
        await self.discovery.stop()
        await self.rpc.stop()
        await self.chain.stop()
        await self.router.stop()
        await self.peers.stop()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        try:
            (self.settings.data_dir / "node.json").unlink()
        except FileNotFoundError:
            pass
        log.info("stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()
        if self.chain.fatal is not None:
            raise NodeFailed(self.chain.fatal)

    def status(self) -> dict[str, Any]:
        peer_status = self.peers.status()
        return {
            "node_id": self.node_id, "version": VERSION, "network_id": self.settings.network_id,
            "listen": self.listen, "api": f"http://{self.api_address[0]}:{self.api_address[1]}" if self.api_address else None,
            "uptime_s": round(time.time() - self.started_at, 3), "pid": os.getpid(),
            "peers_connected": peer_status["peers_connected"], "markets": self.markets(),
            "p2p": peer_status, "discovery": self.discovery.stats(), "router": self.router.stats(),
            **self.chain_summary(), "exchange": self.chain.status(), "storage": self.chain_store.stats(),
        }

    def chain_summary(self) -> dict[str, Any]:
        """The chain fields scripts rely on, at the top of /status."""
        chain = self.chain
        core = chain.core
        if core is None:
            return {"chain_id": None, "role": "joining", "height": 0, "epoch": None, "validators": [],
                    "quorum": False, "finality_lag_s": None, "founding": chain.founding_status}
        now = time.time()
        validators = core.state.validators
        return {"chain_id": core.chain_id, "role": core.role, "height": core.height, "epoch": validators.epoch,
                "validators": list(validators.node_ids), "quorum_size": validators.quorum,
                "validator_keys": {n: k.hex() for n, k in zip(validators.node_ids, validators.keys)},
                "quorum": core.quorum_present(now), "finality_lag_s": round(max(0.0, now - core.state.time_ms / 1000), 3),
                "conflicting_networks": chain.conflicts}

    def markets(self) -> list[str]:
        core = self.chain.core
        if core is not None:
            return list(core.state.app.params.registry.symbols)   # type: ignore[attr-defined]
        return parse_markets(self.settings.markets).symbols

    def peer_list(self) -> list[dict[str, Any]]:
        return [record.as_dict() for record in self.peers.peers.values()]
