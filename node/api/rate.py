"""Rate limits on the public read-only routes, per client address, per subnet and in all.

Anyone who can reach the API port may read `/status`, books, trades, metrics and the console without a token,
and each read costs the node work (a book of thousands of levels, a status of every peer). The connection
guard (p2p/public/guard.py) caps how many connections one address holds; this caps how fast they ask: a token
bucket per address (`API_PUBLIC_RATE` a second, bursts of two seconds' worth), four times that per /24 (IPv4)
or /48 (IPv6) so one network cannot rotate addresses around it, and `API_PUBLIC_RATE_TOTAL` behind them all,
which refuses the heaviest networks first once it runs low. The excess gets 429 with Retry-After and costs the
node nothing more. A request with a valid token (the operator's) is not counted, nor is one from
`API_RATE_EXEMPT` (this machine by default: the CLI, the console on localhost, a local monitor). The maps are
bounded: the least recently heard address or subnet is forgotten first and starts again with a full bucket,
which the subnet and total buckets still bound (the buckets are p2p/public/rate.py's, shared with the Grenache
HTTP servers).

A request is one unit only when it is cheap: once answered it is charged the event loop's CPU it took (a unit per
UNIT_CPU_SECONDS) or its answer's bytes (a unit per ANSWER_UNIT_BYTES), whichever is more, on credit, so the
address's next requests wait until it is paid. The newest 10,000 trades (megabytes of JSON, tens of milliseconds)
or candles over the whole kept trade log then cost what they are worth, not what `/health` costs. The stream's
requests (node/marketdata/server.py) draw on the same budgets.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from contextvars import ContextVar
from typing import Awaitable, Callable, Protocol, TypedDict, TypeVar
from weakref import WeakKeyDictionary

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.base import ApiError
from node.api.write_quiet import WriteQuiet
from node.api.auth import PUBLIC_ROUTES, ApiAuth, is_public
from p2p.public.rate import ClientRate
from p2p.public.refusals import RefusalLog
from p2p.public.sources import in_networks, parse_networks
from p2p.resilience.token_bucket import TokenBucket


UNIT_CPU_SECONDS = 0.001        # a public request costs one unit per this much of the event loop's CPU ...
ANSWER_UNIT_BYTES = 64 * 1024   # ... or per this many bytes of its answer, whichever is more (one at least)
MAX_SHUT = 65_536               # addresses refused at accept remembered (the least recently shut forgotten first)


def cost_units(cpu_seconds: float, answer_bytes: int = 0) -> float:
    """What an answered public request is worth in units of the rate limit."""
    return max(1.0, cpu_seconds / UNIT_CPU_SECONDS, answer_bytes / ANSWER_UNIT_BYTES)


class PublicBudget(Protocol):
    """What the stream asks of the public rate limit: whether a client may go now, and what its request cost."""

    def is_exempt(self, address: str) -> bool: ...

    def check(self, address: str, reserve: float = 1.0) -> tuple[str, float] | None: ...

    def settle(self, address: str, units: float, reserved: float) -> bool: ...


class RateLimitView(TypedDict):
    """The public rate limit as /status shows it."""

    rate_per_address: float
    rate_total: float
    tracked_addresses: int
    refused: dict[str, int]


class PublicRateLimit(ClientRate):
    """The shared per-client rate (p2p/public/rate.py) with this API's exemptions."""

    def __init__(self, per_address: float, total: float, exempt: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic, refusals: RefusalLog | None = None) -> None:
        super().__init__(per_address, total, surface="api", clock=clock, refusals=refusals)
        self.exempt = parse_networks(exempt)

    def is_exempt(self, address: str) -> bool:
        return in_networks(address, self.exempt)    # an IPv4 client of a dual-stack listener as its IPv4 address

    def view(self) -> RateLimitView:
        return {"rate_per_address": self.by_address.rate, "rate_total": self.total_rate,
                "tracked_addresses": len(self.by_address), "refused": dict(self.refused)}


