"""Grenache workers through the adaptive router, both ways.

`GrenacheWorkers.request(service, payload)`: look up the workers announced for `service` on Grape
(cached `lookup_ttl` seconds; a failed lookup falls back to the last list), let an AdaptiveRouter
pick one (P2C over peak-EWMA cost, breakers, AIMD), call it with GrenacheHTTPClient and retry
another within the retry budget on a worker fault (timeout, connection trouble, ERR_TIMEOUT,
ERR_SERVICE_UNKNOWN, ERR_SERVICE_FAILED). Any other "ERR_..." answer is the worker's reply and is
raised as `RpcError(code)` without a retry.

`GrenacheEndpoint`: serve chosen local services (RpcServer handlers) over a Grenache-compatible
HTTP endpoint (GrenacheHTTPServer) and announce them on Grape, again every `announce_interval`
seconds (a Grape record expires after about 1-2 x its dpa). Handler error codes become Grenache
strings: `RpcError("insufficient_funds")` answers "ERR_INSUFFICIENT_FUNDS". The endpoint is public:
each client gets a share of its requests and connections (`limits`, p2p/grenache/limits.py), and
one past its share gets 429 "ERR_BUSY" before its request is read.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import re
import time
from collections.abc import Mapping
from typing import Any, Callable, Iterator, TypedDict

from p2p.grenache.grape import GrapeClient, GrapeError
from p2p.grenache.limits import BODY_UNIT_BYTES, GrenacheLimits, LimitsView, ServerLimits
from p2p.grenache.rpc import (GrenacheHTTPClient, GrenacheHTTPServer, GrenacheJson, GrenacheProtocolError,
                              GrenacheRemoteError, GrenacheTimeout, GrenacheUnavailable, Handler)
from p2p.resilience.protection import Protection
from p2p.resilience.retry_budget import RetryBudget
from p2p.rpc import errors as e
from p2p.rpc.attempts import call_with_retries
from p2p.rpc.router import AdaptiveRouter, PeerRouteView, RetryPolicy, RouterConfig
from p2p.rpc.server import RpcServer

log = logging.getLogger("p2p.grenache.workers")

# Worker answers that blame the worker (retried elsewhere), with the router's failure kind.
WORKER_FAULTS = {"ERR_TIMEOUT": ("timeout", e.TIMEOUT), "ERR_SERVICE_UNKNOWN": ("error", e.UNKNOWN_SERVICE),
                 "ERR_SERVICE_FAILED": ("error", e.INTERNAL), "ERR_BUSY": ("rejected", e.OVERLOADED)}


def classify_grenache(exc: Exception, worker: str) -> tuple[str | None, e.RpcError]:
    if isinstance(exc, GrenacheTimeout):
        return "timeout", e.RpcError(e.TIMEOUT, str(exc), peer=worker)
    if isinstance(exc, GrenacheUnavailable):
        return "error", e.RpcError(e.UNREACHABLE, str(exc), peer=worker)
    if isinstance(exc, GrenacheProtocolError):
        return "error", e.RpcError(e.INTERNAL, f"bad reply: {exc}", peer=worker)
    if isinstance(exc, GrenacheRemoteError):
        fault = WORKER_FAULTS.get(exc.code)
        if fault is not None:
            return fault[0], e.RpcError(fault[1], exc.code, peer=worker)
        return None, e.RpcError(exc.code, exc.detail or "", peer=worker)
    raise exc


def worker_name(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrenacheWorkers:
    def __init__(self, grape: GrapeClient, http: GrenacheHTTPClient | None = None, *, lookup_ttl: float = 2.0,
                 default_timeout: float = 5.0, max_attempts: int = 3, router_config: RouterConfig | None = None,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None, protection: Protection | None = None) -> None:
        self.grape = grape
        self.protection = protection or Protection()
        self.http = http or GrenacheHTTPClient()
        self.lookup_ttl = lookup_ttl
        self.default_timeout = default_timeout
        self.max_attempts = max_attempts
        self.router_config = router_config or RouterConfig(tau=0.3)
        self.clock = clock
        self.rng = rng or random.Random()
        self.retry = retry or RetryPolicy(max_attempts=max_attempts, base=0.005, cap=0.25,
                                          budget=RetryBudget(clock=clock), rng=self.rng, clock=clock,
                                          protection=self.protection)
        self.routers: dict[str, AdaptiveRouter] = {}
        self._found: dict[str, tuple[float, list[str]]] = {}      # service -> (when, worker names)
        self._addresses: dict[str, tuple[str, int]] = {}
        self._lookups: dict[str, asyncio.Future[list[str]]] = {}
        self.counters: dict[str, int] = {"requests": 0, "succeeded": 0, "failed": 0, "retries": 0,
                                         "retries_denied": 0, "lookups": 0, "lookup_failures": 0}
        self.sent: dict[str, dict[str, int]] = {}

    async def close(self) -> None:
        await self.http.close()

    # -- lookup ----------------------------------------------------------------------------------
    async def workers(self, service: str) -> list[str]:
        """Workers announced for `service` ("host:port"), from a lookup at most `lookup_ttl` s old."""
        cached = self._found.get(service)
        if cached is not None and self.clock() - cached[0] < self.lookup_ttl:
            return cached[1]
        pending = self._lookups.get(service)
        if pending is None:   # one lookup at a time per service; concurrent callers share it
            pending = self._lookups[service] = asyncio.ensure_future(self._lookup(service))
            pending.add_done_callback(functools.partial(_forget, self._lookups, service))
        return await asyncio.shield(pending)

    async def _lookup(self, service: str) -> list[str]:
        self.counters["lookups"] += 1
        try:
            addresses = await self.grape.lookup(service)
        except GrapeError as exc:
            self.counters["lookup_failures"] += 1
            cached = self._found.get(service)
            if cached is not None:
                log.info("grape lookup of %r failed (%s): using the last %d worker(s)", service, exc, len(cached[1]))
                return cached[1]
            raise e.RpcError(e.UNAVAILABLE, f"grape lookup failed: {exc}") from None
        names = []
        for address in addresses:
            name = worker_name(address)
            self._addresses[name] = address
            names.append(name)
        router = self.routers.get(service)
        if router is not None:
            for gone in set(router.peers()) - set(names):
                router.forget(gone)
        self._found[service] = (self.clock(), names)
        return names

    # -- requests --------------------------------------------------------------------------------
    async def request(self, service: str, payload: GrenacheJson = None, timeout: float | None = None) -> GrenacheJson:
        return (await self.call(service, payload, timeout))[0]

    async def call(self, service: str, payload: GrenacheJson = None,
                   timeout: float | None = None) -> tuple[GrenacheJson, str, int]:
        """(result, worker, attempts). Raises `RpcError`."""
        self.counters["requests"] += 1
        deadline = self.clock() + (self.default_timeout if timeout is None else timeout)
        try:
            if not await self.workers(service):
                raise e.RpcError(e.NO_PEERS, f"no Grenache worker announced for {service!r}")
            router = self.routers.get(service)
            if router is None:
                router = self.routers[service] = AdaptiveRouter(self.router_config, rng=self.rng, clock=self.clock,
                                                                on_transition=self._transition(service),
                                                                protection=self.protection)
            http = self.http
            addresses = self._addresses
            outcome = await call_with_retries(
                router, lambda: self._found[service][1],
                lambda worker, left: http.request(addresses[worker], service, payload, left),
                retry=self.retry, clock=self.clock, deadline=deadline, max_attempts=self.max_attempts,
                classify=classify_grenache, sent=self.sent.setdefault(service, {}), counters=self.counters,
                what=f"Grenache service {service!r}", guard=self.protection.covers())
        except e.RpcError:
            self.counters["failed"] += 1
            raise
        self.counters["succeeded"] += 1
        return outcome.result, outcome.peer, outcome.attempts

    @staticmethod
    def _transition(service: str) -> Callable[..., None]:
        def log_transition(worker: str, old: Any, new: Any, why: str) -> None:
            log.warning("breaker grenache %s worker %s: %s -> %s (%s)", service, worker, old, new, why)
        return log_transition

    def snapshot(self) -> WorkersView:
        now = self.clock()
        services: dict[str, WorkerServiceView] = {}
        for service, router in self.routers.items():
            sent = self.sent.get(service, {})
            rows: dict[str, WorkerRouteView] = {worker: {**row, "requests_sent": sent.get(worker, 0)}
                                                for worker, row in router.snapshot(now).items()}
            found = self._found.get(service)
            services[service] = {"workers": found[1] if found else [], "peers": rows}
        return {"services": services, "counters": dict(self.counters)}


def grenache_code(code: str) -> str:
    """An RpcError code as a Grenache error string: "insufficient_funds" -> "ERR_INSUFFICIENT_FUNDS"."""
    if code.startswith("ERR_"):
        return code
    return "ERR_" + (re.sub(r"[^A-Z0-9]+", "_", code.upper()).strip("_") or "SERVICE_FAILED")


class _Exposed(Mapping[str, Handler]):
    """The GrenacheHTTPServer handler table: the exposed services that are registered right now."""

    def __init__(self, server: RpcServer, names: tuple[str, ...]) -> None:
        self.server = server
        self.names = names

    def __getitem__(self, name: str) -> Handler:
        if name not in self.names:
            raise KeyError(name)
        handler = self.server.handler(name)
        if handler is None:
            raise KeyError(name)

        async def call(payload: GrenacheJson) -> GrenacheJson:
            try:
                result = handler(payload, "grenache")
                if inspect.isawaitable(result):
                    result = await result
            except e.RpcError as exc:
                raise GrenacheRemoteError(grenache_code(exc.code), exc.message or None) from None
            return result
        return call

    def __iter__(self) -> Iterator[str]:
        return (n for n in self.names if self.server.offers(n))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class WorkerRouteView(PeerRouteView):
    requests_sent: int                   # attempts sent to the worker


class WorkerServiceView(TypedDict):
    workers: list[str]                   # the workers Grape named for the service
    peers: dict[str, WorkerRouteView]    # the router's view of each


class WorkersView(TypedDict):
    services: dict[str, WorkerServiceView]
    counters: dict[str, int]


class EndpointView(TypedDict):
    port: int | None
    services: list[str]
    announced: dict[str, float]      # service -> when it was last announced (wall clock)
    announce_failures: int
    limits: LimitsView               # requests refused by a client's share, and by whom


class GrenacheEndpoint:
    def __init__(self, server: RpcServer, grape: GrapeClient, services: tuple[str, ...], *, host: str = "127.0.0.1",
                 port: int = 0, announce_interval: float = 30.0, handler_timeout: float | None = 30.0,
                 limits: GrenacheLimits) -> None:
        self.grape = grape
        self.services = tuple(services)
        self.announce_interval = announce_interval
        self.limits = ServerLimits(limits, "grenache_rpc", "requests")
        self.http = GrenacheHTTPServer(_Exposed(server, self.services), host, port, handler_timeout=handler_timeout,
                                       limits=self.limits, unit_bytes=BODY_UNIT_BYTES)
        self.port: int | None = None
        self.announced: dict[str, float] = {}
        self.announce_failures = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        self.port = await self.http.start()
        log.info("serving %s over Grenache HTTP on port %d", ", ".join(self.services), self.port)
        await self.announce()
        self._task = asyncio.create_task(self._reannounce(), name="grenache.announce")
        return self.port

    async def announce(self) -> bool:
        """Announce every service on the Grape (once the endpoint listens); False if one failed."""
        port = self.port
        if port is None:
            return False
        ok = True
        for service in self.services:
            try:
                await self.grape.announce(service, port)
                self.announced[service] = time.time()
            except (GrapeError, ValueError) as exc:
                ok = False
                self.announce_failures += 1
                log.warning("could not announce %r on Grape: %s", service, exc)
        return ok

    async def _reannounce(self) -> None:
        delay = self.announce_interval
        while True:
            await asyncio.sleep(delay)
            # after a failure, try again sooner than the normal interval
            delay = self.announce_interval if await self.announce() else min(self.announce_interval, 2.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.http.stop()

    def snapshot(self) -> EndpointView:
        return {"port": self.port, "services": list(self.services), "announced": dict(self.announced),
                "announce_failures": self.announce_failures, "limits": self.limits.view()}


def _forget(pending: dict[str, Any], key: str, _done: object) -> None:
    """A done-callback that drops `key` (bound when the future was made) from `pending`."""
    pending.pop(key, None)


class GrenacheView(TypedDict):
    workers: WorkersView | None          # the workers this node calls, once it has called one
    endpoint: EndpointView | None        # the services it serves over Grenache HTTP, if it does
