"""Every component's config, built from Settings in this one place.

Components take a frozen config of their own and never read `Settings`; a value derived from several
settings (the inbound share of MAX_PEERS, the chain's timeouts scaled from CONSENSUS_TIMEOUT) is
derived here once. `NodeConfigs.from_settings` is what `ExchangeNode` and the tests use.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config import Settings
from config.version import DISTRIBUTION, VERSION
from exchange.chain.config import CoreConfig
from exchange.chain.config import ConsensusConfig
from node.browser.config import BrowserConfig
from p2p.admission import InboundLimits
from p2p.discovery.mdns import mdns_announce_hosts
from p2p.grenache.limits import GrenacheLimits
from p2p.nat.config import NatConfig
from p2p.peer_config import PeerConfig
from p2p.routing.config import GrenacheMessagesConfig, RouterConfig
from p2p.rpc.serve_budget import ServeLimits
from p2p.rpc.service import RpcConfig

# Grape records expire after 1-2 x the grape's --dpa (often 120 s): announcing at least every
# minute keeps a record alive whatever GRAPE_ANNOUNCE_INTERVAL says.
MAX_GRENACHE_ANNOUNCE_INTERVAL = 60.0
# A block must fit a frame with room for its certificate and envelope.
MAX_BLOCK_BYTES = 700_000
BLOCK_SHARE_OF_FRAME = 0.6


def nat_config(settings: Settings) -> NatConfig:
    return NatConfig(relay_service=settings.relay_service, relay_client=settings.relay_client,
                     hole_punch=settings.hole_punch,
                     hole_punch_cooldown=settings.hole_punch_cooldown, port_mapping=settings.port_mapping,
                     relay_max_reservations=settings.relay_max_reservations,
                     relay_max_circuits=settings.relay_max_circuits,
                     relay_circuits_per_peer=settings.relay_circuits_per_peer,
                     relay_circuit_bytes=settings.relay_circuit_bytes,
                     relay_circuit_seconds=settings.relay_circuit_seconds,
                     relay_circuit_rate=float(settings.relay_circuit_rate),
                     relay_circuit_burst=8.0 * settings.relay_circuit_rate)


def peer_config(settings: Settings) -> PeerConfig:
    max_peers = settings.max_peers
    outbound = min(settings.target_outbound, max_peers)
    limits = InboundLimits(max_peers=max_peers, max_inbound=max(1, max_peers - outbound),
                           per_ip=settings.max_inbound_per_ip, per_subnet=settings.max_inbound_per_subnet,
                           limit_loopback=settings.inbound_limit_loopback)
    return PeerConfig(
        network_id=settings.network_id, listen_host=settings.p2p_host, listen_port=settings.p2p_port,
        advertise_host=settings.advertise_host, max_frame_bytes=settings.max_frame_bytes,
        send_buffer_bytes=settings.send_buffer_bytes, read_rate=settings.peer_read_rate,
        handshake_timeout=settings.handshake_timeout,
        heartbeat_interval=settings.heartbeat_interval, dead_after=settings.dead_after,
        reconnect_cap=settings.peer_reconnect_interval, dial_rate=settings.dial_rate,
        dial_burst=settings.dial_burst, max_peers=max_peers, target_outbound=outbound, limits=limits,
        handshake_rate=settings.inbound_handshake_rate, handshake_rate_total=settings.inbound_handshake_rate_total,
        protection_mode=settings.protection_mode, protection_canary=settings.protection_canary,
        software=f"{DISTRIBUTION}/{VERSION}")


def grenache_limits(settings: Settings, rate: float, rate_total: float) -> GrenacheLimits:
    """A Grenache HTTP server's limits: its own rate (frames or requests), the connection caps both share."""
    return GrenacheLimits(rate_per_address=rate, rate_total=rate_total,
                          max_connections_per_address=settings.grenache_max_connections_per_address,
                          max_connections_per_subnet=settings.grenache_max_connections_per_subnet,
                          max_connections=settings.grenache_max_connections,
                          header_timeout=settings.grenache_header_timeout, body_timeout=settings.grenache_body_timeout,
                          exempt=settings.grenache_rate_exempt)


