"""The routing table: 160 k-buckets by XOR distance, kept from the links and lookups a node already makes.

Resistance as S/Kademlia and libp2p's kad-dht ask: ids are bound to keys (the Noise handshake proves
them), a bucket holds at most `per_subnet` contacts of one /24 (or /48) and the table `per_subnet_total`,
so one subnet cannot fill the neighbourhood of an id (loopback contacts are exempt unless `limit_loopback`:
nodes on one machine are its operator's, as for inbound links); and a full bucket keeps its oldest contact unless it
fails a check (test before evict: long-lived nodes are the likeliest to stay, and a flood of fresh ids
cannot push them out).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from p2p.admission import is_loopback_group
from p2p.dht.ids import ID_BITS, bucket_of, distance

K = 20
MAX_FAILURES = 3        # queries or dials failed in a row before a contact is dropped


@dataclass(slots=True)
class Contact:
    node_id: str
    host: str
    port: int
    subnet: str                 # the /24 (or /48) it was seen from
    last_seen: float = 0.0
    failures: int = 0


@dataclass(slots=True)
class _Bucket:
    contacts: list[Contact] = field(default_factory=list)     # oldest first
    pending: Contact | None = None                            # waits for the oldest to fail its check


class RoutingTable:
    def __init__(self, own_id: str, *, k: int = K, per_subnet: int = 2, per_subnet_total: int = 10,
                 limit_loopback: bool = False, max_failures: int = MAX_FAILURES) -> None:
        self.own_id = own_id
        self.max_failures = max_failures
        self.limit_loopback = limit_loopback
        self.k = k
        self.per_subnet = per_subnet
        self.per_subnet_total = per_subnet_total
        self._buckets = [_Bucket() for _ in range(ID_BITS)]
        self._where: dict[str, int] = {}                       # node id -> bucket index
        self._subnets: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._where

    def _limited(self, contact: Contact) -> bool:
        return self.limit_loopback or not is_loopback_group(contact.subnet)

    def _refuse(self, reason: str) -> str:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return reason

    def add(self, contact: Contact, now: float) -> str:
        """Offer a contact seen alive: `added`, `updated`, `check_oldest` (the bucket is full: the driver checks
        `oldest_to_check` and reports with `checked`), or why it was refused."""
        if contact.node_id == self.own_id:
            return self._refuse("self")
        index = bucket_of(self.own_id, contact.node_id)
        bucket = self._buckets[index]
        if self.touch(contact.node_id, now):
            return "updated"
        limited = self._limited(contact)
        if limited and sum(1 for c in bucket.contacts if c.subnet == contact.subnet) >= self.per_subnet:
            return self._refuse("bucket_subnet_limit")
        if limited and self._subnets.get(contact.subnet, 0) >= self.per_subnet_total:
            return self._refuse("table_subnet_limit")
        contact.last_seen = now
        if len(bucket.contacts) < self.k:
            self._insert(index, contact)
            return "added"
        failing = max(bucket.contacts, key=lambda c: c.failures)
        if failing.failures:            # it already failed a check: the newcomer takes its place
            self.remove(failing.node_id)
            self._insert(index, contact)
            return "added"
        bucket.pending = contact
        return "check_oldest"

    def touch(self, node_id: str, now: float) -> bool:
        """A known contact was seen alive: it moves to the end of its bucket (most recently seen)."""
        index = self._where.get(node_id)
        if index is None:
            return False
        contacts = self._buckets[index].contacts
        for i, known in enumerate(contacts):
            if known.node_id == node_id:
                known.last_seen, known.failures = now, 0
                contacts.append(contacts.pop(i))
                return True
        return False

    def failed(self, node_id: str, now: float) -> bool:
        """A query or dial to a contact failed: counted (a contact that failed is handed out by nobody and
        is the first a newcomer replaces); after `max_failures` in a row it is dropped. Whether it was."""
        contact = self.get(node_id)
        if contact is None:
            return False
        contact.failures += 1
        if contact.failures < self.max_failures:
            return False
        self.checked(node_id, False, now)
        return True

    def readdress(self, node_id: str, host: str, port: int) -> None:
        """A contact's address was proven (we dialled it and met the node): it replaces what was held."""
        contact = self.get(node_id)
        if contact is not None:
            contact.host, contact.port = host, port

    def _insert(self, index: int, contact: Contact) -> None:
        self._buckets[index].contacts.append(contact)
        self._where[contact.node_id] = index
        self._subnets[contact.subnet] = self._subnets.get(contact.subnet, 0) + 1

    def oldest_to_check(self, node_id: str) -> Contact | None:
        """For a bucket where `node_id` waits: the contact to check before it may take that place."""
        bucket = self._buckets[bucket_of(self.own_id, node_id)]
        return bucket.contacts[0] if bucket.pending is not None and bucket.contacts else None

    def checked(self, node_id: str, alive: bool, now: float) -> None:
        """The result of checking an oldest contact: alive, it stays (and the newcomer is dropped); dead, the
        newcomer takes its place."""
        index = self._where.get(node_id)
        if index is None:
            return
        bucket = self._buckets[index]
        if alive:
            self.touch(node_id, now)
            bucket.pending = None
            return
        self.remove(node_id)
        if bucket.pending is not None:
            pending, bucket.pending = bucket.pending, None
            if not self._limited(pending) or self._subnets.get(pending.subnet, 0) < self.per_subnet_total:
                self._insert(index, pending)

    def remove(self, node_id: str) -> None:
        index = self._where.pop(node_id, None)
        if index is None:
            return
        bucket = self._buckets[index]
        for i, contact in enumerate(bucket.contacts):
            if contact.node_id == node_id:
                del bucket.contacts[i]
                left = self._subnets.get(contact.subnet, 1) - 1
                if left > 0:
                    self._subnets[contact.subnet] = left
                else:
                    self._subnets.pop(contact.subnet, None)
                return

    def closest(self, target: str, count: int | None = None) -> list[Contact]:
        """The `count` (k) contacts closest to `target` by XOR distance."""
        count = self.k if count is None else count
        contacts = [c for b in self._buckets for c in b.contacts]
        contacts.sort(key=lambda c: distance(c.node_id, target))
        return contacts[:count]

    def get(self, node_id: str) -> Contact | None:
        index = self._where.get(node_id)
        if index is None:
            return None
        return next((c for c in self._buckets[index].contacts if c.node_id == node_id), None)

    def buckets(self) -> list[tuple[int, int]]:
        """(bucket index, contacts) of every non-empty bucket."""
        return [(i, len(b.contacts)) for i, b in enumerate(self._buckets) if b.contacts]
