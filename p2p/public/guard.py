"""A connection guard for a public aiohttp server (the control API, each Grenache HTTP server): caps on open
connections per address, per network (/24 or /48) and in all, and deadlines on what a client sends, so slowloris
clients (connections fed a byte at a time) are cut and cannot hold the sockets honest clients need.

aiohttp has no such deadlines: its keep-alive timeout counts idle time between requests, and nothing
bounds a body trickled after complete headers. `GuardedSite` listens like `web.TCPSite` but wraps each
connection's aiohttp protocol in `GuardedProtocol`, which refuses a connection over a cap at once and, as
Go's `http.Server` does, gives every request of the connection its own deadlines:

- headers: `header_timeout` from the connection's start for its first request, and from the first byte of
  each later one (time idle between requests is aiohttp's keep-alive timeout's, which the server sets); a
  new connection that has sent nothing by then is closed as idle, without an answer;
- body: `body_timeout` from the end of the headers until the last byte of the body has arrived;
- answers: `write_timeout` while the connection's send buffer stays full (the transport paused writing and has
  not resumed) and the client drained less than `write_min_rate` bytes a second of it meanwhile (counted in the
  transport's buffer and the kernel's send queue, `unsent_bytes`). An answer is written whole into the buffer,
  so a client that asks for big answers and never reads them (or reads a trickle) would hold them all in the
  node's memory; past the deadline the connection is aborted and its answer dropped. A slow reader that keeps
  up the least rate (a client on a slow link fetching the newest 10,000 trades) gets another deadline each
  time, as Apache's mod_reqtimeout counts a body's least rate, but only while what its address, its network
  and everyone keep parked so in slow answers stays within `slow_answer_bytes` (per address; four times that
  per network, sixteen times in all): a slow reader is served from a budget of its own, not from the node's
  memory at large. When everyone's slow answers fill the total, the network parking the most (more than the
  newcomer's would with its grant) gives up its largest slow answer, as connections make room below: slow
  readers from a few networks, each within its shares, cannot take every other network's slow answers.
  Together with the public rate limit's charge per answer byte (node/api/rate.py) this bounds what any address
  can park in the node's memory.

A request past either deadline gets 408 (its body the guard's `timeout_answer`) and its connection is shut:
nothing more it sends is read, and the socket is dropped when the client closes its side or LINGER seconds
later, whichever comes first (closing at once would answer the client's next trickled byte with a reset, which
on many systems discards the 408 before the client reads it). The connection learns where one request ends and
the next begins from aiohttp itself: `track_requests`, the app's outermost middleware, tells it when a request's
headers are complete (its handler starts) and when the request is over (its handler returned and its body has
arrived). A handler that takes a body reads it before it answers (or refuses the request without reading it:
aiohttp then reads and drops it, within the body deadline still), and nothing is written while an answer is
still queued, so a 408 never lands inside another answer. Refusals are counted and recorded by source under
the guard's `surface` name (api_connections_per_address, grenache_msg_header_timeout).

When every slot is taken, a newcomer is not simply refused: the network holding the most connections (more than
the newcomer's would then hold) gives up its connection that has been quiet longest, one where nothing came in for
longest while no handler was at work on a whole request (idle keep-alive, headers still to come, a body that
stopped arriving, or the rest of a body its handler refused unread, which aiohttp reads and drops until the body
deadline), as link admission makes room by evicting from the most crowded network. Clients that each stay inside
their caps therefore cannot lock out a network that holds nothing.
"""
from __future__ import annotations

import asyncio
import fcntl
import heapq
import logging
import struct
import termios
from dataclasses import dataclass, field
from typing import Callable, Protocol, TypedDict, TypeVar, cast

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler

from p2p.public.refusals import RefusalLog
from p2p.public.sources import Networks, Scope, Shares, cap_name, in_networks, subnet_of

log = logging.getLogger("p2p.public.guard")
Member = TypeVar("Member")
V = TypeVar("V")

LINGER = 2.0          # seconds a cut client has to read its 408 before its socket is dropped
TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: %s\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n%s")
EVICT_NETWORKS = 8     # the most crowded networks looked at for a connection to give up when every slot is taken
EVICT_SLOW_READERS = 16    # slow answers at most given up at once to make room for one within the total
# what a cut request is told: (part, "header" or "body"; the deadline in seconds) -> (content type, body)
TimeoutAnswer = Callable[[str, float], tuple[bytes, bytes]]


