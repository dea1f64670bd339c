"""The DHT on real exchange-node processes: with peer exchange and mDNS off, thirty nodes started in a line
(each knows only the one before it) publish their records, and one end finds every other's record and the
providers of a service by DHT lookup alone, through the CLI as an operator would, and links to it."""
from __future__ import annotations

import json

import pytest

from tests.harness import free_ports, wait_until

pytestmark = pytest.mark.integration

COUNT = 30


def _line(cluster, n: int) -> list:
    ports = free_ports(n)
    nodes = [cluster.node(f"d{i}", start=False, p2p_port=ports[i], discovery_pex="false", discovery_dht="true",
                          bootstrap_peers=f"127.0.0.1:{ports[i - 1]}" if i else None)
             for i in range(n)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(60)
    return nodes


def test_a_node_finds_any_other_and_a_service_by_dht_alone_and_links_to_it(cluster):
    nodes = _line(cluster, COUNT)
    first, last = nodes[0], nodes[-1]
    # every node publishes its record once it has a contact, again 5 s later (its first copies went to the few
    # nodes up then), then at 20 s, 60 s and every 10 minutes: wait for the second round everywhere
    wait_until(lambda: all(n.status()["discovery"]["dht"]["publications"] >= 2 and
                           n.status()["discovery"]["dht"]["published"] > 0 for n in nodes), 60, interval=0.5,
               message="every node stored its record twice on the nodes closest to its id")

    done = last.cli("dht", "lookup", first.node_id, "--fresh", "--json", timeout=60)   # asked of the network
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["record"]
    assert record["node_id"] == first.node_id
    assert {"host": "127.0.0.1", "port": int(first.p2p_address.rsplit(":", 1)[1]), "how": "listen"} in record["addresses"]
    assert "exchange-node" in record["services"]
    # lookups dial what they need (each address proven by the handshake): the ends are linked, and the last
    # node holds links beyond its bootstrap, which only the DHT can have made (peer exchange and mDNS are off):
    # dialled by it, or by the others' lookups (inbound; which side dials first is a race)
    wait_until(lambda: first.node_id in last.connected_ids(), 20, message="the last node linked to the first")
    sources = {p["node_id"]: p["source"] for p in last.peers() if p["status"] == "connected"}
    assert len(sources) > 2 and list(sources.values()).count("bootstrap") <= 1, sources
    dht_dials = sum(p["source"] == "dht" for node in nodes for p in node.peers() if p["status"] == "connected")
    assert dht_dials > 0, "no node holds a link it dialled from a DHT lookup"

    providers = last.cli("dht", "providers", "exchange-node", "--json", timeout=60)
    assert providers.returncode == 0, providers.stderr
    found = {r["node_id"] for r in json.loads(providers.stdout)["providers"]}
    assert len(found) >= 10, f"only {len(found)} providers of exchange-node found"

    # any other node's record, asked of the network each time (the last node may keep copies of some)
    missing = [n.name for n in nodes[1:-1] if last.api("GET", f"/dht/nodes/{n.node_id}?fresh=1", None, 30)[0] != 200]
    assert not missing, f"no record found by lookup for {missing}"
    assert sum(last.status()["discovery"]["dht"]["lookup_hops"].values()) >= COUNT - 1

    unknown = last.cli("dht", "lookup", "0" * 40, timeout=60)
    assert unknown.returncode == 1 and "no live record" in unknown.stderr, (unknown.returncode, unknown.stderr)

    table = json.loads(nodes[5].cli("dht", "--json").stdout)
    assert table["contacts"] >= 2 and table["bad_answers"] == 0, table
