"""Signed node records, and what a DHT node keeps of others'.

A record says where a node is and what it serves: its id, key, addresses (each with how it was learnt:
`listen`, `observed`, `mapped`, `relayed`), services, protocol, a sequence number and an expiry, signed by
the node's key. Its id must be the hash of that key, so nobody can publish a record for an id it does not
hold, and a higher sequence number replaces a lower one, so an old record cannot be replayed over a new
one. The DHT is trusted for addresses only: what a record says is a hint to dial, and the Noise handshake
then proves the node (the chain's certificates stay the only authority on anything else).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import msgpack

from p2p.admission import is_loopback_group, netgroup
from p2p.dht.ids import ID_HEX
from p2p.public.sources import adjust_count, drop_from

DOMAIN = "exchange-node/dht-record/1"
MAX_ADDRESSES = 8
MAX_SERVICES = 32
MAX_NAME = 128
MAX_HOST = 255
MAX_RECORD_BYTES = 2048
MAX_TTL_MS = 24 * 3600 * 1000            # a record may claim to live at most a day
CREDIT_TTL_MS = 3600 * 1000              # a stored record counts as alive at most this long (our own records' TTL)
HOW = ("listen", "observed", "mapped", "relayed")
ENDPOINT_PREFIX = "webtransport:"       # a services entry naming where browsers dial the node: no service to provide


def provided(services: tuple[str, ...]) -> tuple[str, ...]:
    """The services a record's node provides: its list without the entries that only describe the node."""
    return tuple(s for s in services if not s.startswith(ENDPOINT_PREFIX))

Sign = Callable[[bytes], bytes]
Verify = Callable[[bytes, bytes, bytes], bool]      # (public key, signature, data)
NodeIdFor = Callable[[bytes], str]
Address = tuple[str, int, str]                       # host, port, how it was learnt


class RecordError(ValueError):
    """A record that cannot be valid (shape, size, id, signature): its sender made it up."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_id: str
    public_key: bytes
    addresses: tuple[Address, ...]
    services: tuple[str, ...]
    protocol: int
    seq: int
    expires_ms: int
    sig: bytes = b""

    def signed_part(self) -> bytes:
        return bytes(msgpack.packb([DOMAIN, self.node_id, self.public_key, [list(a) for a in self.addresses],
                                    list(self.services), self.protocol, self.seq, self.expires_ms],
                                   use_bin_type=True))

    def wire(self) -> list[object]:
        return [self.node_id, self.public_key, [list(a) for a in self.addresses], list(self.services),
                self.protocol, self.seq, self.expires_ms, self.sig]

    @classmethod
    def create(cls, public_key: bytes, sign: Sign, node_id_for: NodeIdFor, *, addresses: tuple[Address, ...],
               services: tuple[str, ...], protocol: int, seq: int, expires_ms: int) -> NodeRecord:
        unsigned = cls(node_id_for(public_key), public_key, addresses, services, protocol, seq, expires_ms)
        return cls(unsigned.node_id, public_key, addresses, services, protocol, seq, expires_ms,
                   sign(unsigned.signed_part()))

    @classmethod
    def from_wire(cls, data: object) -> NodeRecord:
        """The record a peer sent, its shape and sizes checked (not yet its signature: `check`)."""
        if type(data) is not list or len(data) != 8:
            raise RecordError("not a record")
        node_id, key, addresses, services, protocol, seq, expires_ms, sig = data
        if type(node_id) is not str or len(node_id) != ID_HEX or type(key) is not bytes or len(key) != 32 \
                or type(sig) is not bytes or len(sig) != 64:
            raise RecordError("bad id, key or signature")
        if type(addresses) is not list or len(addresses) > MAX_ADDRESSES or not all(
                type(a) is list and len(a) == 3 and type(a[0]) is str and 0 < len(a[0]) <= MAX_HOST
                and type(a[1]) is int and 0 < a[1] < 65536 and a[2] in HOW for a in addresses):
            raise RecordError("bad addresses")
        if type(services) is not list or len(services) > MAX_SERVICES or not all(
                type(s) is str and 0 < len(s) <= MAX_NAME for s in services):
            raise RecordError("bad services")
        if not all(type(v) is int and 0 <= v < (1 << 63) for v in (protocol, seq, expires_ms)):
            raise RecordError("bad numbers")
        record = cls(node_id, key, tuple((a[0], a[1], a[2]) for a in addresses), tuple(services), protocol, seq,
                     expires_ms, sig)
        if len(record.signed_part()) + len(sig) > MAX_RECORD_BYTES:
            raise RecordError("record too large")
        return record

    def check(self, verify: Verify, node_id_for: NodeIdFor) -> None:
        """Raises RecordError unless the id is the key's and the key signed the record."""
        if node_id_for(self.public_key) != self.node_id:
            raise RecordError("the id is not the key's")
        if not verify(self.public_key, self.sig, self.signed_part()):
            raise RecordError("bad signature")

    def live(self, now_ms: int) -> bool:
        return now_ms < self.expires_ms <= now_ms + MAX_TTL_MS