def unsent_bytes(transport: asyncio.Transport) -> int:
    """Answer bytes the client has not taken yet: the transport's buffer and the kernel's send queue (SIOCOUTQ,
    sent but unacknowledged included). The transport's buffer alone shows no progress for as long as the kernel
    waits for half its send buffer to free before it takes more, tens of seconds of a slow reader."""
    queued = 0
    sock = transport.get_extra_info("socket")
    if sock is not None and hasattr(termios, "TIOCOUTQ"):
        try:
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            queued = 0                  # closed meanwhile, or not a socket the kernel can tell about
    return transport.get_write_buffer_size() + queued


def json_timeout(part: str, timeout: float) -> tuple[bytes, bytes]:
    """The control API's 408 body: its JSON error shape."""
    return (b"application/json",
            b'{"error": {"code": "request_timeout", "message": "the request %s did not arrive within %g s"}}'
            % (part.encode(), timeout))


class Evictable(Protocol):
    """A connection the guard may close to make room for a newcomer."""

    @property
    def quiet_since(self) -> float | None:
        """Since when nothing has come in while no handler of it was at work on a whole request (None: one is)."""

    @property
    def address(self) -> str | None: ...

    def evict(self) -> None: ...


class SlowReader(Protocol):
    """A connection whose parked slow answer the guard may drop to make room for another network's."""

    def evict_slow(self) -> None:
        """Drop the answer and the connection (which gives its parked bytes back)."""


class GuardView(TypedDict):
    """The guard as /status shows it."""

    open: int
    max_per_address: int
    max_per_subnet: int
    max_total: int
    header_timeout_s: float
    body_timeout_s: float
    write_timeout_s: float
    write_min_rate: int            # bytes a second
    slow_answer_bytes: int         # per address
    slow_answers_parked: int       # unsent bytes of slow readers given another deadline, now
    counters: dict[str, int]


