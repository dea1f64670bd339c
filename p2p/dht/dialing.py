"""Where the DHT dials, sans I/O: the addresses it holds for node ids, and the pace of its dials.

Addresses come from others (a contact in an answer, a record) and are only hints, so a hint never displaces
what we saw ourselves: the IP a peer's link came from, or better an address we dialled and found the node at.
Each dial to a handed-out address is a connection to a host somebody else chose, so dials are spaced per
address (backing off while it fails), per /24 (or /48, backing off while its dials fail) and in all: a
node cannot be made to hammer a third party, however many contacts point there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, TypeVar

from p2p.admission import is_loopback_group, netgroup

HINT = 0            # an address another node handed out
OBSERVED = 1        # the IP the node's link came from, with the port it says it listens on
DIALLED = 2         # an address we dialled and found the node at

_Key = TypeVar("_Key", bound=Hashable)


class Paced(Exception):
    """A dial not made now: its address, its /24 or the DHT in all dialled too recently (or kept failing)."""


@dataclass(slots=True)
class _Hint:
    host: str
    port: int
    at: float           # when learnt
    rank: int           # HINT, OBSERVED or DIALLED


class AddressHints:
    """node id -> the address to dial it at; at most `max_entries` (the oldest learnt goes first), none older
    than `max_age` seconds, and a better-founded address is never replaced by a worse one."""

    def __init__(self, *, max_entries: int = 4096, max_age: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._hints: dict[str, _Hint] = {}          # oldest learnt first

    def __len__(self) -> int:
        return len(self._hints)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._hints

    def learn(self, node_id: str, host: str, port: int, now: float, rank: int = HINT) -> None:
        """Remember where `node_id` may be, unless a better-founded address is held for it."""
        known = self._hints.get(node_id)
        if known is not None and known.rank > rank and now - known.at < self.max_age:
            return
        if known is not None and known.rank == rank == HINT and (known.host, known.port) != (host, port) \
                and now - known.at < self.max_age:
            return                                   # the first hint stands until it fails or ages out
        self._hints.pop(node_id, None)
        self._hints[node_id] = _Hint(host, port, now, rank)
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._hints:
            oldest_id, oldest = next(iter(self._hints.items()))
            if len(self._hints) <= self.max_entries and now - oldest.at < self.max_age:
                return
            del self._hints[oldest_id]

    def get(self, node_id: str, now: float) -> tuple[str, int] | None:
        hint = self._hints.get(node_id)
        if hint is None:
            return None
        if now - hint.at >= self.max_age:
            del self._hints[node_id]
            return None
        return hint.host, hint.port

    def dialled(self, node_id: str) -> bool:
        hint = self._hints.get(node_id)
        return hint is not None and hint.rank == DIALLED

    def forget(self, node_id: str) -> None:
        self._hints.pop(node_id, None)


@dataclass(slots=True)
class _Gate:
    next_at: float = 0.0        # no dial before this
    failures: int = 0           # dials failed in a row
    last: float = 0.0           # the last dial or result


class DialPacer:
    """May the DHT dial `host:port` now? At most one dial per `address_gap` s to an address, and after `n`
    failures in a row none for `backoff * 2^(n-1)` s (at most `max_backoff`); one per `subnet_gap` s into a
    /24, doubling per failure in a row there (at most `max_subnet_backoff`); and `per_window` dials per
    `window` s in all. A failure streak is forgotten once nothing was dialled there for twice `max_backoff` s.
    Loopback is one network only if `limit_loopback` (as for the routing table)."""

    def __init__(self, *, address_gap: float = 1.0, backoff: float = 5.0, max_backoff: float = 600.0,
                 subnet_gap: float = 0.2, max_subnet_backoff: float = 60.0, per_window: int = 64,
                 window: float = 10.0, max_entries: int = 4096, limit_loopback: bool = False) -> None:
        self.address_gap = address_gap
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.subnet_gap = subnet_gap
        self.max_subnet_backoff = max_subnet_backoff
        self.per_window = per_window
        self.window = window
        self.max_entries = max_entries
        self.limit_loopback = limit_loopback
        self._addresses: dict[tuple[str, int], _Gate] = {}     # least recently used first
        self._subnets: dict[str, _Gate] = {}
        self._window_start = 0.0
        self._window_dials = 0
        self.refused: dict[str, int] = {}

    def _subnet(self, host: str) -> str | None:
        group = netgroup(host)
        return None if is_loopback_group(group) and not self.limit_loopback else group

    def _gate(self, gates: dict[_Key, _Gate], key: _Key, now: float) -> _Gate:
        """The gate for `key`, moved to the end (most recently used); the least recently used go past
        `max_entries`, and a streak left alone for twice `max_backoff` s starts over."""
        gate = gates.pop(key, None)
        if gate is None or now - gate.last >= 2 * self.max_backoff:
            gate = _Gate(last=now)
        gates[key] = gate
        while len(gates) > self.max_entries:
            del gates[next(iter(gates))]
        return gate

    def _refuse(self, reason: str) -> str:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return reason

    def allow(self, host: str, port: int, now: float) -> str | None:
        """None: dial now (the dial is counted); else why not."""
        if now - self._window_start >= self.window:
            self._window_start, self._window_dials = now, 0
        if self._window_dials >= self.per_window:
            return self._refuse("dht_dials_paced")
        address = self._gate(self._addresses, (host, port), now)
        if now < address.next_at:
            return self._refuse("address_paced")
        subnet_key = self._subnet(host)
        subnet = None if subnet_key is None else self._gate(self._subnets, subnet_key, now)
        if subnet is not None and now < subnet.next_at:
            return self._refuse("subnet_paced")
        self._window_dials += 1
        address.next_at, address.last = now + self.address_gap, now
        if subnet is not None:
            subnet.next_at, subnet.last = now + self.subnet_gap, now
        return None

    def result(self, host: str, port: int, ok: bool, now: float) -> None:
        """How an allowed dial went: a failure backs off its address and its /24, a success clears both."""
        address = self._gate(self._addresses, (host, port), now)
        subnet_key = self._subnet(host)
        subnet = None if subnet_key is None else self._gate(self._subnets, subnet_key, now)
        for gate, base, cap in ((address, self.backoff, self.max_backoff),
                                (subnet, self.subnet_gap, self.max_subnet_backoff)):
            if gate is None:
                continue
            gate.last = now
            if ok:
                gate.failures = 0
                continue
            gate.failures += 1
            gate.next_at = max(gate.next_at, now + min(cap, base * 2 ** min(gate.failures - 1, 30)))