def router_config(settings: Settings) -> RouterConfig:
    grenache = None
    if settings.discovery_grenache and settings.grenache_messages:
        grenache = GrenacheMessagesConfig(
            grape_urls=settings.grape_urls, service=settings.grape_service,
            host=settings.grenache_messages_host or settings.p2p_host, port=settings.grenache_messages_port,
            announce_interval=min(settings.grape_announce_interval, MAX_GRENACHE_ANNOUNCE_INTERVAL),
            limits=grenache_limits(settings, settings.grenache_messages_rate, settings.grenache_messages_rate_total))
    return RouterConfig(
        max_frame_bytes=settings.max_frame_bytes, seen_cache_size=settings.seen_cache_size,
        seen_cache_ttl=settings.seen_cache_ttl, queue_max_messages=settings.queue_max_messages,
        queue_target_bytes=settings.queue_target_bytes, queue_max_bytes=settings.queue_max_bytes,
        queue_ttl=settings.queue_ttl, rate_limit=settings.router_rate_limit, rate_burst=settings.router_rate_burst,
        flood_ban=settings.router_flood_ban, graft_peer_bytes=settings.router_graft_peer_bytes,
        graft_total_bytes=settings.router_graft_total_bytes, diagnostic_types=settings.debug_api,
        open_type_rate=settings.router_open_type_rate, open_type_total_rate=settings.router_open_type_total_rate,
        broadcast_cache_bytes=settings.broadcast_cache_bytes,
        broadcast_mode=settings.broadcast_mode,
        broadcast_max_hops=settings.broadcast_max_hops, grenache=grenache)


def rpc_config(settings: Settings) -> RpcConfig:
    return RpcConfig(default_timeout=settings.rpc_timeout, max_in_flight_per_peer=settings.rpc_max_in_flight,
                     serve_in_flight_per_peer=settings.rpc_max_in_flight, max_attempts=settings.rpc_max_attempts,
                     warmup_period=settings.rpc_warmup, warmup_rate=settings.rpc_warmup_rate,
                     warmup_start=settings.rpc_warmup_start, hint_ttl=settings.hint_ttl,
                     serve=ServeLimits(rate=settings.rpc_serve_rate, bytes=settings.rpc_serve_bytes,
                                       total_rate=settings.rpc_serve_total_rate,
                                       total_bytes=settings.rpc_serve_total_bytes))


def core_config(settings: Settings, legacy: bool = False) -> CoreConfig:
    """The chain's tunables (timeouts scale with CONSENSUS_TIMEOUT); a legacy node is a follower."""
    base = settings.consensus_timeout
    consensus = ConsensusConfig(timeout_propose=base, timeout_propose_delta=base / 2, timeout_prevote=base / 2,
                                timeout_prevote_delta=base / 4, timeout_precommit=base / 2,
                                timeout_precommit_delta=base / 4, rebroadcast_interval=max(0.25, base))
    return CoreConfig(consensus=consensus, empty_block_interval=settings.empty_block_interval,
                      role="follower" if legacy else settings.role, peer_tx_rate=settings.peer_tx_rate,
                      peer_tx_burst=settings.peer_tx_burst, peer_tx_total_rate=settings.peer_tx_total_rate,
                      mempool_max_txs=settings.mempool_max_txs,
                      mempool_max_bytes=settings.mempool_max_bytes, mempool_lane_share=settings.mempool_lane_share,
                      block_lane_share=settings.block_lane_share,
                      block_seconds_target=settings.block_seconds_target, at_budget_wait=settings.at_budget_wait,
                      mempool_account_txs=settings.mempool_account_txs,
                      sync_peer_rate=settings.sync_peer_rate, sync_peer_bytes=settings.sync_peer_bytes,
                      sync_total_bytes=settings.sync_total_bytes,
                      account_ops_per_block=settings.account_ops_per_block,
                      account_ops_per_100_blocks=settings.account_ops_per_100_blocks,
                      account_ops_rate=settings.account_ops_rate, account_ops_burst=settings.account_ops_burst,
                      group_ops_rate=settings.group_ops_rate, group_ops_burst=settings.group_ops_burst,
                      account_rate_exempt=frozenset(bytes.fromhex(a) for a in settings.account_rate_exempt),
                      snapshot_cache_bytes=settings.snapshot_cache_bytes,
                      max_block_bytes=min(MAX_BLOCK_BYTES, int(settings.max_frame_bytes * BLOCK_SHARE_OF_FRAME)))


@dataclass(frozen=True, slots=True)
class NodeRpcConfig:
    """The node's RPC side: the service's tunables plus hint gossip and the Grenache endpoint and workers."""

    service: RpcConfig
    network_id: str
    test_service_fault: str | None
    test_services: bool                 # offer test.echo (DEBUG_API)
    hint_rate: float
    hint_ttl: float
    grape_urls: tuple[str, ...]
    grenache_rpc_port: int | None       # None: no Grenache HTTP endpoint
    grenache_rpc_host: str
    grenache_services: tuple[str, ...]
    grenache_announce_interval: float
    grenache_limits: GrenacheLimits     # what each client of the Grenache endpoint may take