@dataclass
class ConnectionGuard:
    per_address: int = 512
    per_subnet: int = 1024
    total: int = 2048
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    refusals: RefusalLog | None = None
    write_timeout: float = 10.0
    surface: str = "api"                      # names its refusals: api_connections_per_address, api_header_timeout
    timeout_answer: TimeoutAnswer = json_timeout
    write_min_rate: int = 16 * 1024           # bytes a second a slow reader drains to be given another deadline
    slow_answer_bytes: int = 8 * 1024 * 1024  # unsent answer bytes one address may park so (4x a network, 16x all)
    proxies: Networks = ()                    # trusted reverse proxies: only the total binds their connections
    # addresses the server's front refuses for now (the API's front gate: one whose connection it closed for asking
    # past its public rate): refused at accept, before a protocol is built or a byte parsed
    shut: Callable[[str], bool] | None = None
    counters: dict[str, int] = field(default_factory=lambda: {
        "refused_per_address": 0, "refused_per_subnet": 0, "refused_total": 0, "header_timeouts": 0,
        "body_timeouts": 0, "write_timeouts": 0, "slow_answers_over_budget": 0, "idle_timeouts": 0,
        "evicted": 0, "slow_answers_evicted": 0, "refused_shut": 0})

    def __post_init__(self) -> None:
        self.open = Shares(self.per_address, self.per_subnet, self.total)
        self.slow_answers = Shares(self.slow_answer_bytes, 4 * self.slow_answer_bytes, 16 * self.slow_answer_bytes)
        self._by_network: dict[str, dict[Evictable, None]] = {}     # the connections each network holds
        self._parked: dict[str, dict[SlowReader, int]] = {}         # each network's parked slow readers: bytes

    def admit(self, address: str, connection: Evictable | None = None) -> bool:
        """Whether a connection from `address` may be held (counted, and `connection` may be evicted later)."""
        if self.shut is not None and self.shut(address):
            self.refused(address, "refused_shut", f"{self.surface}_connections_shut")
            return False
        scope = self._binding(self.open.over_share(address), address)
        if scope is None and self.open.over(address, 1) == "total" and not self._make_room(address):
            scope = "total"
        if scope is not None:
            self.refused(address, f"refused_{cap_name(scope)}", f"{self.surface}_connections_{cap_name(scope)}")
            return False
        self.open.add(address)
        if connection is not None:
            self._by_network.setdefault(subnet_of(address), {})[connection] = None
        return True

    def _binding(self, scope: Scope | None, address: str) -> Scope | None:
        """The cap `scope` that binds `address`: a trusted proxy carries many clients (each limited as itself per
        request), so only the total binds its connections and its slow readers' answers."""
        return None if scope in ("address", "subnet") and in_networks(address, self.proxies) else scope

    def release(self, address: str, connection: Evictable | None = None) -> None:
        self.open.remove(address)
        if connection is not None:
            _discard(self._by_network, subnet_of(address), connection)

    def _make_room(self, address: str) -> bool:
        """Every slot is taken: close the connection quiet longest (`quiet_since`) of the most crowded network that
        holds more than the newcomer's network would with it and has a quiet one. False when none."""
        mine = self.open.by_subnet.get(subnet_of(address), 0) + 1
        crowded = heapq.nlargest(EVICT_NETWORKS, self.open.by_subnet.items(), key=lambda item: item[1])
        for network, held in crowded:
            if held <= mine:
                return False
            quiet = [c for c in self._by_network.get(network, {}) if c.quiet_since is not None]
            if quiet:
                victim = min(quiet, key=lambda c: c.quiet_since or 0.0)
                self.counters["evicted"] += 1
                if self.refusals is not None and victim.address is not None:
                    self.refusals.record(victim.address, f"{self.surface}_connection_evicted")
                victim.evict()
                return True
        return False

    def keep_slow_reader(self, address: str, drained: int, unsent: int, parked: int,
                         reader: SlowReader | None = None) -> str | None:
        """A connection of `address` stayed paused for `write_timeout`: None when it may wait another deadline
        (it drained `drained` bytes meanwhile, at least the least rate, and its `unsent` bytes fit its sources'
        slow-answer budgets, room in the total made if need be: `_make_slow_room`); else the refusal's reason.
        The `parked` bytes granted it before are given back either way, and `unsent` is its grant when None is
        returned (`reader`, if given, may then be evicted for another network's until it is given back)."""
        self.unpark(address, parked, reader)
        if self.write_min_rate <= 0 or drained < self.write_min_rate * self.write_timeout:
            return "write_timeout"
        scope = self._binding(self.slow_answers.over_share(address, unsent), address)
        if scope is None and self.slow_answers.over(address, unsent) == "total" \
                and not self._make_slow_room(address, unsent):
            scope = "total"
        if scope is not None:
            return f"slow_answers_{cap_name(scope)}"
        self.slow_answers.add(address, unsent)
        if reader is not None and unsent > 0:
            self._parked.setdefault(subnet_of(address), {})[reader] = unsent
        return None

    def unpark(self, address: str, parked: int, reader: SlowReader | None = None) -> None:
        """`reader` of `address` gives back the `parked` bytes it was granted."""
        self.slow_answers.remove(address, parked)
        if reader is not None:
            _discard(self._parked, subnet_of(address), reader)

    def _make_slow_room(self, address: str, unsent: int) -> bool:
        """Everyone's slow answers fill the total: the network parking the most (more than the newcomer's would
        with `unsent`) gives up its largest, until `unsent` fits or no such network is left. Whether it fits."""
        answers = self.slow_answers
        mine = answers.by_subnet.get(subnet_of(address), 0) + unsent
        for _ in range(EVICT_SLOW_READERS):
            if answers.held + unsent <= answers.total:
                return True
            if not self._parked:
                return False
            network = max(self._parked, key=lambda net: answers.by_subnet.get(net, 0))
            if answers.by_subnet.get(network, 0) <= mine:
                return False
            readers = self._parked[network]
            victim = max(readers, key=lambda reader: readers[reader])
            self.counters["slow_answers_evicted"] += 1
            victim.evict_slow()
            _discard(self._parked, network, victim)    # if it gave nothing back, it is not asked again
        return answers.held + unsent <= answers.total

    def refused(self, address: str, counter: str, reason: str) -> None:
        self.counters[counter] += 1
        if self.refusals is not None:
            self.refusals.record(address, reason)

    def view(self) -> GuardView:
        return {"open": self.open.held, "max_per_address": self.per_address, "max_per_subnet": self.per_subnet,
                "max_total": self.total, "header_timeout_s": self.header_timeout,
                "body_timeout_s": self.body_timeout, "write_timeout_s": self.write_timeout,
                "write_min_rate": self.write_min_rate, "slow_answer_bytes": self.slow_answer_bytes,
                "slow_answers_parked": self.slow_answers.held, "counters": dict(self.counters)}


