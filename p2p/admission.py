"""Inbound admission: per-address and per-subnet caps, and which inbound peer to evict when full.

In the spirit of Bitcoin Core's eviction logic (net.cpp, `AttemptToEvictConnection`): when every
inbound slot is taken, a new connection may replace one inbound peer, but never an outbound one, a
node we keep linked, or one of the peers worth keeping: a few from netgroups picked by a keyed hash
(an attacker cannot aim at them), the lowest round-trip times, and the longest-lived half of the
rest. Of what is left, the youngest peer of the most crowded netgroup goes. So one host or one
subnet cannot fill every slot, and a flood of new connections cannot displace long-lived peers.

Netgroups are IPv4 /24s and IPv6 /48s, marked as loopback for loopback addresses (127.a.b.0/24 each, so
loopback aliases stand for distinct subnets on one machine; ::1 is one group); loopback is exempt from the
per-address caps unless `limit_loopback` (several nodes on one machine are the operator's own doing; every
remote host is capped).
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import time
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Sequence, TypeVar

from p2p.close_reason import CloseReason
from p2p.public.rate import ClientRate
from p2p.public.sources import client_ip, host_of, subnet_of

PROTECT_NETGROUPS = 4
PROTECT_LOW_RTT = 8


LOOPBACK = "loopback"


@functools.lru_cache(maxsize=4096)
def netgroup(host: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) of an address; a loopback address's group is marked as such
    ("loopback/127.0.0.0/24"; "loopback" for ::1). Cached: a validator asks it for every transaction a
    neighbour hands over, and parsing the address each time was a large part of admitting one."""
    ip = client_ip(host)
    if ip is None:
        return host
    if ip.is_loopback:
        return LOOPBACK if ip.version == 6 else f"{LOOPBACK}/{ipaddress.ip_network(f'{ip}/24', strict=False)}"
    if ip.version == 4:
        return str(ipaddress.ip_network(f"{ip}/24", strict=False))
    return str(ipaddress.ip_network(f"{ip}/48", strict=False))


def is_loopback_group(group: str) -> bool:
    return group == LOOPBACK or group.startswith(LOOPBACK + "/")


def is_loopback(host: str) -> bool:
    return is_loopback_group(netgroup(host))


@dataclass(frozen=True, slots=True)
class InboundLimits:
    max_peers: int
    max_inbound: int
    per_ip: int
    per_subnet: int
    limit_loopback: bool = False


Key = TypeVar("Key")


@dataclass(slots=True)
class Candidate(Generic[Key]):
    """An open inbound link as eviction sees it."""

    key: Key             # whatever the caller uses to find the link again
    host: str
    opened_at: float     # monotonic
    rtt: float | None


def host_cap_refusal(limits: InboundLimits, host: str, inbound_hosts: Iterable[str]) -> CloseReason | None:
    """"too_many_from_ip" / "too_many_from_subnet" when `host` already holds its share of inbound
    connections (handshakes in progress included), else None."""
    group = netgroup(host)
    if is_loopback_group(group) and not limits.limit_loopback:
        return None
    same_ip = same_group = 0
    for other in inbound_hosts:
        if other == host:
            same_ip += 1
        if netgroup(other) == group:
            same_group += 1
    if same_ip >= limits.per_ip:
        return CloseReason.TOO_MANY_FROM_IP
    if same_group >= limits.per_subnet:
        return CloseReason.TOO_MANY_FROM_SUBNET
    return None


class HandshakeRate:
    """New inbound connections a second from one address, one netgroup (four times that) and in all: a handshake
    costs us its Diffie-Hellman and signature work before we know who dials, and a refused one (another chain, a
    full house) can be tried again at once, so the caps on open connections alone let one host keep a core busy
    handshaking. Past a budget the connection is refused at accept, before any of that work. The total is shared
    by netgroup as the public surfaces share theirs (`p2p/public/rate.py`): one bucket for all let the first
    networks to ask take it, and a newcomer's network waited behind them. Loopback is exempt unless
    `limit_loopback`, as it is from the caps."""

    def __init__(self, per_ip: float, total: float, limit_loopback: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        self.limit_loopback = limit_loopback
        self.rate = ClientRate(per_ip, total, surface="handshake", clock=clock or time.monotonic)

    @property
    def refused(self) -> int:
        return sum(self.rate.refused.values())

    def allow(self, host: str) -> bool:
        if not self.limit_loopback and is_loopback(host):
            return True
        return self.rate.check(host) is None

    def charge(self, host: str, handshakes: float) -> None:
        """`host` broke the protocol: its address and its network lose what their buckets hold and owe `handshakes`
        more before their next one, so a fresh key (free) does not buy a fresh chance at once."""
        if not self.limit_loopback and is_loopback(host):
            return
        now = self.rate.clock()
        for table, key in ((self.rate.by_address, host_of(host)), (self.rate.by_subnet, subnet_of(host))):
            table.take(key, now, max(0.0, table.tokens(key, now)) + handshakes)     # its burst spent, then owing


class EvictionPolicy:
    """Chooses which inbound peer (if any) makes room for a new connection."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or os.urandom(16)

    def _keyed(self, group: str) -> bytes:
        return hashlib.blake2b(group.encode(), key=self._secret, digest_size=8).digest()

    def choose(self, candidates: Sequence[Candidate[Key]]) -> Candidate[Key] | None:
        pool = list(candidates)
        # a few netgroups an attacker cannot predict, so no flood from new subnets can take them all
        pool.sort(key=lambda c: self._keyed(netgroup(c.host)))
        seen: set[str] = set()
        kept = []
        for c in pool:
            group = netgroup(c.host)
            if group not in seen and len(seen) < PROTECT_NETGROUPS:
                seen.add(group)
                continue
            kept.append(c)
        pool = kept
        # the fastest peers
        measured = sorted((c for c in pool if c.rtt is not None), key=lambda c: c.rtt or 0.0)
        fast = {id(c) for c in measured[:PROTECT_LOW_RTT]}
        pool = [c for c in pool if id(c) not in fast]
        # the longest-lived half of the rest
        pool.sort(key=lambda c: c.opened_at)
        pool = pool[len(pool) // 2:]
        if not pool:
            return None
        groups: dict[str, list[Candidate[Key]]] = {}
        for c in pool:
            groups.setdefault(netgroup(c.host), []).append(c)
        crowded = max(groups.values(), key=lambda g: (len(g), max(c.opened_at for c in g)))
        return max(crowded, key=lambda c: c.opened_at)
