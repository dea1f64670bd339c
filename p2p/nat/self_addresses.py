"""What this node knows about its own addresses and whether others can dial it (sans-I/O).

Peers say in their hello the address they see us at (`observed_host`). Anyone can name any host
there, so a host is a *candidate* (worth a dial-back, offered in hole punches) only when it is
- the local end of one of our direct links (the kernel says so, nobody's claim), or
- a port mapping our gateway granted, or
- seen by observers in at least `MIN_OBSERVER_GROUPS` distinct /24s outside ours and outside its
  own /24 (one stranger, however many keys it holds in one /24, counts once), or by the only outside
  /24 we have met: a small network with one public node (its relay) has no second witness, and
  demanding one would leave its NATed nodes unable to learn their address or find out they are private.
A host that only outside /24 named stays *checkable* when strangers later name others: dial-backs of it
may still make us private, but it is offered and published only while a candidate.
A peer that sees us at a checkable host dials it back at our port (p2p/nat/autonat.py) and says whether
the Noise handshake reached us; only a candidate a dial-back reached is *confirmed* (published).
From these answers, per address, reachability is:
- `public`: a dial-back from outside our own network reached us (or, in a network where every peer
  is inside our own /24 - a LAN, or one machine - any dial-back did);
- `private`: no dial-back from outside reached any address, and dial-backs of one address failed from
  `MIN_FAILED_GROUPS` distinct outside /24s, or from an outside /24 that was the only one we had met when
  it answered (a small network's one public node: its verdict stands when the other NATed nodes link
  later), or twice from the same outside /24 (a confirmation: a second /24 that never answers, or sees us
  elsewhere, cannot hold us `unknown`); one stranger's single `failed` among others is no verdict;
- `unknown`: otherwise.
"Outside" compares the peer's address with our own address on the link it came by (its /24): a
neighbour on our LAN can dial our LAN address, which says nothing about the rest of the network.
Only the latest few answers per address count, so a node that gains or loses a port mapping moves.
"""
from __future__ import annotations

import time
from collections import deque
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, TypedDict

from p2p.admission import netgroup

KEEP_ANSWERS = 8          # latest dial-back answers kept per address
MAX_ADDRESSES = 32        # observed hosts kept; past it the weakest (no candidate, least observed) goes
MAX_OBSERVERS = 64        # observer groups kept per address
MIN_OBSERVER_GROUPS = 2   # outside /24s that must see us at a host before it is a candidate
MIN_FAILED_GROUPS = 2     # outside /24s whose dial-backs of one address must fail before we say private
MAX_UNVOUCHED_PER_OBSERVER = 4   # hosts not yet candidates that one observer /24 may hold in the table
MAX_OUTSIDE_GROUPS = 64   # outside /24s remembered (only whether there are one or more matters)


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
    group: str             # the /24 of the node that dialled back
    alone: bool = False    # it was the only outside /24 we had met when it answered


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
    candidate: bool                  # our own, mapped, or seen from enough outside /24s
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
    local: bool = False                        # the local end of one of our direct links
    vouched_alone: bool = False                # named by the only outside /24 we had met then (see `checkable`)
    groups_needed: Callable[[], int] = field(default=lambda: MIN_OBSERVER_GROUPS, repr=False, compare=False)

    @property
    def candidate(self) -> bool:
        """Ours beyond one stranger's word: worth a dial-back, a hole-punch offer and (once reached) our record."""
        return self.local or self.how == "mapped" or len(self.vouching_groups()) >= self.groups_needed()

    @property
    def checkable(self) -> bool:
        """Worth a dial-back whose failure counts: a candidate, or a host the only outside /24 we had met named
        (a small network's public node), even once other /24s name other hosts: one stranger's word makes us
        check a host and believe we are private, never publish it, offer it or believe we are public."""
        return self.candidate or self.vouched_alone

    def vouching_groups(self) -> set[str]:
        """Outside observer /24s, less the host's own /24 (a neighbour of the host says nothing about us)."""
        return self.outside_observers - {netgroup(self.host)}

    @property
    def confirmed(self) -> bool:
        """A candidate a dial-back reached (an answer about a host that is not ours yet counts for nothing)."""
        return self.candidate and any(a.ok for a in self.answers)

    def reached_from_outside(self) -> bool:
        return self.candidate and any(a.ok and a.outside for a in self.answers)

    def failed_from_outside(self) -> bool:
        """Dial-backs failed here from `MIN_FAILED_GROUPS` distinct outside /24s, from the only outside /24 we
        knew then, or twice from one outside /24: a lone stranger's single `failed` among others is no say."""
        failures = [a for a in self.answers if not a.ok and a.outside]
        groups = {a.group for a in failures}
        return self.checkable and (len(groups) >= MIN_FAILED_GROUPS or any(a.alone for a in failures)
                                   or len(failures) > len(groups))

    def undecided(self) -> bool:
        """A checkable address no outside dial-back has reached nor enough outside /24s failed to reach."""
        return self.checkable and not self.reached_from_outside() and not self.failed_from_outside()

    def answered_by(self) -> set[str]:
        """The /24s whose dial-backs of this address we hold."""
        return {a.group for a in self.answers}

    def as_dict(self) -> OwnAddressView:
        last = self.answers[-1] if self.answers else None
        return {"host": self.host, "port": self.port, "how": self.how, "observers": len(self.observers),
                "candidate": self.candidate, "confirmed": self.confirmed, "checks": len(self.answers),
                "ok": sum(1 for a in self.answers if a.ok), "last_check": None if last is None else {
                    "ok": last.ok, "by": last.server[:16], "outside": last.outside, "at": last.at}}


