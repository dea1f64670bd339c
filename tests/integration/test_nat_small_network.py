"""The smallest real network: one public node (a rented server, the lone validator) and three nodes at home
behind their own NAT routers, two cone and one symmetric, each given only the public node as bootstrap, all
settings their defaults. The public node is the only dial-back witness the NATed nodes have until they link
to each other, so they must find out they are private from it (and keep that verdict when the other NATed
nodes link), reserve slots on it, link to each other through it, and punch a direct link where both NATs keep
ports (cone/cone); the symmetric node stays relayed. Each pair trades, and every order is final everywhere.
One namespace build serves both pairs (cone/cone: `a` and `b`; cone/symmetric: `a` and `c`).
"""
from __future__ import annotations

import re
import threading
from datetime import datetime

import pytest

from tests.harness import converged, wait_until
from tests.history import History, RecordingClient
from tests.integration.chain_nodes import final_everywhere, node_ids, snapshot
from tests.integration.test_nat_traversal import link_to, nat_views, start_all, wait_nat
from tests.integration.wan import wan_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.integration]

P2P_PORT = 7946
PRIVATE_WITHIN = 30.0      # s from a node's start to its `private`
LINKED_WITHIN = 60.0       # s from start until the NATed nodes hold their links to each other
_TRANSITION = re.compile(r"^(\S+Z) INFO +p2p\.nat\.autonat: reachability (\w+) -> (\w+)", re.M)
_LISTENING = re.compile(r"^(\S+Z) INFO +p2p\.peers: listening for peers", re.M)


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def reachability_story(node) -> tuple[list[tuple[str, str]], float | None]:
    """What the node's log says its reachability went through, and how long after it listened it first said
    `private` (its own clock, not the test's polling)."""
    text = node.log_path.read_text(errors="replace")
    started = _LISTENING.search(text)
    transitions = [(m[1], m[2], m[3]) for m in _TRANSITION.finditer(text)]
    first = next((at for at, _, new in transitions if new == "private"), None)
    seconds = (_at(first) - _at(started[1])).total_seconds() if started and first else None
    return [(old, new) for _, old, new in transitions], seconds


class ReachabilityWatch:
    """Each node's reachability as /status says it, read every `every` s on a thread until stopped: a node can
    change its mind without an answer arriving (a new peer's hello), and then no log line says so."""

    def __init__(self, nodes, every: float = 0.25) -> None:
        self.nodes, self.every = nodes, every
        self.seen: dict[str, list[str]] = {n.name: [] for n in nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ReachabilityWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for node in self.nodes:
                try:
                    said = node.status().get("reachability")
                except (OSError, AssertionError):
                    continue        # a slow answer is no reading
                seen = self.seen[node.name]
                if not seen or seen[-1] != said:
                    seen.append(said)
            self._stop.wait(self.every)


def test_one_public_node_and_nodes_behind_nat_link_relayed_then_direct_and_trade(tmp_path) -> None:
    with wan_or_skip(1, ["cone", "cone", "symmetric"]) as net:
        ids = node_ids(tmp_path, ["v"])
        common = {"p2p_port": P2P_PORT, "network_id": "wan-small-net", "validators": ids[0],
                  "bootstrap_peers": f"{net.public[0].address}:{P2P_PORT}"}
        v = net.node(tmp_path, net.public[0], "v", **common)
        a = net.node(tmp_path, net.sites[0].hosts[0], "a", **common)
        b = net.node(tmp_path, net.sites[1].hosts[0], "b", **common)
        c = net.node(tmp_path, net.sites[2].hosts[0], "c", **common)
        nodes, nated = [v, a, b, c], [a, b, c]
        start_all(nodes)
        with ReachabilityWatch(nated) as watch:
            trade_in_a_small_network(net, v, a, b, c)
        # each NATed node said `private` in time, by its own log, and never went back to `unknown` when the
        # other NATed nodes linked (they are witnesses too, but the public node's verdict already stood)
        for node in nated:
            story, seconds = reachability_story(node)
            assert seconds is not None and seconds <= PRIVATE_WITHIN, (node.name, seconds, story)
            assert story == [("unknown", "private")], f"{node.name}: {story}\n{nat_views(nodes)}"
            assert watch.seen[node.name] in (["unknown", "private"], ["private"]), (node.name, watch.seen)
            print(f"{node.name}: private {seconds:.1f} s after it listened")


def trade_in_a_small_network(net, v, a, b, c) -> None:
    """Each NATed node private with a slot on the public node; a and b linked directly (after the relay), a and c
    through the relay; a crossing pair per NAT pair final on every node."""
    nodes, nated = [v, a, b, c], [a, b, c]

    def reach(node) -> str | None:
        return node.status().get("reachability")

    wait_nat(nodes, lambda: [reach(n) for n in nodes] == ["public", "private", "private", "private"],
             PRIVATE_WITHIN + 5, "the public node public, the NATed ones private")
    wait_nat(nodes, lambda: all(n.status()["nat"]["relay_client"]["relays"] == [v.node_id] for n in nated), 10,
             "each NATed node holds a slot on the public node")
    # cone/cone: linked through the relay, then directly once the punch went through
    wait_nat(nodes, lambda: (link_to(a, b.node_id) or {}).get("via", "x") is None
             and (link_to(b, a.node_id) or {}).get("via", "x") is None, LINKED_WITHIN, "a and b hold a direct link")
    direct = link_to(a, b.node_id)
    assert direct is not None and direct["host"] == net.sites[1].wan_address, direct
    assert a.status()["nat"]["hole_punching"]["counters"]["direct"] \
        + b.status()["nat"]["hole_punching"]["counters"]["direct"] >= 1
    relayed_first = f"peer connected {b.node_id[:12]} relay:"
    assert relayed_first in a.log_path.read_text(errors="replace") \
        or f"peer connected {a.node_id[:12]} relay:" in b.log_path.read_text(errors="replace"), \
        "a and b were linked through the relay before the punch"
    # cone/symmetric: relayed only (the symmetric NAT gives every destination a new port)
    wait_nat(nodes, lambda: (link_to(c, a.node_id) or {}).get("via") == v.node_id
             and (link_to(a, c.node_id) or {}).get("via") == v.node_id, LINKED_WITHIN,
             "a and c linked through the public node")

    # a crossing pair per NAT pair: sell on one, buy on the other; final on every node
    history = History()
    clients = {n.name: RecordingClient(history, n) for n in nodes}
    order_ids: list[str] = []
    for seller, buyer, price in (("a", "b", "100.00"), ("c", "a", "101.00")):
        status, sold = clients[seller].post_order({"market": "BTC-USD", "side": "sell", "type": "limit",
                                                   "price": price, "qty": "1"}, wait=10)
        assert status in (200, 201), sold
        status, bought = clients[buyer].post_order({"market": "BTC-USD", "side": "buy", "type": "limit",
                                                    "price": price, "qty": "1"}, wait=10)
        assert status in (200, 201) and bought["order"]["status"] == "filled", bought
        order_ids += [sold["order"]["id"], bought["order"]["id"]]
    wait_until(lambda: converged(nodes), 30, interval=0.3, message="every node converges:\n" + snapshot(nodes))
    assert final_everywhere(list(clients.values()), order_ids), "an order is not final on every node"
    for node in nodes:
        trades = node.get("/trades/BTC-USD")["trades"]
        assert {t["taker_order_id"] for t in trades} >= {order_ids[1], order_ids[3]}, (node.name, trades)
    history.assert_clean()