@dataclass(slots=True)
class _Held:
    """Who stored a kept record, as its quotas count it, and until when it is credited."""
    peer: str
    ip: str                 # the storing IP (or, for loopback not limited, the storing node)
    subnet: str             # its /24 (or /48)
    until_ms: int           # the record's expiry, capped at the credited TTL


class RecordStore:
    """What this node keeps of other nodes' records: their own records (by id, the newest sequence kept) and
    provider entries (service -> the records of nodes that serve it).

    Keys are free, so every quota stands behind one that is not: records per storing node, per storing IP and
    per /24 (or /48), then the store's size; provider entries per storing IP and /24 within a service, then
    `max_providers`; service slots per storing IP and /24, then `max_services`. A record is credited at most
    `credit_ms` of life whatever expiry it claims, and when something must go it is the oldest arrival of
    the /24 holding the most (never a sender's claim about itself), so a newcomer from a small network stays.
    Loopback sources count per storing node unless `limit_loopback` (nodes on one machine are its operator's).
    """

    def __init__(self, *, max_records: int = 4096, max_per_peer: int = 64, max_per_ip: int = 64,
                 max_per_subnet: int = 256, max_providers: int = 20, providers_per_ip: int = 2,
                 providers_per_subnet: int = 4, max_services: int = 1024, services_per_ip: int = 64,
                 services_per_subnet: int = 128, credit_ms: int = CREDIT_TTL_MS, limit_loopback: bool = False) -> None:
        self.max_records = max_records
        self.max_per_peer = max_per_peer
        self.max_per_ip = max_per_ip
        self.max_per_subnet = max_per_subnet
        self.max_providers = max_providers          # per service, as many as a lookup returns
        self.providers_per_ip = providers_per_ip
        self.providers_per_subnet = providers_per_subnet
        self.max_services = max_services
        self.services_per_ip = services_per_ip
        self.services_per_subnet = services_per_subnet
        self.credit_ms = credit_ms
        self.limit_loopback = limit_loopback
        self.nodes: dict[str, NodeRecord] = {}                      # oldest arrival (or refresh) first
        self.providers: dict[str, dict[str, NodeRecord]] = {}      # service -> node id -> its record, oldest first
        self._held: dict[str, _Held] = {}                           # record id -> who stored it
        self._per_peer: dict[str, int] = {}
        self._per_ip: dict[str, int] = {}
        self._by_subnet: dict[str, dict[str, None]] = {}            # subnet -> its record ids, oldest first
        self._owner: dict[str, _Held] = {}                          # service -> whose entry holds its slot
        self._services_per_ip: dict[str, int] = {}
        self._services_by_subnet: dict[str, dict[str, None]] = {}   # subnet -> the service slots it holds
        self._pruned_ms = 0
        self.refused: dict[str, int] = {}                           # reason -> count

    def _refuse(self, reason: str) -> str:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return reason

    def _keys(self, source: str, peer: str) -> tuple[str, str]:
        """The (IP, /24) a store counts against: where it came from; for loopback not limited, the node."""
        group = netgroup(source)
        if is_loopback_group(group) and not self.limit_loopback:
            return f"node:{peer}", f"node:{peer}"
        return source, group

    def put(self, record: NodeRecord, from_peer: str, now_ms: int, source: str | None = None) -> str | None:
        """Keep `record` (already checked), stored by `from_peer` from the address `source` (its IP; None:
        count it per peer only): None, or why not."""
        if not record.live(now_ms):
            return self._refuse("expired")
        known = self.nodes.get(record.node_id)
        if known is not None and known.seq >= record.seq:
            return None if known.seq == record.seq else self._refuse("older_sequence")
        ip, subnet = self._keys(source or from_peer, from_peer)
        why = self._over_quota(record.node_id, from_peer, ip, subnet)
        if why is not None:
            return self._refuse(why)
        self._forget(record.node_id)
        if len(self.nodes) >= self.max_records:
            self._make_room(now_ms)
        held = _Held(from_peer, ip, subnet, min(record.expires_ms, now_ms + self.credit_ms))
        self.nodes[record.node_id] = record
        self._held[record.node_id] = held
        adjust_count(self._per_peer, from_peer, 1)
        adjust_count(self._per_ip, ip, 1)
        self._by_subnet.setdefault(subnet, {})[record.node_id] = None
        for service in provided(record.services):
            self._provide(service, record, held)
        return None

    def _over_quota(self, node_id: str, peer: str, ip: str, subnet: str) -> str | None:
        """Why a store from (`peer`, `ip`, `subnet`) is over a quota, not counting the record it replaces;
        a node storing its own record passes the per-peer quota, never the per-IP or per-/24 ones."""
        held = self._held.get(node_id)
        same = (held.peer, held.ip, held.subnet) if held is not None else ("", "", "")
        if peer != node_id and self._per_peer.get(peer, 0) - (same[0] == peer) >= self.max_per_peer:
            return "peer_quota"
        if self._per_ip.get(ip, 0) - (same[1] == ip) >= self.max_per_ip:
            return "ip_quota"
        if len(self._by_subnet.get(subnet, ())) - (same[2] == subnet) >= self.max_per_subnet:
            return "subnet_quota"
        return None

    def _make_room(self, now_ms: int) -> None:
        """Drop the dead (at most once a second: it walks the store), else the oldest record of the biggest /24."""
        if now_ms - self._pruned_ms >= 1000:
            self.prune(now_ms)
        if len(self.nodes) < self.max_records or not self._by_subnet:
            return
        biggest = max(self._by_subnet.values(), key=len)
        self._forget(next(iter(biggest)))
        self.refused["evicted"] = self.refused.get("evicted", 0) + 1

    def _provide(self, service: str, record: NodeRecord, held: _Held) -> None:
        """List `record` among the providers of `service`, within its storer's shares of the service and of
        the service slots; a full list loses the oldest entry of the /24 holding most of it."""
        entries = self.providers.get(service)
        if entries is None:
            if not self._open_service(service, held):
                return
            entries = self.providers[service] = {}
        mine = [self._held[n] for n in entries]
        if sum(h.ip == held.ip for h in mine) >= self.providers_per_ip:
            self._refuse("provider_ip_quota")
            return
        if sum(h.subnet == held.subnet for h in mine) >= self.providers_per_subnet:
            self._refuse("provider_subnet_quota")
            return
        if len(entries) >= self.max_providers:
            counts: dict[str, int] = {}
            for h in mine:
                counts[h.subnet] = counts.get(h.subnet, 0) + 1
            biggest = max(counts.values())
            victim = next(n for n, h in zip(entries, mine) if counts[h.subnet] == biggest)
            self._unlist(service, victim)
            entries = self.providers.setdefault(service, {})
            if not entries:             # the victim was its last entry: the slot passes to this record
                self._own(service, held)
        entries[record.node_id] = record

    def _open_service(self, service: str, held: _Held) -> bool:
        """A slot for a service nobody here provides yet, within the storer's shares; when every slot is
        taken, the biggest /24 holder's oldest slot is freed (whatever it lists goes with it)."""
        if self._services_per_ip.get(held.ip, 0) >= self.services_per_ip:
            self._refuse("service_ip_quota")
            return False
        if len(self._services_by_subnet.get(held.subnet, ())) >= self.services_per_subnet:
            self._refuse("service_subnet_quota")
            return False
        if len(self.providers) >= self.max_services:
            biggest = max(self._services_by_subnet.values(), key=len)
            victim = next(iter(biggest))
            for node_id in list(self.providers.get(victim, ())):
                self._unlist(victim, node_id)
            self.refused["service_evicted"] = self.refused.get("service_evicted", 0) + 1
        self._own(service, held)
        return True

    def _own(self, service: str, held: _Held) -> None:
        self._owner[service] = held
        adjust_count(self._services_per_ip, held.ip, 1)
        self._services_by_subnet.setdefault(held.subnet, {})[service] = None

    def _disown(self, service: str) -> None:
        held = self._owner.pop(service, None)
        if held is None:
            return
        adjust_count(self._services_per_ip, held.ip, -1)
        drop_from(self._services_by_subnet, held.subnet, service)

    def _unlist(self, service: str, node_id: str) -> None:
        """Remove one provider entry; a service left without any loses its slot, one whose slot holder left
        passes it to its oldest remaining entry's storer."""
        entries = self.providers.get(service)
        if entries is None or entries.pop(node_id, None) is None:
            return
        owner = self._owner.get(service)
        if entries and owner is not None and owner is not self._held.get(node_id):
            return
        self._disown(service)
        if entries:
            self._own(service, self._held[next(iter(entries))])
        else:
            del self.providers[service]

    def _forget(self, node_id: str) -> None:
        record = self.nodes.get(node_id)
        if record is None:
            return
        for service in provided(record.services):
            self._unlist(service, node_id)
        del self.nodes[node_id]
        held = self._held.pop(node_id)
        adjust_count(self._per_peer, held.peer, -1)
        adjust_count(self._per_ip, held.ip, -1)
        drop_from(self._by_subnet, held.subnet, node_id)

    def _alive(self, node_id: str, now_ms: int) -> bool:
        record, held = self.nodes.get(node_id), self._held.get(node_id)
        return record is not None and held is not None and record.live(now_ms) and now_ms < held.until_ms

    def get(self, node_id: str, now_ms: int) -> NodeRecord | None:
        return self.nodes[node_id] if self._alive(node_id, now_ms) else None

    def providers_of(self, service: str, now_ms: int) -> list[NodeRecord]:
        return [r for node_id, r in self.providers.get(service, {}).items() if self._alive(node_id, now_ms)]

    def prune(self, now_ms: int) -> int:
        self._pruned_ms = now_ms
        dead = [node_id for node_id in self.nodes if not self._alive(node_id, now_ms)]
        for node_id in dead:
            self._forget(node_id)
        return len(dead)
