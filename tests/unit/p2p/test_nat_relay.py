"""Reachability checks, relay reservations and relayed links between in-process nodes on loopback.

Loopback makes everyone reachable, so the node that plays "behind NAT" is told so the way dial-backs
would tell it (failed answers from outside); everything else - the dial-backs, the relay's limits,
the Noise handshake end to end through the relay - is the real code over real sockets."""
from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import pytest

from p2p.close_reason import CloseReason
from p2p.connection import Direction, PeerLink
from p2p.nat.circuit import CircuitTransport
from p2p.nat.config import NatConfig
from p2p.nat.self_addresses import Reachability
from p2p.nat.service import NatService
from p2p.peer_hooks import PeerHooks
from p2p.peers import PeerManager
from p2p.transport import DialError
from tests.unit.p2p.rpc_nodes import eventually, local_peers


class NatNode:
    def __init__(self, peers: PeerManager, nat: NatService) -> None:
        self.peers, self.nat = peers, nat
        self.node_id = peers.node_id
        self.received: list[dict] = []
        peers.attach(PeerHooks("test", schemas={"test.ping": ({}, {"n": lambda v: True})},
                               application=lambda link, message: self.received.append(message)))


@contextlib.asynccontextmanager
async def nat_nodes(tmp_path, n: int, config: NatConfig | None = None):
    made: list[NatNode] = []
    try:
        for i in range(n):
            _, _, peers = local_peers(tmp_path, f"n{i}")
            nat = peers.attach(NatService(peers, config or NatConfig()))
            await peers.start()
            await nat.start()
            made.append(NatNode(peers, nat))
        yield made
    finally:
        for node in made:
            await node.nat.stop()
            await node.peers.stop()


def make_private(node: NatNode) -> None:
    """What failed dial-backs from two outside /24s say: nobody can dial this node."""
    addresses = node.nat.autonat.addresses
    addresses.listen_port = node.peers.listen_port
    for group in ("198.51.100.0/24", "192.0.2.0/24"):
        entry = addresses.observed("203.0.113.9", group, "10.0.0.0/24")
        assert entry is not None
        addresses.answered(entry.host, entry.port, False, f"someone in {group}", True, group)
    assert node.nat.reachability == Reachability.PRIVATE


async def link(a: NatNode, b: NatNode) -> None:
    await a.peers.dial("127.0.0.1", b.peers.listen_port)
    await eventually(lambda: b.node_id in a.peers.links and a.node_id in b.peers.links)


async def relay_for(relay: NatNode, private: NatNode, dialler: NatNode) -> None:
    """Both linked to the relay, the relay public, the private node holding a reservation with it."""
    await link(private, relay)
    await link(dialler, relay)
    await eventually(lambda: relay.nat.reachability == Reachability.PUBLIC, 5.0)
    make_private(private)
    await eventually(lambda: relay.node_id in private.nat.client.relays, 5.0)


@pytest.mark.asyncio
async def test_dial_back_confirms_a_reachable_address(tmp_path) -> None:
    async with nat_nodes(tmp_path, 2) as (a, b):
        await link(a, b)
        # both see each other on loopback, ask each other, and the dial-back reaches them
        await eventually(lambda: a.nat.reachability == Reachability.PUBLIC == b.nat.reachability, 5.0)
        status = a.nat.status()
        assert status["addresses"][0]["host"] == "127.0.0.1" and status["addresses"][0]["confirmed"]
        assert b.nat.autonat.counters["served_ok"] >= 1
        # the dial-back never opened a second link or disturbed the first
        assert len(a.peers.links) == len(b.peers.links) == 1
        assert a.peers.links[b.node_id].is_open


@pytest.mark.asyncio
async def test_dial_back_goes_only_to_the_requesters_own_address_and_is_rate_limited(tmp_path) -> None:
    async with nat_nodes(tmp_path, 2) as (a, b):
        await link(a, b)
        await eventually(lambda: b.nat.autonat.counters["served"] >= 1, 5.0)
        served = b.nat.autonat.counters["served"]
        replies: list[dict] = []
        a.peers._handlers["autonat.response"] = (      # a node that reads answers itself
            lambda link, message: replies.append(message) if message["nonce"] == b"12345678" else None)
        to_b = a.peers.links[b.node_id]
        for _ in range(5):       # a burst of requests: one per 10 s per peer is served, the rest refused
            to_b.send({"type": "autonat.request", "nonce": b"12345678", "port": 9})
        await eventually(lambda: len(replies) == 5, 10.0)
        assert [r["status"] for r in replies].count("refused") >= 4
        assert b.nat.autonat.counters["served"] <= served + 1


