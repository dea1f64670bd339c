"""A deterministic simulation of the DHT's sans-I/O parts (p2p/dht) over thousands of nodes.

Each node has a routing table (filled as a long-running network would have them: up to k contacts per
bucket, drawn from the nodes alive in that bucket's range, through `RoutingTable.add` and its subnet
limits) and a record store. Every node publishes its signed record on the k nodes closest to its id.
Lookups run `Lookup` against simulated answers: an honest node returns the contacts its table holds
closest to the target and the record if it holds it; a node that left (churn) never answers; a Byzantine
node either answers with random far contacts and a forged record, or stays silent; sybils placed next to
a target (an eclipse) answer only with each other. A record counts as found only if it checks out.
"""
from __future__ import annotations

import bisect
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field

from p2p.dht.ids import ID_BITS, distance
from p2p.dht.lookup import Lookup
from p2p.dht.records import NodeRecord, RecordError, RecordStore
from p2p.dht.table import Contact, RoutingTable

NOW_MS = 1_000_000


def _stub_node_id(key: bytes) -> str:
    return hashlib.sha256(key).digest()[:20].hex()


def _stub_sign(key: bytes, data: bytes) -> bytes:
    """The simulation's signature: only the key's holder knows `key`, standing in for Ed25519."""
    return hashlib.sha512(key + data).digest()


def _stub_verify(key: bytes, sig: bytes, data: bytes) -> bool:
    return sig == _stub_sign(key, data)


@dataclass
class SimNode:
    key: bytes
    node_id: str
    subnet: str
    role: str = "honest"            # honest | wrong | silent | sybil
    alive: bool = True
    table: RoutingTable = field(init=False)
    store: RecordStore = field(default_factory=lambda: RecordStore(max_records=100_000, max_per_peer=100_000))

    def __post_init__(self) -> None:
        self.table = RoutingTable(self.node_id)

    def record(self) -> NodeRecord:
        return NodeRecord.create(self.key, lambda data: _stub_sign(self.key, data), _stub_node_id,
                                 addresses=(("10.0.0.1", 9000, "listen"),), services=("exchange-node",),
                                 protocol=2, seq=1, expires_ms=NOW_MS + 3_600_000)


@dataclass
class LookupOutcome:
    found: bool
    hops: int
    queries: int


