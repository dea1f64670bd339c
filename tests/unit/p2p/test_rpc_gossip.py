"""RPC and signed routing hints over the MessageRouter between in-process nodes: requests to a node without
a direct link are relayed; relayed hints are verified against the origin's key, forged or altered ones
dropped, rate-limited, never create peers, and stale ones are ignored."""
from __future__ import annotations

import contextlib
import logging
import random
import time

import pytest

from node.identity import NodeIdentity
from p2p.router import MessageRouter
from p2p.rpc import errors as e
from p2p.rpc.builtins import Builtins
from p2p.rpc.gossip import HintGossip, hint_proof
from p2p.rpc.service import RpcConfig, RpcService
from tests.unit.p2p.rpc_nodes import eventually, link, local_peers
from node.configs import router_config
from p2p.framing import encode_body
from p2p.messages import Schemas
from p2p.rpc.wire import HINT, HINT_MAX_BYTES, MAX_SERVICE_NAME, RPC_SCHEMAS

pytestmark = pytest.mark.timeout(30)


class Node:
    def __init__(self, identity, peers, router, rpc, gossip) -> None:
        self.identity, self.peers, self.router, self.rpc, self.gossip = identity, peers, router, rpc, gossip
        self.node_id = identity.node_id


async def make_node(tmp_path, name: str, rate: float = 10.0) -> Node:
    settings, identity, peers = local_peers(tmp_path, name)
    router = peers.attach(MessageRouter(peers, router_config(settings)))
    rpc = peers.attach(RpcService(peers, RpcConfig(warmup_period=0), message_router=router, rng=random.Random(2)))
    rpc.register("svc", lambda payload, peer: "ok")
    Builtins(peers.node_id).register_all(rpc, test_services=True)
    rpc.start()
    gossip = HintGossip(rpc, identity, verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for,
                        network=settings.network_id, rate=rate)
    gossip.attach(router)
    await peers.start()
    await router.start()
    return Node(identity, peers, router, rpc, gossip)


@contextlib.asynccontextmanager
async def network(tmp_path, names, **kw):
    nodes = {}
    try:
        for name in names:
            nodes[name] = await make_node(tmp_path, name, **kw)
        yield nodes
    finally:
        for node in nodes.values():
            await node.gossip.stop()
            await node.rpc.stop()
            await node.router.stop()
            await node.peers.stop()


def observe_failures(node: Node, subject: str, n: int = 20) -> None:
    """Give `node`'s router for "svc" a fresh, bad view of `subject`."""
    router = node.rpc.router_for("svc")
    now = node.rpc.clock()
    for _ in range(n):
        router.on_start(subject, now)
        router.on_failure(subject, "error", 0.002, now)


async def test_degraded_hint_is_signed_relayed_and_applied(tmp_path, caplog):
    async with network(tmp_path, "sxyz") as n:
        s, x, y, z = n["s"], n["x"], n["y"], n["z"]
        for a, b in ((x, s), (z, s), (x, y), (y, z)):        # x and z are not linked: y relays
            await link(a, b)
        await z.rpc.request_peer(s.node_id, "svc")
        await z.rpc.request("svc")                            # z's router for svc knows s
        assert z.rpc.routers["svc"].hint_multiplier(s.node_id, z.rpc.clock()) == 1.0
        observe_failures(x, s.node_id)
        with caplog.at_level(logging.INFO, logger="p2p.rpc.hints"):
            assert x.gossip.tick() == 1
        assert any("hint sent" in r.getMessage() and "DEGRADED" in r.getMessage() for r in caplog.records)
        await eventually(lambda: z.gossip.counters["accepted"] == 1)
        summary = z.rpc.routers["svc"].hints.summary(s.node_id, z.rpc.clock())
        assert summary["status"] == "DEGRADED" and summary["origins"] == [x.node_id]
        assert 1.0 < z.rpc.routers["svc"].hint_multiplier(s.node_id, z.rpc.clock()) <= 2.0   # capped
        assert y.gossip.counters["received"] == 1 and y.gossip.counters["accepted"] == 0      # y has no router for it
        assert x.gossip.tick() == 0                           # nothing new to say
        assert z.rpc.snapshot()["services"]["svc"]["peers"][s.node_id]["hint"]["status"] == "DEGRADED"