@dataclass(frozen=True, slots=True)
class ChainConfig:
    """ChainService's keyword arguments, and where its store keeps blocks."""

    network_id: str
    markets: str
    order_ttl_ms: int
    max_open_orders: int | None
    fresh_order_ttl_ms: int | None
    max_validators: int
    pinned_validators: tuple[str, ...]
    found_after: float              # inf: never found a network (legacy mode)
    snapshot_interval: int
    snapshot_lag: int
    snapshot_min_ms: int
    recovery_timeout: float
    keep_blocks: int
    core: CoreConfig
    join_token: str | None
    chain_id: str | None
    keep_seat: bool
    seat_rule: str
    absent_blocks: int
    absent_ms: int


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str
    port: int
    token: str | None
    data_dir: Path                  # where the cookie is written
    debug_api: bool
    max_connections: int = 2048
    max_connections_per_address: int = 512
    max_connections_per_subnet: int = 1024
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    write_timeout: float = 10.0
    write_min_rate: int = 16384
    slow_answer_bytes: int = 8 * 1024 * 1024
    keepalive_timeout: float = 60.0
    public_rate: float = 20.0
    public_rate_total: float = 1000.0
    rate_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    connection_rate: float = 100.0              # requests a second one connection may make, token or not
    trusted_proxies: tuple[str, ...] = ()       # reverse proxies whose X-Forwarded-For names the client
    history_db: str | None = None               # the indexer's database the history routes read (HISTORY_DB)


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    markets: str
    ws_max_clients: int
    ws_max_clients_per_address: int
    ws_max_clients_per_subnet: int
    ws_send_buffer_bytes: int
    p2p_enabled: bool               # readiness waits for the peer listener only when there is one
    finality_stall_after: float     # /ready says stalled after this long without a final block, a quorum heard
    ws_send_buffer_per_address: int = 4 * 1024 * 1024
    ws_send_buffer_per_subnet: int = 16 * 1024 * 1024
    ws_send_buffer_total: int = 64 * 1024 * 1024
    ws_max_subscriptions_per_address: int = 256
    ws_max_subscriptions_per_subnet: int = 1024
    ws_max_subscriptions: int = 16384


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    bootstrap_peers: tuple[tuple[str, int], ...]
    pex: bool
    dht: bool
    mdns: bool
    mdns_interfaces: tuple[str, ...]
    grape: bool
    grape_urls: tuple[str, ...]
    grape_service: str
    grape_announce_interval: float
    mdns_announce_hosts: tuple[str, ...]  # empty: the mDNS interface addresses
    own_hosts: tuple[str, ...]      # addresses peers know us by (ADVERTISE_HOST, P2P_HOST): Grape skips them


