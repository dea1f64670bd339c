"""The Grenache path: routers with no link between them exchange unicasts and broadcasts over
Grenache HTTP RPC (real HTTP on loopback, an in-process FakeGrape as the directory), deduplicated
like any copy, and a hostile HTTP caller gets refusals, never a crash."""
from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from p2p.framing import encode_body
from tests.fake_grape import FakeGrape
from p2p.grenache.rpc import GrenacheHTTPClient, GrenacheRemoteError
from p2p.router import Outcome
from p2p.routing.envelope import SendResult
from p2p.routing.grenache_path import broadcast_name, unicast_name
from tests.unit.p2p.simnet import SimNet, nid

pytestmark = pytest.mark.timeout(60)
SERVICE = "test-node"


def grenache_settings(grape: FakeGrape, **extra) -> dict:
    return {"discovery_grenache": True, "grape_urls": (grape.url,), "grape_service": SERVICE,
            "grape_announce_interval": 30.0, "p2p_host": "127.0.0.1", "grenache_messages_host": "127.0.0.1",
            "grenache_messages_port": 0, "grenache_rate_exempt": (), **extra}   # each node stands for a host of its own


async def eventually(predicate, timeout: float = 10.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class GrenacheNet:
    """n routers on a SimNet (links only where a test connects them), all on one FakeGrape."""

    def __init__(self, net: SimNet, grape: FakeGrape) -> None:
        self.net = net
        self.grape = grape
        self.nodes = net.nodes

    async def start(self, *indexes: int) -> None:
        for i in indexes or range(len(self.nodes)):
            await self.nodes[i].router.start()

    async def members_known(self, *indexes: int) -> None:
        indexes = indexes or tuple(range(len(self.nodes)))
        want = {i: {nid(j) for j in indexes if j != i} for i in indexes}
        await eventually(lambda: all(want[i] <= set(self.nodes[i].router.grenache.members) for i in indexes))

    async def stop(self) -> None:
        for node in self.nodes:
            await node.router.stop()


@pytest.fixture
async def gnet(grape):
    nets: list[GrenacheNet] = []

    def make(n: int, **settings) -> GrenacheNet:
        g = GrenacheNet(SimNet(n, **grenache_settings(grape, **settings)), grape)
        nets.append(g)
        return g

    yield make
    for g in nets:
        await g.stop()


def got_ids(node) -> list:
    return [message["id"] for message, _ in node.got]


async def test_unicast_and_broadcast_cross_grenache_between_unlinked_nodes(gnet, grape) -> None:
    g = gnet(2)
    a, b = g.nodes
    await g.start()
    await g.members_known()
    assert grape.dht.lookup(unicast_name(SERVICE, a.node_id)) and len(grape.dht.lookup(broadcast_name(SERVICE))) == 2
    settled: list[SendResult] = []
    result = a.router.send_to_peer(b.node_id, {"type": "note", "payload": "hi"}, on_settled=settled.append)
    assert result.outcome is Outcome.GRENACHE and result.via == "grenache"
    await eventually(lambda: result.message_id in got_ids(b))
    await eventually(lambda: settled)
    assert [(s.outcome, s.via) for s in settled] == [(Outcome.GRENACHE, "grenache")]
    assert a.router.counters.unicast_sent["grenache"] == 1 and b.router.counters.unicast_received["grenache"] == 1
    (message, src), = b.got
    assert message["origin"] == a.node_id and src == a.node_id and message["payload"] == "hi"

    mid = a.router.broadcast({"type": "note", "payload": "to all"})
    await eventually(lambda: mid in got_ids(b))
    assert b.router.counters.broadcast_received == {"link": 0, "grenache": 1}
    assert a.router.stats()["paths"]["broadcast_sent_grenache"] == 1
    assert "1 grenache" in a.router.summary() and "grape up, 1 members" in a.router.summary()


async def test_linked_nodes_send_nothing_over_grenache(gnet) -> None:
    g = gnet(2)
    a, b = g.nodes
    await g.start()
    await g.members_known()
    g.net.connect(0, 1)
    a.router.send_to_peer(b.node_id, {"type": "note"})
    mid = a.router.broadcast({"type": "note"})
    await eventually(lambda: mid in got_ids(b) and len(b.got) == 2)
    assert a.router.counters.unicast_sent == {"direct": 1, "relay": 0, "grenache": 0}
    assert a.router.grenache.counters["requests_sent"] == 0


async def test_a_broadcast_reaches_link_and_grenache_islands_once_each(gnet) -> None:
    """0-1 linked; 2 reachable only through Grenache; 3 linked to 2 only and not on the Grape:
    0's broadcast reaches 2 over Grenache and 3 through 2's link; every node handles it once."""
    g = gnet(4)
    g.net.connect(0, 1)
    g.net.connect(2, 3)
    g.net.heartbeats()
    await g.start(0, 1, 2)
    await g.members_known(0, 1, 2)
    mid = g.nodes[0].router.broadcast({"type": "note", "payload": "islands"})
    await eventually(lambda: all(mid in got_ids(n) for n in g.nodes[1:]))
    await g.net.quiet(0.3)
    assert g.net.delivered(mid) == [0, 1, 1, 1]
    assert g.nodes[2].router.counters.broadcast_received["grenache"] == 1
    assert g.nodes[3].router.counters.broadcast_received["link"] == 1
    # 1 got it over its link from the origin, a member: it sends no Grenache copies of its own
    assert g.nodes[1].router.grenache.counters["broadcasts_sent"] == 0


async def test_a_failed_grenache_send_is_held_and_delivered_when_the_node_is_back(gnet, grape) -> None:
    g = gnet(2, queue_ttl=30.0)
    a, b = g.nodes
    await g.start()
    await g.members_known()
    await b.router.grenache.server.stop()           # b's endpoint goes away; the Grape still lists it
    outcomes: list[SendResult] = []
    first = a.router.send_to_peer(b.node_id, {"type": "note", "payload": 1}, on_settled=outcomes.append)
    assert first.outcome is Outcome.GRENACHE
    await eventually(lambda: a.router.queue.pending(b.node_id) == 1)   # the failed request: held again
    second = a.router.send_to_peer(b.node_id, {"type": "note", "payload": 2}, on_settled=outcomes.append)
    assert second.outcome is Outcome.QUEUED                            # behind the one already held
    await b.router.grenache.server.start()                              # back on the same port
    await eventually(lambda: len(b.got) == 2, timeout=20)
    assert [message["payload"] for message, _ in b.got] == [1, 2]       # in order, nothing lost
    assert [o.outcome for o in outcomes] == [Outcome.GRENACHE, Outcome.GRENACHE]
    assert a.router.grenache.counters["requests_failed"] >= 1


async def test_unicasts_answered_busy_wait_their_turn_and_keep_the_node(gnet, grape) -> None:
    """b lets a's address 100 frames a second (bursts of 200) and a sends it 300 unicasts at once: the second
    request is refused busy (ERR_BUSY, unread), and a sends the same batch again once the share has refilled,
    with b still its member: nothing goes back to the router or elsewhere, and all arrive in order."""
    g = gnet(2, grenache_messages_rate=100.0, queue_ttl=30.0)
    a, b = g.nodes
    await g.start()
    await g.members_known()
    outcomes: list[SendResult] = []
    for i in range(300):
        a.router.send_to_peer(b.node_id, {"type": "note", "payload": i}, on_settled=outcomes.append)
    await eventually(lambda: len(b.got) == 300, timeout=20)
    assert [message["payload"] for message, _ in b.got] == list(range(300))
    path = a.router.grenache
    assert path.counters["busy_waits"] >= 1 and path.counters["unicasts_failed"] == 0
    assert b.node_id in path.members and b.node_id not in path.stats()["failing"]
    assert {o.outcome for o in outcomes} == {Outcome.GRENACHE}
    assert b.router.grenache.stats()["limits"]["refused"]["per_address"] >= 1


async def test_a_hello_that_fails_is_not_remembered_as_nobody(gnet, grape) -> None:
    """A hello answered busy (or not at all) says nothing of who is at the address: the node stays a member and is
    asked again next time, instead of being taken for nobody for HELLO_TTL (red team, FINDING 7)."""
    g = gnet(2)
    a, b = g.nodes
    await g.start()
    await g.members_known()
    path = a.router.grenache
    address = path.members[b.node_id]
    path._hellos[address] = (b.node_id, path.clock() - 3600.0)      # its hello is due again
    await b.router.grenache.server.stop()
    assert await path._identify(address) == b.node_id, "a failed hello keeps what we knew"
    del path._hellos[address]
    assert await path._identify(address) is None and address not in path._hellos, "and caches nothing new"
    await b.router.grenache.server.start()                              # back on the same port
    assert await path._identify(address) == b.node_id, "asked again at once, not after HELLO_TTL"


async def test_an_answer_waits_for_a_grenache_lookup_only_as_long_as_a_requester_waits(gnet, grape) -> None:
    from p2p.routing.unicast import ANSWER_HOLD
    g = gnet(2)
    a, b = g.nodes
    await g.start(0)
    result = a.router.send_to_peer(b.node_id, {"type": "note", "payload": "an answer"}, answer=True)
    assert result.outcome is Outcome.QUEUED                        # b may yet be found on the Grape ...
    (held,) = a.router.queue._queues[b.node_id].items
    assert held.expires - time.monotonic() <= ANSWER_HOLD          # ... but not for QUEUE_TTL (60 s)
    await g.start(1)
    await eventually(lambda: len(b.got) == 1, timeout=20)


async def test_a_node_missing_from_the_grape_is_held_then_looked_up(gnet, grape) -> None:
    g = gnet(2)
    a, b = g.nodes
    await g.start(0)
    result = a.router.send_to_peer(b.node_id, {"type": "note", "payload": "early"})
    assert result.outcome is Outcome.QUEUED
    await g.start(1)                                  # b announces itself; a's sweep looks it up
    await eventually(lambda: len(b.got) == 1, timeout=20)
    # counted when b's answer reaches a, which can be a moment after b handled the message
    await eventually(lambda: a.router.counters.unicast_sent["grenache"] == 1)
    assert a.router.counters.events["flushed"] == 1


# --- a hostile HTTP caller ----------------------------------------------------------------------
async def post(path_owner, key: str, payload) -> Any:
    async with GrenacheHTTPClient(timeout=5.0) as http:
        return await http.request(("127.0.0.1", path_owner.router.grenache.port), key, payload)


def frame(message: dict) -> str:
    return base64.b64encode(encode_body(message)).decode()


async def test_hostile_requests_are_refused_and_the_node_keeps_serving(gnet) -> None:
    g = gnet(3)
    a, b, c = g.nodes
    await g.start()
    await g.members_known()
    key_b = unicast_name(SERVICE, b.node_id)
    bad: object
    for bad in (None, [], {"v": 2, "frames": []}, {"v": 1}, {"v": 1, "frames": "x"},
                {"v": 1, "frames": [None] * 300}):
        with pytest.raises(GrenacheRemoteError):
            await post(b, key_b, bad)
    note = {"type": "note", "id": "n1", "origin": a.node_id, "dst": b.node_id, "ts": time.time(), "hops": 0}
    wrapper = a.router.unicast.relay_wrapper(b.node_id, note)
    forged = dict(wrapper, body=encode_body(dict(note, payload="altered")))       # signature no longer fits
    to_c = c.router.unicast.relay_wrapper(c.node_id, dict(note, dst=c.node_id))     # c's own, not for b
    unsigned = dict(wrapper, sig=bytes(64))
    answer = await post(b, key_b, {"v": 1, "frames": [
        "!!not base64!!", base64.b64encode(b"\xc1garbage").decode(), frame({"type": "nonsense"}),
        frame({"type": "relay"}), frame(forged), frame(unsigned), frame(to_c), frame(note), frame(wrapper)]})
    assert answer["accepted"] == 1
    assert answer["refused"] == {"malformed": 2, "unknown_type": 1, "malformed_message": 1,
                                 "bad_signature": 2, "misaddressed": 1, "not_a_relay": 1}
    assert [m["id"] for m, _ in b.got] == ["n1"]
    # a replayed copy is accepted as a duplicate and handled once
    assert (await post(b, key_b, {"v": 1, "frames": [frame(wrapper)]}))["accepted"] == 1
    assert len(b.got) == 1 and b.router.counters.duplicates.get("note") == 1

    signed = {"type": "note", "origin": a.node_id, "ts": time.time(), "hops": 0, "payload": "x"}
    a.router.auth.sign_broadcast(signed)
    tampered = dict(signed, payload="y")
    answer = await post(b, broadcast_name(SERVICE), {"v": 1, "frames": [frame(tampered), frame(signed),
                                                                          frame(dict(signed, dst=b.node_id))]})
    assert answer == {"accepted": 1, "refused": {"bad_signature": 1, "not_a_broadcast": 1}}
    assert b.peers.penalties == []                   # an HTTP caller proves nobody: no one is blamed
    hello = await post(b, broadcast_name(SERVICE), {"op": "hello"})
    assert hello == {"v": 1, "node_id": b.node_id, "network": "test-net"}
    # and it still routes
    result = a.router.send_to_peer(b.node_id, {"type": "note", "payload": "after"})
    await eventually(lambda: result.message_id in got_ids(b))


async def test_past_its_share_a_client_is_answered_busy_until_its_frames_are_paid_for(gnet) -> None:
    """A request's frames are charged to its client on credit: the 6 frames pass on a share of 5 (a burst of
    5), and the next request is refused, unread, until the debt is paid."""
    g = gnet(2, grenache_messages_rate=2.5)
    a, b = g.nodes
    await g.start()
    frames = []
    for i in range(7):
        wrapper = a.router.unicast.relay_wrapper(b.node_id, {"type": "note", "id": f"b{i}", "origin": a.node_id,
                                                             "dst": b.node_id, "ts": time.time(), "hops": 0})
        frames.append(frame(wrapper))
    assert (await post(b, unicast_name(SERVICE, b.node_id), {"v": 1, "frames": frames[:6]}))["accepted"] == 6
    with pytest.raises(GrenacheRemoteError) as info:
        await post(b, unicast_name(SERVICE, b.node_id), {"v": 1, "frames": frames[6:]})
    assert info.value.code == "ERR_BUSY" and info.value.detail == "HTTP 429" and len(b.got) == 6
    limits = b.router.grenache.stats()["limits"]
    assert limits["unit"] == "frames" and limits["refused"] == {"per_address": 1, "per_subnet": 0, "total": 0}
    assert b.router.grenache.counters["requests_received"] == 1           # the refused one was never read
    await asyncio.sleep(1.0)                                              # 2.5 frames a second: paid, and one more
    assert (await post(b, unicast_name(SERVICE, b.node_id), {"v": 1, "frames": frames[6:]}))["accepted"] == 1
