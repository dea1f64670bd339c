"""OperatorSurface: what an operator sees of a running node, wired in one place.

The web console at `/`, the market data stream at `/ws` (with its `status` channel),
`GET /health` and `GET /ready`, the finality histogram, build info on /metrics, and systemd
readiness. ExchangeNode builds it once its parts exist, `start()`s it when the control API answers
and `stop()`s it first on shutdown. The chain reaches it only through
`node.chain_feed.ChainBridge`; other parts register readiness checks with
`node.operator.readiness.register(name, check)` and finality with
`node.operator.finality.observe_finality(seconds)`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric

from config.version import VERSION
from node.console import install_console
from node.finality import FinalityTracker
from node.health import LoopMonitor, ReadinessChecks, install_health_routes
from node.marketdata import MarketFeed, StatusChannel, StreamServer
from node.marketdata.feed import BOOK_DEPTHS
from node.marketdata.server import CHANNELS
from node.metrics import CounterNames, labelled_counter, split_counters
from exchange.markets import parse_markets
from node.api.auth import check_token as check_api_token
from node.api.base import ApiNode, JsonObject
from node.api.rate import RATE_LIMIT
from node.chain_feed import ChainBridge
from node.configs import OperatorConfig
from node.sdnotify import SystemdNotifier
from node.refusals import grenache_refusals, refused_rows
from p2p.public.sources import Shares
from p2p.rpc.views import RoutingView
from node.throttled import MAX_ROWS, ThrottledRow, read_turn_rows, throttled_rows

if TYPE_CHECKING:
    from exchange.chain.service import ChainService
    from node.accounts import AccountStore

STATUS_PEERS = 200          # most peers one status message describes (connected ones first)
STREAM_COUNTERS = CounterNames("exchange_node_stream", "Market data stream")
CHAIN_FIELDS = ("height", "epoch", "role", "quorum", "finality_lag_s", "validators", "liveness", "halt", "halted",
                "own_pending", "founding")   # the console's chain panel and halt banner
ROUTING_FIELDS = ("score", "latency_ms", "error_rate", "timeout_rate", "outstanding", "breaker", "hint",
                  "hint_multiplier", "offers", "connected", "requests_sent")


class OperatorNode(ApiNode, Protocol):
    """What the operator surface reads of its node beyond the API's view (node/app.py's ExchangeNode is one)."""

    api_address: tuple[str, int] | None       # None until the control API is bound

    @property
    def chain(self) -> ChainService: ...

    @property
    def accounts(self) -> AccountStore: ...

    @property
    def listen(self) -> str: ...              # the peer address, as the log's first line shows it


class OperatorSurface:
    def __init__(self, node: OperatorNode, config: OperatorConfig, check_token: Callable[[str], bool] | None = None) -> None:
        self.node = node
        self.readiness = ReadinessChecks()
        self.finality = FinalityTracker()
        self.loop_monitor = LoopMonitor()
        self.notifier = SystemdNotifier()
        self.bridge = ChainBridge(node.chain, node.accounts, self.finality, config.finality_stall_after)
        self.feed = MarketFeed(list(parse_markets(config.markets)), self.bridge)
        self.status_channel = StatusChannel(self.status_summary)
        self._app: web.Application | None = None
        self.stream = StreamServer(self.feed, self.status_channel, check_token=check_token or self._check_token,
                                   max_clients=config.ws_max_clients, max_buffer=config.ws_send_buffer_bytes,
                                   max_per_address=config.ws_max_clients_per_address,
                                   max_per_subnet=config.ws_max_clients_per_subnet,
                                   subscriptions=Shares(config.ws_max_subscriptions_per_address,
                                                        config.ws_max_subscriptions_per_subnet,
                                                        config.ws_max_subscriptions),
                                   unread=Shares(config.ws_send_buffer_per_address, config.ws_send_buffer_per_subnet,
                                                 config.ws_send_buffer_total),
                                   refusals=node.public_refusals, hello=self.hello)
        self.readiness.register("api", lambda: (node.api_address is not None, "control API listening"
                                                if node.api_address else "control API not bound yet"))
        if config.p2p_enabled:
            self.readiness.register("p2p", self._p2p_ready)
        self.readiness.register("chain", self.bridge.ready)
        node.api_extensions.append(self.install_routes)
        node.metric_sources.extend([self.metrics, self.bridge.metrics, self.finality.metrics])

    def _check_token(self, token: str) -> bool:
        return self._app is not None and check_api_token(self._app, token)

    def install_routes(self, app: web.Application) -> None:
        self._app = app
        self.stream.rate = app[RATE_LIMIT]
        install_health_routes(app, self.loop_monitor, self.readiness, self.node.started_at)
        app.router.add_get("/ws", self.stream.handle)
        install_console(app)

    def _p2p_ready(self) -> tuple[bool, str]:
        port = self.node.peers.listen_port
        return bool(port), f"listening on port {port}" if port else "peer listener not bound yet"

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        self.bridge.attach(self.feed)
        self.loop_monitor.start()
        self.status_channel.start()
        if self.notifier.enabled:
            self.notifier.ready(self._one_line_status())

    async def stop(self) -> None:
        await self.notifier.stopping()
        await self.stream.close_all()
        await self.status_channel.stop()
        await self.loop_monitor.stop()

    def _one_line_status(self) -> str:
        node = self.node
        assert node.api_address is not None        # start() runs once the control API is bound
        return (f"node {node.node_id[:12]} on {node.listen}, API {node.api_address[0]}:{node.api_address[1]}, "
                f"{len(node.peers.links)} peers")

    # --- what the stream says ----------------------------------------------------------------------
    def hello(self) -> JsonObject:
        return {"version": VERSION, "node_id": self.node.node_id, "markets": list(self.feed.markets),
                "channels": list(CHANNELS), "depths": list(BOOK_DEPTHS)}

    def status_summary(self) -> JsonObject:
        """The `status` channel: this node, its chain (validators and their liveness, a halt and why), its
        peers with the links each reports, who it holds back and why, the router's view, finality. Peer ids
        are always whole."""
        node = self.node
        status = node.status()
        exchange = status.get("exchange") or {}
        router = status.get("router") or {}
        links = node.peers.links
        listed = sorted(node.peer_list(), key=lambda p: (p["status"] != "connected", p["node_id"]))[:STATUS_PEERS]
        peers: list[JsonObject] = []
        for peer in listed:
            link = links.get(peer["node_id"])
            peers.append({**peer, "links": sorted(link.remote_links) if link is not None else []})
        book = self.bridge.status()
        rpc = self.node.rpc.snapshot()      # one snapshot for the held-back rows and the routing panel
        return {
            "node": {"node_id": status["node_id"], "version": status["version"], "network_id": status["network_id"],
                     "listen": status["listen"], "uptime_s": status["uptime_s"], "role": status.get("role"),
                     "peers_connected": status["peers_connected"], "markets": status["markets"],
                     "reachability": self._reachability(status.get("nat")),
                     "exchange": {"summary": exchange.get("summary"), **book}},
            "chain": {**{key: exchange.get(key) for key in CHAIN_FIELDS},
                      "networks_in_sight": status.get("networks_in_sight")},
            "peers": peers,
            "held_back": (throttled_rows(exchange.get("tx_budget"), router.get("budget_throttled"), node.peer_list(),
                                         router.get("budget_refused"), exchange.get("sync_budget"))
                          + read_turn_rows((status.get("p2p") or {}).get("read_turns"))
                          + refused_rows(status.get("public_refused"))
                          + self._grenache_refused_rows(router, rpc))[:MAX_ROWS],
            "routing": self.routing_summary(rpc),
            "finality": {**self.finality.summary(), "pending_events": book["pending_events"]},
            "stream": {"clients": len(self.stream.sessions)},
        }

    @staticmethod
    def _grenache_refused_rows(router: JsonObject, rpc: RoutingView) -> list[ThrottledRow]:
        """Who the Grenache message endpoint and the Grenache RPC endpoint refused lately, and why."""
        message_path = router.get("grenache")
        grenache = rpc.get("grenache")
        endpoint = grenache["endpoint"] if grenache is not None else None
        return (refused_rows(grenache_refusals(message_path.get("limits") if isinstance(message_path, dict) else None),
                             "Grenache message client")
                + refused_rows(grenache_refusals(endpoint["limits"] if endpoint is not None else None),
                               "Grenache RPC client"))

    @staticmethod
    def _reachability(nat: JsonObject | None) -> JsonObject | None:
        """What the console shows of NAT traversal: reachability, our addresses and how learnt, our relays."""
        if nat is None:
            return None
        return {"reachability": nat.get("reachability"),
                "addresses": [{k: a.get(k) for k in ("host", "port", "how", "confirmed")} for a in nat["addresses"][:8]],
                "relays": (nat.get("relay_client") or {}).get("relays", [])}

    @staticmethod
    def routing_summary(snap: RoutingView) -> JsonObject:
        services = {name: {peer: {k: row.get(k) for k in ROUTING_FIELDS} for peer, row in data["peers"].items()}
                    for name, data in snap["services"].items()}
        return {"services": services, "retry_budget": snap["retry_budget"], "throttle": snap["throttle"],
                "breaker_transitions": snap["breaker_transitions"][-5:]}

    def metrics(self) -> Iterator[Metric]:
        stats = self.stream.stats()
        yield GaugeMetricFamily("exchange_node_stream_clients", "WebSocket clients of /ws", value=stats["clients"])
        yield GaugeMetricFamily("exchange_node_stream_unread_bytes",
                                "Bytes queued for stream clients that they have not read yet", value=stats["unread_bytes"])
        subscriptions = GaugeMetricFamily("exchange_node_stream_subscriptions", "Stream subscriptions, by channel",
                                          labels=["channel"])
        for channel, count in stats["subscriptions"].items():
            subscriptions.add_metric([channel], count)
        yield subscriptions
        yield from split_counters(STREAM_COUNTERS, stats["counters"])
        yield labelled_counter("exchange_node_stream_disconnects_total", "Stream clients gone, by reason", "reason",
                               stats["disconnects"])
        yield labelled_counter("exchange_node_stream_published_total",
                               "What the exchange layer published to the stream, by kind", "kind", self.feed.published)
