"""ExchangeNode: the composition root. Builds every part from its config (node/configs.py), starts them
in order and stops them in reverse (node/lifecycle.py) on SIGINT/SIGTERM; a second signal exits at once."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Callable, Iterable

import orjson
from aiohttp import web
from prometheus_client.core import Metric

from config import Settings
from config.version import VERSION
from exchange.chain.api_door import ChainApi
from exchange.chain.api_ports import ChainReads, ChainSubmits
from exchange.chain.service import ChainService
from exchange.chain.store.block_store import ChainStore
from exchange.markets import parse_markets
from node.accounts import AccountStore
from node.api.base import JsonObject
from node.api.server import start_api
from p2p.public.guard import ConnectionGuard
from node.api.rate import PublicRateLimit
from node.api.agents import install_agent_api
from node.api.cancel_all import install_cancel_all_api
from node.api.dht import install_dht_api
from node.api.nat import install_nat_api
from node.api.history import install_history_api
from node.api.orders import install_order_api
from node.api.validators import install_validator_api
from node.api.blocks import install_blocks_api
from node.history_db import install_history_db, open_history
from node.api.light import install_light_api
from exchange.chain.seats.join_token import JoinToken
from node.api.router import install_debug_api, router_metrics
from node.chain_network import P2PChainNetwork
from node.configs import NodeConfigs
from node.identity import NodeIdentity
from node.lifecycle import Lifecycle
from node.logs import bind_node
from node.operator import OperatorSurface
from node.ops_metrics import ops_metrics
from p2p.public.refusals import RefusalLog
from node.rpc_component import NodeRpc
from p2p.dht.service import DhtService
from p2p.nat.self_addresses import Reachability
from p2p.nat.service import NatService
from p2p.discovery import DeferredStrategy, DiscoveryOrchestrator
from p2p.discovery.base import DiscoveryStrategy
from p2p.discovery.grape import GrapeDiscovery
from p2p.discovery.mdns import MdnsDiscovery
from p2p.discovery.pex import PeerExchange
from p2p.discovery.static import BootstrapDiscovery, PersistedDiscovery
from p2p.peer_hooks import PeerComponent
from p2p.peer_store import PeerStore
from p2p.peers import PeerManager, PeerView
from p2p.router import MessageRouter

if TYPE_CHECKING:
    from node.browser.service import BrowserService

log = logging.getLogger("node")

# A clean stop takes well under a second; these bound one that hangs (a step, then the whole).
STOP_STEP_TIMEOUT = 5.0
STOP_TIMEOUT = 75.0     # room for the chain's stop when its seat hand-back must wait (ChainService.stop_seconds)
EXIT_FORCED = 130          # a second SIGINT/SIGTERM: exit at once, shutdown left unfinished
EXIT_UNCLEAN = 1           # the shutdown was bounded: a step raised or hung (logged)


class NodeFailed(Exception):
    """The node stopped because it cannot go on safely (the message says why and what to do)."""


class StopUnclean(Exception):
    """A shutdown step raised, hung past its bound or was skipped for want of time (each is logged)."""


def exit_now(message: str, status: int) -> None:
    """Leave at once, whatever is still running (stuck steps, threads the event loop would wait for)."""
    logging.shutdown()
    sys.stderr.write(f"exchange-node: {message}\n")
    sys.stderr.flush()
    os._exit(status)


def force_exit() -> None:
    log.error("second signal: exiting at once, shutdown unfinished")
    exit_now("forced exit on a second signal (shutdown unfinished)", EXIT_FORCED)


class ExchangeNode:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.configs = configs = NodeConfigs.from_settings(settings)
        self.identity = NodeIdentity.load_or_create(configs.data_dir)
        self.node_id = self.identity.node_id
        bind_node(self.node_id)
        self.started_at = time.time()
        self.store = PeerStore(configs.peers_file)
        self.peers = PeerManager(configs.peers, self.identity, verify=NodeIdentity.verify,
                                 node_id_for=NodeIdentity.node_id_for, peer_store=self.store)
        self.api_extensions: list[Callable[[web.Application], None]] = []  # called by node/api/server.py build_app
        self.nat: NatService | None = NatService(self.peers, configs.nat) if configs.p2p_enabled else None
        if self.nat is not None:
            self.api_extensions.append(install_nat_api)
        self.pex: PeerExchange | None = None
        self.discovery = DiscoveryOrchestrator(self.peers, self._strategies())
        self.metric_sources: list[Callable[[], Iterable[Metric]]] = []  # read at every scrape of /metrics
        self.router = MessageRouter(self.peers, configs.router)
        self.metric_sources.append(lambda: router_metrics(self.router))
        if configs.api.debug_api:
            install_debug_api(self)
        self.rpc = NodeRpc(self, configs.rpc, self.router)  # RPC over links + adaptive routing; its API routes, metrics
        self.accounts = AccountStore(configs.data_dir)
        chain = configs.chain
        self.dht: DhtService | None = None
        if configs.discovery.dht and configs.p2p_enabled:
            self.dht = DhtService(self.peers, self.rpc, public_key=self.identity.public_key_bytes,
                                  sign=self.identity.sign, verify=NodeIdentity.verify,
                                  node_id_for=NodeIdentity.node_id_for, services=self._dht_services,
                                  addresses=self._dht_addresses,
                                  relay_dial=None if self.nat is None else self.nat.dial_through,
                                  private=self._dht_private, peer_private=self._dht_peer_private,
                                  limit_loopback=configs.peers.limits.limit_loopback)
            self.discovery.strategies[self.dht.name] = self.dht
            self.rpc.service.use_finder(self.dht)     # no linked provider of a service: its DHT providers
            self.api_extensions.append(install_dht_api)
        self.chain_store = ChainStore(configs.data_dir, keep_blocks=chain.keep_blocks)
        self.legacy = configs.legacy
        self.chain_network = P2PChainNetwork(self.peers, self.router, self.rpc)
        self.chain = ChainService(  # the BFT chain: validators order blocks, every node folds them into the book
            self.identity, self.chain_network, self.chain_store, network_id=chain.network_id,
            markets=chain.markets, order_ttl_ms=chain.order_ttl_ms, max_validators=chain.max_validators,
            pinned_validators=chain.pinned_validators, found_after=chain.found_after,
            snapshot_interval=chain.snapshot_interval, snapshot_lag=chain.snapshot_lag,
            snapshot_min_ms=chain.snapshot_min_ms, config=chain.core,
            recovery_timeout=chain.recovery_timeout,
            join_token=JoinToken.parse(chain.join_token) if chain.join_token else None,
            trusted_chain_id=chain.chain_id, keep_seat=chain.keep_seat, seat_rule=chain.seat_rule,
            absent=(chain.absent_blocks, chain.absent_ms), max_open_orders=chain.max_open_orders,
            fresh_order_ttl_ms=chain.fresh_order_ttl_ms)
        self.chain.fatal_listeners.append(lambda reason: self.request_stop())
        self.chain_api = ChainApi(self.chain)     # the control API's two ports onto it
        self.metric_sources.append(lambda: ops_metrics(self.chain))   # disk errors, mempool bounds, absences
        self.chain_network.attach(self.chain)
        self.browser: BrowserService | None = None     # pages dial us over WebTransport (node/browser/)
        if configs.browser.enabled:
            from node.browser.service import BrowserService   # aioquic: imported only when on

            self.browser = BrowserService(configs.browser, node_id=self.node_id,
                                          public_key=self.identity.public_key_bytes, sign=self.identity.sign,
                                          network_id=configs.network_id, chain=self.chain, peers=self.peers,
                                          markets=self.markets)
        self._wire_links()
        if configs.discovery.grape:
            self.chain.peer_chains.grenache_members = self.chain_network.grenache_members
        self.api_extensions.append(install_order_api)
        self.api_extensions.append(install_cancel_all_api)
        self.api_extensions.append(install_agent_api)
        self.api_extensions.append(install_history_api)
        self.api_extensions.append(install_validator_api)
        self.api_extensions.append(install_light_api)
        self.api_extensions.append(install_blocks_api)
        self.history_db = open_history(configs.api.history_db)     # the indexer's database, when HISTORY_DB is set
        if self.history_db is not None:
            self.api_extensions.append(install_history_db(self.history_db))
            self.metric_sources.append(self.history_db.metrics)
        self.api_address: tuple[str, int] | None = None
        self.api_rate_limit: PublicRateLimit | None = None    # the listening API's (_start_api)
        self.api_guard: ConnectionGuard | None = None         # the listening API's (_start_api)
        self.public_refusals = RefusalLog()                   # who the API and the stream refused, and why
        self.operator = OperatorSurface(self, configs.operator)  # console, /ws stream, /health, /ready, systemd
        if self.history_db is not None:
            history = self.history_db
            self.operator.bridge.history = lambda m, i, s: history.candles_now(self.chain_reads, m, i, s)
        if self.browser is not None:
            self.browser.stream = self.operator.stream
            self.metric_sources.append(self.browser.metrics)
            if self.dht is not None:
                self.browser.records = self.dht.store.nodes.values
            self.browser.private = self._dht_private      # private nodes ask pages to come over WebRTC
        self._api_runner: web.AppRunner | None = None
        self.lifecycle = Lifecycle(step_timeout=STOP_STEP_TIMEOUT, total_timeout=STOP_TIMEOUT)
        self.force_exit: Callable[[], None] = force_exit   # what a second signal does
        self._stop = asyncio.Event()

    def _wire_links(self) -> None:
        """Every component that rides on the links, wired in one place and in this order (a link opening
        reaches their listeners so): each says in `peer_hooks` what it handles and hears."""
        components: list[PeerComponent] = []
        if self.nat is not None:
            components.append(self.nat)
        if self.pex is not None:
            components.append(self.pex)
        components += [self.discovery, self.router, self.rpc.service]
        if self.dht is not None:
            components.append(self.dht)
        components.append(self.chain_network)
        if self.browser is not None:
            components.append(self.browser)
        for component in components:
            self.peers.attach(component)

    def _dht_services(self) -> tuple[str, ...]:
        """What our DHT record says we serve: the node itself and the RPC services we answer."""
        offered = sorted(s for s in self.rpc.service.server.services() if not s.startswith("dht."))
        return ("exchange-node", *offered, *(() if self.browser is None else self.browser.dht_entries()))

    def _dht_addresses(self) -> tuple[tuple[str, int, str], ...]:
        """Where our DHT record says we are: the hosts we were told to give (ADVERTISE_HOST, P2P_HOST), the
        addresses a dial-back confirmed (observed, mapped), and our relays' addresses (relayed)."""
        port = self.peers.listen_port
        hosts = [h for h in self.configs.discovery.own_hosts if h not in ("0.0.0.0", "::", "")]
        listed = [(host, port, "listen") for host in hosts[:4] if port]
        nat = [] if self.nat is None else [a for a in self.nat.addresses_to_publish() if a[:2] not in
                                           {x[:2] for x in listed}]
        return tuple((listed + nat)[:8])

    def _dht_private(self) -> bool:
        """Dial-backs say nobody can reach us: the DHT runs in client mode."""
        return self.nat is not None and self.nat.reachability == Reachability.PRIVATE

    def _dht_peer_private(self, node_id: str) -> bool:
        return self.nat is not None and self.nat.says_private(node_id)

    def _strategies(self) -> list[DiscoveryStrategy]:
        config = self.configs.discovery
        strategies: list[DiscoveryStrategy] = [PersistedDiscovery(self.store),
                                               BootstrapDiscovery(config.bootstrap_peers)]
        if config.pex:
            nat = self.nat
            self.pex = PeerExchange(self.peers, unreachable=None if nat is None else nat.says_private)
            strategies.append(self.pex)
        if config.mdns:
            strategies.append(MdnsDiscovery(
                self.node_id, self.configs.network_id, lambda: self.peers.listen_port,
                interfaces=config.mdns_interfaces, announce_hosts=list(config.mdns_announce_hosts)))
        if config.grape:
            def grape() -> DiscoveryStrategy:  # built at start: it announces the bound port
                port = self.peers.listen_port
                return GrapeDiscovery(config.grape_urls, config.grape_service, port,
                                      announce_interval=config.grape_announce_interval,
                                      own_addresses={(h, port) for h in config.own_hosts})

            strategies.append(DeferredStrategy("grape", grape))
        return strategies

    @property
    def listen(self) -> str:
        if not self.configs.p2p_enabled:
            return "legacy (Grenache only, no peer port)" if self.legacy else "standalone (no peer port)"
        return f"{self.configs.listen_host}:{self.peers.listen_port}"

    async def start(self) -> None:
        """Start every part in order; if one fails, what had started is stopped and StartFailed raised."""
        steps = self.lifecycle
        if self.configs.p2p_enabled:
            await steps.start("peer listener", self.peers.start, self.peers.stop)
            if (browser := self.browser) is not None:     # before links and the DHT, which announce it
                await steps.start("browser endpoint", lambda: browser.start(self.peers.listen_port or 0), browser.stop)
            await steps.start("message router", self.router.start, self.router.stop)
            if self.nat is not None:
                await steps.start("reachability", self.nat.start, self.nat.stop)
            await steps.start("discovery", self.discovery.start, self.discovery.stop)
        elif self.legacy:
            await steps.start("message router", self.router.start, self.router.stop)  # Grenache path only
        await steps.start("rpc", self.rpc.start, self.rpc.stop)
        steps.on_stop("chain store", self.chain_store.close)   # closed even when the chain fails to start
        await steps.start("chain", self.chain.start, self.chain.stop,
                          stop_timeout=lambda: self.chain.stop_seconds(STOP_STEP_TIMEOUT))
        if self.history_db is not None:     # closed once the API that reads it has stopped
            steps.on_stop("history database", self.history_db.close)
        await steps.start("control API", self._start_api, self._stop_api)
        await steps.start("runtime file", self._write_runtime_file, self._remove_runtime_file)
        await steps.start("operator surface", self.operator.start, self.operator.stop)
        gc.freeze()  # startup objects (modules, settings, ...) stay: full collections then scan only runtime objects
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]
        api = self.api_url
        log.info("node %s up: peers on %s, control API on %s, web console at %s/ (network %s, event loop %s)",
                 self.node_id, self.listen, api, api, self.configs.network_id, loop_kind, extra={"address": api})

    @property
    def api_url(self) -> str | None:
        return None if self.api_address is None else f"http://{self.api_address[0]}:{self.api_address[1]}"

    async def _start_api(self) -> None:
        api = self.configs.api
        server = await start_api(self, api.host, api.port)
        self._api_runner, self.api_address = server.runner, server.address
        self.api_rate_limit, self.api_guard = server.rate_limit, server.guard

    async def _stop_api(self) -> None:
        if self._api_runner is not None:
            await self._api_runner.cleanup()
            self._api_runner = None

    def _write_runtime_file(self) -> None:
        """DATA_DIR/node.json tells CLI commands and scripts where this node's API is."""
        info = {"pid": os.getpid(), "node_id": self.node_id, "listen": self.listen,
                "api": self.api_url, "started_at": self.started_at}
        path = self.configs.data_dir / "node.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(info))
        os.replace(tmp, path)

    def _remove_runtime_file(self) -> None:
        try:
            (self.configs.data_dir / "node.json").unlink()
        except FileNotFoundError:
            pass

    async def stop(self) -> bool:
        """Stop what started, in reverse order; False when a step raised, hung or ran out of time (logged)."""
        log.info("shutting down")
        clean = await self.lifecycle.stop()
        if clean:
            log.info("stopped")
        else:
            log.warning("stopped, but not cleanly: %s", ", ".join(self.lifecycle.unfinished))
        return clean

    def request_stop(self) -> None:
        self._stop.set()

    def _on_signal(self) -> None:
        if self._stop.is_set():
            self.force_exit()
        else:
            self.request_stop()

    async def run(self) -> None:
        """Start, serve until SIGINT/SIGTERM, stop cleanly. A second signal exits at once."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        await self.start()   # on failure it has stopped what had started
        try:
            await self._stop.wait()
        finally:
            clean = await self.stop()
        if self.chain.fatal is not None:
            raise NodeFailed(self.chain.fatal)
        if not clean:
            raise StopUnclean(f"shutdown did not finish cleanly ({', '.join(self.lifecycle.unfinished)}); "
                              "see the log")

    def status(self) -> JsonObject:
        peer_status = self.peers.status()
        return {
            "node_id": self.node_id, "version": VERSION, "network_id": self.configs.network_id,
            "listen": self.listen, "api": self.api_url,
            "uptime_s": round(time.time() - self.started_at, 3), "pid": os.getpid(),
            "peers_connected": peer_status["peers_connected"], "markets": self.markets(),
            "reachability": None if self.nat is None else str(self.nat.reachability),
            "nat": None if self.nat is None else self.nat.status(),
            "p2p": peer_status, "discovery": self.discovery.stats(), "router": self.router.stats(),
            "rpc_serving": self.rpc.service.serving(),
            **self.chain_summary(), "exchange": self.chain.status(), "storage": self.chain_store.stats(),
            "api_limits": limit.view() if (limit := self.api_rate_limit) is not None else None,
            "api_connections": guard.view() if (guard := self.api_guard) is not None else None,
            "public_refused": self.public_refusals.view(),
            "browser": None if self.browser is None else self.browser.status(),
        }

    def chain_summary(self) -> JsonObject:
        """The chain fields scripts rely on, at the top of /status."""
        chain = self.chain
        core = chain.core
        if core is None:
            return {"chain_id": None, "role": "joining", "height": 0, "epoch": None, "validators": [],
                    "quorum": False, "finality_lag_s": None, "founding": chain.founding_status,
                    "networks_in_sight": [{"chain_id": chain_id, "peers": peers}     # two or more: none chosen
                                          for chain_id, peers in chain.founding.networks],
                    "conflicting_networks": chain.conflicts}
        now = time.time()
        validators = core.state.validators
        return {"chain_id": core.chain_id, "role": core.role, "height": core.height, "epoch": validators.epoch,
                "validators": list(validators.node_ids), "quorum_size": validators.quorum,
                "validator_keys": {n: k.hex() for n, k in zip(validators.node_ids, validators.keys)},
                "quorum": core.quorum_present(now), "finality_lag_s": round(max(0.0, now - core.state.time_ms / 1000), 3),
                "faults_tolerated": validators.faults, "standby": len(core.state.seats.standby),
                "trust": chain.trust, "conflicting_networks": chain.conflicts}

    @property
    def chain_reads(self) -> ChainReads:
        return self.chain_api

    @property
    def chain_submits(self) -> ChainSubmits:
        return self.chain_api

    def markets(self) -> list[str]:
        app = self.chain.app
        if app is not None:
            return list(app.params.registry.symbols)
        return parse_markets(self.configs.chain.markets).symbols

    def peer_list(self) -> list[PeerView]:
        return [record.as_dict() for record in self.peers.peers.values()]
