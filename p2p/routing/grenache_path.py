"""GrenachePath: routed messages over Grenache HTTP RPC, for nodes that share a Grape but no link.

Each node serves one Grenache HTTP endpoint (grenache-nodejs-http's wire format,
p2p/grenache/rpc.py) with two service names, announced on the Grape:

- `<GRAPE_SERVICE>:msg:<node id>` takes unicasts addressed to that node. A caller over HTTP has no
  authenticated link, so each one travels as a `relay` wrapper signed by its origin
  (p2p/origin_auth.py), checked as a relayed unicast from a neighbour is;
- `<GRAPE_SERVICE>:msg`, shared by every node, takes broadcasts (each checked like any copy: declared
  type, origin signature and/or validator, deduplicated by id) and answers `{"op": "hello"}` with
  the node's id, which is how a node learns who is behind each address it looks up.

A request is the JSON payload `{"v": 1, "frames": ["<base64 msgpack>", ...]}`; the answer is
`{"accepted": n, "refused": {reason: count}}` or a Grenache error string. The endpoint is public, so
each client gets a share (p2p/grenache/limits.py, counted in frames: a request's frames are charged to
its address, its network and everyone's total) and its connections pass a guard; a client past its
share gets HTTP 429 "ERR_BUSY" before its request is read.

Outgoing messages wait in a per-node outbox and leave in batches, one request in flight per node, so
their order holds. A batch answered ERR_BUSY is sent again once the node's share for us has had time to refill
(BUSY_WAIT, doubling, BUSY_TRIES times): the node is there, and giving it up would send its unicasts elsewhere
and its broadcast copies nowhere. A unicast whose request fails otherwise goes back to the router (which
holds it in its queue) and that node's address is looked up afresh after a pause; broadcast copies
are best effort (the links and anti-entropy carry the rest).

The Grape is only a directory: when it dies, the addresses already known keep working, and nodes
with links never needed it.
"""
from __future__ import annotations

import asyncio
import functools
import base64
import binascii
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, TypedDict

from p2p.messages import Message
from p2p import messages as m
from p2p.delivery_queue import Held
from p2p.framing import MalformedFrame, decode_body
from p2p.grenache.grape import GrapeClient, GrapeError
from p2p.grenache.limits import BODY_UNIT_BYTES, GrenacheLimits, LimitsView, ServerLimits
from p2p.grenache.rpc import GrenacheError, GrenacheHTTPClient, GrenacheHTTPServer, GrenacheRemoteError
from p2p.resilience.backoff import Backoff

log = logging.getLogger("p2p.router.grenache")

VERSION = 1
MAX_FRAMES = 256            # frames per request
BATCH_BYTES = 512 * 1024    # base64 text per request (a single larger frame goes alone)
HELLO_TTL = 30.0            # s an address's hello answer is trusted
MAX_OUTBOX = 10_000         # frames waiting for one node
BUSY_WAIT = 0.5             # s before a batch answered ERR_BUSY is sent again (doubling each time, at most ...)
BUSY_WAIT_MAX = 4.0         # ... this long; after BUSY_TRIES busy answers in a row the node counts as failing
BUSY_TRIES = 4

Address = tuple[str, int]
Delivered = Callable[[str, list[Held]], None]   # (node id, tickets of the unicasts sent or failed, in order)
Posted = Literal["sent", "busy", "failed"]      # a batch taken; refused before its rate (ERR_BUSY); not taken


def unicast_name(service: str, node_id: str) -> str:
    return f"{service}:msg:{node_id}"


def broadcast_name(service: str) -> str:
    return f"{service}:msg"


def encode_frames(frames: Iterable[bytes]) -> list[str]:
    return [base64.b64encode(frame).decode("ascii") for frame in frames]


class GrenachePathStats(TypedDict):
    port: int | None
    names: list[str]                 # the Grape names we serve unicasts and broadcasts on
    grape: str                       # "up" or "down"
    members: list[str]
    failing: list[str]               # members we are backing off from
    outbox: int                      # unicasts waiting to go
    counters: dict[str, int]
    refused: dict[str, int]          # frames refused, by reason
    limits: LimitsView               # requests refused by a client's share, and by whom


@dataclass
class _Outbox:
    unicasts: deque[tuple[bytes, Held]] = field(default_factory=deque)     # (frame, the sender's ticket, not read here)
    broadcasts: deque[bytes] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self.unicasts) + len(self.broadcasts)