async def test_forged_and_altered_hints_are_dropped_and_not_forwarded(tmp_path):
    async with network(tmp_path, "xyz") as n:
        x, y, z = n["x"], n["y"], n["z"]
        await link(x, y)
        await link(y, z)
        base = {"type": "hint", "subject": x.node_id, "status": "DEGRADED", "service": "svc",
                "latency_ms": 500.0, "error_rate": 1.0}
        # claims a key that is not the origin's (the router stamps origin = y)
        forged = dict(base, id="f1", ts=time.time(), pk=x.identity.public_key_bytes, sig=b"\0" * 64)
        y.router.broadcast(forged)
        # signed by y, then altered on the way
        altered = dict(base, id="f2", origin=y.node_id, ts=time.time(), pk=y.identity.public_key_bytes)
        altered["sig"] = y.identity.sign(hint_proof(altered, y.gossip.network))
        altered["status"] = "HEALTHY"
        y.router.broadcast(altered)
        await eventually(lambda: x.gossip.counters["forged"] == 2 and z.gossip.counters["forged"] == 2)
        assert x.gossip.counters["received"] == z.gossip.counters["received"] == 0   # never handled
        assert x.router.counters.dropped.get("invalid") == 2


async def test_hints_are_rate_limited_and_never_create_peers(tmp_path):
    async with network(tmp_path, "xy", rate=1.0) as n:
        x, y = n["x"], n["y"]
        await link(x, y)
        await y.rpc.request("svc")                                 # y's router knows only x
        sent = [x.gossip.send("svc", {"subject": f"{i:040x}", "status": "DEGRADED", "latency_ms": 9.0,
                                      "error_rate": 0.5}) for i in range(5)]
        assert sent == [True, True, False, False, False] and x.gossip.counters["rate_limited"] == 3
        await eventually(lambda: y.gossip.counters["received"] == 2)
        assert y.gossip.counters["accepted"] == 0 and y.rpc.routers["svc"].peers() == [x.node_id]


async def test_stale_hints_are_ignored(tmp_path):
    async with network(tmp_path, "sxy") as n:
        s, x, y = n["s"], n["x"], n["y"]
        for a, b in ((x, s), (y, s), (x, y)):
            await link(a, b)
        await y.rpc.request_peer(s.node_id, "svc")
        y.rpc.router_for("svc").on_start(s.node_id, y.rpc.clock())
        x.gossip.wall_clock = lambda: time.time() - 3600   # an hour old
        assert x.gossip.send("svc", {"subject": s.node_id, "status": "DEGRADED", "latency_ms": 1.0,
                                     "error_rate": 1.0})
        await eventually(lambda: y.gossip.counters["stale"] == 1)
        assert y.gossip.counters["accepted"] == 0


async def test_request_peer_without_a_link_is_relayed_by_the_message_router(tmp_path):
    async with network(tmp_path, "abc") as n:
        a, b, c = n["a"], n["b"], n["c"]
        await link(a, b)
        await link(b, c)
        assert c.node_id not in a.peers.links
        pong = await a.rpc.request_peer(c.node_id, "ping", None, timeout=5)   # queued until a route is known
        assert pong["node_id"] == c.node_id
        assert await a.rpc.request_peer(c.node_id, "svc", 1) == "ok"
        assert a.rpc.client.counters["relayed"] == 2 and a.router.counters.events["relayed_out"] >= 1
        with pytest.raises(e.RpcError) as info:                               # errors come back the same way
            await a.rpc.request_peer(c.node_id, "nope")
        assert info.value.code == e.UNKNOWN_SERVICE


def test_the_largest_hint_the_schema_allows_fits_under_the_open_type_cap():
    """HINT_MAX_BYTES drops padded copies unchecked; no hint an honest node can send comes near it."""
    author = NodeIdentity.generate()
    largest = {"type": "hint", "id": "i" * 128, "origin": author.node_id, "ts": time.time(),
               "subject": author.node_id, "status": "s" * 16, "service": "v" * MAX_SERVICE_NAME,
               "latency_ms": 1e308, "error_rate": 1.0, "pk": author.public_key_bytes, "sig": bytes(64), "hops": 255}
    assert Schemas(RPC_SCHEMAS).checks[HINT](largest) is None
    assert len(encode_body(largest)) <= 0.75 * HINT_MAX_BYTES
