"""The DHT against the red team's attacks (the rules in docs/architecture.md, "The DHT"): a hello's claimed host
never becomes a contact others are sent to; contacts that fail are handed out by nobody and dropped; the DHT's
dials are paced per address, per /24 and in all; a stored record is credited an hour of life whatever it
claims, a full provider list or store loses the oldest entry of the /24 holding most, and stores are counted
per storing IP and /24 behind the per-node quota; a replaced record leaves no service entries behind."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from node.identity import NodeIdentity
from p2p.connection import Direction
from p2p.dht.dialing import DialPacer
from p2p.dht.records import NodeRecord, RecordStore
from p2p.dht.service import FIND, STORE, DhtService
from p2p.dht.table import MAX_FAILURES, Contact
from p2p.rpc import errors as e
from p2p.transport import DialError

HOUR = 3600.0
NOW = 1_700_000_000.0


@dataclass
class Link:
    remote_id: str
    remote_addr: tuple[str, int]
    direction: Direction = Direction.INBOUND
    dial_address: tuple[str, int] | None = None
    claimed: tuple[str, int] | None = None      # what its hello says: listen_host, listen_port


class Peers:
    """The PeerManager as the DHT sees it: `listen_address` answers as p2p/peers.py does (the dialled address,
    else the hello's claim); every dial fails and is recorded."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.links: dict[str, Any] = {}
        self.dials: list[tuple[str, int]] = []

    def listen_address(self, link: Any) -> tuple[str, int] | None:
        if link.direction == Direction.OUTBOUND and link.dial_address:
            return link.dial_address
        return link.claimed

    async def dial(self, host: str, port: int, source: str = "manual") -> Any:
        self.dials.append((host, port))
        raise DialError((host, port), "refused")


class Rpc:
    """Answers a find with `answer(node id)`, or fails for the node ids in `down`."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any, str], Any]] = {}
        self.down: set[str] = set()
        self.answer: Callable[[str], Any] = lambda node_id: {"contacts": []}

    def register(self, service: str, handler: Callable[[Any, str], Any]) -> None:
        self.handlers[service] = handler

    async def request_peer(self, node_id: str, service: str, payload: Any = None, timeout: float | None = None) -> Any:
        if node_id in self.down:
            raise e.RpcError(e.UNAVAILABLE, "gone")
        return self.answer(node_id)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _service() -> tuple[DhtService, Peers, Rpc, Clock]:
    me = NodeIdentity.generate()
    peers, rpc, clock = Peers(me.node_id), Rpc(), Clock()
    dht = DhtService(peers, rpc, public_key=me.public_key_bytes, sign=me.sign, verify=NodeIdentity.verify,
                     node_id_for=NodeIdentity.node_id_for, services=lambda: ("exchange-node",),
                     addresses=lambda: (("11.18.1.1", 7946, "observed"),), clock=clock, record_ttl=HOUR)
    return dht, peers, rpc, clock


def _record(identity: NodeIdentity, *, ttl: float = HOUR, seq: int = 1,
            services: tuple[str, ...] = ("exchange-node",)) -> NodeRecord:
    return NodeRecord.create(identity.public_key_bytes, identity.sign, NodeIdentity.node_id_for,
                             addresses=(("11.20.0.1", 7946, "listen"),), services=services, protocol=2, seq=seq,
                             expires_ms=int((NOW + ttl) * 1000))


def _store_from(dht: DhtService, record: NodeRecord, ip: str) -> Any:
    """`record`'s node stores its own record over a link from `ip`."""
    dht.peers.links[record.node_id] = Link(record.node_id, (ip, 40000))     # type: ignore[index]
    return dht.rpc.handlers[STORE]({"record": record.wire()}, record.node_id)       # type: ignore[attr-defined]


def _find(dht: DhtService, target: str, service: str | None = None) -> dict[str, Any]:
    payload = {"target": target} if service is None else {"target": target, "service": service}
    return dht.rpc.handlers[FIND](payload, "f" * 40)                                # type: ignore[attr-defined]


# --- finding 1: contacts ---------------------------------------------------------------------------------
def test_an_inbound_hellos_listen_host_is_not_believed():
    """A stranger's hello names a third party's host: the contact others are handed is the IP its link came from
    (with the port it claims), never the claimed host."""
    dht, _, _, _ = _service()
    stranger = NodeIdentity.generate().node_id
    dht._on_open(Link(stranger, ("11.30.0.5", 51234), claimed=("11.66.0.1", 9000)))       # type: ignore[arg-type]
    handed = {c[0]: (c[1], c[2]) for c in _find(dht, stranger)["contacts"]}
    assert handed[stranger] == ("11.30.0.5", 9000)
    assert all(host != "11.66.0.1" for host, _ in handed.values())


def test_an_address_we_dialled_is_believed_and_replaces_the_observed_one():
    dht, _, _, _ = _service()
    node = NodeIdentity.generate().node_id
    dht._on_open(Link(node, ("11.30.0.5", 51234), claimed=("11.66.0.1", 9000)))           # type: ignore[arg-type]
    dht._on_open(Link(node, ("11.31.0.7", 7946), Direction.OUTBOUND,                        # type: ignore[arg-type]
                      dial_address=("11.31.0.7", 7946), claimed=("11.99.9.9", 1)))
    assert [c[1:] for c in _find(dht, node)["contacts"] if c[0] == node] == [["11.31.0.7", 7946]]


def test_a_contact_that_fails_is_handed_out_by_nobody_and_dropped_after_a_few_failures():
    dht, peers, rpc, clock = _service()
    ids = [NodeIdentity.generate().node_id for _ in range(4)]
    for i, node_id in enumerate(ids):
        dht.table.add(Contact(node_id, f"11.40.{i}.1", 7946, f"11.40.{i}.0/24"), clock.now)
        peers.links[node_id] = Link(node_id, (f"11.40.{i}.1", 7946))
    dead = ids[0]
    rpc.down.add(dead)
    asyncio.run(dht._lookup(dead, want_value=False))
    assert dead in dht.table, "one failure is no reason to drop it yet"
    assert dead not in {c[0] for c in _find(dht, dead)["contacts"]}, "but nobody is sent to it meanwhile"
    for _ in range(MAX_FAILURES - 1):
        clock.now += 10
        asyncio.run(dht._lookup(dead, want_value=False))
    assert dead not in dht.table and set(ids[1:]) <= {c[0] for c in _find(dht, dead)["contacts"]}
    rpc.down.clear()
    clock.now += 10
    asyncio.run(dht._lookup(ids[1], want_value=False))
    assert all(dht.table.get(n).failures == 0 for n in ids[1:])                     # type: ignore[union-attr]


def test_contacts_pointing_at_one_host_get_a_few_paced_dials_not_one_per_lookup():
    """Every answer names 10 fake nodes on 10 ports of one host nobody runs a node on (the red team's
    experiment 1): 240 lookups over 240 s dial it a handful of times, and a node in another /24 still gets
    dialled."""
    dht, peers, rpc, clock = _service()
    honest = NodeIdentity.generate().node_id
    dht.table.add(Contact(honest, "11.50.0.1", 7946, "11.50.0.0/24"), clock.now)
    peers.links[honest] = Link(honest, ("11.50.0.1", 7946))
    fakes = [[NodeIdentity.generate().node_id, "11.66.0.1", 9000 + i] for i in range(10)]
    elsewhere = [NodeIdentity.generate().node_id, "11.77.0.1", 7946]
    rpc.answer = lambda node_id: {"contacts": [*fakes, elsewhere]}
    for _ in range(240):
        asyncio.run(dht._lookup(NodeIdentity.generate().node_id, want_value=False))
        clock.now += 1.0
    to_victim = sum(host == "11.66.0.1" for host, _ in peers.dials)
    print(f"{to_victim} dials to the named host, {len(peers.dials)} in all")
    assert 0 < to_victim <= 30, f"{to_victim} dials to a host the answers named"
    assert ("11.77.0.1", 7946) in peers.dials


# --- findings 2-4: the record store ----------------------------------------------------------------------------
def test_a_claimed_day_long_ttl_does_not_keep_honest_providers_out():
    """20 free keys claim a service for 24 h; honest nodes publishing for 1 h still get listed, and the
    attackers' records count as dead after an hour whatever they claim."""
    store = RecordStore(max_providers=20)
    attackers = [NodeIdentity.generate() for _ in range(20)]
    for key in attackers:                     # each from its own address (no source: counted per node)
        store.put(_record(key, ttl=24 * HOUR), key.node_id, int(NOW * 1000))
    honest = [NodeIdentity.generate() for _ in range(5)]
    for key in honest:
        assert store.put(_record(key), key.node_id, int(NOW * 1000) + 1000) is None
    listed = {r.node_id for r in store.providers_of("exchange-node", int(NOW * 1000) + 2000)}
    assert {k.node_id for k in honest} <= listed
    two_hours = int((NOW + 2 * HOUR) * 1000)
    assert store.get(attackers[-1].node_id, two_hours) is None
    assert store.providers_of("exchange-node", two_hours) == []


def test_one_subnet_gets_a_few_provider_entries_of_a_service():
    store = RecordStore()
    for i in range(20):
        key = NodeIdentity.generate()
        store.put(_record(key), key.node_id, int(NOW * 1000), f"11.66.0.{i + 1}")
    assert len(store.providers_of("exchange-node", int(NOW * 1000))) == store.providers_per_subnet
    assert store.refused["provider_subnet_quota"] == 20 - store.providers_per_subnet


def test_a_replaced_record_leaves_no_service_behind():
    """One key re-stores its record 33 times with 32 new services each: it holds 32 service slots, not all of
    them, and a new service still gets its provider; a forgotten record leaves no empty service."""
    store = RecordStore(max_services=64)
    key = NodeIdentity.generate()
    for seq in range(1, 34):
        services = tuple(f"junk-{seq}-{j}" for j in range(32))
        assert store.put(_record(key, seq=seq, services=services), key.node_id, int(NOW * 1000)) is None
    assert len(store.providers) == 32
    fresh = NodeIdentity.generate()
    store.put(_record(fresh, services=("brand-new",)), fresh.node_id, int(NOW * 1000))
    assert [r.node_id for r in store.providers_of("brand-new", int(NOW * 1000))] == [fresh.node_id]
    store.prune(int((NOW + 2 * HOUR) * 1000))
    assert store.providers == {} and not store.nodes


def test_service_slots_are_capped_per_storing_ip():
    store = RecordStore(services_per_ip=40, services_per_subnet=1000)
    for i in range(4):
        key = NodeIdentity.generate()
        store.put(_record(key, services=tuple(f"s{i}-{j}" for j in range(32))), key.node_id, int(NOW * 1000),
                  "11.66.0.1")
    assert len(store.providers) == 40 and store.refused["service_ip_quota"] == 3 * 32 - 8


def test_free_keys_from_one_ip_fill_only_that_ips_share_of_the_store():
    """200 fresh keys, each storing its own record, all from one IP (red-team experiment 2A): the IP gets its
    quota, and a node elsewhere still stores."""
    dht, _, _, _ = _service()
    answers = [_store_from(dht, _record(NodeIdentity.generate()), "11.66.0.1")["error"] for _ in range(200)]
    assert answers.count(None) == dht.store.max_per_ip and answers.count("ip_quota") == 200 - dht.store.max_per_ip
    neighbours = [_store_from(dht, _record(NodeIdentity.generate()), f"11.66.0.{i}")["error"] for i in range(2, 200)]
    assert neighbours.count(None) == dht.store.max_per_subnet - dht.store.max_per_ip
    honest = _record(NodeIdentity.generate())
    assert _store_from(dht, honest, "11.20.0.1")["ok"]
    assert _find(dht, honest.node_id)["record"] == honest.wire()


def test_a_full_store_evicts_from_the_biggest_subnet_whatever_expiry_is_claimed():
    dht, _, _, _ = _service()
    dht.store.max_records = 10
    big = [_record(NodeIdentity.generate(), ttl=24 * HOUR) for _ in range(8)]
    small = [_record(NodeIdentity.generate(), ttl=HOUR / 2) for _ in range(2)]
    for i, record in enumerate(big):
        assert _store_from(dht, record, f"11.66.0.{i % 4 + 1}")["ok"]
    for record in small:
        assert _store_from(dht, record, "11.20.0.1")["ok"]
    newcomer = _record(NodeIdentity.generate())
    assert _store_from(dht, newcomer, "11.21.0.1")["ok"]
    now_ms = int(NOW * 1000)
    assert all(dht.store.get(r.node_id, now_ms) for r in [*small, newcomer])
    assert dht.store.get(big[0].node_id, now_ms) is None, "the biggest /24's oldest went"
    assert len(dht.store.nodes) == 10


def test_known_addresses_are_bounded_and_age_out():
    dht, _, _, clock = _service()
    for i in range(5000):
        dht._known.learn(f"{i:040x}", "11.60.0.1", 9000, clock.now)
    assert len(dht._known) == dht._known.max_entries
    clock.now += HOUR
    assert dht._known.get(f"{4999:040x}", clock.now) is None
    dht._known.learn(f"{1:040x}", "11.60.0.1", 9000, clock.now)
    assert len(dht._known) == 1


def test_dial_pacing_backs_off_per_address_and_per_subnet_with_a_cap_in_all():
    pacer = DialPacer(address_gap=1.0, backoff=5.0, subnet_gap=0.2, per_window=3, window=10.0)
    assert pacer.allow("11.66.0.1", 9000, 0.0) is None
    pacer.result("11.66.0.1", 9000, False, 0.5)
    assert pacer.allow("11.66.0.1", 9000, 4.0) == "address_paced"          # 5 s after a failure
    assert pacer.allow("11.66.0.2", 9000, 0.6) == "subnet_paced"           # its /24 failed just now
    assert pacer.allow("11.66.0.1", 9000, 5.6) is None
    pacer.result("11.66.0.1", 9000, False, 5.6)
    assert pacer.allow("11.66.0.1", 9000, 14.0) == "address_paced"         # 10 s after the second
    assert pacer.allow("11.67.0.1", 9000, 14.0) is None
    assert pacer.allow("11.68.0.1", 9000, 14.1) is None
    assert pacer.allow("11.69.0.1", 9000, 14.2) is None
    assert pacer.allow("11.70.0.1", 9000, 14.3) == "dht_dials_paced"       # three in a window, in all
    assert pacer.allow("127.0.0.1", 9001, 30.0) is None
    assert pacer.allow("127.0.0.1", 9002, 30.0) is None, "loopback is the operator's: no per-/24 pace"
