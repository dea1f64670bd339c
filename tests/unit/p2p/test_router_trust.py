"""Verify before forward, blame only the author: forged, stale and misattributed messages stop at
the first honest node, and only the neighbour that handed them over (or their proven author) pays."""
from __future__ import annotations

import time

import pytest

from p2p import messages as m
from p2p.framing import encode_body
from tests.unit.p2p.simnet import SimNet, line, nid


def signed_note(net: SimNet, i: int, **fields) -> dict:
    note = {"type": "note", "origin": nid(i), "ts": time.time(), "hops": 0, **fields}
    net.nodes[i].router.auth.sign_broadcast(note)
    return note


async def test_a_forged_broadcast_stops_at_the_first_honest_node_and_costs_only_its_sender() -> None:
    net = line(3)
    attacker, relay = net.nodes[0], net.nodes[1]
    link = attacker.peers.links[relay.node_id]
    note = signed_note(net, 0, payload="signed")
    note["payload"] = "altered after signing"
    link.send(note)
    await net.quiet()
    assert net.delivered(note["id"]) == [0, 0, 0]
    assert attacker.node_id not in relay.peers.links  # the link that carried the forgery is closed
    assert net.nodes[2].peers.penalties == [] and net.nodes[2].node_id in relay.peers.links


async def test_an_id_taken_from_another_message_is_a_forgery() -> None:
    net = line(3)
    honest = signed_note(net, 2, payload="honest")
    theft = signed_note(net, 0, payload="attacker's")
    theft["id"] = honest["id"]  # would make the honest copy look like a duplicate
    net.nodes[0].peers.links[nid(1)].send(theft)
    await net.quiet()
    assert nid(0) not in net.nodes[1].peers.links
    assert net.delivered(honest["id"]) == [0, 0, 0]


async def test_stale_broadcasts_are_dropped_without_blame() -> None:
    net = line(2)
    old = {"type": "note", "origin": nid(0), "ts": time.time() - 3600, "hops": 0}
    net.nodes[0].router.auth.sign_broadcast(old)
    net.nodes[0].peers.links[nid(1)].send(old)
    await net.quiet()
    router = net.nodes[1].router
    assert router.counters.dropped.get("stale") == 1 and net.delivered(old["id"]) == [0, 0]
    assert net.nodes[1].peers.penalties == [] and nid(0) in net.nodes[1].peers.links


def relay_wrapper(net: SimNet, signer: int, origin: int, dst: int, inner: dict) -> dict:
    body = encode_body(inner)
    wrapper = {"type": "relay", "id": inner["id"], "origin": nid(origin), "dst": nid(dst), "hops": 0,
               "ts": time.time(), "body": body}
    net.nodes[signer].router.auth.sign_relay(wrapper)
    return wrapper


async def test_a_relayed_unicast_needs_its_origins_signature() -> None:
    net = line(3)
    inner = {"type": "note", "id": "spoof-1", "origin": nid(2), "ts": time.time(), "hops": 0, "dst": nid(2)}
    # node 0 claims node 2 sent it (signing with its own key): the relay refuses to forward
    net.nodes[0].peers.links[nid(1)].send(relay_wrapper(net, 0, 2, 2, inner))
    await net.quiet()
    assert nid(0) not in net.nodes[1].peers.links
    assert net.nodes[2].got == []


async def test_a_badly_signed_inner_message_is_blamed_on_its_origin_not_the_relay() -> None:
    net = line(3)
    inner = {"type": "note", "id": "mismatch", "origin": nid(0), "ts": time.time(), "hops": 0, "dst": nid(1)}
    wrapper = relay_wrapper(net, 0, 0, 2, inner)  # wrapper says dst 2, the signed body says dst 1
    net.nodes[0].peers.links[nid(1)].send(wrapper)
    await net.quiet()
    relay = net.nodes[1]
    assert relay.router.counters.dropped.get("relayed_malformed") == 1
    assert [p[0] for p in relay.peers.penalties] == [nid(0)]
    assert net.nodes[2].got == [] and net.nodes[2].peers.penalties == []


