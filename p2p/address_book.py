"""Known addresses, kept apart from live links, with per-address dial backoff.

Discovery feeds it; the PeerManager dials from it. It is built to survive poisoning by peer
exchange: a size cap, a per-source intake cap per interval, unverified entries never evicting
verified ones, and addresses we cannot dial skipped at the door. As addrman's "new" table is bucketed by
the network group of whoever told us, each source group (the reporter's /24 or /48) holds at most a share
of the unverified entries: a flooder churns its own share, and when the book is full the heaviest source
group gives up an entry, never a quiet one. Both tables are also split by the network group of the address
itself (its /16 or /32, `address_group`): one range holds at most a quarter of the unverified entries (a
flood aimed at one range, told by many sources, churns the heaviest of those sources) and at most an eighth
of the verified ones, so whoever runs many real nodes in one range cannot fill what we dial. When a range's
verified share is full, a newly reached address there replaces one that failed or was never reached; when
all of them work, the newcomer waits unverified and the range's least recently reached entry is queued
for a check dial first (addrman's test-before-evict): a failing check makes room. As in Bitcoin Core's addrman, an address
is verified ("tried") only once we dialled it and reached the node: the listen address an inbound peer
claims in its hello is queued for one feeler dial (made once that peer is no longer linked), so a stranger
cannot fill the verified table or the peers we remember with addresses nobody checked. An unverified address
is forgotten after UNVERIFIED_RETRIES failed dials, a claim only its claimant told us after CLAIM_RETRIES
(addrman's count for an address never reached): a peer that links in and claims another host's address makes
us dial that host a few times, not a series.
"""
from __future__ import annotations

import ipaddress
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from p2p.admission import LOOPBACK
from p2p.discovery.base import SOURCE_PRIORITY, Candidate
from p2p.public.sources import adjust_count, client_ip
from p2p.resilience.backoff import Backoff

Address = tuple[str, int]
MAX_FEELERS = 256       # claimed addresses waiting for their check dial (the oldest forgotten)
UNVERIFIED_RETRIES = 8  # failed dials after which an address nobody has reached is forgotten ...
CLAIM_RETRIES = 3       # ... or, told only by the peer itself in an inbound hello, after these (addrman's 3)


@dataclass(slots=True)
class KnownAddress:
    host: str
    port: int
    source: str
    node_id: str | None = None
    verified: bool = False
    first_seen: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)
    last_connected: float | None = None
    failures: int = 0
    next_attempt: float = 0.0  # monotonic
    source_group: str = ""     # who told us (the reporter's network group): its share of the unverified
    address_group: str = ""    # the address's own network group (`address_group`): its range's shares
    last_error: str | None = None
    backoff: Backoff | None = None

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def priority(self) -> int:
        return SOURCE_PRIORITY.get(self.source, 9)


def address_group(host: str) -> str:
    """The network group of an address as addrman groups them: its /16 (IPv4) or /32 (IPv6), marked as loopback
    for loopback addresses (127.a.0.0/16 each, as `netgroup` splits loopback); a host name is a group of its own."""
    ip = client_ip(host)
    if ip is None:
        return f"name:{host.lower()}"
    group = str(ipaddress.ip_network(f"{ip}/{16 if ip.version == 4 else 32}", strict=False))
    if ip.is_loopback:
        return LOOPBACK if ip.version == 6 else f"{LOOPBACK}/{group}"
    return group


def dialable(host: str, port: int, *, allow_loopback: bool = True) -> bool:
    """Only concrete unicast IPs (or a plausible hostname) with a real port are worth a dial."""
    if not (0 < port < 65536) or not host or len(host) > 253:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return all(c.isalnum() or c in "-." for c in host)
    if ip.is_loopback:          # before `is_reserved`: Python counts ::1 in the reserved ::/8
        return allow_loopback
    return not (ip.is_unspecified or ip.is_multicast or ip.is_reserved
                or (ip.version == 4 and str(ip) == "255.255.255.255"))


