"""PeerManager: the peer table, link admission, dialling with backoff, heartbeats, bans.

It owns every PeerLink (as their LinkHost), keeps known addresses (AddressBook) apart from
live links, holds the node between its target and maximum link counts, and paces dials with a
token bucket so a restart with hundreds of remembered peers never storms.

Admission counts from the moment a connection exists, not from its hello: MAX_PEERS bounds open
links plus handshakes in progress (inbound from accept, outbound from the dial), inbound
connections get MAX_PEERS - TARGET_OUTBOUND of them, and per-address / per-subnet caps and the
eviction policy of p2p/admission.py decide who gets an inbound slot.

Components riding on the links (router, RPC, NAT traversal, peer exchange, the DHT, discovery, the
chain's network) are wired by `attach` alone, each with the PeerHooks it declares (p2p/peer_hooks.py):
the message types it accepts and handles, fields for our hellos and heartbeats, admission checks asked
once the remote's identity is proven (`hello["node_id"]` is the Noise-proven id; a reason closes the
link with a goodbye saying it), and link listeners. Add permanent refusal reasons to `no_redial` so a
refused dialler stops trying. `keep_linked(node_ids)`: links to these nodes are dialled first through
their known addresses, come on top of MAX_PEERS, pass the inbound caps, and are never evicted.

Over 500 lines on purpose: admission, dialling, claims and link bookkeeping keep one table of links
consistent; what stands alone is beside it (admission.py, address_book.py, peer_store.py, transport.py,
peer_hooks.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterable, Protocol, TypedDict, TypeVar

from p2p.messages import Message
from p2p import messages as m
from p2p.address_book import AddressBook, KnownAddress
from p2p.admission import Candidate as EvictionCandidate
from p2p.admission import EvictionPolicy, HandshakeRate, host_cap_refusal, netgroup
from p2p.close_reason import CloseReason, Fault, GivenReason, LinkReason, with_remote
from p2p.connection import Direction, LinkState, PeerLink
from p2p.discovery.base import CLAIMED, Candidate
from p2p.failure_log import Failure, FailureLog, InternalErrors
from p2p.link_reading import ReadTurns, ReadTurnsView
from p2p.peer_config import PeerConfig
from p2p.peer_hooks import Admission, DialResult, Fields, Gate, LinkListener, MessageHandler, PeerComponent
from p2p.peer_store import PeerStore, StoredPeer
from p2p.resilience.protection import ENFORCE, Protection
from p2p.resilience.token_bucket import TokenBucket
from p2p.secure.channel import StaticIdentity
from p2p.transport import DialError, Transport

FEELER_INTERVAL = 1.0     # s between check dials of addresses inbound peers claimed

log = logging.getLogger("p2p.peers")

# Close reasons after which we do not redial the address.
NO_REDIAL = frozenset({CloseReason.SELF_CONNECTION, CloseReason.IDENTITY_MISMATCH}) | with_remote(
    CloseReason.NETWORK_MISMATCH, CloseReason.INCOMPATIBLE_VERSION)
# Close reasons that say nothing bad about the peer.
BENIGN = with_remote(CloseReason.DUPLICATE_LINK, CloseReason.SHUTDOWN, CloseReason.DIAL_BACK,
                     CloseReason.TOO_MANY_PEERS, CloseReason.EVICTED,
                     CloseReason.TOO_MANY_FROM_IP, CloseReason.TOO_MANY_FROM_SUBNET, CloseReason.TOO_MANY_HANDSHAKES)
# Closes that are no failure worth an operator's attention.
QUIET = with_remote(CloseReason.DUPLICATE_LINK, CloseReason.SHUTDOWN, CloseReason.DIAL_BACK)
BAN_THRESHOLD = 100.0
MAX_REASONS = 256  # distinct close reasons counted (a peer's goodbye reasons could be endless)
MAX_RECORDS = 4096  # peer rows kept; the oldest disconnected, unbanned ones go first
VIOLATION_POINTS = 25.0  # a protocol violation that closed the link (unless the reason says otherwise)
VIOLATION_HANDSHAKES = 10.0     # ... and what its address and network then owe the handshake budget (2 s of one
                                # address's, half a second of its network's)
POINTS: dict[str, float] = {CloseReason.BAD_SIGNATURE: 50.0, CloseReason.SPOOFED_ORIGIN: 50.0,
                            CloseReason.IDENTITY_MISMATCH: 50.0, CloseReason.FRAME_TOO_COMPLEX: 50.0}


class Identity(Protocol):
    node_id: str
    public_key_bytes: bytes

    def sign(self, data: bytes) -> bytes: ...


class PeerView(TypedDict):
    """One row of `GET /peers`."""
    node_id: str
    host: str
    port: int
    status: str
    direction: str
    source: str
    rtt_ms: float | None
    last_seen: float
    first_seen: float
    close_reason: str | None
    services: list[str]
    software: str
    msgs_in: int
    msgs_out: int
    bytes_in: int
    bytes_out: int
    read_holds: int                    # times its link was not read for a while: past PEER_READ_RATE
    penalty: float
    penalty_reason: str | None         # why the last misbehaviour points were given
    last_error: Failure | None
    via: str | None                    # the relay carrying the link, if any


class LimitsView(TypedDict):
    max_peers: int
    max_inbound: int
    per_ip: int
    per_subnet: int
    limit_loopback: bool


class PeersStatus(TypedDict):
    """The links and the peer table in `/status`."""
    peers_connected: int
    outbound: int
    inbound: int
    known_addresses: int
    verified_addresses: int
    feelers_waiting: int
    tried_collisions: int
    known_nodes: int
    dialling: int
    handshakes_in_progress: int
    unknown_messages: int
    kept: list[str]
    read_turns: ReadTurnsView       # links read in turns while this node was behind them (p2p/link_reading.py)
    counters: dict[str, int]
    close_reasons: dict[str, int]
    violations: dict[str, int]
    internal_errors: dict[str, int]
    last_error: Failure | None
    recent_errors: list[Failure]
    limits: LimitsView


class PeerStatus(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    BANNED = "banned"


@dataclass(slots=True)
class PeerRecord:
    """One row of the peer table: what we know about a node we have handshaken with."""

    node_id: str
    host: str
    port: int
    direction: str
    source: str
    status: PeerStatus = PeerStatus.CONNECTING
    first_seen: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    rtt: float | None = None
    services: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    software: str = ""
    close_reason: str | None = None
    penalty: float = 0.0
    penalty_reason: str | None = None
    penalty_at: float = field(default_factory=time.monotonic)
    banned_until: float = 0.0
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    read_holds: int = 0
    last_error: Failure | None = None
    link: PeerLink | None = None

    def refresh_counters(self) -> None:
        link = self.link
        if link is not None:
            self.rtt = link.rtt if link.rtt is not None else self.rtt
            self.msgs_in, self.msgs_out = link.msgs_in, link.msgs_out
            self.bytes_in, self.bytes_out = link.bytes_in, link.bytes_out
            self.read_holds = link.reading.read_holds
            if link.last_frame_at is not None:      # a connected peer was last seen when its last frame came
                self.last_seen = max(self.last_seen, link.last_frame_at)

    def as_dict(self) -> PeerView:
        self.refresh_counters()
        return {
            "node_id": self.node_id, "host": self.host, "port": self.port, "status": self.status,
            "direction": self.direction, "source": self.source,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "last_seen": self.last_seen, "first_seen": self.first_seen, "close_reason": self.close_reason,
            "services": list(self.services), "software": self.software,
            "msgs_in": self.msgs_in, "msgs_out": self.msgs_out, "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out, "read_holds": self.read_holds, "penalty": round(self.penalty, 1),
            "penalty_reason": self.penalty_reason,
            "last_error": self.last_error,
            "via": self.link.via if self.link is not None else None,       # the relay carrying the link, if any
        }


Component = TypeVar("Component", bound=PeerComponent)


class PeerManager:
    def __init__(self, config: PeerConfig, identity: Identity, *, verify: Callable[[bytes, bytes, bytes], bool],
                 node_id_for: Callable[[bytes], str], peer_store: PeerStore | None = None) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.network_id = config.network_id
        self.max_frame_bytes = config.max_frame_bytes
        self.send_buffer_bytes = config.send_buffer_bytes
        self.read_rate = float(config.read_rate)
        self.read_burst = float(max(config.read_rate, 2 * config.max_frame_bytes))
        self.read_turns = ReadTurns(lambda: self._kept)
        self.handshake_timeout = config.handshake_timeout
        self._verify = verify
        self._node_id_for = node_id_for
        self.store = peer_store
        self.static_identity = StaticIdentity(identity.sign, identity.public_key_bytes)
        self.transport = Transport(self)
        self.book = AddressBook(backoff_cap=config.reconnect_cap)
        self.links: dict[str, PeerLink] = {}  # open links by node id
        self._claimed: dict[str, PeerLink] = {}  # admitted (handshaking or open) by node id
        self._dialling: set[tuple[str, int]] = set()
        self._inbound_pending: set[PeerLink] = set()  # accepted, handshake in progress
        self.limits = config.limits
        self.eviction = EvictionPolicy()
        self.handshakes = HandshakeRate(config.handshake_rate, config.handshake_rate_total, self.limits.limit_loopback)
        self._kept: frozenset[str] = frozenset()
        self._hello_fields: list[Fields] = []
        self._admit: list[Admission] = []
        self.no_redial: set[str] = set(NO_REDIAL)
        self.failures = FailureLog(log)
        self.internal_errors = InternalErrors(log)
        self.violations: dict[str, int] = {}  # peer-caused closes by reason
        self.peers: dict[str, PeerRecord] = {}
        self.dial_bucket = TokenBucket(config.dial_rate, config.dial_burst)
        # storm protection's mode and canary share, for dials here and for the router and RPC on top
        self.protection = Protection(config.protection_mode, config.protection_canary)
        self.listen_port = 0
        self.advertise_host: str | None = config.advertise_host
        self.services: list[str] = []
        self.capabilities: list[str] = ["relay", "pex"]
        # What `attach` wires: see p2p/peer_hooks.py for each.
        self._application: MessageHandler = lambda link, message: None
        self._gate: Gate = lambda link, message: True
        self._ungated: set[str] = set()
        self._handlers: dict[str, MessageHandler] = {}
        self._handler_owner: dict[str, str] = {}
        self._on_open: list[LinkListener] = []
        self._on_close: list[LinkListener] = []
        self._on_heartbeat: list[MessageHandler] = []
        self._heartbeat_fields: list[Fields] = []
        self._on_dial_result: list[DialResult] = []
        self.attached: list[str] = []              # owners, in the order attached (what a frame may reach)
        self.unknown_messages = 0
        self.counters: dict[str, int] = {"links_opened": 0, "links_closed": 0, "dials": 0, "dial_failures": 0,
                                         "bans": 0, "protocol_errors": 0, "refused_inbound": 0, "evictions": 0,
                                         "feelers": 0, "feelers_verified": 0}
        self.close_reasons: dict[str, int] = {}
        self.schemas = m.Schemas()  # what links accept; each layer built on this manager adds its types
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._dial_tasks: set[asyncio.Task[None]] = set()
        self._save_wanted = asyncio.Event()
        self._dial_seq = 0
        self._stopping = False

    # --- wiring -----------------------------------------------------------------------------
    def attach(self, component: Component) -> Component:
        """Wire `component` as its `peer_hooks()` says (the only way a component is wired); links already
        open are reported to its open listeners. A message type another component handles is refused."""
        hooks = component.peer_hooks()
        taken = {kind: self._handler_owner[kind] for kind in hooks.handlers if kind in self._handler_owner}
        if taken:
            raise ValueError(f"{hooks.owner}: message types handled already: {taken}")
        if hooks.application is not None and "application" in self._handler_owner:
            raise ValueError(f"{hooks.owner}: {self._handler_owner['application']} takes application messages already")
        self.schemas.add(hooks.schemas)
        self._handlers.update(hooks.handlers)
        self._handler_owner.update(dict.fromkeys(hooks.handlers, hooks.owner))
        self._ungated |= hooks.ungated
        if hooks.application is not None:
            self._application = hooks.application
            self._handler_owner["application"] = hooks.owner
        if hooks.gate is not None:
            self._gate = hooks.gate
        self._on_open += hooks.on_open
        self._on_close += hooks.on_close
        self._on_heartbeat += hooks.on_heartbeat
        self._hello_fields += hooks.hello_fields
        self._heartbeat_fields += hooks.heartbeat_fields
        self._admit += hooks.admit
        self._on_dial_result += hooks.on_dial_result
        self.capabilities += [c for c in hooks.capabilities if c not in self.capabilities]
        self.attached.append(hooks.owner)
        for link in list(self.links.values()):
            self._notify(hooks.on_open, "peers.open_listener", link)
        return component

    def advertise_services(self, services: Iterable[str]) -> None:
        """The RPC services our hellos name (links opened from now on; RPC tells open links itself)."""
        self.services = list(services)

    def to_application(self, link: PeerLink, message: Message) -> None:
        """Hand a message to the application path (the router), as if no link-local handler took it."""
        self._application(link, message)

    # --- LinkHost ---------------------------------------------------------------------------
    def local_hello(self, link: PeerLink) -> Message:
        if link.direction == Direction.OUTBOUND:
            self._dial_seq += 1
            link.dial_seq = self._dial_seq
        hello: dict[str, Any] = {}
        for extra in self._hello_fields:
            hello.update(extra())
        hello.update({
            "type": "handshake", "node_id": self.node_id, "protocol": m.PROTOCOL_VERSION, "network": self.network_id,
            "listen_port": self.listen_port, "listen_host": self.advertise_host, "capabilities": self.capabilities,
            "services": self.services, "software": self.config.software, "ts": time.time(), "dial_seq": link.dial_seq,
        })
        if link.remote_addr and link.via is None:   # where we see the remote: how a node behind NAT learns its address
            hello["observed_host"] = link.remote_addr[0]
        return hello

    def verify(self, public_key: bytes, signature: bytes, data: bytes) -> bool:
        return self._verify(public_key, signature, data)

    def sign(self, data: bytes) -> bytes:
        return self.identity.sign(data)

    def node_id_for(self, public_key: bytes) -> str:
        return self._node_id_for(public_key)

    def accept(self, link: PeerLink) -> CloseReason | None:
        """A new inbound connection, before any handshake: per-address caps, then a free inbound slot
        (making one by eviction if the policy finds an inbound peer worth less than a newcomer)."""
        host = link.remote_addr[0] if link.remote_addr else ""
        inbound = [other for other in self._inbound_links() if other is not link]
        refusal = (None if self.handshakes.allow(host) else CloseReason.TOO_MANY_HANDSHAKES) \
            or host_cap_refusal(self.limits, host, (o.remote_addr[0] for o in inbound if o.remote_addr))
        full = self._slots_in_use() >= self.limits.max_peers or len(inbound) >= self.limits.max_inbound
        # the book is searched for kept nodes only when a kept node would be let past a refusal or a full house
        kept_host = bool(refusal or full) and host in self._kept_hosts()
        if refusal and not kept_host:
            return self._refused(link, refusal)
        if full:
            victim = self._eviction_victim()
            if victim is not None:
                self.counters["evictions"] += 1
                log.info("evicting inbound peer %s %s to make room for %s", (victim.remote_id or "?")[:12],
                         victim.remote_addr, link.remote_addr)
                victim.close(CloseReason.EVICTED, "making room for a new inbound peer")
            elif kept_host:
                link.provisional = True  # only a node we keep linked may use this slot
            else:
                return self._refused(link, CloseReason.TOO_MANY_PEERS)
        self._inbound_pending.add(link)
        return None

    def _refused(self, link: PeerLink, reason: CloseReason) -> CloseReason:
        self.counters["refused_inbound"] += 1
        return reason

    def _inbound_links(self) -> list[PeerLink]:
        return [link for link in self.links.values() if link.direction == Direction.INBOUND] + list(self._inbound_pending)

    def _slots_in_use(self) -> int:
        """Links and handshakes in progress that count against MAX_PEERS (kept nodes come on top)."""
        kept = sum(1 for node_id in self._kept if node_id in self.links)
        return len(self.links) - kept + len(self._inbound_pending) + len(self._dialling)

    def _eviction_victim(self) -> PeerLink | None:
        """A handshake in progress from the most crowded netgroup goes first (the oldest of them: it has proven
        nothing yet, and silent handshakes must not hold slots that open links could use); else the policy's
        pick among open inbound links."""
        pending = [(netgroup(link.remote_addr[0]), link) for link in self._inbound_pending
                   if link.remote_addr and not link.provisional]
        if pending:
            crowd: dict[str, int] = {}
            for link in self._inbound_links():
                if link.remote_addr:
                    group = netgroup(link.remote_addr[0])
                    crowd[group] = crowd.get(group, 0) + 1
            return min(pending, key=lambda item: (-crowd.get(item[0], 0), item[1].connected_at))[1]
        candidates = [EvictionCandidate(link, link.remote_addr[0] if link.remote_addr else "", link.opened_at or 0.0,
                                        link.rtt)
                      for link in self.links.values()
                      if link.direction == Direction.INBOUND and link.remote_id not in self._kept]
        chosen = self.eviction.choose(candidates)
        return None if chosen is None else chosen.key

    def _kept_hosts(self) -> set[str]:
        """Addresses of kept nodes not linked yet: a connection from one may pass a full house."""
        if not self._kept:
            return set()
        missing = self._kept - set(self.links)
        return {entry.host for entry in self.book if entry.node_id in missing}

    def admit(self, link: PeerLink, hello: Message) -> GivenReason | None:
        """The remote's hello, its identity proven: bans, a provisional slot, then the higher layers' hooks."""
        node_id = hello["node_id"]
        record = self.peers.get(node_id)
        if record is not None and record.banned_until > time.monotonic():
            return CloseReason.BANNED
        if link.provisional and node_id not in self._kept:
            return CloseReason.TOO_MANY_PEERS
        for hook in self._admit:
            try:
                reason = hook(hello)
            except Exception as exc:  # noqa: BLE001 - a broken hook refuses rather than admits
                self.internal_errors.report("peers.admission_hook", exc)
                return CloseReason.ADMISSION_ERROR
            if reason:
                return reason
        return None

    def claim(self, link: PeerLink) -> CloseReason | None:
        """The peer proved its id: keep exactly one link per node, chosen the same way on both ends."""
        node_id = link.remote_id
        assert node_id is not None
        other = self._claimed.get(node_id)
        if other is not None and other is not link and other.state != LinkState.CLOSED:
            if self._link_rank(link) < self._link_rank(other):
                other.close(CloseReason.DUPLICATE_LINK, "a preferred link to this node exists")
            else:
                return CloseReason.DUPLICATE_LINK
        self._claimed[node_id] = link
        return None

    def _link_rank(self, link: PeerLink) -> tuple[int, int, int, bytes]:
        """Both ends rank two links to each other identically: prefer a direct link to a relayed one,
        then the one dialled by the smaller node id, then the dialler's earlier dial (so a repeat dial is refused), then the
        smaller Noise handshake hash (the same on both ends of a link). So simultaneous dials keep
        the same link on both sides."""
        smaller = min(self.node_id, link.remote_id or "")
        return (0 if link.via is None else 1, 0 if link.dialer_id == smaller else 1, link.dialer_seq,
                link.handshake_hash)

    def listen_address(self, link: PeerLink) -> tuple[str, int] | None:
        """Where `link`'s node listens: the address we dialled, or what its hello claims (unverified)."""
        return self._listen_address(link)

    def _listen_address(self, link: PeerLink) -> tuple[str, int] | None:
        hello = link.remote_hello or {}
        port = hello.get("listen_port") or 0
        if link.via is not None:        # reached through a relay: no address of its own we could dial
            return None
        if link.direction == Direction.OUTBOUND and link.dial_address:
            return link.dial_address
        host = hello.get("listen_host") or (link.remote_addr[0] if link.remote_addr else None)
        if not host or not port:
            return None
        return (host, port)

    def on_open(self, link: PeerLink) -> None:
        node_id = link.remote_id
        assert node_id is not None
        self._inbound_pending.discard(link)
        hello = link.remote_hello or {}
        listen = self._listen_address(link)
        address = listen or (link.remote_addr or ("?", 0))
        self.links[node_id] = link
        if listen is None:      # names no port it listens on: its source port is no address to remember or dial
            entry = None
        elif link.direction == Direction.OUTBOUND and link.dial_address:
            entry = self.book.mark_connected(address, node_id, link.source)
        else:       # a claim in its hello: checked by a feeler dial before we vouch for it
            entry = self.book.mark_claimed(address, node_id, f"inbound:{netgroup(link.remote_addr[0])}"
                                           if link.remote_addr else "inbound:?")
        source = entry.source if entry is not None else link.source
        record = self.peers.get(node_id)
        if record is None:
            record = PeerRecord(node_id, address[0], address[1], link.direction, source)
            self.peers[node_id] = record
        record.host, record.port = address
        record.direction = link.direction
        record.status = PeerStatus.CONNECTED
        if record.source in ("inbound", "unknown") or link.direction == Direction.OUTBOUND:
            record.source = source
        record.last_seen = time.time()
        record.close_reason = None
        record.services = tuple(hello.get("services", ()))
        record.capabilities = tuple(hello.get("capabilities", ()))
        record.software = hello.get("software", "")
        record.link = link
        self.counters["links_opened"] += 1
        self._save_wanted.set()
        log.info("peer connected %s %s:%d direction=%s source=%s", node_id[:12], address[0], address[1],
                 link.direction, record.source)
        self._notify(self._on_open, "peers.open_listener", link)

    def _notify(self, listeners: Iterable[Callable[..., None]], where: str, *args: Any) -> None:
        """Call every listener; one that fails is our bug: reported, and the others still run."""
        for listener in listeners:
            try:
                listener(*args)
            except Exception as exc:  # noqa: BLE001
                self.internal_errors.report(where, exc)

    def on_message(self, link: PeerLink, message: Message) -> None:
        if message["type"] not in self._ungated and not self._gate(link, message):
            return
        if "dst" in message and message.get("origin", link.remote_id) != link.remote_id and message["type"] != "relay":
            # a unicast straight from a neighbour names its author: it can only be that neighbour
            # (a relayed one travels in a `relay` wrapper, signed by its origin: the router checks that)
            raise m.ProtocolError(CloseReason.SPOOFED_ORIGIN, f"{message['type']} names origin {str(message.get('origin'))[:12]}")
        handler = self._handlers.get(message["type"])
        if handler is not None:
            handler(link, message)
        else:
            self._application(link, message)

    def on_heartbeat(self, link: PeerLink, message: Message) -> None:
        self._notify(self._on_heartbeat, "peers.heartbeat_listener", link, message)

    def on_unknown(self, link: PeerLink, message: Message) -> None:
        self.unknown_messages += 1

    def on_internal_error(self, link: PeerLink, where: str, exc: BaseException) -> None:
        self.internal_errors.report(where, exc, repr(link))

    def on_closed(self, link: PeerLink, reason: LinkReason, was_open: bool) -> None:
        key = str(reason)                   # a plain str: counts are JSON maps keyed by reason
        counted = key if key in self.close_reasons or len(self.close_reasons) < MAX_REASONS else "other"
        self.close_reasons[counted] = self.close_reasons.get(counted, 0) + 1
        self._inbound_pending.discard(link)
        node_id = link.remote_id
        if node_id and self._claimed.get(node_id) is link:
            del self._claimed[node_id]
        if link.close_fault == Fault.PEER:
            self.counters["protocol_errors"] += 1
            self.violations[key] = self.violations.get(key, 0) + 1
            log.warning("closed link %r: %s %s", link, reason, link.close_detail)
            if node_id:
                self.penalize(node_id, POINTS.get(reason, VIOLATION_POINTS), reason)
            if link.remote_addr is not None and link.via is None:
                self.handshakes.charge(link.remote_addr[0], VIOLATION_HANDSHAKES)
        if not was_open and reason not in QUIET:
            self._handshake_failed(link, reason)
        if not was_open or node_id is None or self.links.get(node_id) is not link:
            return
        del self.links[node_id]
        self.counters["links_closed"] += 1
        record = self.peers.get(node_id)
        if record is not None:
            record.refresh_counters()
            record.link = None
            record.close_reason = reason
            record.last_seen = time.time()
            if record.status != PeerStatus.BANNED:
                record.status = PeerStatus.DISCONNECTED
            if reason not in QUIET and reason not in BENIGN:
                record.last_error = {"reason": reason, "detail": link.close_detail, "at": record.last_seen}
        log.info("peer disconnected %s reason=%s %s", node_id[:12], reason, link.close_detail)
        if len(self.peers) > MAX_RECORDS:
            self._forget_old_records()
        address = self._listen_address(link)
        if address and not self._stopping:
            if reason in self.no_redial:
                self.book.remove(address)
            elif reason not in BENIGN:
                self.book.schedule_reconnect(address, delay=self._redial_delay(self.protection.covers()))
        self._save_wanted.set()
        self._wake.set()
        self._notify(self._on_close, "peers.close_listener", link)

    def _forget_old_records(self) -> None:
        """Bound the peer table: drop the longest-disconnected rows of nodes not banned, linked or kept."""
        now = time.monotonic()
        idle = sorted((r for r in self.peers.values() if r.link is None and r.banned_until <= now
                       and r.node_id not in self._kept), key=lambda r: r.last_seen)
        for record in idle[:len(self.peers) - MAX_RECORDS + MAX_RECORDS // 8]:
            del self.peers[record.node_id]

    def _handshake_failed(self, link: PeerLink, reason: str) -> None:
        """An inbound connection refused or failed before it opened (outbound ones report as dials)."""
        if link.direction != Direction.INBOUND or self._stopping:
            return
        host = link.remote_addr[0] if link.remote_addr else "?"
        entry = self.failures.record(host, reason, link.close_detail, what="inbound connection from")
        record = self.peers.get(link.remote_id or "")
        if record is not None:
            record.last_error = entry

    # --- public API -------------------------------------------------------------------------
    @property
    def outbound_count(self) -> int:
        return sum(1 for link in self.links.values() if link.direction == Direction.OUTBOUND)

    def connected_ids(self) -> list[str]:
        return list(self.links)

    def known_nodes(self) -> int:
        """Distinct other node ids we know: handshaken with (peer table) or named in the address book."""
        ids = set(self.peers)
        ids.update(e.node_id for e in self.book if e.node_id)
        ids.discard(self.node_id)
        return len(ids)

    def add_candidate(self, candidate: Candidate, *, reporter: str | None = None,
                      reporter_group: str | None = None) -> bool:
        if candidate.node_id == self.node_id:
            return False
        remembered = candidate.source == "persisted" and candidate.node_id is not None   # not CLAIMED
        added = self.book.add(candidate, reporter=reporter, reporter_group=reporter_group, verified=remembered)
        if added:
            self._wake.set()
        return added

    def keep_linked(self, node_ids: Iterable[str]) -> None:
        """Keep links to exactly these nodes (replacing the previous set): dialled first through their
        known addresses, on top of MAX_PEERS, past the inbound caps, never evicted."""
        self._kept = frozenset(node_id for node_id in node_ids if node_id != self.node_id)
        self._wake.set()

    @property
    def kept(self) -> frozenset[str]:
        return self._kept

    def hold_reading(self, node_id: str, seconds: float) -> None:
        """Stop reading `node_id`'s link for `seconds`: a component's budget for it is spent (PeerLink.hold_reading).
        The heartbeat loop counts a held link's silence from the hold's end: it brings no bytes because we do
        not read it."""
        link = self.links.get(node_id)
        if link is not None:
            link.hold_reading(seconds)

    def network_of(self, node_id: str) -> str | None:
        """The network `node_id`'s open link comes from: its address's netgroup (/24 or /48); for a link carried
        through a relay, the netgroup of the relay's own link to us (relay keys are as free as any, the address
        that carries their circuits is not), or "via:<relay id>" if we cannot see it; None when it has no open
        link."""
        link = self.links.get(node_id)
        if link is None:
            return None
        if link.via is not None:
            carrier = self.links.get(link.via)
            if carrier is not None and carrier.via is None and carrier.remote_addr is not None:
                return netgroup(carrier.remote_addr[0])
            return f"via:{link.via}"
        return netgroup(link.remote_addr[0]) if link.remote_addr is not None else None

    def penalize(self, node_id: str, points: float, reason: str) -> None:
        """Misbehaviour points decay (halving each minute); past the threshold the peer is banned."""
        record = self.peers.get(node_id)
        if record is None:
            return
        now = time.monotonic()
        record.penalty = record.penalty * 0.5 ** ((now - record.penalty_at) / 60.0) + points
        record.penalty_at = now
        record.penalty_reason = reason
        if record.penalty >= BAN_THRESHOLD:
            self.ban(node_id, 300.0, reason)

    def ban(self, node_id: str, seconds: float, reason: str) -> None:
        record = self.peers.get(node_id)
        if record is None:
            return
        record.banned_until = time.monotonic() + seconds
        record.status = PeerStatus.BANNED
        self.counters["bans"] += 1
        log.warning("banned peer %s for %.0fs: %s", node_id[:12], seconds, reason)
        link = self._claimed.get(node_id)
        if link is not None:
            link.close(CloseReason.BANNED, reason)

    async def dial(self, host: str, port: int, source: str = "manual") -> PeerLink:
        """Dial now (no pacing); used by tests and operators. Raises DialError."""
        self.book.add(Candidate(host, port, source))
        return await self._dial_once((host, port), source)

    def _redial_delay(self, verdict: str | None) -> float | None:
        """None: the address book's backoff; 0: redial at once (the dial is not protected)."""
        if verdict == ENFORCE:
            return None
        self.protection.limited("dial.backoff", verdict)  # in shadow mode: counted, not applied
        return 0.0

    async def _dial_once(self, address: tuple[str, int], source: str, verdict: str | None = ENFORCE) -> PeerLink:
        self._dialling.add(address)
        self.counters["dials"] += 1
        try:
            link = await self.transport.dial(address[0], address[1], source=source)
        except DialError as exc:
            self.counters["dial_failures"] += 1
            self._dial_failed(address, source, exc.reason, exc.detail)
            self._notify(self._on_dial_result, "peers.dial_result", source, False)
            if exc.reason == CloseReason.SELF_CONNECTION:
                self.book.self_addresses.add(address)
                self.book.remove(address)
            elif exc.reason in self.no_redial:
                self.book.remove(address)
            elif exc.reason in with_remote(CloseReason.DUPLICATE_LINK):  # it works: we are linked already
                self.book.mark_failed(address, exc.reason, delay=self.config.reconnect_cap, reached=True)
            else:
                self.book.mark_failed(address, exc.reason, delay=self._redial_delay(verdict))
            raise
        finally:
            self._dialling.discard(address)
        self._notify(self._on_dial_result, "peers.dial_result", source, True)
        return link

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        host, port = await self.transport.listen(self.config.listen_host, self.config.listen_port)
        self.listen_port = port
        for self_host in {host, "127.0.0.1", "localhost", self.advertise_host or "127.0.0.1"}:
            self.book.self_addresses.add((self_host, port))
        log.info("listening for peers on %s:%d as %s (network %s)", host, port, self.node_id, self.network_id)
        self._tasks = [asyncio.create_task(self._maintain(), name="peers.maintain"),
                       asyncio.create_task(self._heartbeat_loop(), name="peers.heartbeat"),
                       asyncio.create_task(self._save_loop(), name="peers.save")]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks + list(self._dial_tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._dial_tasks, return_exceptions=True)
        await self.transport.close()
        claims = self._linked_claims()          # before the links close
        links = list(set(self._claimed.values()) | self._inbound_pending)
        for link in links:
            link.close(CloseReason.SHUTDOWN)
        if links:  # let transports flush their goodbyes before the loop can end
            await asyncio.wait([link.lost for link in links], timeout=1.0)
        await self.save(claims)

    def _linked_claims(self) -> list[StoredPeer]:
        """Peers linked now that dialled us: their addresses are unchecked claims, remembered as such (dialled
        after the verified ones at the next start), so a node everyone dials still finds them after a
        restart; a stranger's short-lived handshakes are not linked when we save."""
        claims = []
        for node_id, link in list(self.links.items()):
            address = self._listen_address(link)
            entry = self.book.get(address) if address else None
            if address and address[1] and not (entry is not None and entry.verified):
                claims.append(StoredPeer(node_id=node_id, host=address[0], port=address[1], source=CLAIMED))
        return claims

    async def save(self, claims: list[StoredPeer] | None = None) -> None:
        """Remember the verified peers and the claims of those linked now (`claims`: as they were before a stop
        closed the links), once the remembered ones were read (a start that failed early, or a stop right after
        start, must not replace the file with the few peers this run met)."""
        if self.store is None or not self.store.loaded:
            return
        rows = [StoredPeer(node_id=e.node_id, host=e.host, port=e.port,
                           source="persisted" if e.source == CLAIMED else e.source, first_seen=e.first_seen,
                           last_seen=e.last_seen, last_connected=e.last_connected, failures=e.failures)
                for e in self.book.verified()]
        claims = self._linked_claims() if claims is None else claims
        rows += claims[:max(0, self.store.max_entries - len(rows))]      # the tried ones first, whatever their age
        try:
            await asyncio.to_thread(self.store.save, rows)
        except OSError as exc:
            log.warning("could not save peers to %s: %s", self.store.path, exc)

    async def _save_loop(self) -> None:
        """Save soon after the set of verified peers changes (so a crash loses little), at most
        twice a second, and every 30 s regardless."""
        while True:
            try:
                async with asyncio.timeout(30.0):
                    await self._save_wanted.wait()
            except TimeoutError:
                pass
            self._save_wanted.clear()
            await self.save()
            await asyncio.sleep(0.5)

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        dead_after = interval * self.config.dead_after
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            loop_now = loop.time()
            extra: dict[str, Any] = {"links": list(self.links)[:1024]}
            for build in self._heartbeat_fields:
                extra.update(build())
            for link in list(self.links.values()):
                if now - link.last_recv > dead_after and loop_now - link.reading.ours_until > dead_after:
                    link.close(CloseReason.HEARTBEAT_TIMEOUT, f"silent for {now - link.last_recv:.1f}s")
                else:
                    link.heartbeat(extra)

    async def _maintain(self) -> None:
        """Keep outbound links at target: dial due addresses best-first, paced by the token bucket."""
        next_feeler = 0.0
        while True:
            self._wake.clear()
            self._dial_due()
            now = time.monotonic()
            if now >= next_feeler and self._start_feeler():
                next_feeler = now + FEELER_INTERVAL
            try:
                async with asyncio.timeout(0.25):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _dial_due(self) -> None:
        """Dial kept nodes first (whatever the counts), then towards the outbound target; bootstrap
        addresses never reached yet are dialled even past it.

        An operator's bootstrap address that was down at start would otherwise never be tried again once
        other peers filled the target, and the network could stay split in two (each half complete, with
        no link and so no peer exchange between them).
        """
        config = self.config
        busy = set(self._claimed)
        if self._kept and not self._dial_kept(busy):
            return
        room = min(config.max_peers - self._slots_in_use(), 16)
        want = min(config.target_outbound - self.outbound_count - len(self._dialling), room)
        if room <= 0:
            return
        due = self.book.due() if want > 0 else self.book.due_unreached("bootstrap")
        trying_tried = self._trying_tried() or any(
            _untried_since_reached(e) and e.address not in self._dialling and not (e.node_id and e.node_id in busy)
            for e in due)
        for entry in due:
            if room <= 0:
                break
            if want <= 0 and (entry.source != "bootstrap" or entry.last_connected is not None):
                continue
            if entry.address in self._dialling or (entry.node_id and entry.node_id in busy):
                continue
            if not entry.verified and trying_tried:
                continue        # tried first: an address nobody checked waits until the tried ones have answered
            if not self._start_dial(entry):
                break
            want -= 1
            room -= 1

    def _trying_tried(self) -> bool:
        """A dial to a verified address that has not failed since we last reached it is under way. Until it
        has answered, no unverified address is dialled (nor felt): after a restart the peers we reached before
        are linked before any address a stranger told us, and a book full of claims cannot take the first
        outbound slots from them. One that failed holds nobody back (it may be gone for good)."""
        return any((entry := self.book.get(address)) is not None and _untried_since_reached(entry)
                   for address in self._dialling)

    def _dial_kept(self, busy: set[str]) -> bool:
        """Dial the due addresses of kept nodes we hold no link to; False when out of dial tokens."""
        missing = self._kept - busy
        if not missing:
            return True
        for entry in self.book.due():
            if entry.node_id in missing and entry.address not in self._dialling:
                if not self._start_dial(entry):
                    return False
                missing = missing - {entry.node_id}
        return True

    def _start_dial(self, entry: KnownAddress) -> bool:
        verdict = self.protection.covers()
        if verdict is not None and not self.dial_bucket.try_take() and self.protection.limited("dial.rate", verdict):
            wait = self.dial_bucket.wait_time()
            if wait < 0.25:  # wake when a token is back; setting _wake now would spin the loop
                asyncio.get_running_loop().call_later(wait, self._wake.set)
            return False
        entry.next_attempt = time.monotonic() + 1.0  # until the dial reports back
        # dialling from now, not from when the task first runs: a feeler started in this same turn must see it
        # (`_trying_tried`), and the slots it will take are counted at once
        address = entry.address
        self._dialling.add(address)
        task = asyncio.create_task(self._background_dial(entry, verdict))
        self._dial_tasks.add(task)
        task.add_done_callback(self._dial_tasks.discard)
        task.add_done_callback(lambda _done: self._dialling.discard(address))
        return True

    def _start_feeler(self) -> bool:
        """Dial one address a peer that is no longer linked claimed, once, to check it leads to that node
        (addrman's feeler)."""
        if self.config.target_outbound <= 0 or self._stopping or self._trying_tried():
            return False        # a node told not to dial does not feel either; tried addresses go first
        due = self.book.next_feeler()
        if due is None:
            return False
        address, node_id = due
        if address in self._dialling or node_id in self.links:
            # linked now: a second link would replace ours or make the remote evict someone; its address is
            # checked by the redial when this link closes, and we need no address while linked
            return False
        task = asyncio.create_task(self._feel(address, node_id))
        self._dial_tasks.add(task)
        task.add_done_callback(self._dial_tasks.discard)
        return True

    async def _feel(self, address: tuple[str, int], node_id: str) -> None:
        """A check, not a connection anyone asked for: a failure counts against the address in the book but is
        not the peer's `last_error` (that stays the reason its link closed)."""
        self.counters["feelers"] += 1
        self._dialling.add(address)
        try:
            link = await self.transport.dial(address[0], address[1], source="feeler")
        except DialError as exc:
            if exc.remote_id == node_id:        # reached it; the link was refused as a duplicate of ours
                self.book.mark_verified(address, node_id)
                self.counters["feelers_verified"] += 1
                self._save_wanted.set()
            elif exc.reason not in self.no_redial:
                self.book.mark_failed(address, exc.reason)
            else:
                self.book.remove(address)
            return
        except Exception as exc:  # noqa: BLE001 - a dial task must never die silently
            self.internal_errors.report("peers.feeler", exc)
            return
        finally:
            self._dialling.discard(address)
        if link.remote_id == node_id:
            self.counters["feelers_verified"] += 1
        else:       # someone else listens there: the claim was false (the link itself is a good one)
            entry = self.book.get(address)
            log.info("feeler to %s:%d reached %s, not the claimed %s", address[0], address[1],
                     (link.remote_id or "?")[:12], node_id[:12])
            if entry is not None:
                entry.node_id = link.remote_id

    def _dial_failed(self, address: tuple[str, int], source: str, reason: str, detail: str) -> None:
        if self._stopping or reason in QUIET:
            return
        entry = self.failures.record(f"{address[0]}:{address[1]}", reason, detail, what=f"dial ({source})")
        known = self.book.get(address)
        record = self.peers.get(known.node_id) if known is not None and known.node_id else None
        if record is not None:
            record.last_error = entry

    async def _background_dial(self, entry: KnownAddress, verdict: str | None) -> None:
        try:
            await self._dial_once(entry.address, entry.source, verdict)
        except DialError:
            pass  # logged and counted by _dial_once
        except Exception as exc:  # noqa: BLE001 - a dial task must never die silently
            self.internal_errors.report("peers.dial", exc)
        self._wake.set()

    def status(self) -> PeersStatus:
        return {
            "peers_connected": len(self.links), "outbound": self.outbound_count,
            "inbound": len(self.links) - self.outbound_count, "known_addresses": len(self.book),
            "verified_addresses": len(self.book.verified()), "feelers_waiting": len(self.book.feelers),
            "tried_collisions": self.book.tried_collisions,
            "known_nodes": self.known_nodes(),
            "dialling": len(self._dialling), "handshakes_in_progress": len(self._inbound_pending) + len(self._dialling),
            "unknown_messages": self.unknown_messages, "kept": sorted(self._kept), "read_turns": self.read_turns.view(),
            "counters": dict(self.counters, internal_errors=self.internal_errors.total),
            "close_reasons": dict(self.close_reasons), "violations": dict(self.violations),
            "internal_errors": dict(self.internal_errors.counts),
            "last_error": self.failures.last, "recent_errors": self.failures.recent()[-10:],
            "limits": {"max_peers": self.limits.max_peers, "max_inbound": self.limits.max_inbound,
                       "per_ip": self.limits.per_ip, "per_subnet": self.limits.per_subnet,
                       "limit_loopback": self.limits.limit_loopback},
        }


def _untried_since_reached(entry: KnownAddress) -> bool:
    """A verified address whose last dial (if any since we reached it) did not fail."""
    return entry.verified and entry.failures == 0