@pytest.mark.asyncio
async def test_a_private_node_is_reached_through_a_relay_end_to_end(tmp_path) -> None:
    async with nat_nodes(tmp_path, 3, NatConfig(hole_punch=False)) as (relay, private, dialler):
        await relay_for(relay, private, dialler)
        assert relay.nat.server.reserved() == [private.node_id]
        # the relay tells its links whom it relays for; the dialler links through it
        await eventually(lambda: private.node_id in dialler.nat.client.routes, 5.0)
        link_ = await dialler.nat.client.dial_via(relay.node_id, private.node_id)
        assert link_.remote_id == private.node_id and link_.via == relay.node_id
        await eventually(lambda: dialler.node_id in private.peers.links)
        # messages flow both ways, inside a Noise channel the relay only forwards
        link_.send({"type": "test.ping", "n": 1})
        private.peers.links[dialler.node_id].send({"type": "test.ping", "n": 2})
        await eventually(lambda: any(m.get("n") == 1 for m in private.received)
                         and any(m.get("n") == 2 for m in dialler.received))
        assert relay.nat.server.counters["bytes"] > 0
        assert not any(m.get("type") == "test.ping" for m in relay.received)
        # the relayed peer is no address to advertise or dial
        assert private.peers.peers[dialler.node_id].port == 0


@pytest.mark.asyncio
async def test_a_relay_keeps_its_limits(tmp_path) -> None:
    config = NatConfig(relay_circuit_rate=2048.0, relay_circuit_burst=64 * 1024.0, hole_punch=False)
    async with nat_nodes(tmp_path, 3, config) as (relay, private, dialler):
        await link(private, relay)
        await link(dialler, relay)
        await eventually(lambda: relay.nat.reachability == Reachability.PUBLIC, 5.0)
        # no reservation, no circuit: the relay refuses to reach a node that did not ask for it
        with pytest.raises(Exception) as refused:
            await dialler.nat.client.dial_via(relay.node_id, private.node_id, timeout=2.0)
        assert "relay refused" in str(refused.value) or "closed" in str(refused.value)
        make_private(private)
        await eventually(lambda: relay.node_id in private.nat.client.relays, 5.0)
        link_ = await dialler.nat.client.dial_via(relay.node_id, private.node_id)
        # a relayed link that never stops sending hits the circuit's rate and is closed, both ends told
        for i in range(200):
            if not link_.is_open:
                break
            link_.send({"type": "test.ping", "n": i, "pad": "x" * 4000})
            await asyncio.sleep(0)
        await eventually(lambda: not link_.is_open, 5.0)
        assert relay.nat.server.counters["circuits_limited"] >= 1
        await eventually(lambda: dialler.node_id not in private.peers.links, 5.0)
        # the relay's own links stay up: it serves its users
        assert private.node_id in relay.peers.links and dialler.node_id in relay.peers.links


@pytest.mark.asyncio
async def test_a_relay_cannot_impersonate_the_target(tmp_path) -> None:
    """A lying relay answers the circuit itself, with its own key: the dialler sees the Noise-proven id is
    not the node it asked for and refuses the link."""
    async with nat_nodes(tmp_path, 3, NatConfig(hole_punch=False)) as (relay, private, dialler):
        await relay_for(relay, private, dialler)

        def impersonate(carrier, message) -> None:
            circuit = message["circuit"]
            transport = CircuitTransport(carrier, circuit, relay.node_id, lambda t: None)
            relay.nat.client.circuits[(id(carrier), circuit)] = transport
            carrier.send({"type": "relay.opened", "circuit": circuit})
            transport.attach(PeerLink(relay.peers, Direction.INBOUND, "relayed"))

        relay.peers._handlers["relay.connect"] = impersonate      # a relay that answers for the target
        with pytest.raises(DialError) as wrong:
            await dialler.nat.client.dial_via(relay.node_id, private.node_id, timeout=3.0)
        assert wrong.value.reason == CloseReason.IDENTITY_MISMATCH
        assert private.node_id not in dialler.peers.links


