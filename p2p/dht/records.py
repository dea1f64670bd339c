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

from p2p.dht.ids import ID_HEX

DOMAIN = "exchange-node/dht-record/1"
MAX_ADDRESSES = 8
MAX_SERVICES = 32
MAX_NAME = 128
MAX_HOST = 255
MAX_RECORD_BYTES = 2048
MAX_TTL_MS = 24 * 3600 * 1000            # a record may claim to live at most a day
HOW = ("listen", "observed", "mapped", "relayed")

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


class RecordStore:
    """What this node keeps of other nodes' records: their own records (by id, the newest sequence kept) and
    provider entries (service -> the records of nodes that serve it). Bounded in all and per peer that
    stored them, so one peer cannot fill it; a record that fails its checks is refused and counted against
    whoever sent it."""

    def __init__(self, *, max_records: int = 4096, max_per_peer: int = 64, max_providers: int = 20,
                 max_services: int = 1024) -> None:
        self.max_records = max_records
        self.max_per_peer = max_per_peer
        self.max_providers = max_providers          # per service, as many as a lookup returns
        self.max_services = max_services
        self.nodes: dict[str, NodeRecord] = {}
        self.providers: dict[str, dict[str, NodeRecord]] = {}      # service -> node id -> its record
        self._stored_by: dict[str, str] = {}                        # record id -> the peer that stored it
        self._per_peer: dict[str, int] = {}
        self.refused: dict[str, int] = {}                           # reason -> count

    def _refuse(self, reason: str) -> str:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return reason

    def put(self, record: NodeRecord, from_peer: str, now_ms: int) -> str | None:
        """Keep `record` (already checked): None, or why not."""
        if not record.live(now_ms):
            return self._refuse("expired")
        known = self.nodes.get(record.node_id)
        if known is not None and known.seq >= record.seq:
            return None if known.seq == record.seq else self._refuse("older_sequence")
        if known is None:
            if self._per_peer.get(from_peer, 0) >= self.max_per_peer and from_peer != record.node_id:
                return self._refuse("peer_quota")
            if len(self.nodes) >= self.max_records and not self._expire_one(now_ms):
                return self._refuse("store_full")
            self._per_peer[from_peer] = self._per_peer.get(from_peer, 0) + 1
            self._stored_by[record.node_id] = from_peer
        self.nodes[record.node_id] = record
        for service in record.services:
            self._provide(service, record)
        return None

    def _provide(self, service: str, record: NodeRecord) -> None:
        entries = self.providers.get(service)
        if entries is None:
            if len(self.providers) >= self.max_services:
                return
            entries = self.providers[service] = {}
        if record.node_id in entries or len(entries) < self.max_providers:
            entries[record.node_id] = record
            return
        oldest = min(entries.values(), key=lambda r: r.expires_ms)
        if oldest.expires_ms < record.expires_ms:
            del entries[oldest.node_id]
            entries[record.node_id] = record

    def _expire_one(self, now_ms: int) -> bool:
        dead = [node_id for node_id, r in self.nodes.items() if not r.live(now_ms)]
        victim = dead[0] if dead else min(self.nodes.values(), key=lambda r: r.expires_ms).node_id
        self._forget(victim)
        return True

    def _forget(self, node_id: str) -> None:
        record = self.nodes.pop(node_id, None)
        peer = self._stored_by.pop(node_id, None)
        if peer is not None:
            left = self._per_peer.get(peer, 1) - 1
            if left > 0:
                self._per_peer[peer] = left
            else:
                self._per_peer.pop(peer, None)
        if record is not None:
            for service in record.services:
                entries = self.providers.get(service, {})
                if entries.get(node_id) is record:
                    del entries[node_id]

    def get(self, node_id: str, now_ms: int) -> NodeRecord | None:
        record = self.nodes.get(node_id)
        return record if record is not None and record.live(now_ms) else None

    def providers_of(self, service: str, now_ms: int) -> list[NodeRecord]:
        return [r for r in self.providers.get(service, {}).values() if r.live(now_ms)]

    def prune(self, now_ms: int) -> int:
        dead = [node_id for node_id, r in self.nodes.items() if not r.live(now_ms)]
        for node_id in dead:
            self._forget(node_id)
        return len(dead)