class GrenachePath:
    """See the module docstring. `accept_unicast(wrapper)` / `accept_broadcast(message)` take one
    decoded, schema-checked frame and return None or why it was refused; `delivered` / `failed`
    get back the tickets of unicasts handed to `send_unicast`; `reachable_again(node_id)` is
    called when a node's address is (again) known."""

    def __init__(self, *, node_id: str, network_id: str, grape: GrapeClient, service: str, host: str, port: int,
                 max_frame_bytes: int, accept_unicast: Callable[[Message], str | None],
                 accept_broadcast: Callable[[Message], str | None], delivered: Delivered, failed: Delivered,
                 reachable_again: Callable[[str], None], report: Callable[[str, BaseException], None],
                 schemas: m.Schemas, announce_interval: float = 30.0,
                 refresh_interval: float = 2.0, lookup_ttl: float = 10.0, negative_ttl: float = 2.0,
                 request_timeout: float = 5.0, limits: GrenacheLimits,
                 http: GrenacheHTTPClient | None = None, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.node_id = node_id
        self.network_id = network_id
        self.schemas = schemas
        self.grape = grape
        self.service = service
        self.unicast_key = unicast_name(service, node_id)
        self.broadcast_key = broadcast_name(service)
        self.max_frame_bytes = max_frame_bytes
        self._accept_unicast = accept_unicast
        self._accept_broadcast = accept_broadcast
        self._delivered = delivered
        self._failed = failed
        self._reachable_again = reachable_again
        self._report = report
        self.announce_interval = announce_interval
        self.refresh_interval = refresh_interval
        self.lookup_ttl = lookup_ttl
        self.negative_ttl = negative_ttl
        self.request_timeout = request_timeout
        self.clock = clock
        self.rng = rng or random.Random()
        self.http = http or GrenacheHTTPClient(timeout=request_timeout)
        max_body = 2 * max_frame_bytes + (1 << 20)   # base64 of the largest frame, and some
        self.limits = ServerLimits(limits, "grenache_msg", "frames", clock=clock)
        self.server = GrenacheHTTPServer({self.unicast_key: self._on_unicast_request,
                                          self.broadcast_key: self._on_broadcast_request},
                                         host, port, max_body_bytes=max_body, handler_timeout=10.0,
                                         limits=self.limits, cost=frames_in, max_cost=MAX_FRAMES,
                                         unit_bytes=BODY_UNIT_BYTES)
        self.port: int | None = None
        self.members: dict[str, Address] = {}                       # node id -> address (shared name)
        self._hellos: dict[Address, tuple[str | None, float]] = {}  # address -> (node id or None, when)
        self._resolved: dict[str, tuple[Address | None, float]] = {}  # node id -> (address or None, expires)
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._failing: dict[str, tuple[float, Backoff]] = {}        # node id -> (until, its backoff)
        self._outboxes: dict[str, _Outbox] = {}
        self._task: asyncio.Task[None] | None = None
        self._announced_at = -1e18
        self._grape_down_since: float | None = None
        self._send_failures_logged: set[str] = set()
        self.counters: dict[str, int] = dict.fromkeys((
            "requests_sent", "requests_failed", "unicasts_sent", "unicasts_failed", "broadcasts_sent",
            "broadcasts_failed", "outbox_full", "requests_received", "frames_received", "frames_refused",
            "lookups", "lookup_failures", "announces", "announce_failures", "hellos", "busy_waits"), 0)
        self.refused: dict[str, int] = {}

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen and begin announcing and looking up (a Grape that is down is retried, never fatal)."""
        self.port = await self.server.start()
        log.info("routed messages over Grenache on port %d as %r", self.port, self.unicast_key)
        self._task = asyncio.create_task(self._refresh_loop(), name="router.grenache")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._resolving.values(),
                             *(box.task for box in self._outboxes.values())) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        await self.server.stop()
        await self.http.close()
        await self.grape.close()

    @property
    def running(self) -> bool:
        return self._task is not None

    # --- directory --------------------------------------------------------------------------
    def address_of(self, node_id: str) -> Address | None:
        """Where `node_id` takes messages, if known and not failing right now."""
        failing = self._failing.get(node_id)
        if failing is not None and failing[0] > self.clock():
            return None
        resolved = self._resolved.get(node_id)
        if resolved is not None and resolved[0] is not None and resolved[1] > self.clock():
            return resolved[0]
        return self.members.get(node_id)

    def is_member(self, node_id: str) -> bool:
        return node_id in self.members

    def want(self, node_id: str) -> None:
        """Look `node_id` up on the Grape soon (unless it is known, being looked up, or was just missing)."""
        if self._task is None or node_id == self.node_id or node_id in self._resolving \
                or self.address_of(node_id) is not None:
            return
        now = self.clock()
        resolved = self._resolved.get(node_id)
        failing = self._failing.get(node_id)
        if (resolved is not None and resolved[0] is None and resolved[1] > now) or (failing and failing[0] > now):
            return
        task = asyncio.get_running_loop().create_task(self._resolve(node_id), name="router.grenache.lookup")
        self._resolving[node_id] = task
        task.add_done_callback(functools.partial(_forget, self._resolving, node_id))

    async def _resolve(self, node_id: str) -> None:
        self.counters["lookups"] += 1
        try:
            addresses = await self.grape.lookup(unicast_name(self.service, node_id))
        except GrapeError as exc:
            self.counters["lookup_failures"] += 1
            self._grape_failing(exc)
            self._resolved[node_id] = (None, self.clock() + self.negative_ttl)
            return
        self._grape_back()
        for address in addresses:
            if await self._identify(address) == node_id:
                self._resolved[node_id] = (address, self.clock() + self.lookup_ttl)
                self._reachable_again(node_id)
                return
        self._resolved[node_id] = (None, self.clock() + self.negative_ttl)

    async def _identify(self, address: Address) -> str | None:
        """The node id behind `address` on our network (its hello), cached HELLO_TTL seconds."""
        known = self._hellos.get(address)
        now = self.clock()
        if known is not None and now - known[1] < HELLO_TTL:
            return known[0]
        self.counters["hellos"] += 1
        node_id = None
        try:
            answer = await self.http.request(address, self.broadcast_key, {"v": VERSION, "op": "hello"},
                                             self.request_timeout)
        except GrenacheError:
            # busy (past its share of a loaded endpoint), slow or unreachable says nothing of who is there: not
            # remembered, asked again at the next refresh (cached as nobody, one busy answer dropped the node
            # from our members for HELLO_TTL)
            return known[0] if known is not None else None
        if isinstance(answer, dict) and answer.get("network") == self.network_id and m.is_node_id(answer.get("node_id")):
            node_id = answer["node_id"]
        self._hellos[address] = (node_id, now)
        if len(self._hellos) > 4096:
            self._hellos.pop(next(iter(self._hellos)))
        return node_id

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug of ours must not end the path
                log.exception("grenache path: refresh failed")
            await asyncio.sleep(self.refresh_interval * self.rng.uniform(0.9, 1.1))

    async def _refresh(self) -> None:
        """Announce both names when due, then learn who serves the shared name."""
        now = self.clock()
        if self.port is not None and now - self._announced_at >= self.announce_interval:
            port = self.port
            try:
                for name in (self.unicast_key, self.broadcast_key):
                    await self.grape.announce(name, port)
                self.counters["announces"] += 1
                self._announced_at = now
            except GrapeError as exc:
                self.counters["announce_failures"] += 1
                self._grape_failing(exc)
                return
        self.counters["lookups"] += 1
        try:
            addresses = await self.grape.lookup(self.broadcast_key)
        except GrapeError as exc:
            self.counters["lookup_failures"] += 1
            self._grape_failing(exc)
            return
        if self._grape_down_since is not None:
            self._announced_at = -1e18  # a restarted grape has forgotten us: announce again at once
        self._grape_back()
        ids = await asyncio.gather(*(self._identify(address) for address in addresses[:100]))
        members = {node_id: address for node_id, address in zip(ids, addresses)
                   if node_id is not None and node_id != self.node_id}
        new = set(members) - set(self.members)
        self.members = members
        for node_id in new:
            self._reachable_again(node_id)

    def _grape_failing(self, exc: Exception) -> None:
        if self._grape_down_since is None:
            self._grape_down_since = self.clock()
            log.warning("grenache path: grape failing (%s); known addresses stay in use", exc,
                        extra={"address": self.grape.current_url, "reason": "grape_unreachable"})

    def _grape_back(self) -> None:
        if self._grape_down_since is not None:
            log.info("grenache path: grape reachable again after %.1fs", self.clock() - self._grape_down_since,
                     extra={"address": self.grape.current_url})
            self._grape_down_since = None

    # --- sending ----------------------------------------------------------------------------
    def send_unicast(self, node_id: str, frame: bytes, ticket: Held) -> bool:
        """Queue the encoded relay wrapper `frame` for `node_id`; the ticket comes back through
        `delivered` or `failed`. False (nothing queued) when its address is unknown or the outbox is full."""
        if self.address_of(node_id) is None:
            return False
        box = self._outboxes.get(node_id) or self._outboxes.setdefault(node_id, _Outbox())
        if len(box) >= MAX_OUTBOX:
            self.counters["outbox_full"] += 1
            return False
        box.unicasts.append((frame, ticket))
        self._kick(node_id, box)
        return True

    def fan_out(self, frame: bytes, origin: str, exclude: set[str]) -> int:
        """Queue a broadcast copy for every member not in `exclude` (nor its origin); how many."""
        queued = 0
        for node_id in self.members:
            if node_id in exclude or node_id == origin or self.address_of(node_id) is None:
                continue
            box = self._outboxes.get(node_id) or self._outboxes.setdefault(node_id, _Outbox())
            if len(box) >= MAX_OUTBOX:
                self.counters["outbox_full"] += 1
                continue
            box.broadcasts.append(frame)
            self._kick(node_id, box)
            queued += 1
        return queued

    def pending(self, node_id: str) -> int:
        box = self._outboxes.get(node_id)
        return len(box) if box is not None else 0

    def _kick(self, node_id: str, box: _Outbox) -> None:
        if box.task is None:
            box.task = asyncio.get_running_loop().create_task(self._send_loop(node_id, box), name="router.grenache.send")

    async def _send_loop(self, node_id: str, box: _Outbox) -> None:
        busy = 0        # ERR_BUSY answers in a row: the node is there, its share for us is spent for now
        try:
            while box.unicasts or box.broadcasts:
                address = self.address_of(node_id)
                if address is None:
                    self._give_up(node_id, box)
                    return
                unicast = bool(box.unicasts)
                queue = box.unicasts if unicast else box.broadcasts
                batch = self._take(queue, unicast)
                frames = [item[0] for item in batch] if unicast else batch
                key = unicast_name(self.service, node_id) if unicast else self.broadcast_key
                outcome = await self._post(node_id, address, key, frames)
                if outcome == "sent":
                    busy = 0
                    self._send_failures_logged.discard(node_id)
                    self._failing.pop(node_id, None)
                    if unicast:
                        self.counters["unicasts_sent"] += len(batch)
                        self._delivered(node_id, [ticket for _, ticket in batch])
                    else:
                        self.counters["broadcasts_sent"] += len(batch)
                    continue
                if outcome == "busy" and busy < BUSY_TRIES:
                    # refused unread before its rate: the same batch again once its share has refilled, the
                    # node kept as it is (dropping it would send its unicasts elsewhere and its copies nowhere)
                    queue.extendleft(reversed(batch))
                    busy += 1
                    self.counters["busy_waits"] += 1
                    await asyncio.sleep(min(BUSY_WAIT_MAX, BUSY_WAIT * 2 ** (busy - 1)))
                    continue
                busy = 0
                if unicast:
                    box.unicasts.extendleft(reversed(batch))
                else:
                    self.counters["broadcasts_failed"] += len(batch)
                self._mark_failing(node_id, address)
        finally:
            if box.task is asyncio.current_task():
                box.task = None
            if not box.unicasts and not box.broadcasts and self._outboxes.get(node_id) is box:
                del self._outboxes[node_id]

    @staticmethod
    def _take(queue: deque[Any], unicast: bool) -> list[Any]:
        batch: list[Any] = []
        size = 0
        while queue and len(batch) < MAX_FRAMES:
            frame = queue[0][0] if unicast else queue[0]
            if batch and size + len(frame) * 4 // 3 > BATCH_BYTES:
                break
            batch.append(queue.popleft())
            size += len(frame) * 4 // 3
        return batch

    async def _post(self, node_id: str, address: Address, key: str, frames: list[bytes]) -> Posted:
        self.counters["requests_sent"] += 1
        try:
            answer = await self.http.request(address, key, {"v": VERSION, "frames": encode_frames(frames)},
                                             self.request_timeout)
        except GrenacheError as exc:
            self.counters["requests_failed"] += 1
            if exc.code == "ERR_BUSY":
                return "busy"
            if node_id not in self._send_failures_logged:
                self._send_failures_logged.add(node_id)
                log.info("grenache path to %s failing: %s", node_id[:12], exc,
                         extra={"peer": node_id, "address": f"{address[0]}:{address[1]}", "reason": exc.code})
            return "failed"
        return "sent" if isinstance(answer, dict) else "failed"

    def _mark_failing(self, node_id: str, address: Address) -> None:
        """Not this address for a while (full-jitter backoff per node); look it up afresh after."""
        now = self.clock()
        _, backoff = self._failing.get(node_id) or (0.0, Backoff(base=0.5, cap=30.0, rng=self.rng))
        self._failing[node_id] = (now + max(0.05, backoff.next_delay()), backoff)
        self._resolved.pop(node_id, None)
        self._hellos.pop(address, None)
        self.members.pop(node_id, None)

    def _give_up(self, node_id: str, box: _Outbox) -> None:
        """No address for `node_id` now: its unicasts go back to the router, broadcast copies are dropped."""
        tickets = [ticket for _, ticket in box.unicasts]
        self.counters["unicasts_failed"] += len(tickets)
        self.counters["broadcasts_failed"] += len(box.broadcasts)
        box.unicasts.clear()
        box.broadcasts.clear()
        if tickets:
            self._failed(node_id, tickets)

    # --- receiving --------------------------------------------------------------------------
    async def _on_unicast_request(self, payload: Any) -> dict[str, Any]:
        return self._receive(payload, self._accept_unicast)

    async def _on_broadcast_request(self, payload: Any) -> dict[str, Any]:
        if isinstance(payload, dict) and payload.get("op") == "hello":
            return {"v": VERSION, "node_id": self.node_id, "network": self.network_id}
        return self._receive(payload, self._accept_broadcast)

    def _receive(self, payload: Any, accept: Callable[[Message], str | None]) -> dict[str, Any]:
        """Check and hand over each frame of a request; a bad frame is refused, never raised."""
        self.counters["requests_received"] += 1
        if not isinstance(payload, dict) or payload.get("v") != VERSION:
            raise GrenacheRemoteError("ERR_VERSION", "expected {\"v\": 1, \"frames\": [...]}")
        frames = payload.get("frames")
        if not isinstance(frames, list) or not 0 < len(frames) <= MAX_FRAMES:
            raise GrenacheRemoteError("ERR_REQUEST_INVALID", f"frames: a list of 1..{MAX_FRAMES}")
        accepted = 0
        refused: dict[str, int] = {}
        limit = self.max_frame_bytes * 4 // 3 + 4
        for text in frames:
            reason = self._one(text, limit, accept)
            if reason is None:
                accepted += 1
            else:
                refused[reason] = refused.get(reason, 0) + 1
                if reason in self.refused or len(self.refused) < 64:
                    self.refused[reason] = self.refused.get(reason, 0) + 1
        self.counters["frames_received"] += accepted
        self.counters["frames_refused"] += len(frames) - accepted
        return {"accepted": accepted, "refused": refused}

    def _one(self, text: Any, limit: int, accept: Callable[[Message], str | None]) -> str | None:
        if not isinstance(text, str) or len(text) > limit:
            return "malformed"
        try:
            message = decode_body(base64.b64decode(text, validate=True), self.max_frame_bytes)
            if not self.schemas.validate(message):
                return "unknown_type"
            return accept(message)
        except (binascii.Error, ValueError, MalformedFrame):
            return "malformed"
        except m.ProtocolError as exc:
            return str(exc.reason)          # a plain str: it keys JSON counts
        except Exception as exc:  # noqa: BLE001 - our bug: reported, the frame refused, the request answered
            self._report("router.grenache.receive", exc)
            return "internal_error"

    # --- reporting --------------------------------------------------------------------------
    def stats(self) -> GrenachePathStats:
        now = self.clock()
        return {
            "port": self.port, "names": [self.unicast_key, self.broadcast_key],
            "grape": "down" if self._grape_down_since is not None else "up",
            "members": sorted(self.members), "failing": sorted(n for n, (until, _) in self._failing.items() if until > now),
            "outbox": sum(len(box) for box in self._outboxes.values()),
            "counters": dict(self.counters), "refused": dict(self.refused), "limits": self.limits.view(),
        }


def frames_in(payload: object) -> int:
    """What a request is worth in the endpoint's limits: its frames (1 for a hello, or one it refuses as invalid)."""
    frames = payload.get("frames") if isinstance(payload, dict) else None
    return len(frames) if isinstance(frames, list) and 0 < len(frames) <= MAX_FRAMES else 1


def _forget(pending: dict[str, Any], key: str, _done: object) -> None:
    """A done-callback that drops `key` (bound when the task was made) from `pending`."""
    pending.pop(key, None)