def _discard(groups: dict[str, dict[Member, V]], network: str, member: Member) -> None:
    """Take `member` out of its network's group, and the group out once empty."""
    members = groups.get(network)
    if members is not None:
        members.pop(member, None)
        if not members:
            del groups[network]


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the guard's caps and deadlines."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.address: str | None = None
        self.transport: asyncio.Transport | None = None
        self._awaiting_request = True      # between requests: the next byte starts a request's headers
        self._handling = False             # a request's handler is running
        self._headers_due: asyncio.TimerHandle | None = None
        self._body_due: asyncio.TimerHandle | None = None
        self._write_due: asyncio.TimerHandle | None = None
        self._write_mark = 0               # unsent bytes (`unsent_bytes`) when the write deadline was armed
        self._parked = 0                   # of them, granted by the guard's slow-answer budget
        self._cut = False                  # past a deadline: nothing more is read
        self._spoke = False                # the client has sent something
        self._linger: asyncio.TimerHandle | None = None
        self._counted = False              # holds one of the guard's slots
        self._heard = 0.0                  # loop time of the last byte in (or of the last request's end)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)     # uvloop's transports are not asyncio's classes
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else ""
        if not self.guard.admit(address, self):
            self.transport.abort()
            return
        self.address = address
        self._counted = True
        self._heard = asyncio.get_running_loop().time()
        self._arm_header_deadline()         # a connection that sends nothing is as slow as one that trickles
        self.inner.connection_made(transport)

    # --- the deadlines -------------------------------------------------------------------------
    def _arm_header_deadline(self) -> None:
        self._headers_due = asyncio.get_running_loop().call_later(self.guard.header_timeout, self._too_slow,
                                                                  "header")

    def request_started(self, body: StreamReader | None) -> None:
        """A request's headers are complete (its handler starts); `body`, when it has one still arriving."""
        if self.address is None:
            return
        self._cancel("_headers_due")
        self._cancel("_body_due")
        self._awaiting_request = False
        self._handling = True
        if body is not None and not body.is_eof():
            self._body_due = asyncio.get_running_loop().call_later(self.guard.body_timeout, self._too_slow, "body")
            body.on_eof(lambda: self._cancel("_body_due"))

    def handler_done(self, body: StreamReader) -> None:
        """The request's handler returned; the request is over once its body has arrived (aiohttp reads and
        drops what a handler left unread)."""
        self._handling = False
        body.on_eof(self._request_over)

    def _request_over(self) -> None:
        self._awaiting_request = True
        self._heard = asyncio.get_running_loop().time()

    @property
    def quiet_since(self) -> float | None:
        """Since when nothing has come in while no handler was at work on a whole request: idle between requests,
        headers still to come, or a body that stopped arriving. None while a handler works on a request whose
        body is all in (it is doing what was asked), or once the connection holds no slot."""
        if not self._counted or (self._handling and self._body_due is None):
            return None
        return self._heard

    def evict(self) -> None:
        """Give this connection's slot to a newcomer: the slot is freed now and the connection reset (a keep-alive
        client opens a new one for its next request; one that stalled has nothing to lose)."""
        address, transport = self.address, self.transport
        if not self._counted or address is None or transport is None:
            return
        self._cancel("_headers_due")
        self._cancel("_body_due")
        self._cancel("_write_due")
        self._unpark()              # its parked answer goes with it: room for another slow reader now
        self._cut = True
        self._counted = False
        self.guard.release(address, self)
        transport.abort()           # connection_lost follows, and tells aiohttp the usual way

    def _too_slow(self, part: str) -> None:
        setattr(self, "_headers_due" if part == "header" else "_body_due", None)
        address, transport = self.address, self.transport
        if address is None or transport is None or transport.is_closing():
            return
        if not self._spoke:
            # nothing asked at all (a browser's preconnect does that too): closed as idle, not held against anyone
            self.guard.counters["idle_timeouts"] += 1
            transport.close()
            return
        timeout = self.guard.header_timeout if part == "header" else self.guard.body_timeout
        self.guard.refused(address, f"{part}_timeouts", f"{self.guard.surface}_{part}_timeout")
        log.debug("%s connection cut: request %s not complete within %g s", self.guard.surface, part, timeout,
                  extra={"address": address, "reason": f"{part}_timeout"})
        self._cut = True
        if transport.get_write_buffer_size() == 0 and (part == "header" or self._handling):
            content_type, body = self.guard.timeout_answer(part, timeout)
            transport.write(TIMEOUT_ANSWER % (content_type, len(body), body))
        if transport.get_write_buffer_size() or not transport.can_write_eof():
            transport.abort()                       # a client that does not read does not get to hold the socket
            return
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(LINGER, transport.abort)

    def _cancel(self, name: str) -> None:
        handle: asyncio.TimerHandle | None = getattr(self, name)
        if handle is not None:
            handle.cancel()
            setattr(self, name, None)

    # --- aiohttp's protocol, behind the guard ------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.address is None or self._cut:
            return
        self._spoke = True
        self._heard = asyncio.get_running_loop().time()
        if self._awaiting_request and self._headers_due is None:
            self._arm_header_deadline()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.address is None or self._cut:
            return None                             # the transport closes: the cut client has gone
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.address is not None:
            if self._write_due is None:
                self._arm_write_deadline()
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._cancel("_write_due")
        self._unpark()
        if self.address is not None:
            self.inner.resume_writing()

    def _arm_write_deadline(self) -> None:
        self._write_mark = unsent_bytes(self.transport) if self.transport is not None else 0
        self._write_due = asyncio.get_running_loop().call_later(self.guard.write_timeout, self._write_deadline)

    def _unpark(self) -> None:
        if self._parked and self.address is not None:
            self.guard.unpark(self.address, self._parked, self)
        self._parked = 0

    def evict_slow(self) -> None:
        """The guard needs this slow answer's room for another network's: drop it and the connection."""
        if self.address is None or self.transport is None or self._cut:
            return
        if self.guard.refusals is not None:         # counted by the guard (slow_answers_evicted) as it asks
            self.guard.refusals.record(self.address, f"{self.guard.surface}_slow_answer_evicted")
        self._cut = True
        self._cancel("_write_due")
        self._unpark()
        self.transport.abort()

    def _write_deadline(self) -> None:
        """The send buffer stayed full for `write_timeout`: another deadline for a reader that keeps up the least
        rate within its budget (`ConnectionGuard.keep_slow_reader`), else drop the answer and the connection."""
        self._write_due = None
        address, transport = self.address, self.transport
        if address is None or transport is None:
            return
        unsent = unsent_bytes(transport)
        reason = self.guard.keep_slow_reader(address, self._write_mark - unsent, unsent, self._parked, self)
        if reason is None:
            self._parked = unsent
            self._arm_write_deadline()
            return
        self._parked = 0                    # keep_slow_reader gave the grant back before it refused
        counter = "write_timeouts" if reason == "write_timeout" else "slow_answers_over_budget"
        self.guard.refused(address, counter, f"{self.guard.surface}_{reason}")
        log.debug("%s connection cut: %d bytes of answers unsent after %g s (%s)", self.guard.surface, unsent,
                  self.guard.write_timeout, reason, extra={"address": address, "reason": reason})
        self._cut = True
        transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel("_headers_due")
        self._cancel("_body_due")
        self._cancel("_write_due")
        self._cancel("_linger")
        self._unpark()
        if self.address is None:
            return
        if self._counted:
            self._counted = False
            self.guard.release(self.address, self)
        self.address = None
        self.inner.connection_lost(exc)


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard where each request starts and ends (the app's outermost middleware)."""
    transport = request.transport
    guarded = transport.get_protocol() if transport is not None else None
    if not isinstance(guarded, GuardedProtocol):
        return await handler(request)
    guarded.request_started(request.content if request.body_exists else None)
    try:
        return await handler(request)
    finally:
        guarded.handler_done(request.content)


class GuardedSite(web.TCPSite):
    """web.TCPSite whose connections pass through `guard`; its app must have `track_requests` outermost
    (`install_guard`)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port, reuse_address=True)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)          # registers the site with its runner
        handler = self._runner.server
        assert handler is not None
        guard = self.guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: GuardedProtocol(handler(), guard), self._host, self._port, reuse_address=True)


def install_guard(app: web.Application) -> None:
    """Put `track_requests` in front of every other middleware of `app` (call it after they are all in)."""
    app.middlewares.insert(0, track_requests)