@pytest.mark.asyncio
async def test_hole_punching_replaces_the_relayed_link_with_a_direct_one(tmp_path) -> None:
    """On loopback nothing stands in the way: the punch over the relayed link opens a direct link, both ends
    keep it and drop the relayed one, and the relay carries nothing more."""
    async with nat_nodes(tmp_path, 3) as (relay, private, dialler):
        await relay_for(relay, private, dialler)
        await eventually(lambda: private.node_id in dialler.nat.client.routes, 5.0)
        relayed = await dialler.nat.client.dial_via(relay.node_id, private.node_id)
        await eventually(lambda: not relayed.is_open and dialler.peers.links.get(private.node_id) is not None
                         and dialler.peers.links[private.node_id].via is None, 8.0)
        assert relayed.close_reason in (CloseReason.DUPLICATE_LINK, "remote_duplicate_link")
        direct = dialler.peers.links[private.node_id]
        assert private.peers.links[dialler.node_id].via is None
        assert private.nat.puncher.counters["direct"] + dialler.nat.puncher.counters["direct"] >= 1
        await eventually(lambda: not relay.nat.server.hops, 5.0)    # both ends' goodbyes through it are through
        carried = relay.nat.server.counters["bytes"]
        direct.send({"type": "test.ping", "n": 7})
        await eventually(lambda: any(m.get("n") == 7 for m in private.received))
        assert relay.nat.server.counters["bytes"] == carried


class _Link:
    """Just enough of a PeerLink for the relay's bookkeeping: an id, an address, what was sent."""

    def __init__(self, node_id: str, host: str) -> None:
        self.remote_id, self.remote_addr = node_id, (host, 7946)
        self.via: str | None = None
        self.state, self.is_open = "open", True
        self.sent: list[dict] = []

    def send(self, message: dict) -> bool:
        self.sent.append(message)
        return True


def _as_peer_link(link: _Link) -> PeerLink:
    """The double for what the hole puncher reads of a link (id, address, relay, send)."""
    return cast("PeerLink", link)


def test_many_reservations_meet_the_per_subnet_cap_and_a_full_table_evicts_the_most_crowded_network() -> None:
    """A full table makes room for a newcomer of a less crowded network: the most crowded network's holder with no
    circuit, idle longest, is evicted and told so, until every network holds as much as the newcomer's would."""
    from p2p.nat.relay_server import RelayServer
    now = [0.0]
    server = RelayServer(NatConfig(relay_max_reservations=10, relay_reservations_per_subnet=4), lambda: True,
                         clock=lambda: now[0])
    crowd = [_Link(f"{i:040x}", f"198.51.100.{i}") for i in range(1, 9)]
    for link in crowd:
        now[0] += 1
        server.reserve(link)
    assert len(server.reserved()) == 4 and server.reserve(crowd[-1]) == (False, "subnet_full")
    others = [_Link(f"{100 + i:040x}", f"203.0.{i}.1") for i in range(6)]
    assert all(server.reserve(link)[0] for link in others) and len(server.reserved()) == 10
    assert server.connect(_Link("f" * 40, "192.0.2.1"), 1, crowd[0].remote_id) is None    # the oldest is busy
    newcomers = [_Link(f"{200 + i:040x}", f"192.0.{i}.7") for i in range(5)]
    results = [server.reserve(link) for link in newcomers]
    assert results == [(True, "")] * 3 + [(False, "relay_full")] * 2
    assert [link.sent[-1] for link in crowd[1:4]] == [{"type": "relay.reservation", "status": "refused",
                                                       "reason": "evicted"}] * 3
    assert server.reserved().count(crowd[0].remote_id) == 1 and server.counters["reservations_evicted"] == 3
    assert server.reserve(_Link("e" * 40, "203.0.0.2")) == (False, "relay_full")    # its network holds one already
    assert server.reserve(others[0]) == (True, "")          # renewing is no new slot
    assert len(server.reserved()) == 10


