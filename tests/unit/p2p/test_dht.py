"""The DHT's sans-I/O parts (p2p/dht): ids and distance, signed records (real Ed25519), the record store's
bounds, the routing table's subnet limits and test-before-evict, and the lookup over disjoint paths."""
from __future__ import annotations

import hashlib

import pytest
from nacl.signing import SigningKey

from node.identity import NodeIdentity
from p2p.dht.ids import bucket_of, distance, key_for
from p2p.dht.lookup import Lookup
from p2p.dht.records import MAX_ADDRESSES, NodeRecord, RecordError, RecordStore
from p2p.dht.table import Contact, RoutingTable

NOW_MS = 1_700_000_000_000


def node_id_for(key: bytes) -> str:
    return hashlib.sha256(key).digest()[:20].hex()


def make_record(signer: SigningKey, *, seq: int = 1, services: tuple[str, ...] = ("exchange-node",),
                expires_ms: int = NOW_MS + 60_000) -> NodeRecord:
    key = bytes(signer.verify_key)
    return NodeRecord.create(key, lambda data: signer.sign(data).signature, node_id_for,
                             addresses=(("203.0.113.7", 9000, "listen"), ("198.51.100.2", 40001, "observed")),
                             services=services, protocol=2, seq=seq, expires_ms=expires_ms)


def test_ids_distance_and_buckets():
    a, b = "0" * 40, "0" * 39 + "1"
    assert distance(a, b) == 1 and bucket_of(a, b) == 0 and bucket_of(a, a) == -1
    assert bucket_of(a, "8" + "0" * 39) == 159
    assert len(key_for("chain.submit")) == 40
    with pytest.raises(ValueError):
        distance("abc", a)


def test_a_record_survives_the_wire_and_only_its_keys_holder_can_make_one():
    signer = SigningKey.generate()
    record = make_record(signer)
    back = NodeRecord.from_wire(record.wire())
    back.check(NodeIdentity.verify, node_id_for)
    assert back == record
    other = SigningKey.generate()
    forged = NodeRecord(record.node_id, record.public_key, (("66.6.6.6", 1, "listen"),), (), 2, 9, record.expires_ms,
                        other.sign(record.signed_part()).signature)
    with pytest.raises(RecordError, match="signature"):
        forged.check(NodeIdentity.verify, node_id_for)
    stolen_id = NodeRecord.create(bytes(other.verify_key), lambda d: other.sign(d).signature, lambda k: record.node_id,
                                  addresses=(), services=(), protocol=2, seq=1, expires_ms=record.expires_ms)
    with pytest.raises(RecordError, match="not the key's"):
        stolen_id.check(NodeIdentity.verify, node_id_for)


@pytest.mark.parametrize("wire", [
    "x", [1] * 7,
    ["0" * 40, b"k" * 32, [["h", 1, "listen"]] * (MAX_ADDRESSES + 1), [], 2, 1, 1, b"s" * 64],
    ["0" * 40, b"k" * 32, [["h", 0, "listen"]], [], 2, 1, 1, b"s" * 64],
    ["0" * 40, b"k" * 32, [["h", 1, "guessed"]], [], 2, 1, 1, b"s" * 64],
    ["0" * 40, b"k" * 32, [], ["s" * 129], 2, 1, 1, b"s" * 64],
    ["0" * 40, b"k" * 32, [], [], -1, 1, 1, b"s" * 64],
    ["0" * 40, b"k" * 31, [], [], 2, 1, 1, b"s" * 64],
], ids=["not-a-list", "short", "too-many-addresses", "port-0", "unknown-how", "long-service", "negative", "short-key"])
def test_malformed_records_are_refused(wire):
    with pytest.raises(RecordError):
        NodeRecord.from_wire(wire)


def test_the_store_keeps_the_newest_sequence_and_bounds_each_peer():
    store = RecordStore(max_records=100, max_per_peer=3)
    signer = SigningKey.generate()
    first, second = make_record(signer, seq=1), make_record(signer, seq=2)
    assert store.put(second, "p", NOW_MS) is None
    assert store.put(first, "p", NOW_MS) == "older_sequence"
    assert store.get(first.node_id, NOW_MS) == second
    others = [make_record(SigningKey.generate()) for _ in range(5)]
    answers = [store.put(r, "flooder", NOW_MS) for r in others]
    assert answers == [None, None, None, "peer_quota", "peer_quota"]
    assert store.put(make_record(SigningKey.generate(), expires_ms=NOW_MS - 1), "p", NOW_MS) == "expired"
    assert store.providers_of("exchange-node", NOW_MS)