class AddressBook:
    def __init__(self, *, capacity: int = 2000, per_source_per_interval: int = 100, interval: float = 60.0,
                 backoff_base: float = 1.0, backoff_cap: float = 30.0, rng: random.Random | None = None) -> None:
        self.capacity = capacity
        self.per_source_per_interval = per_source_per_interval
        self.interval = interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self._entries: dict[Address, KnownAddress] = {}
        self._intake: dict[str, tuple[float, int]] = {}  # reporter -> (window start, count)
        self.rejected = 0
        self.self_addresses: set[Address] = set()
        self.feelers: OrderedDict[Address, str] = OrderedDict()     # claimed addresses to dial once to check
        self.new_share = max(16, capacity // 16)    # unverified entries one source group may hold
        self.new_range_share = max(64, capacity // 4)   # unverified entries of one address group
        self.tried_range_share = max(64, capacity // 8)     # verified entries of one address group
        self._new_by_group: dict[str, int] = {}      # source group -> its unverified entries
        self._new_by_range: dict[str, int] = {}      # address group -> its unverified entries
        self._tried_by_range: dict[str, int] = {}    # address group -> its verified entries
        self._tests: set[Address] = set()           # verified entries queued for a check before an eviction
        self.tried_collisions = 0                    # reached addresses kept unverified: their range was full

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KnownAddress]:
        return iter(list(self._entries.values()))

    def get(self, address: Address) -> KnownAddress | None:
        return self._entries.get(address)

    def _backoff(self) -> Backoff:
        return Backoff(base=self.backoff_base, cap=self.backoff_cap, rng=self._rng)

    def add(self, candidate: Candidate, *, reporter: str | None = None, reporter_group: str | None = None,
            verified: bool = False) -> bool:
        """Add or refresh an address; returns True if it is new. `reporter` is who told us and `reporter_group`
        its network group (a /24 or /48): keys are free, so a group's reporters together get four reporters'
        intake."""
        address = candidate.address
        if address in self.self_addresses or not dialable(candidate.host, candidate.port):
            self.rejected += 1
            return False
        entry = self._entries.get(address)
        now = time.time()
        if entry is not None:
            entry.last_seen = now
            if candidate.node_id and not entry.verified:
                entry.node_id = candidate.node_id
            if SOURCE_PRIORITY.get(candidate.source, 9) < entry.priority:
                entry.source = candidate.source
            if verified:
                self._set_verified(entry)
            return False
        if reporter is not None and not self._take_intake(reporter):
            self.rejected += 1
            return False
        if reporter_group is not None and not self._take_intake(f"group:{reporter_group}",
                                                                4 * self.per_source_per_interval):
            self.rejected += 1
            return False
        group = reporter_group or (f"id:{reporter}" if reporter is not None else f"source:{candidate.source}")
        if not self._make_room(group, address_group(candidate.host), verified):
            self.rejected += 1
            return False
        entry = KnownAddress(candidate.host, candidate.port, candidate.source, candidate.node_id, False,
                             backoff=self._backoff(), source_group=group)
        self._put(entry)
        if verified:
            self._set_verified(entry)
        return True

    def _make_room(self, group: str, address_range: str, verified: bool) -> bool:
        """Room for one more entry told by `group` at an address in `address_range`: a full share replaces one
        of its own (the source group's, then the range's heaviest source); a full book gives up its worst."""
        if not verified and self._new_by_group.get(group, 0) >= self.new_share:
            return self._evict_from(group)          # its share is full: it replaces one of its own
        if not verified and self._new_by_range.get(address_range, 0) >= self.new_range_share:
            return self._evict_in_range(address_range)
        return len(self._entries) < self.capacity or self._evict_one(for_verified=verified)

    def _put(self, entry: KnownAddress) -> None:
        self._drop(entry.address)
        entry.address_group = entry.address_group or address_group(entry.host)
        self._entries[entry.address] = entry
        if entry.verified:
            adjust_count(self._tried_by_range, entry.address_group, 1)
        else:
            adjust_count(self._new_by_group, entry.source_group, 1)
            adjust_count(self._new_by_range, entry.address_group, 1)

    def _drop(self, address: Address) -> None:
        entry = self._entries.pop(address, None)
        self._tests.discard(address)
        if entry is None:
            return
        if entry.verified:
            adjust_count(self._tried_by_range, entry.address_group, -1)
        else:
            adjust_count(self._new_by_group, entry.source_group, -1)
            adjust_count(self._new_by_range, entry.address_group, -1)

    def _set_verified(self, entry: KnownAddress) -> bool:
        """Move a reached entry to the verified table, unless its range's share is full of entries that work
        (then one of them is queued for a check and the entry stays unverified). Whether it is verified."""
        if entry.verified:
            return True
        if self._tried_by_range.get(entry.address_group, 0) >= self.tried_range_share \
                and not self._make_tried_room(entry.address_group):
            self.tried_collisions += 1
            return False
        entry.verified = True
        adjust_count(self._new_by_group, entry.source_group, -1)
        adjust_count(self._new_by_range, entry.address_group, -1)
        adjust_count(self._tried_by_range, entry.address_group, 1)
        return True

    def _make_tried_room(self, address_range: str) -> bool:
        """Test-before-evict: a verified entry of the range that failed or was never reached makes room; if all
        work, the least recently reached is queued for a check dial (a failure there makes room next time)."""
        tried = [e for e in self._entries.values() if e.verified and e.address_group == address_range]
        failing = [e for e in tried if e.failures > 0 or e.last_connected is None]
        if failing:
            self._drop(max(failing, key=lambda e: (e.failures, -e.last_seen)).address)
            return True
        oldest = min(tried, key=lambda e: e.last_connected or 0.0, default=None)
        if oldest is not None and oldest.node_id and oldest.address not in self._tests:
            self._tests.add(oldest.address)
            self.feelers[oldest.address] = oldest.node_id
            self.feelers.move_to_end(oldest.address)
        return False

    def _evict_in_range(self, address_range: str) -> bool:
        """The range's unverified share is full: the heaviest source group among its entries gives one up (of
        equally heavy ones, the one that told us something last: an established teller outlasts a new one)."""
        victims = [e for e in self._entries.values() if not e.verified and e.address_group == address_range]
        if not victims:
            return False
        weight: dict[str, tuple[int, float]] = {}
        for e in victims:
            count, newest = weight.get(e.source_group, (0, 0.0))
            weight[e.source_group] = (count + 1, max(newest, e.first_seen))
        group = max(weight, key=lambda g: weight[g])
        self._drop(max((e for e in victims if e.source_group == group), key=lambda e: (e.failures, -e.last_seen)).address)
        return True

    def _evict_from(self, group: str) -> bool:
        victims = [e for e in self._entries.values() if not e.verified and e.source_group == group]
        if not victims:
            return False
        self._drop(max(victims, key=lambda e: (e.failures, -e.last_seen)).address)
        return True

    def new_by_group(self) -> dict[str, int]:
        """Unverified entries per source group (a copy)."""
        return dict(self._new_by_group)

    def by_range(self) -> tuple[dict[str, int], dict[str, int]]:
        """(unverified, verified) entries per address group (copies)."""
        return dict(self._new_by_range), dict(self._tried_by_range)

    def _take_intake(self, reporter: str, limit: int | None = None) -> bool:
        now = time.monotonic()
        start, count = self._intake.get(reporter, (now, 0))
        if now - start > self.interval:
            start, count = now, 0
        if count >= (self.per_source_per_interval if limit is None else limit):
            self._intake[reporter] = (start, count)
            return False
        self._intake[reporter] = (start, count + 1)
        if len(self._intake) > 4 * self.capacity:
            self._intake.clear()
        return True

    def _evict_one(self, *, for_verified: bool) -> bool:
        """Make room: the worst unverified entry of the source group holding the most; verified entries go
        only for verified ones (one never reached, or failing)."""
        if self._new_by_group:
            return self._evict_from(max(self._new_by_group, key=lambda g: self._new_by_group[g]))
        if not for_verified:
            return False
        victims = [e for e in self._entries.values() if e.last_connected is None or e.failures > 0]
        if not victims:
            return False
        self._drop(max(victims, key=lambda e: (e.failures, -e.last_seen)).address)
        return True

    def remove(self, address: Address) -> None:
        self._drop(address)

    def mark_claimed(self, address: Address, node_id: str, reporter: str) -> KnownAddress | None:
        """A node that dialled us says it listens at `address`: remembered unverified and queued for a feeler
        dial (nobody has dialled it; anyone can claim any address in a hello). `reporter` (the claimant's
        subnet) is held to the per-source intake cap. None when the claim was not taken."""
        entry = self._entries.get(address)
        if entry is not None and entry.verified:
            if entry.node_id == node_id:
                entry.last_seen = time.time()
            return entry
        if entry is None:
            if address in self.self_addresses or not dialable(*address) or not self._take_intake(reporter):
                self.rejected += 1
                return None
            if not self._make_room(reporter, address_group(address[0]), False):
                self.rejected += 1
                return None
            entry = KnownAddress(address[0], address[1], "inbound", node_id, False, backoff=self._backoff(),
                                 source_group=reporter)
            self._put(entry)
        entry.node_id = node_id
        entry.last_seen = time.time()
        self.feelers[address] = node_id
        self.feelers.move_to_end(address)
        while len(self.feelers) > MAX_FEELERS:
            self.feelers.popitem(last=False)
        return entry

    def next_feeler(self) -> tuple[Address, str] | None:
        """The oldest claimed address still unverified (and in the book), to dial once to check it."""
        while self.feelers:
            address, node_id = self.feelers.popitem(last=False)
            entry = self._entries.get(address)
            tested = address in self._tests
            self._tests.discard(address)
            if entry is not None and entry.node_id == node_id and (not entry.verified or tested):
                return address, node_id
        return None

    def mark_verified(self, address: Address, node_id: str) -> None:
        """A dial to `address` reached `node_id` (its handshake proved the key), even if the link was then
        refused as a duplicate."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.node_id = node_id
            self._set_verified(entry)
            entry.failures = 0
            entry.last_error = None

    def mark_connected(self, address: Address, node_id: str, source: str | None = None) -> KnownAddress:
        """We dialled `address` and reached `node_id`: the address is verified."""
        entry = self._entries.get(address)
        if entry is None:
            if len(self._entries) >= self.capacity:
                self._evict_one(for_verified=True)
            entry = KnownAddress(address[0], address[1], source or "inbound", node_id, False, backoff=self._backoff(),
                                 source_group=f"source:{source or 'inbound'}")
            self._put(entry)
        entry.node_id = node_id
        self._set_verified(entry)
        entry.failures = 0
        entry.last_error = None
        entry.last_connected = entry.last_seen = time.time()
        entry.next_attempt = 0.0
        if entry.backoff:
            entry.backoff.reset()
        return entry

    def mark_failed(self, address: Address, reason: str, *, delay: float | None = None, reached: bool = False) -> None:
        """A dial failed; `reached` when it still proved the address leads to a live node (a duplicate link)."""
        entry = self._entries.get(address)
        if entry is None:
            return
        if reached:
            entry.last_connected = time.time()
        entry.failures += 1
        entry.last_error = reason
        backoff = entry.backoff or self._backoff()
        entry.backoff = backoff
        wait = backoff.next_delay() if delay is None else delay
        entry.next_attempt = time.monotonic() + wait
        if not entry.verified and entry.failures >= (CLAIM_RETRIES if entry.source == "inbound" else UNVERIFIED_RETRIES):
            self._drop(address)

    def schedule_reconnect(self, address: Address, *, delay: float | None = None) -> None:
        """A live link was lost: retry soon (first retry well under a second), then back off
        (`delay`, when given, replaces the backoff)."""
        entry = self._entries.get(address)
        if entry is None:
            return
        backoff = entry.backoff or self._backoff()
        entry.backoff = backoff
        entry.next_attempt = time.monotonic() + (backoff.next_delay() if delay is None else delay)

    def due(self, now: float | None = None) -> list[KnownAddress]:
        """Entries whose backoff has expired, best first: source priority, then fewest failures."""
        now = time.monotonic() if now is None else now
        ready = [e for e in self._entries.values() if e.next_attempt <= now]
        ready.sort(key=lambda e: (e.priority, not e.verified, e.failures, -e.last_seen))
        return ready

    def due_unreached(self, source: str, now: float | None = None) -> list[KnownAddress]:
        """Due entries from `source` that never led to a link, best first (cheap: filtered before sorting)."""
        now = time.monotonic() if now is None else now
        ready = [e for e in self._entries.values()
                 if e.source == source and e.last_connected is None and e.next_attempt <= now]
        ready.sort(key=lambda e: (e.failures, -e.last_seen))
        return ready

    def verified(self) -> list[KnownAddress]:
        return [e for e in self._entries.values() if e.verified]

    def load(self, entries: Iterable[KnownAddress]) -> None:
        """Remembered entries, verified ones first as given (a range's verified share still holds)."""
        for entry in entries:
            if entry.address not in self.self_addresses and len(self._entries) < self.capacity:
                entry.backoff = entry.backoff or self._backoff()
                entry.source_group = entry.source_group or f"source:{entry.source}"
                verified, entry.verified = entry.verified, False
                self._put(entry)
                if verified and self._tried_by_range.get(entry.address_group, 0) < self.tried_range_share:
                    self._set_verified(entry)