class SelfAddresses:
    def __init__(self, listen_port: int = 0) -> None:
        self.listen_port = listen_port
        self.addresses: dict[tuple[str, int], OwnAddress] = {}
        self.any_outside_peer = False              # have we ever linked to a peer outside our /24?
        self.outside_groups: OrderedDict[str, None] = OrderedDict()     # the outside /24s we have met

    def groups_needed(self) -> int:
        """Outside /24s that must agree: `MIN_OBSERVER_GROUPS` once we have met that many, else the one there is."""
        return max(1, min(MIN_OBSERVER_GROUPS, len(self.outside_groups)))

    def observed(self, host: str, observer_group: str, local_group: str, local: bool = False) -> OwnAddress | None:
        """A peer in `observer_group` saw us at `host`, over a link whose local end is in `local_group`
        (`local`: `host` is that local end itself). None when ignored: no port yet, or that observer /24
        already holds its share of hosts nobody else vouches for."""
        if not host or not self.listen_port:
            return None
        outside = observer_group != local_group
        self.any_outside_peer |= outside
        if outside:
            self._met_outside(observer_group)
        key = (host, self.listen_port)
        entry = self.addresses.get(key)
        if entry is None:
            if not local and self._unvouched_by(observer_group) >= MAX_UNVOUCHED_PER_OBSERVER:
                return None
            if len(self.addresses) >= MAX_ADDRESSES:
                weakest = min(self.addresses.values(),
                              key=lambda e: (e.candidate, e.confirmed, len(e.observers), e.first_seen))
                del self.addresses[(weakest.host, weakest.port)]
            entry = self.addresses[key] = OwnAddress(host, self.listen_port, "observed",
                                                              groups_needed=self.groups_needed)
        entry.local |= local
        if len(entry.observers) < MAX_OBSERVERS:
            entry.observers.add(observer_group)
            if outside:
                entry.outside_observers.add(observer_group)
        if outside and observer_group != netgroup(host) and list(self.outside_groups) == [observer_group]:
            entry.vouched_alone = True
        return entry

    def _met_outside(self, group: str) -> None:
        self.outside_groups[group] = None
        self.outside_groups.move_to_end(group)
        if len(self.outside_groups) > MAX_OUTSIDE_GROUPS:
            self.outside_groups.popitem(last=False)

    def _unvouched_by(self, group: str) -> int:
        """Hosts in the table that only `group`'s word keeps there: one /24 cannot fill the table for all."""
        return sum(1 for e in self.addresses.values() if not e.candidate and e.observers == {group})

    def mapped(self, host: str, port: int) -> OwnAddress:
        """A port mapping the gateway granted: an address to confirm like any other."""
        key = (host, port)
        entry = self.addresses.get(key)
        if entry is None:
            entry = self.addresses[key] = OwnAddress(host, port, "mapped", groups_needed=self.groups_needed)
        elif entry.how != "mapped":
            entry.answers.clear()       # what dial-backs found before the mapping says nothing about it now
        entry.how = "mapped"
        return entry

    def unmapped(self, host: str, port: int) -> None:
        entry = self.addresses.get((host, port))
        if entry is not None and entry.how == "mapped":
            del self.addresses[(host, port)]

    def answered(self, host: str, port: int, ok: bool, server: str, outside: bool, group: str,
                 now: float | None = None) -> None:
        """`server`, in /24 `group`, dialled `host` itself and says whether it reached us there."""
        if outside:
            self._met_outside(group)
        entry = self.addresses.get((host, port))
        if entry is not None:
            alone = outside and list(self.outside_groups) == [group]
            entry.answers.append(Answer(ok, server, outside, time.time() if now is None else now, group, alone))

    def to_check(self, max_age: float, now: float | None = None, failed_after: float | None = None) -> list[OwnAddress]:
        """Addresses worth a dial-back now: never checked, or last checked longer than `max_age` ago; one whose
        last check failed sooner, after `failed_after` s doubling with each failure in a row up to `max_age`
        (a dial-back that raced a new port mapping, or timed out on a busy machine, must not leave the node
        private and relayed for `max_age`)."""
        now = time.time() if now is None else now
        due: list[OwnAddress] = []
        for entry in self.checkable():
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
        """One outside success outweighs any failures; `private` needs one address failed from enough /24s."""
        entries = list(self.addresses.values())
        if any(e.reached_from_outside() for e in entries):
            return Reachability.PUBLIC
        if any(e.failed_from_outside() for e in entries):
            return Reachability.PRIVATE
        if not self.any_outside_peer and any(e.confirmed for e in entries):
            return Reachability.PUBLIC     # everyone we know is on our own network, and they can dial us
        return Reachability.UNKNOWN

    def candidates(self) -> list[OwnAddress]:
        """Addresses believed ours (see the module doc), most observed first: the ones to offer."""
        return sorted((e for e in self.addresses.values() if e.candidate), key=lambda e: -len(e.observers))

    def checkable(self) -> list[OwnAddress]:
        """Candidates and the hosts worth a dial-back on the word of the only outside /24 we had met, most
        observed first: the ones to check."""
        return sorted((e for e in self.addresses.values() if e.checkable), key=lambda e: -len(e.observers))

    def confirmed(self) -> list[OwnAddress]:
        """Candidates a dial-back reached, most observed first: the ones worth advertising."""
        return [e for e in self.candidates() if e.confirmed]

    def as_dict(self) -> AddressesView:
        return {"reachability": str(self.reachability),
                "addresses": [e.as_dict() for e in sorted(self.addresses.values(), key=lambda e: -len(e.observers))]}