class DhtSim:
    def __init__(self, nodes: int, *, seed: int = 0, byzantine: float = 0.0, churn: float = 0.0, k: int = 20,
                 byzantine_subnets: int = 50) -> None:
        self.rng = random.Random(seed)
        self.k = k
        self.nodes: dict[str, SimNode] = {}
        for i in range(nodes):
            key = self.rng.randbytes(32)
            node_id = _stub_node_id(key)
            bad = i < int(nodes * byzantine)
            subnet = f"66.{i % byzantine_subnets}.0.0/24" if bad else f"10.{i >> 16 & 255}.{i >> 8 & 255}.0/24"
            role = ("wrong" if i % 2 else "silent") if bad else "honest"
            self.nodes[node_id] = SimNode(key, node_id, subnet, role)
        honest = [n for n in self.nodes.values() if n.role == "honest"]
        for node in self.rng.sample(honest, int(len(honest) * churn)):
            node.alive = False
        self.forged_refused = 0

    # --- building the network ------------------------------------------------------------------
    def add_sybils(self, target: str, count: int, prefix_bits: int) -> list[str]:
        """`count` attacker nodes with ids sharing `prefix_bits` leading bits with `target` (as if keys were
        ground until their hash came that close), all in one attacker's few subnets."""
        ids: list[str] = []
        while len(ids) < count:
            key = self.rng.randbytes(32)
            node_id = _stub_node_id(key)
            # ids are bound to keys: a sybil id near the target costs 2^prefix_bits key grinds; the simulation
            # places it directly and keeps the key, so its record would be valid
            shifted = (int(target, 16) >> (ID_BITS - prefix_bits) << (ID_BITS - prefix_bits)) \
                | (int(node_id, 16) & ((1 << (ID_BITS - prefix_bits)) - 1))
            node_id = f"{shifted:040x}"
            self.nodes[node_id] = SimNode(key, node_id, f"77.{len(ids) % 4}.0.0/24", "sybil")
            ids.append(node_id)
        return ids

    def build(self) -> None:
        """Fill every routing table from the nodes alive in each bucket's range, then publish every record."""
        ids = self._ids = sorted(self.nodes, key=lambda n: int(n, 16))
        values = self._values = [int(n, 16) for n in ids]
        for node in self.nodes.values():
            own = int(node.node_id, 16)
            for bit in range(ID_BITS - 1, -1, -1):
                low = ((own >> bit) ^ 1) << bit
                high = low + (1 << bit)
                start, stop = bisect.bisect_left(values, low), bisect.bisect_left(values, high)
                if start == stop:
                    continue
                span = ids[start:stop] if stop - start <= 2 * self.k else \
                    [ids[i] for i in self.rng.sample(range(start, stop), 2 * self.k)]
                for other in span:
                    peer = self.nodes[other]
                    if peer.alive:
                        node.table.add(Contact(other, "", 0, peer.subnet), 0.0)
        for node in self.nodes.values():
            if node.alive and node.role == "honest":
                self.publish(node)

    def publish(self, node: SimNode) -> None:
        record = node.record()
        for other in self.closest_alive(node.node_id, self.k):
            self.nodes[other].store.put(record, node.node_id, NOW_MS)

    def closest_alive(self, target: str, count: int) -> list[str]:
        """The `count` live nodes closest to `target`: they lie in the smallest aligned id range around it
        (a subtree of the id space) that holds that many, found by bisection over the sorted ids."""
        value = int(target, 16)
        alive: list[str] = []
        for bits in range(ID_BITS + 1):         # every node outside the subtree is farther than all inside
            low = value >> bits << bits
            start, stop = bisect.bisect_left(self._values, low), bisect.bisect_left(self._values, low + (1 << bits))
            alive = [n for n in self._ids[start:stop] if self.nodes[n].alive]
            if len(alive) >= count:
                break
        return sorted(alive, key=lambda n: distance(n, target))[:count]

    # --- lookups ---------------------------------------------------------------------------------
    def _answer(self, asked: SimNode, target: str) -> tuple[list[str], NodeRecord | None] | None:
        if not asked.alive or asked.role == "silent":
            return None
        if asked.role == "sybil":
            sybils = [n for n in self.nodes.values() if n.role == "sybil"]
            return [n.node_id for n in sorted(sybils, key=lambda n: distance(n.node_id, target))[:self.k]], None
        if asked.role == "wrong":
            contacts = self.rng.sample(list(self.nodes), self.k)
            honest = self.nodes.get(target)
            forged = None
            if honest is not None:      # a record for the target with the liar's address, signed by the liar
                forged = NodeRecord(target, honest.key, (("66.6.6.6", 1, "listen"),), (), 2, 99,
                                    NOW_MS + 3_600_000, _stub_sign(asked.key, b"forged"))
            return contacts, forged
        contacts = [c.node_id for c in asked.table.closest(target, self.k)]
        record = asked.record() if asked.node_id == target else asked.store.get(target, NOW_MS)
        return contacts, record

    def lookup(self, start: SimNode, target: str) -> LookupOutcome:
        seeds = [c.node_id for c in start.table.closest(target, self.k)]
        search: Lookup[NodeRecord] = Lookup(target, seeds, k=self.k, exclude=frozenset({start.node_id}))
        while not search.done:
            queries = search.next_queries()
            if not queries:
                break
            for query in queries:
                answer = self._answer(self.nodes[query.node_id], target)
                if answer is None:
                    search.failed(query)
                    continue
                contacts, record = answer
                if record is not None:
                    try:
                        record.check(_stub_verify, _stub_node_id)
                        if record.node_id != target:
                            raise RecordError("another node's record")
                    except RecordError:
                        self.forged_refused += 1
                        record = None
                search.answered(query, contacts, record)
        return LookupOutcome(search.value is not None, search.hops, search.queries)

    def run_lookups(self, count: int, targets: list[str] | None = None) -> list[LookupOutcome]:
        starters = [n for n in self.nodes.values() if n.alive and n.role == "honest"]
        live = targets or [n.node_id for n in starters]
        return [self.lookup(self.rng.choice(starters), self.rng.choice(live)) for _ in range(count)]


def hop_histogram(outcomes: list[LookupOutcome]) -> str:
    counts = Counter(o.hops for o in outcomes if o.found)
    return " ".join(f"{hops}:{counts[hops]}" for hops in sorted(counts))
