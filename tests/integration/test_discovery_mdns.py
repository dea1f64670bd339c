"""mDNS with real exchange-node processes: on 127.0.0.1 (nothing else configured), and across
three network namespaces joined by a bridge that the test builds and tears down. mDNS never runs
on the machine's real interface here."""
from __future__ import annotations

import time

import pytest

from tests.harness import wait_until
from tests.integration.netns import NetnsLan, netns_unavailable


def linked(a, b) -> bool:
    return b.node_id in a.connected_ids() and a.node_id in b.connected_ids()


def test_two_nodes_nothing_configured_but_mdns_on_loopback_connect_within_3s(cluster):
    # nothing but mDNS; the network id only keeps out the nodes of tests running in parallel, which
    # mDNS on loopback reaches too
    mdns = dict(discovery_mdns="true", mdns_interfaces="127.0.0.1", network_id="test-two-by-mdns")
    a = cluster.node("a", start=False, **mdns)
    b = cluster.node("b", start=False, **mdns)
    spawned = time.monotonic()
    a.start(wait=False)
    b.start(wait=False)
    a.wait_ready()
    b.wait_ready()
    ready = time.monotonic()
    wait_until(lambda: linked(a, b), 3.0, interval=0.05, message="a and b linked via mDNS")
    print(f"mDNS loopback: linked {time.monotonic() - ready:.2f}s after both were ready "
          f"({time.monotonic() - spawned:.2f}s after spawn)")
    # the side that dialled credits mDNS, in /status and in `exchange-node peers`
    wait_until(lambda: any(n.status()["discovery"]["mdns"]["found"] >= 1 for n in (a, b)), 3.0)
    sources = {p["source"] for n in (a, b) for p in n.peers()}
    assert "mdns" in sources, sources
    cli = a.cli("peers")
    assert cli.returncode == 0 and b.node_id[:16] in cli.stdout, cli.stdout + cli.stderr
    for n in (a, b):
        assert n.status()["discovery"]["mdns"]["last_error"] is None


def test_mdns_other_network_is_ignored(cluster):
    a = cluster.node("a", discovery_mdns="true", mdns_interfaces="127.0.0.1", network_id="net-a")
    b = cluster.node("b", discovery_mdns="true", mdns_interfaces="127.0.0.1", network_id="net-b")
    c = cluster.node("c", discovery_mdns="true", mdns_interfaces="127.0.0.1", network_id="net-a")
    wait_until(lambda: linked(a, c), 3.0, message="same-network nodes link")
    time.sleep(1.0)
    assert b.connected_ids() == set() and b.node_id not in a.connected_ids()
    assert b.status()["discovery"]["mdns"]["found"] == 0
    assert a.status()["p2p"]["counters"]["dials"] <= 2  # never dialled the other network


@pytest.fixture
def lan3():
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    with NetnsLan(3) as lan:
        yield lan


@pytest.mark.netns
def test_three_namespaces_find_each_other_by_mdns_alone_within_5s(lan3, tmp_path):
    # Nothing configured but DISCOVERY_MDNS: no bootstrap, no MDNS_INTERFACES (so each node uses its
    # default, all real interfaces, which inside its namespace is just eth0 on the test bridge).
    nodes = [lan3.node(tmp_path, i, discovery_pex="false") for i in range(3)]  # mDNS alone
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    ready = time.monotonic()

    def all_linked() -> bool:
        return all(len(n.connected_ids()) == 2 for n in nodes)

    wait_until(all_linked, 5.0, interval=0.1, message="3 namespaced nodes fully linked via mDNS")
    print(f"mDNS across namespaces: fully linked {time.monotonic() - ready:.2f}s after all were ready")
    for node in nodes:
        status = node.status()
        assert status["discovery"]["mdns"]["last_error"] is None
        peers = node.peers()
        assert {p["host"] for p in peers} <= set(lan3.addresses)  # LAN addresses, found on eth0
    assert any(p["source"] == "mdns" for n in nodes for p in n.peers())
    # each found both others itself (on a very busy box a node may be dialled before it resolved)
    wait_until(lambda: all(n.status()["discovery"]["mdns"]["found"] == 2 for n in nodes), 5.0,
               message="every node resolved both others by mDNS")