@dataclass(frozen=True, slots=True)
class NodeConfigs:
    """One config per component, and the operating mode they were derived for."""

    data_dir: Path
    peers_file: Path
    network_id: str
    p2p_enabled: bool
    legacy: bool                    # P2P off, Grenache on: no peer port, a follower over Grenache alone
    standalone: bool                # P2P and Grenache off: its own one-validator chain
    listen_host: str                # the host part of `listen` in /status
    peers: PeerConfig
    router: RouterConfig
    rpc: NodeRpcConfig
    chain: ChainConfig
    api: ApiConfig
    operator: OperatorConfig
    discovery: DiscoveryConfig
    nat: NatConfig
    browser: BrowserConfig = BrowserConfig(enabled=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> "NodeConfigs":
        legacy = not settings.p2p_enabled and settings.discovery_grenache
        standalone = not settings.p2p_enabled and not settings.discovery_grenache
        found_after = 0.0 if standalone else (float("inf") if legacy else settings.found_after)
        own_hosts = tuple(h for h in (settings.advertise_host, settings.p2p_host) if h)
        return cls(
            data_dir=settings.data_dir, peers_file=settings.peers_file, network_id=settings.network_id,
            p2p_enabled=settings.p2p_enabled, legacy=legacy, standalone=standalone,
            listen_host=settings.advertise_host or settings.p2p_host,
            peers=peer_config(settings), router=router_config(settings),
            rpc=NodeRpcConfig(
                service=rpc_config(settings), network_id=settings.network_id,
                test_service_fault=settings.test_service_fault, test_services=settings.debug_api,
                hint_rate=settings.hint_rate,
                hint_ttl=settings.hint_ttl, grape_urls=settings.grape_urls,
                grenache_rpc_port=settings.grenache_rpc_port, grenache_rpc_host=settings.p2p_host,
                grenache_services=settings.grenache_services,
                grenache_announce_interval=min(settings.grape_announce_interval, MAX_GRENACHE_ANNOUNCE_INTERVAL),
                grenache_limits=grenache_limits(settings, settings.grenache_rpc_rate, settings.grenache_rpc_rate_total)),
            chain=ChainConfig(
                network_id=settings.network_id, markets=settings.markets,
                order_ttl_ms=int(settings.order_ttl * 1000), max_validators=settings.max_validators,
                max_open_orders=settings.max_open_orders or None,
                fresh_order_ttl_ms=int(settings.fresh_order_ttl * 1000) or None,
                pinned_validators=settings.validators, found_after=found_after,
                snapshot_interval=settings.snapshot_interval, snapshot_lag=settings.snapshot_lag,
                snapshot_min_ms=int(settings.snapshot_min_seconds * 1000), recovery_timeout=settings.recovery_timeout,
                keep_blocks=settings.keep_blocks, core=core_config(settings, legacy=legacy),
                join_token=settings.join_token, chain_id=settings.chain_id, keep_seat=settings.keep_seat,
                seat_rule=settings.seat_rule, absent_blocks=settings.absent_blocks,
                absent_ms=int(settings.absent_seconds * 1000)),
            api=ApiConfig(host=settings.api_host, port=settings.api_port, token=settings.api_token,
                          data_dir=settings.data_dir, debug_api=settings.debug_api,
                          max_connections=settings.api_max_connections,
                          max_connections_per_address=settings.api_max_connections_per_address,
                          max_connections_per_subnet=settings.api_max_connections_per_subnet,
                          header_timeout=settings.api_header_timeout, body_timeout=settings.api_body_timeout,
                          write_timeout=settings.api_write_timeout, write_min_rate=settings.api_write_min_rate,
                          slow_answer_bytes=settings.api_slow_answer_bytes,
                          keepalive_timeout=settings.api_keepalive_timeout, public_rate=settings.api_public_rate,
                          public_rate_total=settings.api_public_rate_total, rate_exempt=settings.api_rate_exempt,
                          connection_rate=settings.api_connection_rate,
                          trusted_proxies=settings.api_trusted_proxies, history_db=settings.history_db),
            operator=OperatorConfig(markets=settings.markets, ws_max_clients=settings.ws_max_clients,
                                    ws_max_clients_per_address=settings.ws_max_clients_per_address,
                                    ws_max_clients_per_subnet=settings.ws_max_clients_per_subnet,
                                    ws_send_buffer_bytes=settings.ws_send_buffer_bytes,
                                    p2p_enabled=settings.p2p_enabled,
                                    finality_stall_after=settings.finality_stall_after,
                                    ws_send_buffer_per_address=settings.ws_send_buffer_per_address,
                                    ws_send_buffer_per_subnet=settings.ws_send_buffer_per_subnet,
                                    ws_send_buffer_total=settings.ws_send_buffer_total,
                                    ws_max_subscriptions_per_address=settings.ws_max_subscriptions_per_address,
                                    ws_max_subscriptions_per_subnet=settings.ws_max_subscriptions_per_subnet,
                                    ws_max_subscriptions=settings.ws_max_subscriptions),
            discovery=DiscoveryConfig(
                bootstrap_peers=settings.bootstrap_peers, pex=settings.discovery_pex, mdns=settings.discovery_mdns,
                dht=settings.discovery_dht,
                mdns_interfaces=settings.mdns_interfaces, grape=settings.discovery_grenache,
                grape_urls=settings.grape_urls, grape_service=settings.grape_service,
                grape_announce_interval=settings.grape_announce_interval,
                mdns_announce_hosts=tuple(mdns_announce_hosts(settings.advertise_host, settings.p2p_host)),
                own_hosts=own_hosts),
            nat=nat_config(settings), browser=browser_config(settings, own_hosts))


def browser_config(settings: Settings, own_hosts: tuple[str, ...]) -> BrowserConfig:
    """The WebTransport endpoint binds the peer listener's host; its URL names the first host peers know us by
    that is not a wildcard (loopback when there is none)."""
    public = next((h for h in own_hosts if h not in ("0.0.0.0", "::", "")), "127.0.0.1")
    return BrowserConfig(enabled=settings.browser_webtransport and settings.p2p_enabled, host=settings.p2p_host,
                         port=settings.browser_port, public_host=public, max_sessions=settings.browser_max_sessions,
                         max_per_address=min(8, settings.browser_max_sessions),
                         max_per_subnet=min(32, settings.browser_max_sessions), data_dir=settings.data_dir)