async def test_relayed_unicast_arrives_with_its_proven_origin() -> None:
    net = line(3)
    net.heartbeats()
    result = net.nodes[0].router.send_to_peer(nid(2), {"type": "note", "payload": "via 1"})
    assert result.outcome.value == "relayed"
    await net.quiet()
    (message, src), = net.nodes[2].got
    assert message["origin"] == nid(0) and src == nid(1) and message["payload"] == "via 1"


async def test_undeclared_broadcast_types_are_refused_both_ways() -> None:
    net = line(2)
    router = net.nodes[0].router
    known = {"undeclared_kind": m.schema({"id": m.is_str(64), "origin": m.is_node_id})}
    for node in net.nodes:                   # a type both understand, neither declared as a broadcast
        node.peers.schemas.add(known)
    with pytest.raises(ValueError, match="not declared"):
        router.broadcast({"type": "undeclared_kind"})
    with pytest.raises(ValueError, match="validator or an origin signature"):
        router.declare_broadcast("undeclared_kind")
    net.nodes[0].peers.links[nid(1)].send({"type": "undeclared_kind", "id": "u1", "origin": nid(0)})
    await net.quiet()
    assert net.nodes[1].router.counters.dropped.get("undeclared_type") == 1
    assert net.nodes[1].peers.penalties == []


async def test_subscriber_errors_never_blame_a_relay() -> None:
    net = line(3)
    last = net.nodes[2]

    def rejects(message: dict, src: str) -> None:
        raise m.ProtocolError("bad_content", "the subscriber found it wrong")  # its own reason

    def crashes(message: dict, src: str) -> None:
        raise RuntimeError("a bug of ours")

    last.router.subscribe("note", rejects)
    net.nodes[0].router.broadcast({"type": "note", "payload": 1})
    await net.quiet()
    assert last.peers.penalties == [(nid(0), 20.0, "note: bad_content")]  # the origin, not relay 1
    assert nid(1) in last.peers.links
    last.router.unsubscribe("note", rejects)
    last.router.subscribe("note", crashes)
    net.nodes[0].router.broadcast({"type": "note", "payload": 2})
    await net.quiet()
    assert last.router.counters.events["handler_errors"] == 1
    assert len(last.peers.penalties) == 1 and nid(1) in last.peers.links


async def test_relays_for_nodes_we_do_not_reach_are_charged_to_the_neighbour() -> None:
    """One origin key's relays to nowhere were checked, dropped and charged to nobody. Now each spends the
    neighbour's budget (and its network's, and everyone's): past it the neighbour's link is not read for a while,
    so its sender pays the checks at that pace. Nobody is penalised: an honest relay may pass one on."""
    net = line(2)
    inner = {"type": "note", "origin": nid(0), "ts": time.time(), "hops": 0, "dst": nid(9)}
    relays = [relay_wrapper(net, 0, 0, 9, {**inner, "id": f"nowhere-{i}"}) for i in range(100)]
    link = net.nodes[0].peers.links[nid(1)]
    for relay in relays:
        link.send(relay)
    await net.quiet()
    node = net.nodes[1]
    assert node.router.counters.dropped.get("relay_unreachable") == 100
    assert node.router.unicast.unroutable.refused == 60             # a burst of two seconds' worth, then held
    assert {who for who, _ in node.peers.holds} == {nid(0)} and all(0 < s <= 1 for _, s in node.peers.holds)
    assert node.peers.penalties == [] and nid(0) in node.peers.links


async def test_a_relayed_body_too_complex_for_its_size_is_blamed_on_its_origin_not_the_relay() -> None:
    """The inner body of a relay is decoded with the frame budget too; past it the relay drops it as malformed and
    penalises the origin that signed it, and the link that carried it stays up."""
    net = line(3)
    inner = {"type": "note", "id": "dense", "origin": nid(0), "ts": time.time(), "hops": 0, "dst": nid(2),
             "pad": [[] for _ in range(5000)]}
    net.nodes[0].peers.links[nid(1)].send(relay_wrapper(net, 0, 0, 2, inner))
    await net.quiet()
    relay = net.nodes[1]
    assert relay.router.counters.dropped.get("relayed_malformed") == 1
    assert [p[0] for p in relay.peers.penalties] == [nid(0)] and nid(0) in relay.peers.links
    assert net.nodes[2].got == []