def test_circuits_per_peer_and_in_all_are_capped_and_a_relayed_link_cannot_reserve() -> None:
    from p2p.nat.relay_server import RelayServer
    server = RelayServer(NatConfig(relay_max_circuits=5, relay_circuits_per_peer=2), lambda: True)
    targets = [_Link(f"{i:040x}", f"203.0.{i}.1") for i in range(1, 5)]
    for link in targets:
        assert server.reserve(link)[0]
    dialler = _Link("f" * 40, "192.0.2.1")
    assert server.connect(dialler, 1, targets[0].remote_id) is None
    assert server.connect(dialler, 3, targets[1].remote_id) is None
    assert server.connect(dialler, 5, targets[2].remote_id) == "too_many_circuits"
    assert server.connect(dialler, 2, targets[2].remote_id) == "bad_circuit"
    assert server.connect(dialler, 7, "e" * 40) == "no_reservation"
    relayed = _Link("d" * 40, "192.0.2.2")
    relayed.via = "c" * 40
    assert server.reserve(relayed) == (False, "relayed_link")


@pytest.mark.asyncio
async def test_a_relayed_peer_is_on_the_network_of_its_relays_link(tmp_path) -> None:
    """What a validator's transaction budget groups a neighbour by (PeerManager.network_of): a relayed link's
    network is that of the relay's own link to us, since relay keys cost nothing; no link, no network."""
    from p2p.admission import netgroup
    async with nat_nodes(tmp_path, 3, NatConfig(hole_punch=False)) as (relay, private, dialler):
        await relay_for(relay, private, dialler)
        await dialler.nat.client.dial_via(relay.node_id, private.node_id)
        relay_link = dialler.peers.links[relay.node_id]
        assert relay_link.remote_addr is not None
        assert dialler.peers.links[private.node_id].via == relay.node_id
        assert dialler.peers.network_of(private.node_id) == netgroup(relay_link.remote_addr[0])
        assert dialler.peers.network_of(relay.node_id) == netgroup(relay_link.remote_addr[0])
        assert dialler.peers.network_of("f" * 40) is None


@pytest.mark.asyncio
async def test_the_adaptive_router_counts_a_relayed_peer_as_dearer(tmp_path) -> None:
    """A peer over a relayed link costs twice its latency in every service's router (so of two equal peers the
    direct one ranks first); once that link is gone, the peer costs what it measures."""
    import random as _random

    from p2p.rpc.service import RELAYED_PATH_COST, RpcConfig, RpcService
    async with nat_nodes(tmp_path, 3, NatConfig(hole_punch=False)) as (relay, private, dialler):
        rpc = dialler.peers.attach(RpcService(dialler.peers, RpcConfig(warmup_period=0), rng=_random.Random(1)))
        rpc.start()
        await relay_for(relay, private, dialler)
        await dialler.nat.client.dial_via(relay.node_id, private.node_id)
        assert rpc.path_costs == {private.node_id: RELAYED_PATH_COST}
        router = rpc.router_for("any.service")
        now = 0.0
        assert router.cost(private.node_id, now) == pytest.approx(RELAYED_PATH_COST * router.cost(relay.node_id, now))
        dialler.peers.links[private.node_id].close(CloseReason.SHUTDOWN)
        await eventually(lambda: private.node_id not in dialler.peers.links)
        assert rpc.path_costs == {}
        await rpc.stop()


@pytest.mark.asyncio
async def test_a_relayed_peer_cannot_make_us_punch_at_will(tmp_path) -> None:
    """Each punch dials the addresses the other side names: a lying peer could aim our SYNs anywhere, so one
    peer opens at most one punch with us per HOLE_PUNCH_COOLDOWN (its own retries of that punch excepted)."""
    from p2p.nat.holepunch import CONNECT, HolePuncher
    from p2p.nat.self_addresses import SelfAddresses
    _, _, peers = local_peers(tmp_path, "punch")
    puncher = HolePuncher(peers, SelfAddresses(), enabled=True)
    liar = _Link("a" * 40, "203.0.113.5")
    liar.via = "b" * 40
    victim = {"type": CONNECT, "addrs": [["192.0.2.77", 80]], "attempt": 0}
    puncher._on_connect(_as_peer_link(liar), victim)
    assert len(liar.sent) == 1 and liar.sent[0]["type"] == CONNECT          # answered once
    for _ in range(5):
        puncher._on_connect(_as_peer_link(liar), victim)
    assert len(liar.sent) == 1                                               # new punches refused for now
    puncher._on_connect(_as_peer_link(liar), victim | {"attempt": 1})
    assert len(liar.sent) == 2                                               # a retry of the same punch is served
    await puncher.stop()


