"""What `GET /routing` shows: RpcService.snapshot's view, and what the node adds to it."""
from __future__ import annotations

from typing import TYPE_CHECKING, NotRequired, TypedDict

from p2p.resilience.protection import ProtectionView
from p2p.rpc.router import PeerRouteView
from p2p.rpc.serve_budget import ServeBudgetView

if TYPE_CHECKING:
    from p2p.grenache.workers import GrenacheView
    from p2p.router import PathsView
    from p2p.rpc.gossip import HintsView


class ProviderView(PeerRouteView):
    """A peer's row under a service: the router's view of it, whether it offers the service, is linked,
    and the attempts sent to it."""
    offers: bool
    connected: bool
    requests_sent: int


class UnroutedProviderView(TypedDict):
    """The row of a provider the service's router has not seen yet."""
    score: None
    latency_ms: None
    error_rate: None
    breaker: str                       # "closed"
    hint: None
    offers: bool
    connected: bool
    requests_sent: int


class ServiceView(TypedDict):
    providers: list[str]               # linked peers that offer the service
    peers: dict[str, ProviderView | UnroutedProviderView]


TransitionView = TypedDict("TransitionView", {"ts": float, "service": str, "peer": str, "from": str, "to": str,
                                               "reason": str})     # a breaker's change of state


class RetryBudgetView(TypedDict):
    balance: float
    retries: int
    denied: int


class ThrottleView(TypedDict):
    reject_probability: float
    local_rejects: int


class WarmupView(TypedDict):
    done: bool
    rate: float | None                 # requests/s allowed now while warming up, else None


class RoutingView(TypedDict):
    """Everything `GET /routing` shows."""
    node_id: str
    local_services: list[str]
    services: dict[str, ServiceView]
    retry_budget: RetryBudgetView
    throttle: ThrottleView
    warmup: WarmupView
    protection: ProtectionView
    counters: dict[str, int]
    client: dict[str, int]
    server: dict[str, int | dict[str, int]]   # counters, in_flight, served (requests per service)
    serve_budget: ServeBudgetView | None      # what serving may cost per requester and relay, who was refused
    breaker_transitions: list[TransitionView]
    hints: NotRequired[HintsView | None]         # added by the node's RPC component: hint gossip, if it runs
    grenache: NotRequired[GrenacheView]          # and the Grenache workers it calls and the endpoint it serves
    message_paths: NotRequired[PathsView]        # added by the API: MessageRouter.paths()


class ServingView(TypedDict):
    """What /status shows of the requests this node serves (`rpc_serving`)."""
    counters: dict[str, int]                  # requests, answered, rate_limited, unroutable, ...
    budget: ServeBudgetView | None