def test_providers_are_bounded_per_service_and_expire():
    store = RecordStore(max_records=1000, max_per_peer=1000, max_providers=4)
    for i in range(10):
        store.put(make_record(SigningKey.generate(), services=("relay",), expires_ms=NOW_MS + 1000 + i), f"p{i}", NOW_MS)
    live = store.providers_of("relay", NOW_MS)
    assert len(live) == 4 and min(r.expires_ms for r in live) == NOW_MS + 1006     # the longest-lived kept
    assert store.providers_of("relay", NOW_MS + 2000) == []
    assert store.prune(NOW_MS + 2000) == 10 and not store.nodes


def contact(node_id: str, subnet: str) -> Contact:
    return Contact(node_id, "10.0.0.1", 9000, subnet)


def test_the_table_limits_one_subnet_per_bucket_and_in_all():
    table = RoutingTable("0" * 40, k=20, per_subnet=2, per_subnet_total=3)
    far = [f"8{i:039x}" for i in range(1, 6)]           # all in bucket 159
    answers = [table.add(contact(n, "66.0.0.0/24"), 1.0) for n in far]
    assert answers == ["added", "added", "bucket_subnet_limit", "bucket_subnet_limit", "bucket_subnet_limit"]
    near = [f"4{i:039x}" for i in range(1, 4)]           # bucket 158
    assert [table.add(contact(n, "66.0.0.0/24"), 1.0) for n in near] == ["added", "table_subnet_limit",
                                                                         "table_subnet_limit"]
    assert len(table) == 3 and table.buckets() == [(158, 1), (159, 2)]


def test_loopback_contacts_pass_the_subnet_limits_unless_asked_to_count():
    """Nodes on one machine are its operator's (as INBOUND_LIMIT_LOOPBACK says for inbound links): thirty of
    them must not share ten table entries; with the setting on they count like any subnet."""
    ids = [f"8{i:039x}" for i in range(1, 6)] + [f"4{i:039x}" for i in range(1, 4)]
    table = RoutingTable("0" * 40, k=20, per_subnet=2, per_subnet_total=3)
    assert {table.add(contact(n, "loopback"), 1.0) for n in ids} == {"added"}
    strict = RoutingTable("0" * 40, k=20, per_subnet=2, per_subnet_total=3, limit_loopback=True)
    assert [strict.add(contact(n, "loopback"), 1.0) for n in ids].count("added") == 3


def test_a_full_bucket_keeps_its_oldest_unless_it_fails_a_check():
    table = RoutingTable("0" * 40, k=2, per_subnet=2, per_subnet_total=20)
    old, mid, new = "8" + "1" * 39, "8" + "2" * 39, "8" + "3" * 39
    table.add(contact(old, "a"), 1.0)
    table.add(contact(mid, "b"), 2.0)
    assert table.add(contact(new, "c"), 3.0) == "check_oldest"
    oldest = table.oldest_to_check(new)
    assert oldest is not None and oldest.node_id == old
    table.checked(old, True, 4.0)                         # it answered: it stays, the newcomer does not
    assert old in table and new not in table
    assert table.add(contact(new, "c"), 5.0) == "check_oldest"
    table.checked(mid, False, 6.0)                        # the oldest now (old was refreshed) is gone: replaced
    assert mid not in table and new in table and old in table
    assert [c.node_id for c in table.closest("8" + "3" * 39, 2)] == [new, old]


def test_disjoint_paths_never_share_a_node_and_a_value_ends_the_lookup():
    target = "f" * 40
    seeds = [f"{i:040x}" for i in range(1, 7)]
    search: Lookup[str] = Lookup(target, seeds, k=4, alpha=1, paths=3)
    first = search.next_queries()
    assert len(first) == 3 and len({q.path for q in first}) == 3
    asked = {q.node_id for q in first}
    shared = "e" * 40                     # closer to the target than anything the paths hold
    for q in first:                       # every path is told about the same node: only the first gets it
        search.answered(q, [shared, f"{200 + q.path:040x}"])
    second = search.next_queries()
    assert sum(q.node_id == shared for q in second) == 1
    assert not asked & {q.node_id for q in second}
    search.answered(second[0], [], value="the record")
    assert search.done and search.value == "the record" and search.hops == 2


def test_a_lookup_finishes_when_nobody_answers():
    search: Lookup[str] = Lookup("f" * 40, [f"{i:040x}" for i in range(1, 4)], k=4)
    while not search.done:
        queries = search.next_queries()
        if not queries:
            break
        for q in queries:
            search.failed(q)
    assert search.done and search.value is None and search.closest() == []