CHARGED = web.RequestKey("public_rate_charged", bool)   # set on a request the front gate charged the public rate
# CPU seconds to add to a public request's event loop time when it is charged: what its work spent on other
# threads (the history database's worker), less what the loop did for others while it awaited (`awaited`).
OFF_LOOP_CPU: ContextVar[list[float] | None] = ContextVar("public_rate_off_loop_cpu", default=None)
T = TypeVar("T")


async def awaited(job: Awaitable[T]) -> T:
    """`await job`, the loop's CPU meanwhile (other requests', blocks', links') not charged to the request waiting:
    a proved read waits about a block for its certificate, a history read for the database's worker."""
    cell = OFF_LOOP_CPU.get()
    started = time.thread_time()
    try:
        return await job
    finally:
        if cell is not None:
            cell[0] -= time.thread_time() - started
_READS = frozenset({"GET", "HEAD"})
_EXACT = frozenset(r.split(" ", 1)[1] for r in PUBLIC_ROUTES if not r.endswith("/*"))
_PREFIXES = tuple(r.split(" ", 1)[1][:-1] for r in PUBLIC_ROUTES if r.endswith("/*"))


def looks_public(method: str, path: str) -> bool:
    """Whether a request's raw path names a public route, read before routing: only to refuse early. A spelling
    this misses (`//status`) is charged by the middleware after routing instead; which routes need the token is
    decided on the matched route (auth.py), never on this."""
    return method in _READS and (path in _EXACT or path.startswith(_PREFIXES))


def _refusal(which: str, wait: float, close: bool = False) -> web.Response:
    response = web.Response(status=429, body=_REFUSAL_BODIES[which], content_type="application/json",
                            headers={"Retry-After": str(max(1, round(wait + 0.5)))})
    if close:
        response.force_close()
    return response


_REFUSAL_BODIES = {which: orjson.dumps({"error": {"code": code, "message": message}}) for which, code, message in (
    ("per_address", "rate_limited", "too many requests without a token (per address limit)"),
    ("per_subnet", "rate_limited", "too many requests without a token (per subnet limit)"),
    ("total", "rate_limited", "too many requests without a token (total limit)"),
    ("connection", "connection_rate_limited", "too many requests on one connection; this connection is closed"),
    ("early", "retry_after_ignored", "asked again before the Retry-After of a 429; this connection is closed"))}


class _Connection:
    __slots__ = ("bucket", "refused", "quiet_until", "retry_at")

    def __init__(self, rate: float, burst: float) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.refused = 0        # public-rate refusals in a row on this connection
        self.quiet_until = 0.0  # half the Retry-After of the last 429 it was answered, on the monotonic clock ...
        self.retry_at = 0.0     # ... and all of it


