"""Grenache as a message path, with real exchange-node processes and real grapes (Node.js).

- Two hybrid nodes whose peer ports the other cannot reach (each listens on 127.0.0.2, while the
  Grape records the announcing grape's 127.0.0.1) but that share the grapes: unicasts and
  broadcasts go over Grenache HTTP RPC, and /metrics, /status and `exchange-node routing` say so.
- Two linked hybrid nodes keep exchanging messages over their link when every grape is killed
  mid-run: nothing sent is lost.
"""
from __future__ import annotations

import re
import urllib.request
from typing import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Cluster, NodeProcess, wait_until

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]


def hybrid(cluster: Cluster, name: str, grape_url: str, **settings) -> NodeProcess:
    return cluster.node(name, discovery_grenache="true", grape_urls=grape_url, debug_api="true",
                        heartbeat_interval=0.2, **settings)


def scrape(node: NodeProcess) -> Callable[..., float]:
    """One /metrics scrape: look up samples by name and labels (values read together are consistent)."""
    request = urllib.request.Request(node.api_url + "/metrics", headers=node.auth_headers())
    with urllib.request.urlopen(request, timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))

    def value(name: str, **labels: str) -> float:
        for family in families:
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        raise KeyError(f"{name} {labels}")
    return value


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    return scrape(node)(name, **labels)


def grenache_unicasts(node: NodeProcess, direction: str) -> float:
    """Unicasts over Grenache, without the chain's once-a-second status to Grenache-only members."""
    value = scrape(node)
    return (value(f"exchange_node_router_unicast_{direction}_total", path="grenache")
            - value(f"exchange_node_chain_status_{direction}_total"))


def grenache_count(text: str) -> int:
    """The "N grenache" unicast count a summary line shows (the chain's status messages included)."""
    found = re.search(r"(\d+) grenache", text)
    return int(found.group(1)) if found else -1


def received(node: NodeProcess) -> dict[str, list]:
    return {row[0]: row for row in node.get("/debug/received?type=note")["received"]}


def grenache_members(node: NodeProcess) -> set[str]:
    return set(node.status()["router"]["grenache"]["members"])


def walled_pair(cluster: Cluster, grapes) -> tuple[NodeProcess, NodeProcess]:
    """Two hybrid nodes whose peer ports the other cannot reach (each listens on 127.0.0.2, while the Grape
    records the announcing grape's 127.0.0.1), once each knows the other behind the shared Grenache name."""
    walled = {"p2p_host": "127.0.0.2", "grenache_messages_host": "127.0.0.1"}
    a = hybrid(cluster, "a", grapes[0], **walled)
    b = hybrid(cluster, "b", grapes[1], **walled)
    wait_until(lambda: b.node_id in grenache_members(a) and a.node_id in grenache_members(b), 30,
               message="each node finds the other behind the shared Grenache name")
    return a, b


def test_nodes_without_a_tcp_path_exchange_messages_over_grenache(cluster, grapes) -> None:
    a, b = walled_pair(cluster, grapes)
    wait_until(lambda: a.status()["discovery"]["grape"]["dialled"] >= 1, 30, message="a tried b's peer port")
    assert a.connected_ids() == set() and b.connected_ids() == set()   # no TCP link either way

    sent = [a.api("POST", "/debug/send", {"node_id": b.node_id, "payload": {"n": i}})[1] for i in range(20)]
    assert {s["outcome"] for s in sent} == {"grenache"}
    back = b.api("POST", "/debug/send", {"node_id": a.node_id, "payload": "reply"})[1]
    ids = a.api("POST", "/debug/broadcast", {"payload": "to everyone", "count": 5})[1]["ids"]
    wait_until(lambda: {s["id"] for s in sent} | set(ids) <= set(received(b)), 20, message="b got all 25")
    wait_until(lambda: back["id"] in received(a), 20, message="a got b's unicast")
    assert all(received(b)[i][4] == 1 for i in ids)                    # each broadcast handled once

    # a counts a unicast when b's answer is back, which can be a moment after b handled it
    wait_until(lambda: grenache_unicasts(a, "sent") == 20, 10, message="a counted the 20 unicasts")
    assert metric(a, "exchange_node_router_unicast_sent_total", path="direct") == 0
    wait_until(lambda: grenache_unicasts(b, "received") == 20, 10, message="b counted the 20 unicasts")

    # RPC to a named node rides the same path: request and answer both over Grenache
    status, answer = a.api("POST", "/rpc/ping", {"peer": b.node_id, "timeout": 10})
    assert status == 200 and answer["result"]["node_id"] == b.node_id, answer
    wait_until(lambda: grenache_unicasts(a, "sent") == 21 and grenache_unicasts(b, "sent") == 2, 10,
               message="a counted its request, b its reply and its note")
    assert metric(b, "exchange_node_router_broadcast_received_total", path="grenache") >= 5  # notes, and more
    assert metric(a, "exchange_node_grenache_path_members") == 1
    summary = a.status()["router"]["summary"]
    assert grenache_count(summary) >= 21 and "grape up" in summary, summary
    routing = a.cli("routing")
    assert routing.returncode == 0 and grenache_count(routing.stdout) >= 21, routing.stdout + routing.stderr
    shown = a.cli("status")
    assert "protection on" in shown.stdout and grenache_count(shown.stdout) >= 21, shown.stdout


def test_linked_nodes_lose_nothing_when_every_grape_dies(cluster, grapes) -> None:
    a = hybrid(cluster, "a", grapes[0])
    b = hybrid(cluster, "b", grapes[1], bootstrap_peers=a.p2p_address)
    wait_until(lambda: b.node_id in a.connected_ids(), 20, message="a and b linked")
    wait_until(lambda: b.node_id in grenache_members(a), 30, message="both on the grapes")

    def send(count: int, tag: str) -> set[str]:
        ids = {a.api("POST", "/debug/send", {"node_id": b.node_id, "payload": f"{tag}{i}"})[1]["id"]
               for i in range(count)}
        ids |= set(b.api("POST", "/debug/broadcast", {"payload": tag, "count": count})[1]["ids"])
        return ids

    before = send(20, "before")
    grapes.stop()                                                # every grape killed mid-run
    after = send(20, "after")
    wait_until(lambda: a.status()["router"]["grenache"]["grape"] == "down", 30, message="a notices the grapes")
    after |= send(20, "down")
    wait_until(lambda: before | after <= set(received(b)) | set(received(a)), 20, message="all delivered")
    got = received(b) | received(a)
    assert all(got[i][5] == 1 for i in before | after)                 # each handled exactly once
    assert metric(a, "exchange_node_router_unicast_sent_total", path="direct") >= 40  # ours and the exchange's
    assert metric(a, "exchange_node_router_unicast_sent_total", path="grenache") == 0
    assert b.node_id in a.connected_ids()
    assert a.proc is not None and b.proc is not None
    assert a.proc.poll() is None and b.proc.poll() is None