@pytest.mark.asyncio
async def test_a_punch_arranged_on_a_closed_duplicate_link_is_not_answered_on_the_kept_one(tmp_path) -> None:
    """Both ends redial through the relay at once and one relayed link closes as a duplicate. The connect we
    sent on it is no question the other side's connect on the kept link answers: we answer that connect
    with ours, as an opening move, and do not sync and dial alone (each side would wait for the other)."""
    from p2p.nat.holepunch import CONNECT, HolePuncher
    from p2p.nat.self_addresses import SelfAddresses
    _, _, peers = local_peers(tmp_path, "punch")
    puncher = HolePuncher(peers, SelfAddresses(), enabled=True, cooldown=0.001)
    closing, kept = _Link("a" * 40, "203.0.113.5"), _Link("a" * 40, "203.0.113.5")
    closing.via = kept.via = "b" * 40
    puncher._start(_as_peer_link(closing), 0)
    assert [m["type"] for m in closing.sent] == [CONNECT]
    puncher._on_connect(_as_peer_link(kept), {"type": CONNECT, "addrs": [["192.0.2.77", 4000]], "attempt": 0})
    assert [m["type"] for m in kept.sent] == [CONNECT]                      # our answer, not a sync
    puncher.link_closed(_as_peer_link(closing))                                            # the duplicate's close comes later
    assert len(puncher._ports) == 1 and puncher._their_addrs["a" * 40][0] is kept
    puncher.link_closed(_as_peer_link(kept))
    assert puncher._ports == {} and puncher._their_addrs == {} and puncher._sent_at == {}
    await puncher.stop()


@pytest.mark.asyncio
async def test_a_node_that_becomes_reachable_drops_its_relay_reservations(tmp_path) -> None:
    """A port mapping (or a new network) makes a private node public: it stops publishing relayed addresses
    at once instead of keeping them until the reservations lapse."""
    async with nat_nodes(tmp_path, 3, NatConfig(hole_punch=False)) as (relay, private, dialler):
        await relay_for(relay, private, dialler)
        assert private.nat.client.relayed_addresses()
        private.nat.autonat._changed()          # what a dial-back's answer does after recording it
        addresses = private.nat.autonat.addresses
        mapped = addresses.mapped("198.51.100.7", private.peers.listen_port)
        addresses.answered(mapped.host, mapped.port, True, "someone", True, "192.0.2.0/24")
        private.nat.autonat._changed()
        assert private.nat.reachability == Reachability.PUBLIC
        assert private.nat.client.relays == {} and private.nat.client.relayed_addresses() == []


def test_an_address_whose_dial_back_failed_is_checked_again_soon_and_a_confirmed_one_rarely() -> None:
    """A dial-back that raced a new port mapping, or timed out on a busy machine, must not leave the node
    private for the five minutes a confirmed address waits: a failed address is asked again after 15 s,
    30 s, 60 s... (doubling while it keeps failing, up to the confirmed pace)."""
    from p2p.nat.self_addresses import SelfAddresses
    addresses = SelfAddresses(7946)
    mapped = addresses.mapped("203.0.113.9", 7946)
    t0 = 1000.0
    assert addresses.to_check(300.0, t0, failed_after=15.0) == [mapped]      # never checked
    addresses.answered("203.0.113.9", 7946, False, "a" * 40, True, "192.0.2.0/24", now=t0)
    assert addresses.to_check(300.0, t0 + 14, failed_after=15.0) == []
    assert addresses.to_check(300.0, t0 + 15, failed_after=15.0) == [mapped]
    assert addresses.to_check(300.0, t0 + 15) == []                          # without it: five minutes
    addresses.answered("203.0.113.9", 7946, False, "b" * 40, True, "198.51.100.0/24", now=t0 + 15)
    assert addresses.to_check(300.0, t0 + 15 + 29, failed_after=15.0) == []
    assert addresses.to_check(300.0, t0 + 15 + 30, failed_after=15.0) == [mapped]
    addresses.answered("203.0.113.9", 7946, True, "c" * 40, True, "203.0.114.0/24", now=t0 + 45)
    assert addresses.reachability == Reachability.PUBLIC
    assert addresses.to_check(300.0, t0 + 45 + 299, failed_after=15.0) == []  # confirmed: the slow pace
    assert addresses.to_check(300.0, t0 + 45 + 300, failed_after=15.0) == [mapped]
