"""Operating modes end to end: hybrid (Grape + P2P), every strategy at once (one link per node,
merged by node id and address), and the per-strategy counters in GET /status."""
from __future__ import annotations

import asyncio
import threading

import pytest

from tests.fake_grape import FakeGrape
from tests.harness import wait_until


@pytest.fixture
def fake_grape():
    """A FakeGrape on 127.0.0.1 served from its own event loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    grape = FakeGrape()
    url = asyncio.run_coroutine_threadsafe(grape.start(), loop).result(10)
    try:
        yield grape, url
    finally:
        asyncio.run_coroutine_threadsafe(grape.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_hybrid_grape_finds_peers_without_bootstrap(cluster, fake_grape):
    grape, url = fake_grape
    nodes = [cluster.node(f"g{i}", discovery_grenache="true", grape_urls=url, grape_service="test-exchange",
                          grape_announce_interval=1.0) for i in range(3)]
    wait_until(lambda: all(len(n.connected_ids()) == 2 for n in nodes), 10.0, interval=0.1,
               message="3 nodes linked through Grape announce/lookup")
    # the first node's first lookup was empty; its next one (every 5 s) finds the others
    wait_until(lambda: all(n.status()["discovery"]["grape"]["found"] >= 2 for n in nodes), 8.0, interval=0.2)
    for n in nodes:
        assert n.status()["discovery"]["grape"]["last_error"] is None
    assert grape.count("announce") >= 3 and grape.count("lookup") >= 1
    sources = {p["source"] for n in nodes for p in n.peers()}
    assert "grape" in sources, sources


def test_every_strategy_at_once_one_link_per_node(cluster, fake_grape):
    _, url = fake_grape
    # mDNS on loopback reaches every process on the machine: a network id of its own keeps the nodes of
    # a test running in parallel (another pytest-xdist worker) out of this one
    common = dict(discovery_grenache="true", grape_urls=url, grape_service="test-all", network_id="test-all-modes",
                  grape_announce_interval=1.0, discovery_mdns="true", mdns_interfaces="127.0.0.1")
    first = cluster.node("all0", **common)
    nodes = [first] + [cluster.node(f"all{i}", bootstrap_peers=first.p2p_address, **common) for i in (1, 2, 3)]
    wait_until(lambda: all(len(n.connected_ids()) == 3 for n in nodes), 10.0, interval=0.1,
               message="4 nodes fully linked")
    # a node looks up the Grape at start (when few had announced) and then every 5 s +-10 %: allow two rounds
    wait_until(lambda: all(n.status()["discovery"]["grape"]["found"] >= 3 for n in nodes), 12.0,
               message="every node found the other three on the Grape")
    for n in nodes:
        peers = n.peers()
        connected = [p for p in peers if p["status"] == "connected"]
        assert len(connected) == len({p["node_id"] for p in connected}) == 3  # merged by node id
        status = n.status()
        discovery = status["discovery"]
        assert set(discovery) >= {"persisted", "bootstrap", "pex", "mdns", "grape"}
        for name, s in discovery.items():
            assert set(s) >= {"found", "dialled", "connected", "last_error"}, name
            assert s["last_error"] is None, (name, s)
        assert status["p2p"]["known_nodes"] == 3
        # the same node found by several strategies is one known address per listen address
        assert status["p2p"]["known_addresses"] == 3, status["p2p"]
    # a peer found by mDNS and by Grape and by pex is credited to the best source (mDNS < Grape < pex)
    assert {p["source"] for n in nodes[1:] for p in n.peers()} <= {"bootstrap", "mdns", "grape", "pex", "inbound"}
    assert not any(p["source"] in ("grape", "pex") for n in nodes for p in n.peers()
                   if p["direction"] == "outbound" and p["port"] == first.p2p_port and n is not first)
