"""Real processes: forged replication input is rejected and the peer that sent it is penalised.

A raw client (tests/wire.py) joins as a peer and sends (1) an altered copy of a real order event at a
sequence number its origin has not reached yet, (2) an altered copy of an event already verified
(the origin's sequence number reused with different content) and (3) a beacon whose checkpoint
signature is not the origin's. The honest events still win everywhere, and the sender is penalised
until banned."""
from __future__ import annotations

import asyncio
import os
import time

from exchange.replication.records import ReplEvent
from node.identity import NodeIdentity
from tests.harness import wait_until
from tests.integration.test_exchange import FAST, converged
from tests.wire import RawPeer


def envelope(kind: str, origin: str, **fields) -> dict:
    return {"type": kind, "id": os.urandom(12).hex(), "origin": origin, "ts": time.time(), "hops": 0, **fields}


async def read_until(peer: RawPeer, kind: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        message = await peer.next_message(max(0.05, deadline - time.monotonic()))
        assert message is not None, "node closed the link"
        if message["type"] == kind:
            return message


def peer_record(node, node_id: str) -> dict | None:
    return next((p for p in node.peers() if p["node_id"] == node_id), None)


def test_forged_events_and_checkpoints_are_rejected_and_penalised(cluster):
    a = cluster.node("a", **FAST)
    b = cluster.node("b", bootstrap_peers=a.p2p_address, **FAST)
    wait_until(lambda: b.status()["exchange"]["members"] == 2, 15)
    status, first = a.api("POST", "/orders", {"market": "BTC-USD", "side": "buy", "price": "100", "qty": "2"})
    assert status == 201
    order_id = first["order"]["id"]

    mallory = NodeIdentity.generate()
    host, port = b.p2p_address.rsplit(":", 1)

    async def attack_one() -> tuple[bytes, list]:
        peer = await RawPeer.connect(host, int(port))
        await peer.handshake(mallory)
        peer.send(envelope("sync_request", mallory.node_id, dst=b.node_id, vec={}))
        response = await read_until(peer, "sync_response")
        real = next(ReplEvent.from_wire(w) for w in response["events"] if w[0] == a.node_id and w[1] == 1)
        # (1) a made-up seq 2 for `a`, chained correctly but not what `a` will sign
        fake_next = ReplEvent(a.node_id, 2, real.lamport + 1, real.hash,
                              ["n", "BTC-USD", "sell", "limit", 1, 1_000_000, "mallory", None])
        peer.send(envelope("order", mallory.node_id, events=[fake_next.wire()]))
        await asyncio.sleep(0.3)
        peer.close()
        return real.hash, real.wire()

    _, real_wire = asyncio.run(attack_one())
    status, second = a.api("POST", "/orders", {"market": "BTC-USD", "side": "sell", "price": "101", "qty": "1"})
    assert status == 201                          # a's real seq 2 + its signed checkpoint reach b
    wait_until(lambda: converged([a, b], 2), 10)
    assert b.get(f"/orders/{second['order']['id']}")["order"]["qty"] == "1.0000"
    wait_until(lambda: (peer_record(b, mallory.node_id) or {}).get("penalty", 0) >= 20, 5,
               message="the sender of the forged seq 2 is penalised once a's checkpoint decides")

    async def attack_two() -> str | None:
        peer = await RawPeer.connect(host, int(port))
        await peer.handshake(mallory)
        # (2) seq 1 of `a` reused with different content (quantity changed)
        altered = []
        for qty in (999, 998):
            copy = list(real_wire)
            copy[4] = list(copy[4])
            copy[4][5] = qty
            altered.append(copy)
        peer.send(envelope("order", mallory.node_id, events=altered))
        reason, _ = await peer.until_goodbye(5.0)
        return reason

    assert asyncio.run(attack_two()) == "banned"    # 50 points per contradicting copy: banned
    assert peer_record(b, mallory.node_id)["status"] == "banned"
    assert b.get(f"/orders/{order_id}")["order"]["qty"] == "2.0000"

    eve = NodeIdentity.generate()

    async def attack_three() -> None:
        peer = await RawPeer.connect(host, int(port))
        await peer.handshake(eve)
        # (3) a checkpoint for `a` promising a huge lamport, signed by the wrong key
        bogus = [a.node_id, 2, b"\x11" * 32, 10**12, bytes.fromhex(a.node_id.ljust(64, "0"))[:32], eve.sign(b"x")]
        peer.send(envelope("beacon", eve.node_id, cp=bogus))
        await asyncio.sleep(0.5)
        peer.close()

    asyncio.run(attack_three())
    wait_until(lambda: (peer_record(b, eve.node_id) or {}).get("penalty", 0) >= 40, 5)
    exchange = b.status()["exchange"]
    assert exchange["bad_signatures"] >= 1 and exchange["forged"] >= 2
    assert exchange["lamport"] < 10**12              # the forged promise moved nothing
    assert converged([a, b], 2)
