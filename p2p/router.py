"""MessageRouter: unicast (direct, relayed, or held until reachable) and broadcast (deduplicated,
Plumtree eager/lazy push) over the PeerManager's links, with per-type subscribers, per-peer inbound
rate limits and counters.

Envelope of a routed application message (any type a later layer registers, e.g. "order"):
``{"type", "id", "origin", "ts", "hops", ...payload}``; a unicast also carries ``"dst"``. A unicast
that must cross a neighbour travels inside a ``relay`` wrapper whose ``body`` is the encoded message,
so relays need not know the inner type.

Broadcast is Plumtree (Leitao et al., 2007) with one tree per origin: a node pushes the full message
eagerly to its *eager* peers for that origin and announces only the id (``ihave``, batched for
`ihave_interval`) to its *lazy* ones. A copy that arrives twice tells the receiver that link is
redundant for that origin: it moves the sender to lazy and sends ``prune``. An id announced but not
received within the graft timeout is pulled with ``graft``, which also makes that link eager again.
Eager links thus converge to a spanning tree per origin: about one copy per node per message, while
the lazy announcements keep delivery complete when a tree breaks. (One tree shared by all origins is
unstable under uneven delays: duplicates of different origins' messages prune different edges of
the same cycle, which disconnects the tree and sets off graft/prune churn.) `broadcast_mode =
"flood"` pushes to every link instead (for comparison). The graft timeout adapts like a TCP
retransmission timeout to how late eager copies arrive after their announcement (`LatenessEstimator`),
so busy, slow hosts do not set off grafts for messages that are merely on their way. Either way a message is never sent to a
peer known to have it (it sent us the message or announced it).

Verify before forward, blame only the author. Every broadcast type must be declared
(`declare_broadcast`) with a validator, an origin signature (p2p/origin_auth.py), or both; the
router checks a broadcast BEFORE it forwards or handles it, so what fails stops at the first
honest node, and the neighbour that handed it over is penalised: honest nodes never forward what
fails, so that neighbour is its author (or a relay that skipped the checks). A relayed unicast
carries its origin's signature, checked by every relay and by the target; a direct unicast's
`origin` must be the link's own node (PeerManager.on_message). What a subscriber rejects
(ProtocolError) is blamed on the proven author, never on a relay; any other exception in a
subscriber is our bug: reported once with its traceback and counted.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from p2p import messages as m
from p2p.delivery_queue import DeliveryQueue, Held
from p2p.framing import FrameError, MalformedFrame, decode_body, encode_body, encode_frame, frame_body
from p2p.origin_auth import OriginAuth
from p2p.resilience.token_bucket import TokenBucket
from p2p.seen_cache import SeenCache

log = logging.getLogger("p2p.router")

MAX_IDS = 1024  # ids per ihave / graft frame
MAX_HOPS_FIELD = 255
RELAY_MAX_HOPS = 3  # relays a unicast may cross
FLOOD_GAP = 0.25  # drops closer than this belong to one throttling episode
FLOOD_GRACE = 0.3  # a throttling episode this long is a flood: ban
CONTROL_TYPES = ("relay", "ihave", "graft", "prune")
HELD = object()     # a validator's verdict "not yet": delivered here, not forwarded, nobody blamed
INVALID_POINTS = 20.0  # a broadcast that failed its type's validator, handed over by a neighbour


class Outcome(str, Enum):
    DELIVERED = "delivered"  # written to the direct link
    RELAYED = "relayed"  # written to a neighbour that links to the target
    QUEUED = "queued"  # held until the target is reachable (see `on_settled`)
    DROPPED = "dropped"  # not sent; `reason` says why


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    message_id: str | bytes | None = None
    via: str | None = None  # the neighbour a relayed message went through
    reason: str | None = None  # why it was dropped

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.DROPPED

    def as_dict(self) -> dict[str, Any]:
        mid = self.message_id.hex() if isinstance(self.message_id, bytes) else self.message_id
        return {"outcome": self.outcome.value, "id": mid, "via": self.via, "reason": self.reason}


Handler = Callable[[dict, str], None]  # (message, node id of the neighbour it came from)
Validator = Callable[[dict, str], bool]


@dataclass(frozen=True, slots=True)
class BroadcastType:
    """How the router checks a broadcast type before forwarding it."""

    validator: Validator | None
    origin_signed: bool


def is_msg_id(v: Any) -> bool:
    t = type(v)
    return (t is str and 0 < len(v) <= 128) or (t is bytes and 0 < len(v) <= 64)


def new_message_id() -> str:
    return os.urandom(12).hex()


_is_hops = m.is_int(0, MAX_HOPS_FIELD)
_is_pk = m.is_bytes(32, 32)
_is_sig = m.is_bytes(64, 64)
m.register_schema("relay", {"id": is_msg_id, "origin": m.is_node_id, "dst": m.is_node_id, "hops": _is_hops,
                            "body": m.is_bytes(1, 1 << 26), "pk": _is_pk, "sig": _is_sig}, {"ts": m.is_number})
# ihave/graft: parallel lists of message ids and their origins
m.register_schema("ihave", {"ids": m.is_list(MAX_IDS, is_msg_id), "origins": m.is_list(MAX_IDS, m.is_node_id)})
m.register_schema("graft", {"ids": m.is_list(MAX_IDS, is_msg_id), "origins": m.is_list(MAX_IDS, m.is_node_id)})
m.register_schema("prune", {"origin": m.is_node_id})
# "note": a diagnostic broadcast/unicast type used by the debug API, tests and benchmarks.
m.register_schema("note", {"id": is_msg_id, "origin": m.is_node_id},
                  {"payload": lambda v: True, "ts": m.is_number, "hops": _is_hops, "dst": m.is_node_id,
                   "pk": _is_pk, "sig": _is_sig})



def check_envelope(message: dict) -> None:
    """Raise ProtocolError unless the routing fields of a message with an id are well formed."""
    if not (is_msg_id(message["id"]) and m.is_node_id(message.get("origin"))
            and _is_hops(message.get("hops", 0)) and m.is_number(message.get("ts", 0))
            and ("dst" not in message or m.is_node_id(message["dst"]))):
        raise m.ProtocolError("malformed_message", f"{message['type']}.envelope")


class _CacheEntry:
    __slots__ = ("frame", "haves", "expires")

    def __init__(self, frame: bytes, haves: set[str], expires: float) -> None:
        self.frame = frame
        self.haves = haves  # neighbours known to have the message (never sent it again)
        self.expires = expires


class MessageCache:
    """Recent broadcasts as ready-to-send frames (answers grafts), bounded by count and age."""

    def __init__(self, max_size: int = 20_000, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max_size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[Any, _CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, mid: Any, frame: bytes, haves: set[str]) -> _CacheEntry:
        now = self._clock()
        entries = self._entries
        while entries and (len(entries) >= self.max_size or next(iter(entries.values())).expires <= now):
            entries.popitem(last=False)
        entry = entries[mid] = _CacheEntry(frame, haves, now + self.ttl)
        return entry

    def get(self, mid: Any) -> _CacheEntry | None:
        entry = self._entries.get(mid)
        if entry is not None and entry.expires <= self._clock():
            return None
        return entry


class LatenessEstimator:
    """Graft timeout from samples of how long after its first announcement an eagerly pushed copy
    arrived: smoothed mean + 4 x mean deviation (Jacobson/Karels), within [floor, ceiling], drifting
    back to the floor while no late copies are seen."""

    __slots__ = ("floor", "ceiling", "mean", "deviation", "samples")

    def __init__(self, floor: float = 0.12, ceiling: float = 2.0) -> None:
        self.floor = floor
        self.ceiling = ceiling
        self.mean = 0.0
        self.deviation = 0.0
        self.samples = 0

    def observe(self, lateness: float) -> None:
        if self.samples == 0:
            self.mean, self.deviation = lateness, lateness / 2
        else:
            self.deviation += 0.25 * (abs(lateness - self.mean) - self.deviation)
            self.mean += 0.125 * (lateness - self.mean)
        self.samples += 1

    def decay(self, factor: float = 0.95) -> None:
        self.mean *= factor
        self.deviation *= factor

    @property
    def timeout(self) -> float:
        return min(self.ceiling, max(self.floor, self.mean + 4 * self.deviation))


class _Missing:
    """An id announced to us (ihave) that we have not received yet."""

    __slots__ = ("origin", "announcers", "handle", "grafts", "first_at")

    def __init__(self, origin: str, first_at: float) -> None:
        self.first_at = first_at
        self.origin = origin
        self.announcers: list[str] = []
        self.handle: asyncio.TimerHandle | None = None
        self.grafts = 0


class _InboundLimit:
    __slots__ = ("bucket", "episode_start", "last_drop", "drops")

    def __init__(self, rate: float, burst: float) -> None:
        self.bucket = TokenBucket(rate, burst)
        self.episode_start = 0.0
        self.last_drop = -1e9
        self.drops = 0


@dataclass
class RouterCounters:
    sent: dict[str, int] = field(default_factory=dict)  # frames written, per message type
    received: dict[str, int] = field(default_factory=dict)  # frames accepted (after the rate limit), per type
    duplicates: dict[str, int] = field(default_factory=dict)  # copies of already-seen ids, per type
    dropped: dict[str, int] = field(default_factory=dict)  # messages not delivered/sent, per reason
    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys((
        "broadcasts", "forwarded_frames", "suppressed_sends", "unique_broadcasts", "broadcast_copies",
        "delivered_direct", "relayed_out", "relayed", "queued", "flushed", "expired", "hop_limited",
        "ihave_ids_sent", "ihave_ids_received", "grafts_sent", "grafts_served", "prunes_sent", "prunes_received",
        "throttled", "flood_bans", "handler_errors", "delivered_local", "invalid", "rejected", "held"), 0))


def _bump(table: dict[str, int], key: str, n: int = 1) -> None:
    table[key] = table.get(key, 0) + n


class MessageRouter:
    """Routes application messages for one node. Creating it hooks it into the PeerManager
    (message handler, open/close/heartbeat listeners); `start`/`stop` run its housekeeping."""

    def __init__(self, peers: Any, settings: Any = None) -> None:
        def setting(name: str, default: Any) -> Any:
            return getattr(settings, name, default)

        self.peers = peers
        self.node_id: str = peers.node_id
        self.max_frame_bytes: int = setting("max_frame_bytes", 1 << 20)
        self.mode: str = setting("broadcast_mode", "plumtree")
        self.max_hops: int = setting("broadcast_max_hops", 32)
        self.seen = SeenCache(setting("seen_cache_size", 100_000), setting("seen_cache_ttl", 120.0))
        self.cache = MessageCache(max_size=setting("seen_cache_size", 100_000) // 5 or 1, ttl=30.0)
        self.queue = DeliveryQueue(setting("queue_max_messages", 1000), setting("queue_ttl", 60.0))
        self.rate_limit: float = setting("router_rate_limit", 2000.0)
        self.rate_burst: float = setting("router_rate_burst", 4000)
        self.flood_ban_seconds: float = setting("router_flood_ban", 120.0)
        self.ihave_interval = 0.02
        self.lateness = LatenessEstimator(floor=0.1, ceiling=0.25)
        self.graft_retry = 0.06
        self._grafted: OrderedDict[Any, float] = OrderedDict()  # id -> first announcement, for late copies
        self.max_missing = 20_000
        self.max_origins = 10_000  # per-origin trees remembered (least recently used forgotten)
        self.subscribers: dict[str, list[Handler]] = {}
        self.broadcast_types: dict[str, BroadcastType] = {}
        self.auth = OriginAuth.for_peers(peers, max_age=setting("seen_cache_ttl", 120.0) / 2)
        self._undeclared_logged: set[str] = set()
        self.duplicate_listeners: list[Handler] = []  # called with each duplicate copy (diagnostics)
        self._lazy: OrderedDict[str, set[str]] = OrderedDict()  # origin -> neighbours we only announce to
        self.counters = RouterCounters()
        self._inbound: dict[str, _InboundLimit] = {}
        self._pending_ihave: dict[str, list] = {}
        self._ihave_handle: asyncio.TimerHandle | None = None
        self._missing: dict[Any, _Missing] = {}
        self._drains: dict[str, asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []
        self._control = {"relay": self._on_relay, "ihave": self._on_ihave, "graft": self._on_graft,
                         "prune": self._on_prune}
        peers.message_handler = self.on_message
        peers.message_gate = self.admit
        peers.open_listeners.append(self._on_open)
        peers.close_listeners.append(self._on_close)
        peers.heartbeat_listeners.append(self._on_heartbeat)
        self.declare_broadcast("note", origin_signed=True)

    # --- public API -------------------------------------------------------------------------
    def subscribe(self, msg_type: str, handler: Handler) -> None:
        """Call `handler(message, from_node_id)` once per message of `msg_type` handled by this node:
        broadcasts from others and unicasts addressed to us. `from_node_id` is the neighbour it
        arrived from; the author is `message["origin"]`."""
        self.subscribers.setdefault(msg_type, []).append(handler)

    def unsubscribe(self, msg_type: str, handler: Handler) -> None:
        handlers = self.subscribers.get(msg_type, [])
        if handler in handlers:
            handlers.remove(handler)

    def declare_broadcast(self, msg_type: str, *, validator: Validator | None = None,
                          origin_signed: bool = False) -> None:
        """Make `msg_type` a broadcast type. Each needs a way to be checked before it is forwarded:
        `origin_signed` (the router signs ours and verifies others': the origin is proven, the id
        bound to the content), and/or `validator(message, from_node_id) -> bool` for the content
        (a self-authenticating type checks its own signature there, and should derive its id from
        it as `p2p.origin_auth.signed_id` does). What fails is neither handled nor forwarded, and
        the neighbour that sent it is penalised. A validator that returns None cannot judge the
        message yet (it needs state this node does not have): it is handed to the subscribers, who
        may use it, but not forwarded, and nobody is blamed."""
        if msg_type in CONTROL_TYPES:
            raise ValueError(f"{msg_type!r} is a router control type")
        if validator is None and not origin_signed:
            raise ValueError(f"broadcast type {msg_type!r} needs a validator or an origin signature")
        self.broadcast_types[msg_type] = BroadcastType(validator, origin_signed)

    def set_validator(self, msg_type: str, validator: Validator) -> None:
        """Declare `msg_type` with `validator` (keeping an origin signature it was declared with)."""
        known = self.broadcast_types.get(msg_type)
        self.declare_broadcast(msg_type, validator=validator, origin_signed=bool(known and known.origin_signed))

    @property
    def validators(self) -> dict[str, Validator]:
        return {k: t.validator for k, t in self.broadcast_types.items() if t.validator is not None}

    def broadcast(self, message: dict) -> str | bytes:
        """Send `message` (a dict with "type" and payload fields) to the whole network; returns its id.
        The envelope fields are filled in here; this node's own subscribers are not called."""
        kind = message["type"]
        if kind in CONTROL_TYPES or "dst" in message:
            raise ValueError(f"cannot broadcast a {kind!r} message")
        declared = self.broadcast_types.get(kind)
        if declared is None:
            raise ValueError(f"broadcast type {kind!r} is not declared (MessageRouter.declare_broadcast)")
        envelope = self._envelope(message)
        if declared.origin_signed:
            self.auth.sign_broadcast(envelope)
        mid = envelope["id"]
        body = encode_body(envelope)
        if len(body) > self.max_frame_bytes:
            raise ValueError(f"message of {len(body)} bytes exceeds MAX_FRAME_BYTES")
        self.seen.add(mid)
        self.counters.events["broadcasts"] += 1
        self._push(mid, kind, frame_body(body), set(), self.node_id)
        return mid

    def send_to_peer(self, node_id: str, message: dict,
                     on_settled: Callable[[SendResult], None] | None = None) -> SendResult:
        """Send `message` to one node: over our link to it, else through a neighbour that links to it,
        else hold it (bounded, for QUEUE_TTL) until it is reachable. A QUEUED message's final outcome
        is passed to `on_settled` later (delivered/relayed when flushed, dropped when it expires)."""
        kind = message["type"]
        if kind in CONTROL_TYPES:
            raise ValueError(f"cannot send a {kind!r} message")
        envelope = self._envelope(message, dst=node_id)
        mid = envelope["id"]
        if node_id == self.node_id:
            return self._dropped(mid, "to_self")
        if self.queue.pending(node_id):  # keep order behind what is already waiting
            return self._enqueue(node_id, envelope, on_settled)
        try:
            result = self._send_routed(node_id, envelope)
        except FrameError:
            return self._dropped(mid, "too_large")
        return result if result is not None else self._enqueue(node_id, envelope, on_settled)

    def route_for(self, node_id: str) -> tuple[str, Any] | None:
        """("direct", link) or ("relay", neighbour link) or None when the node is unreachable now."""
        links = self.peers.links
        link = links.get(node_id)
        if link is not None and link.is_open:
            return "direct", link
        best = None
        best_rtt = float("inf")
        for link in links.values():
            if node_id in link.remote_links and link.is_open:
                caps = (link.remote_hello or {}).get("capabilities", ("relay",))
                rtt = link.rtt if link.rtt is not None else 1.0
                if "relay" in caps and rtt < best_rtt:
                    best, best_rtt = link, rtt
        return ("relay", best) if best is not None else None

    # --- housekeeping -----------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="router.sweep"))

    async def stop(self) -> None:
        tasks = self._tasks + list(self._drains.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._ihave_handle is not None:
            self._ihave_handle.cancel()
        for missing in self._missing.values():
            if missing.handle is not None:
                missing.handle.cancel()
        self._missing.clear()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.sweep()

    def sweep(self) -> None:
        """Expire queued messages (counted, callers told) and old seen ids."""
        for held in self.queue.expire():
            self.counters.events["expired"] += 1
            self._settle(held, self._dropped(held.message["id"], "expired"))
        self.seen.prune()
        self.lateness.decay()

    # --- PeerManager hooks ------------------------------------------------------------------
    def _on_open(self, link: Any) -> None:
        node_id = link.remote_id
        self._inbound[node_id] = _InboundLimit(self.rate_limit, self.rate_burst)
        self._forget_lazy(node_id)  # new links start eager for every origin; redundant ones get pruned
        if self.queue.pending(node_id):
            self._start_drain(node_id)

    def _on_close(self, link: Any) -> None:
        node_id = link.remote_id
        self._inbound.pop(node_id, None)
        self._forget_lazy(node_id)
        self._pending_ihave.pop(node_id, None)

    def _on_heartbeat(self, link: Any, message: dict) -> None:
        if not self.queue.pending_targets:
            return
        for target in self.queue.targets():
            if target in link.remote_links and target not in self._drains:
                self._start_drain(target)

    # --- receiving --------------------------------------------------------------------------
    def admit(self, link: Any, message: dict) -> bool:
        """PeerManager.message_gate: the per-peer inbound rate limit, asked for every application
        message (also those other layers handle directly). False drops the message."""
        src = link.remote_id
        limit = self._inbound.get(src)
        if limit is None:
            limit = self._inbound[src] = _InboundLimit(self.rate_limit, self.rate_burst)
        if limit.bucket.try_take():
            return True
        self._throttle(link, limit)
        return False

    def on_message(self, link: Any, message: dict) -> None:
        """PeerManager.message_handler: every validated application message no other layer took."""
        src = link.remote_id
        kind = message["type"]
        counters = self.counters
        received = counters.received
        received[kind] = received.get(kind, 0) + 1
        control = self._control.get(kind)
        if control is not None:
            control(link, message)
            return
        if "id" not in message:  # a plain link-local message (no routing): hand it over as is
            self._deliver(message, src, src)
            return
        check_envelope(message)
        if "dst" in message:
            if message["dst"] != self.node_id:
                _bump(counters.dropped, "misaddressed")
                return
            self._on_unicast(message, src, src)  # its origin is this neighbour (PeerManager checked)
        else:
            self._on_broadcast(link, message, kind)

    def _on_broadcast(self, link: Any, message: dict, kind: str) -> None:
        src = link.remote_id
        mid = message["id"]
        events = self.counters.events
        events["broadcast_copies"] += 1
        if mid in self.seen:
            _bump(self.counters.duplicates, kind)
            if self._grafted:
                announced = self._grafted.pop(mid, None)
                if announced is not None:  # the pushed copy after we grafted: how late was it?
                    self.lateness.observe(asyncio.get_running_loop().time() - announced)
            entry = self.cache.get(mid)
            if entry is not None:
                entry.haves.add(src)
            lazy = self.lazy_peers(message["origin"])
            if self.mode == "plumtree" and src not in lazy:
                lazy.add(src)
                link.send({"type": "prune", "origin": message["origin"]})
                events["prunes_sent"] += 1
                _bump(self.counters.sent, "prune")
            for listener in self.duplicate_listeners:
                listener(message, src)
            return
        author = self._check_broadcast(message, kind, src)
        if author is False:
            return
        if author is HELD:
            self.counters.events["held"] += 1
            self._deliver(message, src, message["origin"])
            return
        self.seen.add(mid)
        events["unique_broadcasts"] += 1
        haves = {src}
        missing = self._missing.pop(mid, None)
        if missing is not None:
            if missing.handle is not None:
                missing.handle.cancel()
            haves.update(missing.announcers)
            if missing.grafts == 0:  # pushed to us, later than an announcement
                self.lateness.observe(asyncio.get_running_loop().time() - missing.first_at)
        origin = message["origin"]
        self.lazy_peers(origin).discard(src)  # it is on a path from the origin to us: keep that link eager
        hops = message.get("hops", 0) + 1
        if hops <= self.max_hops:
            forward = message.copy()
            forward["hops"] = hops
            self._push(mid, kind, frame_body(encode_body(forward)), haves, origin)
        else:
            events["hop_limited"] += 1
        self._deliver(message, src, author)

    def _check_broadcast(self, message: dict, kind: str, src: str) -> str | None | bool:
        """Before a broadcast is forwarded or handled: False (dropped) unless its type is declared and
        it passes the origin signature and the validator. Otherwise its proven author (None when
        only the validator vouched for it). A neighbour that sent a forgery loses its link."""
        declared = self.broadcast_types.get(kind)
        if declared is None:
            _bump(self.counters.dropped, "undeclared_type")
            if kind not in self._undeclared_logged:
                self._undeclared_logged.add(kind)
                log.error("dropping broadcasts of type %r: no validator declared for it (a bug of ours)", kind)
            return False
        author = None
        if declared.origin_signed:
            problem = self.auth.check_broadcast(message)
            if problem == "stale":
                _bump(self.counters.dropped, "stale")
                return False
            if problem is not None:
                raise m.ProtocolError("bad_signature", f"{kind} {message['id']!s:.24} not signed by its origin")
            author = message["origin"]
        validator = declared.validator
        if validator is not None:
            try:
                valid = validator(message, src)
            except m.ProtocolError:
                valid = False
            except Exception as exc:  # noqa: BLE001 - a validator's bug: drop the message, blame no one
                self._internal_error(f"router.validator.{kind}", exc)
                _bump(self.counters.dropped, "validator_error")
                return False
            if valid is None:      # cannot be judged yet (e.g. a block ahead of ours): use it, do not forward it
                return HELD
            if not valid:
                self.counters.events["invalid"] += 1
                _bump(self.counters.dropped, "invalid")
                self.peers.penalize(src, INVALID_POINTS, f"invalid {kind}")
                return False
        return author

    def _on_unicast(self, message: dict, src: str, author: str) -> None:
        if not self.seen.add(message["id"]):
            _bump(self.counters.duplicates, message["type"])
            for listener in self.duplicate_listeners:
                listener(message, src)
            return
        self._deliver(message, src, author)

    def _deliver(self, message: dict, src: str, author: str | None) -> None:
        """Hand a message to its subscribers. A subscriber's ProtocolError is the author's fault: the
        neighbour's link closes if it wrote the message itself, else the author (if proven) is
        penalised. Any other exception is our bug."""
        handlers = self.subscribers.get(message["type"])
        if not handlers:
            _bump(self.counters.dropped, "no_subscriber")
            return
        self.counters.events["delivered_local"] += 1
        for handler in handlers:
            try:
                handler(message, src)
            except m.ProtocolError as exc:
                if author == src:
                    raise
                self.counters.events["rejected"] += 1
                _bump(self.counters.dropped, f"rejected:{exc.reason}")
                if author is not None:
                    self.peers.penalize(author, INVALID_POINTS, f"{message['type']}: {exc.reason}")
                return
            except Exception as exc:  # noqa: BLE001
                self.counters.events["handler_errors"] += 1
                self._internal_error(f"router.subscriber.{message['type']}", exc)

    def _internal_error(self, where: str, exc: BaseException) -> None:
        report = getattr(self.peers, "internal_errors", None)
        if report is not None:
            report.report(where, exc)
        else:
            log.error("internal error in %s", where, exc_info=exc)

    # --- relay ------------------------------------------------------------------------------
    def _on_relay(self, link: Any, message: dict) -> None:
        """A unicast crossing us (or arriving through a neighbour): its origin's signature first,
        then the inner message's shape; what the origin signed wrongly is blamed on the origin."""
        counters = self.counters
        if not self.auth.check_relay(message):
            raise m.ProtocolError("bad_signature", f"relay {message['id']!s:.24} not signed by its origin")
        origin, dst, mid = message["origin"], message["dst"], message["id"]
        inner = self._relayed_inner(message)
        if inner is None:
            return
        if dst == self.node_id:
            _bump(counters.received, inner["type"])
            self._on_unicast(inner, link.remote_id, origin)
            return
        if not self.seen.add(mid):
            _bump(counters.duplicates, "relay")
            return
        hops = message["hops"] + 1
        if hops > RELAY_MAX_HOPS:
            _bump(counters.dropped, "relay_hop_limit")
            return
        route = self.route_for(dst)
        if route is None or route[1] is link or route[1].remote_id == origin:
            _bump(counters.dropped, "relay_unreachable")
            return
        forward = message.copy()
        forward["hops"] = hops
        if route[1].send(forward):
            counters.events["relayed"] += 1
            _bump(counters.sent, "relay")

    def _relayed_inner(self, message: dict) -> dict | None:
        """The signed inner message if it is well formed and agrees with its wrapper, else None
        (dropped, the origin penalised: it signed it)."""
        origin = message["origin"]
        try:
            inner = decode_body(message["body"], self.max_frame_bytes)
            kind = inner["type"]
            if kind in CONTROL_TYPES or inner.get("id") != message["id"] or inner.get("origin") != origin \
                    or inner.get("dst") != message["dst"]:
                raise m.ProtocolError("malformed_message", "relay.body does not match its wrapper")
            known = m.validate(inner)
            check_envelope(inner)
        except (MalformedFrame, m.ProtocolError) as exc:
            _bump(self.counters.dropped, "relayed_malformed")
            self.peers.penalize(origin, INVALID_POINTS, f"relayed {getattr(exc, 'reason', 'malformed')}")
            return None
        if not known and message["dst"] == self.node_id:
            _bump(self.counters.dropped, "relayed_unknown")
            return None
        if self.auth.staleness(inner):
            _bump(self.counters.dropped, "stale")
            return None
        return inner

    # --- Plumtree lazy push -----------------------------------------------------------------
    def lazy_peers(self, origin: str) -> set[str]:
        """Neighbours that only get ids (not messages) of `origin`'s broadcasts from us (live set)."""
        lazy = self._lazy.get(origin)
        if lazy is None:
            lazy = self._lazy[origin] = set()
            if len(self._lazy) > self.max_origins:
                self._lazy.popitem(last=False)
        else:
            self._lazy.move_to_end(origin)
        return lazy

    def _forget_lazy(self, node_id: str) -> None:
        for lazy in self._lazy.values():
            lazy.discard(node_id)

    def _push(self, mid: Any, kind: str, frame: bytes, haves: set[str], origin: str) -> None:
        """Send a broadcast frame to eager neighbours, announce it to lazy ones, skip those that have it."""
        self.cache.put(mid, frame, haves)
        lazy = self.lazy_peers(origin)
        sent = suppressed = 0
        for node_id, link in self.peers.links.items():
            if node_id in haves:
                suppressed += 1
            elif node_id in lazy:
                pending = self._pending_ihave.get(node_id)
                if pending is None:
                    self._pending_ihave[node_id] = [(mid, origin)]
                else:
                    pending.append((mid, origin))
            elif link.send_frame(frame):
                sent += 1
        if self._pending_ihave and self._ihave_handle is None:
            self._ihave_handle = asyncio.get_running_loop().call_later(self.ihave_interval, self._flush_ihave)
        events = self.counters.events
        events["forwarded_frames"] += sent
        events["suppressed_sends"] += suppressed
        _bump(self.counters.sent, kind, sent)

    def _flush_ihave(self) -> None:
        self._ihave_handle = None
        pending, self._pending_ihave = self._pending_ihave, {}
        links = self.peers.links
        cache = self.cache
        for node_id, ids in pending.items():
            link = links.get(node_id)
            if link is None:
                continue
            fresh = []
            for item in ids:
                entry = cache.get(item[0])
                if entry is not None and node_id not in entry.haves:
                    fresh.append(item)
            for start in range(0, len(fresh), MAX_IDS):
                chunk = fresh[start:start + MAX_IDS]
                link.send({"type": "ihave", "ids": [mid for mid, _ in chunk], "origins": [o for _, o in chunk]})
                self.counters.events["ihave_ids_sent"] += len(chunk)
                _bump(self.counters.sent, "ihave")

    def _on_ihave(self, link: Any, message: dict) -> None:
        src = link.remote_id
        ids = message["ids"]
        origins = message["origins"]
        if len(origins) != len(ids):
            raise m.ProtocolError("malformed_message", "ihave.origins")
        self.counters.events["ihave_ids_received"] += len(ids)
        loop = None
        for mid, origin in zip(ids, origins):
            entry = self.cache.get(mid)
            if entry is not None:
                entry.haves.add(src)
                continue
            if mid in self.seen:
                continue
            missing = self._missing.get(mid)
            if missing is None:
                if len(self._missing) >= self.max_missing:
                    continue
                loop = loop or asyncio.get_running_loop()
                missing = self._missing[mid] = _Missing(origin, loop.time())
                missing.handle = loop.call_later(self.lateness.timeout, self._graft_due, mid)
            if src not in missing.announcers:
                missing.announcers.append(src)

    def _graft_due(self, mid: Any) -> None:
        """An announced id has not arrived in time: pull it from the next announcer, eagerly from now on."""
        missing = self._missing.get(mid)
        if missing is None:
            return
        missing.handle = None
        if mid in self.seen:
            del self._missing[mid]
            return
        links = self.peers.links
        while missing.grafts < len(missing.announcers):
            node_id = missing.announcers[missing.grafts]
            missing.grafts += 1
            link = links.get(node_id)
            if link is None:
                continue
            self.lazy_peers(missing.origin).discard(node_id)
            link.send({"type": "graft", "ids": [mid], "origins": [missing.origin]})
            if missing.grafts == 1:
                self._grafted[mid] = missing.first_at
                if len(self._grafted) > 1000:
                    self._grafted.popitem(last=False)
            self.counters.events["grafts_sent"] += 1
            _bump(self.counters.sent, "graft")
            missing.handle = asyncio.get_running_loop().call_later(self.graft_retry, self._graft_due, mid)
            return
        del self._missing[mid]
        _bump(self.counters.dropped, "graft_exhausted")

    def _on_graft(self, link: Any, message: dict) -> None:
        src = link.remote_id
        for origin in set(message["origins"]):
            self.lazy_peers(origin).discard(src)
        for mid in message["ids"]:
            entry = self.cache.get(mid)
            if entry is not None and link.send_frame(entry.frame):
                self.counters.events["grafts_served"] += 1
            else:
                _bump(self.counters.dropped, "graft_unknown")

    def _on_prune(self, link: Any, message: dict) -> None:
        self.counters.events["prunes_received"] += 1
        if self.mode == "plumtree":
            self.lazy_peers(message["origin"]).add(link.remote_id)

    # --- inbound rate limit -----------------------------------------------------------------
    def _throttle(self, link: Any, limit: _InboundLimit) -> None:
        now = time.monotonic()
        if now - limit.last_drop > FLOOD_GAP:
            limit.episode_start = now
            limit.drops = 0
            log.info("throttling peer %s: over %g messages/s", (link.remote_id or "?")[:12], self.rate_limit)
        limit.last_drop = now
        limit.drops += 1
        self.counters.events["throttled"] += 1
        _bump(self.counters.dropped, "throttled")
        if now - limit.episode_start >= FLOOD_GRACE:
            self.counters.events["flood_bans"] += 1
            log.warning("peer %s flooded past %g messages/s for %.1fs (%d dropped): disconnecting, banned %gs",
                        (link.remote_id or "?")[:12], self.rate_limit, now - limit.episode_start, limit.drops,
                        self.flood_ban_seconds)
            self.peers.ban(link.remote_id, self.flood_ban_seconds, "flood")
            if link.is_open:  # ban() closes known peers; make sure of it
                link.close("banned", "flood")

    # --- unicast sending --------------------------------------------------------------------
    def _envelope(self, message: dict, dst: str | None = None) -> dict:
        envelope = dict(message)
        envelope.setdefault("id", new_message_id())
        envelope["origin"] = self.node_id
        envelope.setdefault("ts", time.time())
        envelope["hops"] = 0
        if dst is not None:
            envelope["dst"] = dst
        return envelope

    def _send_routed(self, node_id: str, envelope: dict) -> SendResult | None:
        """Send now if there is a route; None when there is none (or its link just closed)."""
        route = self.route_for(node_id)
        if route is None:
            return None
        how, link = route
        kind = envelope["type"]
        if how == "direct":
            if not link.send_frame(encode_frame(envelope, self.max_frame_bytes)):
                return None
            self.counters.events["delivered_direct"] += 1
            _bump(self.counters.sent, kind)
            return SendResult(Outcome.DELIVERED, envelope["id"], node_id)
        wrapper = {"type": "relay", "id": envelope["id"], "origin": self.node_id, "dst": node_id, "hops": 0,
                   "ts": envelope["ts"], "body": encode_body(envelope)}
        self.auth.sign_relay(wrapper)
        if not link.send_frame(encode_frame(wrapper, self.max_frame_bytes)):
            return None
        self.counters.events["relayed_out"] += 1
        _bump(self.counters.sent, "relay")
        return SendResult(Outcome.RELAYED, envelope["id"], link.remote_id)

    def _enqueue(self, node_id: str, envelope: dict, on_settled: Callable[[SendResult], None] | None) -> SendResult:
        accepted, evicted = self.queue.put(node_id, envelope, on_settled)
        if not accepted:
            return self._dropped(envelope["id"], "too_many_queues")
        if evicted is not None:
            self._settle(evicted, self._dropped(evicted.message["id"], "queue_full"))
        self.counters.events["queued"] += 1
        if node_id not in self._drains and self.route_for(node_id) is not None:
            self._start_drain(node_id)
        return SendResult(Outcome.QUEUED, envelope["id"])

    def _dropped(self, mid: Any, reason: str) -> SendResult:
        _bump(self.counters.dropped, reason)
        return SendResult(Outcome.DROPPED, mid, reason=reason)

    @staticmethod
    def _settle(held: Held, result: SendResult) -> None:
        if held.on_settled is not None:
            try:
                held.on_settled(result)
            except Exception:
                log.exception("on_settled callback failed")

    def _start_drain(self, target: str) -> None:
        if target in self._drains:
            return
        self.queue.start_drain(target)
        self._drains[target] = asyncio.get_running_loop().create_task(self._drain(target), name="router.drain")

    async def _drain(self, target: str) -> None:
        """Flush a target's queue at its warm-up rate while it stays reachable."""
        try:
            while self.queue.pending(target):
                if self.route_for(target) is None:
                    return  # unreachable again: keep holding; a later open/heartbeat restarts us
                ready, expired, wait = self.queue.take(target)
                for held in expired:
                    self.counters.events["expired"] += 1
                    self._settle(held, self._dropped(held.message["id"], "expired"))
                for n, held in enumerate(ready):
                    try:
                        result = self._send_routed(target, held.message)
                    except FrameError:
                        result = self._dropped(held.message["id"], "too_large")
                    if result is None:
                        self.queue.requeue_front(target, ready[n:])
                        return
                    self.counters.events["flushed"] += 1
                    self._settle(held, result)
                if wait:
                    await asyncio.sleep(wait)
        finally:
            self._drains.pop(target, None)

    # --- reporting --------------------------------------------------------------------------
    @property
    def amplification(self) -> float | None:
        """Copies received per unique broadcast received (1.0 is ideal; flooding gives about the degree)."""
        events = self.counters.events
        unique = events["unique_broadcasts"]
        return round(events["broadcast_copies"] / unique, 4) if unique else None

    def stats(self) -> dict[str, Any]:
        counters = self.counters
        links = self.peers.links
        # nodes we reach only through a neighbour (as their heartbeats report), for operators and tests
        relay_targets = set().union(*(link.remote_links for link in links.values() if link.is_open))
        relay_targets -= set(links)
        relay_targets.discard(self.peers.node_id)
        return {
            "mode": self.mode, "sent": dict(counters.sent), "received": dict(counters.received),
            "duplicates": dict(counters.duplicates), "dropped": dict(counters.dropped),
            "events": dict(counters.events), "amplification": self.amplification,
            "trees": len(self._lazy),
            "lazy_links": sum(len(lazy) for lazy in self._lazy.values()),
            "links": len(links),
            "relay_reach": len(relay_targets), "relay_targets": sorted(relay_targets)[:256],
            "missing": len(self._missing), "graft_timeout": round(self.lateness.timeout, 3),
            "seen_cache": {"size": len(self.seen), "max_size": self.seen.max_size, "ttl": self.seen.ttl,
                           "evicted": self.seen.evicted, "expired": self.seen.expired},
            "message_cache": len(self.cache),
            "queue": {"messages": len(self.queue), "targets": self.queue.pending_targets,
                      "draining": len(self._drains)},
            "rate_limit": {"rate": self.rate_limit, "burst": self.rate_burst},
        }