class FrontGate:
    """Refusals before a request is routed or its body read, at a small constant cost (nginx's `limit_req`):
    every connection from an address not exempt has a request rate (`per_connection` a second, bursts of twice
    that; 0: none), whoever holds it, and is closed past it; a request that looks public (`looks_public`)
    without the token from an address not exempt is charged to the public rate here, and a keep-alive
    connection refused `CLOSE_AFTER` times in a row is closed, so refusing does not cost what answering does.
    A connection answered 429 to a write (an account's rate) that asks again within half its Retry-After is
    closed unread, and so is any write from its address meanwhile (held until then), unless the address is
    exempt (`WriteQuiet`).
    The answer is a prebuilt 429."""

    CLOSE_AFTER = 8

    def __init__(self, limit: PublicRateLimit, auth: ApiAuth, per_connection: float) -> None:
        self.limit, self.auth, self.per_connection = limit, auth, per_connection
        self._connections: WeakKeyDictionary[object, _Connection] = WeakKeyDictionary()
        self.refused = {"connection": 0, "public": 0, "early": 0}
        self.closed = 0
        self.quiet = WriteQuiet()
        self._shut: OrderedDict[str, float] = OrderedDict()     # address -> until when its connections are refused

    def wrap(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
             ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def front(request: web.BaseRequest) -> web.StreamResponse:
            transport = request.transport
            connection = None
            if transport is not None:
                connection = self._connections.get(transport)
                if connection is None:
                    rate = 0.0 if self.limit.is_exempt(request.remote or "") else self.per_connection
                    connection = self._connections[transport] = _Connection(rate, 2 * rate or 1.0)
                if connection.bucket.rate and not connection.bucket.try_take():
                    self.refused["connection"] += 1
                    self.closed += 1
                    return _refusal("connection", 1.0, close=True)
                if connection.quiet_until and time.monotonic() < connection.quiet_until:
                    self.refused["early"] += 1
                    self.closed += 1
                    return _refusal("early", connection.retry_at - time.monotonic(), close=True)
            if request.method not in _READS and self.quiet:
                quiet = self.quiet.wait(request.remote or "")
                if quiet is not None:
                    self.refused["early"] += 1
                    self.closed += 1
                    await asyncio.sleep(quiet[0])       # held, unread, until the address may ask again
                    return _refusal("early", quiet[1] - quiet[0], close=True)
            if looks_public(request.method, request.path):
                address = request.remote or ""
                scheme, _, token = request.headers.get("Authorization", "").partition(" ")
                if not self.limit.is_exempt(address) and not (scheme.lower() == "bearer" and
                                                              self.auth.check_token(token.strip())):
                    refused = self.limit.check(address)
                    if refused is not None:
                        self.refused["public"] += 1
                        close = connection is not None and connection.refused >= self.CLOSE_AFTER - 1
                        if connection is not None:
                            connection.refused += 1
                        self.closed += close
                        if close:
                            self._shut_until(address, refused[1])
                        return _refusal(refused[0], refused[1], close=close)
                    request[CHARGED] = True
                if connection is not None:
                    connection.refused = 0
            response = await handler(request)
            if connection is not None and response.status == 429 and request.method not in _READS:   # an account's
                retry = response.headers.get("Retry-After", "")
                wait = float(retry) if retry.isdigit() else 1.0
                connection.quiet_until, connection.retry_at = time.monotonic() + wait / 2, time.monotonic() + wait
                if not self.limit.is_exempt(request.remote or ""):
                    self.quiet.refused(request.remote or "", wait)
            return response

        return front

    def shut(self, address: str) -> bool:
        """Whether new connections from `address` are refused at accept (ConnectionGuard.shut): it asked past its
        public rate until a connection was closed, and its bucket has not refilled since. A refusal at accept costs
        an aborted socket, not a protocol, a parsed request and a prebuilt answer."""
        until = self._shut.get(address)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._shut[address]
        return False

    def _shut_until(self, address: str, wait: float) -> None:
        self._shut.pop(address, None)
        self._shut[address] = time.monotonic() + wait
        if len(self._shut) > MAX_SHUT:
            self._shut.popitem(last=False)


def install_public_rate_limit(app: web.Application, limit: PublicRateLimit, auth: ApiAuth) -> None:
    @web.middleware
    async def public_rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        if not is_public(request.method, resource.canonical if resource is not None else None):
            return await handler(request)
        address = request.remote or ""
        charged = request.get(CHARGED, False)
        if not charged and (limit.is_exempt(address) or auth.check_token(auth.bearer_token(request))):
            return await handler(request)
        refused = None if charged else limit.check(address)
        if refused is None:
            started = time.thread_time()
            off_loop = [0.0]
            OFF_LOOP_CPU.set(off_loop)              # this request's own task: its context is its own
            response = await handler(request)
            if type(response) is web.Response:      # not a stream (/ws) nor a file: its whole answer is here
                body = response.body
                size = len(body) if isinstance(body, (bytes, bytearray)) else 0
                limit.settle(address, cost_units(max(0.0, time.thread_time() - started + off_loop[0]), size), 1.0)
            return response
        which, wait = refused
        response = ApiError(429, "rate_limited", f"too many requests without a token ({which.replace('_', ' ')} "
                            f"limit); retry after {wait:.1f} s").response()
        response.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
        return response

    app.middlewares.append(public_rate_limit)


# The API's public rate limit, made by build_app (server.py) before any route is installed: the stream's
# handshake (node/operator.py) spends the same limit.
RATE_LIMIT = web.AppKey("public_rate_limit", PublicRateLimit)
