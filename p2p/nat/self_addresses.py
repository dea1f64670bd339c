"""What this node knows about its own addresses and whether others can dial it (sans-I/O).

Peers say in their hello the address they see us at (`observed_host`); a peer we asked dials that
host back at our listen port (p2p/nat/autonat.py) and says whether the Noise handshake reached us.
From these, reachability is:
- `public`: a dial-back from outside our own network reached us (or, in a network where every peer
  is inside our own /24 - a LAN, or one machine - any dial-back did);
- `private`: dial-backs from outside failed and none from outside succeeded;
- `unknown`: nobody outside has answered yet.
"Outside" compares the peer's address with our own address on the link it came by (its /24): a
neighbour on our LAN can dial our LAN address, which says nothing about the rest of the network.
Only the latest few answers per address count, so a node that gains or loses a port mapping moves.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypedDict

KEEP_ANSWERS = 8          # latest dial-back answers kept per address
MAX_ADDRESSES = 32        # observed hosts kept; past it the least observed goes
MAX_OBSERVERS = 64        # observer groups kept per address


class Reachability(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Answer:
    ok: bool
    server: str            # the node that dialled back
    outside: bool          # it is not in our own /24
    at: float


class CheckView(TypedDict):
    ok: bool
    by: str                          # the start of the id of the node that dialled back
    outside: bool
    at: float


class OwnAddressView(TypedDict):
    host: str
    port: int
    how: str
    observers: int                   # /24s that saw us here
    confirmed: bool
    checks: int
    ok: int
    last_check: CheckView | None


class AddressesView(TypedDict):
    reachability: str
    addresses: list[OwnAddressView]


@dataclass(slots=True)
class OwnAddress:
    host: str
    port: int
    how: str                                   # "observed", "mapped" or "listen"
    observers: set[str] = field(default_factory=set)       # /24s of the peers that saw us here
    outside_observers: set[str] = field(default_factory=set)
    answers: deque[Answer] = field(default_factory=lambda: deque(maxlen=KEEP_ANSWERS))
    first_seen: float = field(default_factory=time.time)

    @property
    def confirmed(self) -> bool:
        return any(a.ok for a in self.answers)

    def as_dict(self) -> OwnAddressView:
        last = self.answers[-1] if self.answers else None
        return {"host": self.host, "port": self.port, "how": self.how, "observers": len(self.observers),
                "confirmed": self.confirmed, "checks": len(self.answers),
                "ok": sum(1 for a in self.answers if a.ok), "last_check": None if last is None else {
                    "ok": last.ok, "by": last.server[:16], "outside": last.outside, "at": last.at}}


class SelfAddresses:
    def __init__(self, listen_port: int = 0) -> None:
        self.listen_port = listen_port
        self.addresses: dict[tuple[str, int], OwnAddress] = {}
        self.any_outside_peer = False              # have we ever linked to a peer outside our /24?

    def observed(self, host: str, observer_group: str, local_group: str) -> OwnAddress | None:
        """A peer in `observer_group` saw us at `host`, over a link whose local end is in `local_group`."""
        if not host or not self.listen_port:
            return None
        key = (host, self.listen_port)
        entry = self.addresses.get(key)
        if entry is None:
            if len(self.addresses) >= MAX_ADDRESSES:
                weakest = min(self.addresses.values(), key=lambda e: (e.confirmed, len(e.observers), e.first_seen))
                del self.addresses[(weakest.host, weakest.port)]
            entry = self.addresses[key] = OwnAddress(host, self.listen_port, "observed")
        outside = observer_group != local_group
        self.any_outside_peer |= outside
        if len(entry.observers) < MAX_OBSERVERS:
            entry.observers.add(observer_group)
            if outside:
                entry.outside_observers.add(observer_group)
        return entry

    def mapped(self, host: str, port: int) -> OwnAddress:
        """A port mapping the gateway granted: an address to confirm like any other."""
        key = (host, port)
        entry = self.addresses.get(key)
        if entry is None:
            entry = self.addresses[key] = OwnAddress(host, port, "mapped")
        elif entry.how != "mapped":
            entry.answers.clear()       # what dial-backs found before the mapping says nothing about it now
        entry.how = "mapped"
        return entry

    def unmapped(self, host: str, port: int) -> None:
        entry = self.addresses.get((host, port))
        if entry is not None and entry.how == "mapped":
            del self.addresses[(host, port)]

    def answered(self, host: str, port: int, ok: bool, server: str, outside: bool, now: float | None = None) -> None:
        entry = self.addresses.get((host, port))
        if entry is not None:
            entry.answers.append(Answer(ok, server, outside, time.time() if now is None else now))

    def to_check(self, max_age: float, now: float | None = None, failed_after: float | None = None) -> list[OwnAddress]:
        """Addresses worth a dial-back now: never checked, or last checked longer than `max_age` ago; one whose
        last check failed sooner, after `failed_after` s doubling with each failure in a row up to `max_age`
        (a dial-back that raced a new port mapping, or timed out on a busy machine, must not leave the node
        private and relayed for `max_age`)."""
        now = time.time() if now is None else now
        due: list[OwnAddress] = []
        for entry in self.addresses.values():
            if not entry.answers:
                due.append(entry)
                continue
            last = entry.answers[-1]
            wait = max_age
            if not last.ok and failed_after is not None:
                failures = 0
                for answer in reversed(entry.answers):
                    if answer.ok:
                        break
                    failures += 1
                wait = min(max_age, failed_after * 2 ** (failures - 1))
            if now - last.at >= wait:
                due.append(entry)
        return due

    @property
    def reachability(self) -> Reachability:
        answers = [a for e in self.addresses.values() for a in e.answers]
        if any(a.ok and a.outside for a in answers):
            return Reachability.PUBLIC
        if any(not a.ok and a.outside for a in answers):
            return Reachability.PRIVATE
        if not self.any_outside_peer and any(a.ok for a in answers):
            return Reachability.PUBLIC     # everyone we know is on our own network, and they can dial us
        return Reachability.UNKNOWN

    def confirmed(self) -> list[OwnAddress]:
        """Addresses a dial-back reached, most observed first: the ones worth advertising."""
        return sorted((e for e in self.addresses.values() if e.confirmed), key=lambda e: -len(e.observers))

    def as_dict(self) -> AddressesView:
        return {"reachability": str(self.reachability),
                "addresses": [e.as_dict() for e in sorted(self.addresses.values(), key=lambda e: -len(e.observers))]}
