"""RpcService: RPC between nodes, wired to the PeerManager, with the adaptive router choosing peers.

- `register(service, handler)` offers a service; the service list travels in our handshake and,
  when it changes, in a `services` message on every link.
- `request_peer(node_id, service, payload, timeout)` calls one named node (direct link, else the
  MessageRouter relays).
- `request(service, payload, timeout)` lets the AdaptiveRouter of that service pick among linked
  peers offering it (P2C over peak-EWMA cost, breakers, AIMD in-flight limits), and on a PEER
  failure (see `errors.py`) retries on another peer after a full-jitter backoff, while the retry
  budget and the overall deadline allow. Before sending, client-side adaptive throttling sheds
  load when peers keep failing, and for `warmup_period` seconds after start outgoing requests are
  paced, ramping from 10% of `warmup_rate` to full. All of this storm protection (warm-up, throttle,
  retry budget, breakers, AIMD) applies as the node's `Protection` says: each request draws one
  verdict (on, shadow, or none) that every mechanism honours.

Rpc frames on a direct link are handled by the handlers of our peer hooks (no dispatch layer
in between); frames relayed by the MessageRouter arrive through its subscriptions.

Over 500 lines on purpose: a call's path (deadline, retries, throttle, warm-up, slots) is one loop;
the separable parts are client.py, server.py, attempts.py and provider_search.py.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, NamedTuple, Protocol, cast

from p2p.admission import is_loopback_group, netgroup
from p2p.messages import Message
from p2p.peer_hooks import PeerHooks, proven_id
from p2p.resilience.breaker import BreakerState
from p2p.resilience.protection import ENFORCE, Protection
from p2p.resilience.retry_budget import RetryBudget
from p2p.resilience.throttle import AdaptiveThrottle
from p2p.resilience.token_bucket import TokenBucket
from p2p.resilience.warmup import Warmup
from p2p.rpc import errors as e
from p2p.rpc.attempts import ATTEMPT_SHARE, call_with_retries
from p2p.rpc.client import RpcClient
from p2p.rpc.hints import HintBook
from p2p.rpc.provider_search import ProviderFinder, ProviderSearch
from p2p.rpc.router import AdaptiveRouter, RetryPolicy, RouterConfig
from p2p.rpc.serve_budget import ServeBudget, ServeLimits
from p2p.rpc.server import Handler, RpcServer
from p2p.rpc.views import ProviderView, RoutingView, ServiceView, ServingView, UnroutedProviderView
from p2p.rpc.wire import CANCEL, REQUEST, RESPONSE, RPC_SCHEMAS, SERVICES, Payload

if TYPE_CHECKING:
    from p2p.connection import PeerLink
    from p2p.peers import PeerManager

log = logging.getLogger("p2p.rpc")
# A peer reached through a relay costs this many times its measured latency in every router's choice: its
# link shares the relay's bandwidth and budgets, so a direct peer that is somewhat slower is the better pick.
RELAYED_PATH_COST = 2.0


@dataclass(frozen=True)
class RpcConfig:
    default_timeout: float = 5.0          # s, whole request including retries
    max_in_flight_per_peer: int = 256     # our requests in flight to one peer (hard bound)
    serve_in_flight_per_peer: int = 256   # one peer's async requests we run at once
    max_attempts: int = 3
    retry_base: float = 0.005             # full-jitter backoff ceiling of the first retry (s)
    retry_cap: float = 0.25
    retry_ratio: float = 0.2              # retries may add this fraction of requests ...
    retry_min_per_second: float = 10.0    # ... plus this many per second
    warmup_period: float = 5.0            # s of paced start (0 = none)
    warmup_rate: float = 2000.0           # requests/s reached at the end of the warm-up
    warmup_start: float | None = None     # requests/s at its start (None: 10% of warmup_rate)
    throttle_k: float = 2.0               # client-side throttling: send up to K x accepted
    throttle_span: float = 30.0
    hint_ttl: float = 60.0
    forget_after: float = 300.0           # s after a peer left before its request counts are dropped
    # what the requests we serve may cost, per requester and per relaying neighbour, and in all (serve_budget.py)
    serve: ServeLimits = field(default_factory=lambda: ServeLimits(rate=1000.0, bytes=2 << 20, total_rate=10_000.0,
                                                                   total_bytes=16 << 20))
    # Peak-EWMA decay 0.3 s instead of the router's 1 s default: RPCs between nodes take milliseconds, and a
    # 1 s memory of each scheduling hiccup's peak makes healthy peers look slower than they are, so a slow
    # peer keeps more traffic than it should (tests/integration/test_rpc_faults.py holds the bound).
    router: RouterConfig = field(default_factory=lambda: RouterConfig(tau=0.3))


class MessagePath(Protocol):
    """What RPC uses of the MessageRouter: sending to a node without a link to it, and subscribing to the
    requests, answers and cancels it delivers. What `send_to_peer` returns is read loosely (see `_route`).
    An answer goes with `answer=True`: now, never held for long."""

    def send_to_peer(self, node_id: str, message: Message, *, answer: bool = False) -> object: ...

    def reachable(self, node_id: str) -> bool: ...

    def subscribe(self, msg_type: str, handler: Callable[[Message, str], None]) -> None: ...


class RpcResult(NamedTuple):
    result: Payload
    peer: str
    attempts: int
    latency: float        # seconds, whole request
    waited: float = 0.0   # seconds of it held back locally (warm-up pacing, a free slot) before the first attempt


class _Routed:
    """Replier for a request that reached us through the MessageRouter: answers go back the same way, now or
    never (the requester waits seconds at most, and one nobody reaches could be anyone's fresh key)."""

    __slots__ = ("service", "target")

    def __init__(self, service: "RpcService", target: str) -> None:
        self.service = service
        self.target = target

    def send(self, message: Message) -> bool:
        svc = self.service
        link = svc.peers.links.get(self.target)
        if link is not None:
            return link.send(message)
        message.update(id=f"{svc.node_id}:r{message['rid']}", origin=svc.node_id, ts=time.time())
        return svc._route(self.target, message, answer=True)


class RpcService:
    def __init__(self, peers: PeerManager, config: RpcConfig | None = None, *, message_router: MessagePath | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 protection: Protection | None = None) -> None:
        self.peers = peers
        self.node_id: str = peers.node_id
        self.config = c = config or RpcConfig()
        self.clock = clock
        self.rng = rng or random.Random()
        self.message_router = message_router
        self.server = RpcServer(max_in_flight_per_peer=c.serve_in_flight_per_peer,
                                budget=ServeBudget(c.serve, clock=clock))
        self.server.on_change = self._services_changed
        self.client = RpcClient(peers.links, self.node_id, route=self._route,
                                max_in_flight_per_peer=c.max_in_flight_per_peer, default_timeout=c.default_timeout)
        self.routers: dict[str, AdaptiveRouter] = {}
        self.path_costs: dict[str, float] = {}         # peer -> RELAYED_PATH_COST while its link runs through a relay
        self._sending: set[asyncio.Future[Any]] = set()
        self.protection: Protection = protection or peers.protection   # one protection switch per node
        self.budget = RetryBudget(c.retry_ratio, c.retry_min_per_second, clock=clock)
        self.retry = RetryPolicy(max_attempts=c.max_attempts, base=c.retry_base, cap=c.retry_cap,
                                 budget=self.budget, rng=self.rng, clock=clock, protection=self.protection)
        self.throttle = AdaptiveThrottle(c.throttle_k, c.throttle_span, rng=self.rng)
        started = clock()
        start_fraction = 0.1 if c.warmup_start is None else min(1.0, c.warmup_start / c.warmup_rate)
        self.warmup = Warmup(c.warmup_rate, c.warmup_period, start_fraction=start_fraction, started_at=started)
        self._warming = c.warmup_period > 0
        burst = max(1.0, min(c.warmup_rate / 50, self.warmup.rate(started)))
        self._pace = TokenBucket(self.warmup.rate(started), burst, clock=clock, initial=burst) if self._warming else None
        self._remote: dict[str, frozenset[str]] = {}          # linked peer -> services it offers
        self._providers: dict[str, list[str]] = {}             # service -> linked peers offering it
        self.provider_search: ProviderSearch | None = None      # no linked provider: ask the DHT (use_finder)
        self._left: dict[str, float] = {}                      # peer -> when its link closed
        self.transitions: list[tuple[float, str, str, str, str, str]] = []   # recent breaker changes
        self.transition_count: dict[str, int] = {}
        self.counters: dict[str, int] = {"requests": 0, "succeeded": 0, "failed": 0, "retries": 0,
                                         "retries_denied": 0, "throttled": 0, "no_peers": 0, "warmup_waits": 0,
                                         "slot_waits": 0}
        self.requests_by_peer: dict[str, dict[str, int]] = {}  # service -> peer -> attempts sent
        self._lanes: dict[str, tuple[AdaptiveRouter, dict[str, int]]] = {}  # service -> (router, sent)
        self._default_timeout = c.default_timeout
        self._first_share = 1.0 if c.max_attempts <= 1 else ATTEMPT_SHARE   # of the time left, first attempt
        self._calls = 0                                        # `call`s in progress
        self._slot_waiters: deque[asyncio.Future[None]] = deque()    # calls waiting for a provider's slot
        self._subscribed: MessagePath | None = None
        self._task: asyncio.Task[None] | None = None

    # -- wiring ----------------------------------------------------------------------------------
    def peer_hooks(self) -> PeerHooks:
        """Requests, answers, cancels and service lists on links; links opening and closing."""
        return PeerHooks("rpc", schemas=RPC_SCHEMAS,
                         handlers={REQUEST: self._on_link_request, RESPONSE: self._on_link_response,
                                   CANCEL: self._on_link_cancel, SERVICES: self._on_link_services},
                         on_open=(self._on_open,), on_close=(self._on_close,))

    def use_router(self, router: MessagePath | None) -> None:
        """Send to unlinked nodes through `router` (MessageRouter API: send_to_peer, subscribe)."""
        if router is None or self._subscribed is router:
            return
        self.message_router = router
        self._subscribed = router
        router.subscribe(REQUEST, self._on_routed_request)
        router.subscribe(RESPONSE, self._on_routed_response)
        router.subscribe(CANCEL, self._on_routed_cancel)

    def start(self) -> None:
        if self.message_router is not None:
            self.use_router(self.message_router)
        if self._task is None:
            self._task = asyncio.create_task(self._housekeeping(), name="rpc.housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.client.close()
        await self.server.stop()

    def _route(self, peer: str, message: Message, answer: bool = False) -> bool:
        """Send through the MessageRouter to a node we have no link to (an answer: now, never held for long)."""
        router = self.message_router
        if router is None:
            return False
        try:
            result = router.send_to_peer(peer, message, answer=answer)
        except Exception as exc:  # noqa: BLE001
            log.debug("route to %s failed: %r", peer[:12], exc)
            return False
        if inspect.isawaitable(result):
            sending = asyncio.ensure_future(result)
            self._sending.add(sending)            # held until done: the loop keeps only weak references
            sending.add_done_callback(self._sending.discard)
            return True
        return result is not False and result is not None and getattr(result, "ok", True) is not False

    # -- services ------------------------------------------------------------------------------
    def register(self, service: str, handler: Handler) -> None:
        """Offer `service`: `handler(payload, peer_id)` returns the result or an awaitable of it."""
        self.server.register(service, handler)

    def unregister(self, service: str) -> None:
        self.server.unregister(service)

    def offers(self, service: str) -> bool:
        return self.server.offers(service)

    def _services_changed(self) -> None:
        services = self.server.services()
        self.peers.advertise_services(services)
        message = {"type": SERVICES, "services": services}
        for link in list(self.peers.links.values()):
            link.send(message)

    def use_finder(self, finder: ProviderFinder) -> None:
        """When no linked peer offers a service, link to a provider `finder` knows (the DHT) before failing."""
        self.provider_search = ProviderSearch(finder, lambda service: bool(self._providers.get(service)),
                                              clock=self.clock)

    def providers(self, service: str) -> list[str]:
        """Linked peers that offer `service`."""
        return self._providers.get(service, [])

    def _set_remote(self, peer: str, services: Iterable[str]) -> None:
        new = frozenset(services)
        old = self._remote.get(peer, frozenset())
        if new == old and peer in self._remote:
            return
        self._remote[peer] = new
        for svc in old | new:
            self._reindex(svc)
        record = self.peers.peers.get(peer)
        if record is not None:
            record.services = tuple(sorted(new))

    def _reindex(self, service: str) -> None:
        offering = sorted(p for p, s in self._remote.items() if service in s)
        if offering:
            self._providers[service] = offering
            if self.provider_search is not None:
                self.provider_search.offered(service)
        else:
            self._providers.pop(service, None)

    def _on_open(self, link: PeerLink) -> None:
        peer = proven_id(link)
        hello = link.remote_hello or {}
        self._left.pop(peer, None)
        if link.via is not None:
            self.path_costs[peer] = RELAYED_PATH_COST
        else:
            self.path_costs.pop(peer, None)
        self._set_remote(peer, hello.get("services") or ())

    def _on_close(self, link: PeerLink) -> None:
        peer = link.remote_id
        if peer is None:
            return
        if peer not in self.peers.links:
            self.path_costs.pop(peer, None)
        self.client.link_closed(peer, link.close_reason or "")
        self.server.peer_gone(peer)
        old = self._remote.pop(peer, frozenset())
        for svc in old:
            self._reindex(svc)
        # A peer that left is no candidate: its state must not weigh on the fleet medians or the
        # router's ejection cap. If it comes back it starts as a new peer (one request at a time).
        for router in self.routers.values():
            router.forget(peer)
        self._left[peer] = self.clock()

    # -- inbound frames ------------------------------------------------------------------------
    def _for_router(self, link: PeerLink, message: Message) -> bool:
        """A relayed frame addressed to another node: hand it to the MessageRouter's handler."""
        dst = message.get("dst")
        if dst is not None and dst != self.node_id:
            self.peers.to_application(link, message)
            return True
        return False

    def _on_link_request(self, link: PeerLink, message: Message) -> None:
        if "dst" in message:
            if self._for_router(link, message):
                return
            neighbour = proven_id(link)
            origin = message.get("origin") or neighbour
            replier = link if origin == neighbour else _Routed(self, origin)
            self.server.handle_request(message, origin, replier, neighbour, _subnet(link))
            return
        self.server.handle_request(message, proven_id(link), link, subnet=_subnet(link))

    def _on_link_response(self, link: PeerLink, message: Message) -> None:
        if "dst" in message:
            if self._for_router(link, message):
                return
            self.client.handle_response(message, message.get("origin") or proven_id(link))
            return
        self.client.handle_response(message, proven_id(link))

    def _on_link_cancel(self, link: PeerLink, message: Message) -> None:
        if "dst" in message:
            if self._for_router(link, message):
                return
            self.server.handle_cancel(message, message.get("origin") or proven_id(link))
            return
        self.server.handle_cancel(message, proven_id(link))

    def _on_link_services(self, link: PeerLink, message: Message) -> None:
        self._set_remote(proven_id(link), message["services"])

    def _on_routed_request(self, message: Message, from_node: str) -> None:
        """A request relayed to us. From a requester no route reaches it is dropped unanswered before anything
        runs: its answer could only be dropped (an origin nobody links to could be anyone's fresh key)."""
        origin = message.get("origin") or from_node
        if message.get("dst") not in (None, self.node_id) or origin == self.node_id:
            return
        router = self.message_router
        if from_node != origin and router is not None and not router.reachable(origin):
            self.server.counters["unroutable"] += 1     # (one that came over Grenache may be looked up)
            return
        self.server.handle_request(message, origin, _Routed(self, origin), from_node,
                                   _subnet(self.peers.links.get(from_node)))

    def _on_routed_response(self, message: Message, from_node: str) -> None:
        if message.get("dst") in (None, self.node_id):
            self.client.handle_response(message, message.get("origin") or from_node)

    def _on_routed_cancel(self, message: Message, from_node: str) -> None:
        if message.get("dst") in (None, self.node_id):
            self.server.handle_cancel(message, message.get("origin") or from_node)

    # -- requests ------------------------------------------------------------------------------
    def request_peer(self, node_id: str, service: str, payload: Payload = None,
                     timeout: float | None = None) -> Awaitable[Payload]:
        """Call `service` on one named node; no routing, no retries. Await it; raises `RpcError`.
        (A plain function returning the client's coroutine: one coroutine frame less per request.)"""
        return self.client.request(node_id, service, payload, timeout)

    def request(self, service: str, payload: Payload = None, timeout: float | None = None) -> Awaitable[Payload]:
        """Call `service` on whichever linked peer the adaptive router picks, retrying elsewhere.
        Await it; raises `RpcError`. (A plain function returning the coroutine, like `request_peer`.)"""
        return self._call(service, payload, timeout, False)

    def router_for(self, service: str) -> AdaptiveRouter:
        router = self.routers.get(service)
        if router is None:
            router = AdaptiveRouter(self.config.router, rng=self.rng, clock=self.clock,
                                    hint_book=HintBook(ttl=self.config.hint_ttl), protection=self.protection,
                                    on_transition=functools.partial(self._transition, service),
                                    path_costs=self.path_costs)
            self.routers[service] = router
        return router

    async def call(self, service: str, payload: Payload = None, timeout: float | None = None) -> RpcResult:
        """`request` that also says which peer answered, after how many attempts and how long."""
        return cast("RpcResult", await self._call(service, payload, timeout, True))

    def _lane(self, service: str) -> tuple[AdaptiveRouter, dict[str, int]]:
        """The router of `service` and its per-peer sent counts, looked up once per request."""
        lane = self._lanes.get(service)
        if lane is None:
            lane = self._lanes[service] = (self.router_for(service), self.requests_by_peer.setdefault(service, {}))
        return lane

    async def _call(self, service: str, payload: Payload, timeout: float | None, info: bool) -> Payload:
        """One routed request. The first attempt is made here, inline (the common case: one choice,
        one send, one answer, no closures, no extra objects); only a PEER failure or a peer at our
        local in-flight bound hands over to `call_with_retries`, which goes on from that attempt
        exactly as if it had made it."""
        clock = self.clock
        counters = self.counters
        counters["requests"] += 1
        started = now = clock()
        deadline = started + (self._default_timeout if timeout is None else timeout)
        pool = self._providers.get(service)
        if not pool and self.provider_search is not None \
                and await self.provider_search.find(service, (deadline - started) / 2):
            pool = self._providers.get(service)
            now = clock()
        if not pool:
            counters["no_peers"] += 1
            counters["failed"] += 1
            raise e.RpcError(e.NO_PEERS, f"no linked peer offers {service!r}")
        guard = self.protection.covers()
        throttle = self.throttle
        if guard is not None and throttle.should_reject(started, self._calls) \
                and self.protection.limited("rpc.throttle", guard, "peers are failing"):
            counters["throttled"] += 1
            counters["failed"] += 1
            raise e.RpcError(e.THROTTLED, "peers are failing; shedding load locally")
        self._calls += 1
        try:
            if self._warming and guard is not None:
                await self._paced(deadline, guard)
                now = clock()
            router, sent = self._lanes.get(service) or self._lane(service)
            client = self.client
            self.retry.on_request()
            peer = router.choose(pool, now, start=True, guard=guard)
            while peer is None:   # every provider at its AIMD limit, cooling down or probed
                await self._slot(deadline, router.wait_hint(pool, now))
                now = clock()
                pool = self._providers.get(service) or pool
                peer = router.choose(pool, now, start=True, guard=guard)
            held = now   # until here the storm protection held the call back locally
            if client.per_peer.get(peer, 0) >= client.max_in_flight_per_peer:
                router.on_abandon(peer, now)
                failed = (peer, "rejected", e.RpcError(e.OVERLOADED, "local in-flight bound reached", peer=peer))
            else:
                sent[peer] = sent.get(peer, 0) + 1
                pending = None
                try:
                    pending = client.start(peer, service, payload, (deadline - now) * self._first_share)
                    result = await pending.future          # client.request, inlined: one coroutine less
                except asyncio.CancelledError:
                    if pending is not None:
                        client.abandon(pending)
                    router.on_abandon(peer, clock())
                    raise
                except e.RpcError as exc:
                    done = clock()
                    exc.attempts = 1
                    kind = e.failure_kind(exc.code)
                    if kind is None:                     # an application answer: the peer is fine
                        router.on_success(peer, done - now, done)
                        exc.answered = True
                        raise exc from None
                    router.on_failure(peer, kind, done - now, done)
                    failed = (peer, kind, exc)
                else:
                    done = clock()
                    router.on_success(peer, done - now, done)
                    counters["succeeded"] += 1       # (an answer: nothing to tell the throttle)
                    return RpcResult(result, peer, 1, done - started, now - started) if info else result
            limit = client.max_in_flight_per_peer
            outcome = await call_with_retries(
                router, lambda: self._providers.get(service, ()),
                lambda peer, timeout: client.request(peer, service, payload, timeout),
                retry=self.retry, clock=clock, deadline=deadline, max_attempts=self.config.max_attempts,
                busy=lambda peer: client.per_peer.get(peer, 0) >= limit,
                sent=sent, counters=counters, what=repr(service), failed=failed, guard=guard)
        except e.RpcError as exc:
            # An application answer is an accept; a request our own warm-up held back past its
            # deadline (THROTTLED) never reached a peer: neither tells the throttle the peers refuse.
            if not exc.answered and exc.code != e.THROTTLED and guard is not None:
                throttle.record_failure(clock())
            counters["failed"] += 1
            raise
        finally:
            self._calls -= 1
            waiters = self._slot_waiters
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break
        counters["succeeded"] += 1
        if info:
            return RpcResult(outcome.result, outcome.peer, outcome.attempts, outcome.finished - started,
                             held - started)
        return outcome.result

    async def _slot(self, deadline: float, cooldown: float | None) -> None:
        """Wait for a call to finish, or `cooldown` seconds for a breaker to let a probe out, at most
        until `deadline`: the storm protection holds this call back while every provider is at its
        AIMD limit, cooling down or has its probe out."""
        left = deadline - self.clock()
        if left <= 0:
            self.counters["throttled"] += 1
            raise e.RpcError(e.THROTTLED, "every provider is at its concurrency limit or its breaker is open")
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        self.counters["slot_waits"] += 1
        try:
            async with asyncio.timeout(left if cooldown is None else min(left, cooldown + 0.001)):
                await waiter
        except TimeoutError:
            pass   # a cooldown ended (choose again), or the deadline passed (the next round says so)
        finally:
            waiter.cancel()

    async def _paced(self, deadline: float, guard: str = ENFORCE) -> None:
        """Warm-up: pace outgoing requests at the ramping rate, waiting at most until `deadline`
        (in shadow mode a request that would wait is counted and goes at once)."""
        bucket = self._pace
        assert bucket is not None
        first = True
        while True:
            now = self.clock()
            if self.warmup.done(now):
                self._warming = False
                return
            bucket.set_rate(self.warmup.rate(now))
            if bucket.try_take():
                return
            if first and not self.protection.limited("rpc.warmup", guard, "node warming up"):
                return
            first = False
            wait = bucket.wait_time()
            if now + wait >= deadline:
                self.counters["throttled"] += 1
                raise e.RpcError(e.THROTTLED, "node warming up: request rate limited")
            self.counters["warmup_waits"] += 1
            await asyncio.sleep(wait)

    # -- observability -------------------------------------------------------------------------
    def _transition(self, service: str, peer: str, old: BreakerState, new: BreakerState, why: str) -> None:
        self.transition_count[str(new)] = self.transition_count.get(str(new), 0) + 1
        self.transitions.append((time.time(), service, peer, str(old), str(new), why))
        del self.transitions[:-50]
        level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
        log.log(level, "breaker %s peer %s: %s -> %s (%s)", service, peer[:12], old, new, why)

    def snapshot(self) -> RoutingView:
        """Everything `GET /routing` shows."""
        now = self.clock()
        services: dict[str, ServiceView] = {}
        for name in sorted(set(self.routers) | set(self._providers)):
            router = self.routers.get(name)
            providers = self._providers.get(name, [])
            routed = router.snapshot(now) if router is not None else {}
            sent = self.requests_by_peer.get(name, {})
            rows: dict[str, ProviderView | UnroutedProviderView] = {}
            for peer in [*routed, *(p for p in providers if p not in routed)]:
                seen = routed.get(peer)
                offers, connected, count = peer in providers, peer in self.peers.links, sent.get(peer, 0)
                rows[peer] = ({**seen, "offers": offers, "connected": connected, "requests_sent": count} if seen else
                              {"score": None, "latency_ms": None, "error_rate": None, "breaker": "closed", "hint": None,
                               "offers": offers, "connected": connected, "requests_sent": count})
            services[name] = {"providers": providers, "peers": rows}
        warm = self.warmup
        return {
            "node_id": self.node_id,
            "local_services": self.server.services(),
            "services": services,
            "retry_budget": {"balance": round(self.budget.balance, 3), "retries": self.budget.retries,
                             "denied": self.budget.denied},
            "throttle": {"reject_probability": round(self.throttle.reject_probability(now), 4),
                         "local_rejects": self.throttle.local_rejects},
            "warmup": {"done": not self._warming or warm.done(now),
                       "rate": None if not self._warming or warm.done(now) else round(warm.rate(now), 1)},
            "protection": self.protection.snapshot(),
            "counters": dict(self.counters),
            "client": dict(self.client.counters, in_flight=self.client.in_flight()),
            "server": dict(self.server.counters, in_flight=self.server.in_flight(), served=dict(self.server.served)),
            "serve_budget": self.server.budget.view() if self.server.budget is not None else None,
            "breaker_transitions": [
                {"ts": ts, "service": s, "peer": p, "from": a, "to": b, "reason": why}
                for ts, s, p, a, b, why in self.transitions[-20:]],
        }

    def serving(self) -> ServingView:
        """What /status shows of the requests we serve: the server's counters and its budgets."""
        server = self.server
        return {"counters": dict(server.counters), "budget": server.budget.view() if server.budget is not None else None}

    # -- housekeeping --------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        """Drop the request counts of peers gone longer than `forget_after`."""
        while True:
            await asyncio.sleep(min(30.0, max(1.0, self.config.forget_after / 4)))
            now = self.clock()
            for peer, left in list(self._left.items()):
                if now - left >= self.config.forget_after:
                    del self._left[peer]
                    for sent in self.requests_by_peer.values():
                        sent.pop(peer, None)


def _subnet(link: PeerLink | None) -> str | None:
    """The network (/24 or /48) a link's peer is in, for the serving budget; None on loopback (the operator's
    own nodes, as every per-network cap treats them) or when the address is unknown."""
    if link is None or link.remote_addr is None:
        return None
    group = netgroup(link.remote_addr[0])
    return None if is_loopback_group(group) else group
