"""Serving as a relay (circuit relay v2 in spirit): reservations, then circuits between two of our links.

A node nobody can dial reserves a slot here (`relay.reserve`); while the reservation lasts and its
link stays up, others reach it by asking us to connect (`relay.connect`), and we pass `relay.data`
frames between the two links. What we carry is the two ends' Noise stream: we can neither read nor
forge it (p2p/nat/circuit.py).

Limits, each per someone with a cap behind it: reservations per /24 and in all, a full table making room
for a newcomer from a less crowded network (Bitcoin Core's eviction by network group: the most crowded
network's holder idle longest gives up its slot, so whoever filled the table first does not keep it); circuits per peer
(as dialler or target) and in all; per circuit a byte budget, a duration and a rate (a token bucket
over bytes: a link that never stops sending hits it and is closed, with the reason sent to both
ends). Circuit ids are chosen by whoever opens the circuit on a link: the relay uses even ids, the
endpoints odd ones, so both can open circuits on the same link.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, TypedDict

from p2p.admission import netgroup
from p2p.nat.circuit import CLOSE, DATA
from p2p.nat.config import NatConfig
from p2p.messages import Message
from p2p.resilience.token_bucket import TokenBucket

log = logging.getLogger("p2p.nat.relay")

RESERVE, RESERVATION, CONNECT, INCOMING, OPENED = (
    "relay.reserve", "relay.reservation", "relay.connect", "relay.incoming", "relay.opened")


class RelayLink(Protocol):
    """What the relay reads of a link (a PeerLink is one): who it is, from where, through whom, and a way
    to send to it."""

    @property
    def remote_id(self) -> str | None: ...
    @property
    def remote_addr(self) -> tuple[str, int] | None: ...
    @property
    def via(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def is_open(self) -> bool: ...
    def send(self, message: Message) -> bool: ...


@dataclass(slots=True)
class Reservation:
    node_id: str
    group: str
    link: RelayLink
    expires: float
    used: float                      # when it was reserved, or last had a circuit opened or carrying bytes to it


@dataclass(slots=True)
class Hop:
    """One end of a circuit at the relay: frames from (link, circuit) go to `other`."""

    link: RelayLink
    circuit: int
    pair: "Pair"
    other: "Hop | None" = None


@dataclass(slots=True)
class Pair:
    source: str
    target: str
    started: float
    bucket: TokenBucket
    bytes: int = 0
    hops: list[Hop] = field(default_factory=list)


class RelayLimits(TypedDict):
    reservations: int
    reservations_per_subnet: int
    circuits: int
    circuits_per_peer: int
    circuit_bytes: int
    circuit_seconds: float
    circuit_rate: float              # bytes/s, sustained


class RelayServerStatus(TypedDict):
    serving: bool
    reservations: int
    circuits: int
    counters: dict[str, int]
    limits: RelayLimits


class RelayServer:
    def __init__(self, config: NatConfig, is_public: Callable[[], bool], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.is_public = is_public
        self.clock = clock
        self.reservations: dict[str, Reservation] = {}
        self.hops: dict[tuple[int, int], Hop] = {}     # (id(link), circuit) -> hop
        self._ids = itertools.count(2, 2)               # even: circuits the relay opens
        self.counters = {"reservations": 0, "reservations_refused": 0, "circuits": 0, "circuits_refused": 0,
                         "circuits_limited": 0, "bytes": 0, "reservations_evicted": 0}

    # --- reservations -----------------------------------------------------------------------
    def reserve(self, link: RelayLink) -> tuple[bool, str]:
        config = self.config
        node_id = link.remote_id or ""
        if not config.relay_service:
            return False, "relay_off"
        if not self.is_public():
            return False, "not_reachable"
        if link.via is not None:
            return False, "relayed_link"
        now = self.clock()
        self._expire(now)
        group = netgroup(link.remote_addr[0]) if link.remote_addr else "?"
        held = self.reservations.get(node_id)
        if held is None:
            if sum(1 for r in self.reservations.values() if r.group == group) >= config.relay_reservations_per_subnet:
                return self._refuse("subnet_full")
            if len(self.reservations) >= config.relay_max_reservations and not self._make_room(group):
                return self._refuse("relay_full")
        self.reservations[node_id] = Reservation(node_id, group, link, now + config.relay_reservation_ttl,
                                                 now if held is None else held.used)
        if held is None:
            self.counters["reservations"] += 1
            log.info("relay reservation for %s (%d held)", node_id[:12], len(self.reservations))
        return True, ""

    def _make_room(self, group: str) -> bool:
        """Evict for a newcomer of `group` when another network holds more than `group` would with it: that
        network's holder with no circuit open and idle longest (or, all busy, idle longest), told `evicted`."""
        counts: dict[str, int] = {}
        for r in self.reservations.values():
            counts[r.group] = counts.get(r.group, 0) + 1
        crowded = max(counts.values(), default=0)
        if crowded <= counts.get(group, 0) + 1:
            return False
        busy = {p for h in self.hops.values() for p in (h.pair.source, h.pair.target)}
        victim = min((r for r in self.reservations.values() if counts[r.group] == crowded),
                     key=lambda r: (r.node_id in busy, r.used))
        del self.reservations[victim.node_id]
        self.counters["reservations_evicted"] += 1
        log.info("relay reservation of %s evicted for a newcomer of another network", victim.node_id[:12])
        victim.link.send({"type": RESERVATION, "status": "refused", "reason": "evicted"})
        return True

    def _refuse(self, reason: str) -> tuple[bool, str]:
        self.counters["reservations_refused"] += 1
        return False, reason

    def _expire(self, now: float) -> None:
        for node_id in [n for n, r in self.reservations.items() if r.expires < now or r.link.state == "closed"]:
            del self.reservations[node_id]

    def reserved(self) -> list[str]:
        self._expire(self.clock())
        return list(self.reservations)

    # --- circuits ---------------------------------------------------------------------------
    def connect(self, link: RelayLink, circuit: int, target: str) -> str | None:
        """Open a circuit from `link`'s node to `target`: None when opened, else the refusal."""
        config = self.config
        source = link.remote_id or ""
        if circuit % 2 == 0 or (id(link), circuit) in self.hops:
            return "bad_circuit"
        self._expire(self.clock())
        reservation = self.reservations.get(target)
        if reservation is None or not reservation.link.is_open:
            return self._limited("no_reservation", refused=True)
        if target == source or link.via is not None:
            return self._limited("bad_target", refused=True)
        pairs = {id(h.pair): h.pair for h in self.hops.values()}.values()
        if len(pairs) >= config.relay_max_circuits:
            return self._limited("relay_busy", refused=True)
        if sum(1 for p in pairs if source in (p.source, p.target)) >= config.relay_circuits_per_peer:
            return self._limited("too_many_circuits", refused=True)
        if sum(1 for p in pairs if target in (p.source, p.target)) >= config.relay_circuits_per_peer:
            return self._limited("target_busy", refused=True)
        now = self.clock()
        reservation.used = now
        pair = Pair(source, target, now, TokenBucket(config.relay_circuit_rate, config.relay_circuit_burst,
                                                       clock=self.clock))
        near = Hop(link, circuit, pair)
        far = Hop(reservation.link, next(self._ids), pair)
        near.other, far.other = far, near
        pair.hops = [near, far]
        self.hops[(id(link), circuit)] = near
        self.hops[(id(reservation.link), far.circuit)] = far
        reservation.link.send({"type": INCOMING, "circuit": far.circuit, "source": source})
        link.send({"type": OPENED, "circuit": circuit})
        self.counters["circuits"] += 1
        return None

    def _limited(self, reason: str, refused: bool = False) -> str:
        self.counters["circuits_refused" if refused else "circuits_limited"] += 1
        return reason

    def owns(self, link: RelayLink, circuit: int) -> bool:
        return (id(link), circuit) in self.hops

    def data(self, link: RelayLink, circuit: int, payload: bytes) -> None:
        hop = self.hops.get((id(link), circuit))
        if hop is None or hop.other is None:
            return
        pair = hop.pair
        pair.bytes += len(payload)
        config = self.config
        if pair.bytes > config.relay_circuit_bytes:
            return self._close_pair(pair, "relay_bytes_limit")
        if not pair.bucket.try_take(len(payload)):
            return self._close_pair(pair, "relay_rate_limit")
        self.counters["bytes"] += len(payload)
        if (reservation := self.reservations.get(pair.target)) is not None:
            reservation.used = self.clock()
        other = hop.other
        if not other.link.send({"type": DATA, "circuit": other.circuit, "data": payload}):
            self._close_pair(pair, "relay_overflow")

    def close(self, link: RelayLink, circuit: int) -> None:
        hop = self.hops.get((id(link), circuit))
        if hop is not None:
            self._close_pair(hop.pair, "closed", skip=hop)

    def _close_pair(self, pair: Pair, reason: str, skip: Hop | None = None) -> None:
        if reason != "closed":
            self.counters["circuits_limited"] += 1
            log.info("relay closed circuit %s -> %s: %s", pair.source[:12], pair.target[:12], reason)
        for hop in pair.hops:
            self.hops.pop((id(hop.link), hop.circuit), None)
            if hop is not skip:
                hop.link.send({"type": CLOSE, "circuit": hop.circuit, "reason": reason})

    def sweep(self) -> None:
        """Close circuits past their duration; drop reservations past their time."""
        now = self.clock()
        self._expire(now)
        for pair in list({id(h.pair): h.pair for h in self.hops.values()}.values()):
            if now - pair.started > self.config.relay_circuit_seconds:
                self._close_pair(pair, "relay_duration_limit")

    def link_closed(self, link: RelayLink) -> None:
        for (link_key, _), hop in list(self.hops.items()):
            if link_key == id(link):
                self._close_pair(hop.pair, "relay_link_lost", skip=hop)
        if link.remote_id and (held := self.reservations.get(link.remote_id)) is not None and held.link is link:
            del self.reservations[link.remote_id]

    def status(self) -> RelayServerStatus:
        pairs = {id(h.pair): h.pair for h in self.hops.values()}.values()
        return {"serving": self.config.relay_service and self.is_public(), "reservations": len(self.reserved()),
                "circuits": len(pairs), "counters": dict(self.counters),
                "limits": {"reservations": self.config.relay_max_reservations,
                           "reservations_per_subnet": self.config.relay_reservations_per_subnet,
                           "circuits": self.config.relay_max_circuits,
                           "circuits_per_peer": self.config.relay_circuits_per_peer,
                           "circuit_bytes": self.config.relay_circuit_bytes,
                           "circuit_seconds": self.config.relay_circuit_seconds,
                           "circuit_rate": self.config.relay_circuit_rate}}
