"""Nodes behind NAT on the WAN test network (tests/integration/wan.py), real processes, nothing configured by
hand: no ADVERTISE_HOST, no port forwarding, each node given one public bootstrap address.

Two validators sit on the public segment; follower `a` behind a cone NAT, `b` behind another cone NAT,
`c` behind a symmetric NAT. Each learns where peers see it and whether a dial-back reaches it, so the
public nodes say `public` and the three others `private`. The private ones reserve slots on the public
ones, find each other through the relays, and link through them; `a` and `b` then punch a direct link
(both NATs keep a socket's port), while `c`'s links stay relayed (its NAT gives every destination its
own port). `a` and `b` trade with each other, and every order is final on every node.
"""
from __future__ import annotations

import subprocess
import threading

import pytest

from tests.harness import converged, wait_until
from tests.history import History, RecordingClient
from tests.integration.chain_nodes import final_everywhere, node_ids, snapshot
from tests.integration.wan import wan_or_skip

pytestmark = [pytest.mark.netns, pytest.mark.integration]

P2P_PORT = 7946
SETTINGS = {"heartbeat_interval": 0.5, "peer_reconnect_interval": 2.0, "p2p_port": P2P_PORT,
            "network_id": "wan-nat-test"}


def nat_views(nodes) -> str:
    """Each node's reachability, addresses and relay / punching counters now, for failure messages."""
    lines = []
    for node in nodes:
        try:
            nat = node.status().get("nat") or {}
        except (OSError, AssertionError) as exc:
            lines.append(f"{node.name}: unreachable ({exc})")
            continue
        addresses = [(a["host"], a["port"], a["how"], a["confirmed"], a["checks"]) for a in nat.get("addresses", [])]
        lines.append(f"{node.name}: {nat.get('reachability')} {addresses} autonat={nat.get('counters')} "
                     f"relays={(nat.get('relay_client') or {}).get('relays')} "
                     f"punch={(nat.get('hole_punching') or {}).get('counters')} map={nat.get('port_mapping')}")
    return "\n".join(lines)


def wait_nat(nodes, predicate, timeout: float, what: str) -> None:
    try:
        wait_until(predicate, timeout, interval=0.5, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{nat_views(nodes)}") from None


def start_all(nodes) -> None:
    """Start every node at once, then wait until each has written its runtime file."""
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(30.0)


def link_to(node, other_id: str) -> dict | None:
    return next((p for p in node.peers() if p["node_id"] == other_id and p["status"] == "connected"), None)


def test_nodes_behind_nat_link_relayed_then_direct_and_trade(tmp_path) -> None:
    with wan_or_skip(2, ["cone", "cone", "symmetric"]) as net:
        ids = node_ids(tmp_path, ["v0", "v1"])
        bootstrap = f"{net.public[0].address}:{P2P_PORT}"
        common = SETTINGS | {"validators": ",".join(ids), "bootstrap_peers": bootstrap}
        v0 = net.node(tmp_path, net.public[0], "v0", **common)
        v1 = net.node(tmp_path, net.public[1], "v1", **common)
        a = net.node(tmp_path, net.sites[0].hosts[0], "a", **common)
        b = net.node(tmp_path, net.sites[1].hosts[0], "b", **common)
        c = net.node(tmp_path, net.sites[2].hosts[0], "c", **common)
        nodes = [v0, v1, a, b, c]
        start_all(nodes)

        def reach(node) -> str | None:
            return node.status().get("reachability")

        wait_nat(nodes, lambda: [reach(n) for n in nodes] == ["public", "public", "private", "private", "private"], 40,
                 "every node knows whether it can be dialled")
        # what each learnt, and how: the NATed nodes' observed address is their router's, never confirmed
        nat_a = a.status()["nat"]
        observed = {x["host"]: x for x in nat_a["addresses"]}
        assert net.sites[0].wan_address in observed and not observed[net.sites[0].wan_address]["confirmed"]
        assert observed[net.sites[0].wan_address]["how"] == "observed"
        nat_v0 = v0.status()["nat"]
        assert any(x["host"] == net.public[0].address and x["confirmed"] for x in nat_v0["addresses"])

        # the private nodes hold reservations on both public nodes (each in a /24 of its own)
        for node in (a, b, c):
            wait_nat(nodes, lambda node=node: len(node.status()["nat"]["relay_client"]["relays"]) == 2, 30,
                     f"{node.name} reserves slots on two relays")
        # a and b link: through a relay first, then directly once the punch went through
        wait_nat(nodes, lambda: (link_to(a, b.node_id) or {}).get("via", "x") is None
                 and (link_to(b, a.node_id) or {}).get("via", "x") is None, 60, "a and b hold a direct link")
        direct = link_to(a, b.node_id)
        assert direct is not None and direct["host"] == net.sites[1].wan_address, direct
        assert a.status()["nat"]["hole_punching"]["counters"]["direct"] \
            + b.status()["nat"]["hole_punching"]["counters"]["direct"] >= 1
        # c, behind the symmetric NAT, is linked to both, through relays only
        wait_until(lambda: link_to(c, a.node_id) is not None and link_to(c, b.node_id) is not None, 60, interval=0.5,
                   message="c links to a and b through relays")
        for other in (a, b):
            relayed = link_to(c, other.node_id)
            assert relayed is not None and relayed["via"] in ids, relayed

        # a and b trade with each other; every order is final on every node
        history = History()
        clients = {n.name: RecordingClient(history, n) for n in nodes}
        status, sold = clients["a"].post_order({"market": "BTC-USD", "side": "sell", "type": "limit",
                                                "price": "100.00", "qty": "1"}, wait=10)
        assert status in (200, 201), sold
        status, bought = clients["b"].post_order({"market": "BTC-USD", "side": "buy", "type": "limit",
                                                  "price": "100.00", "qty": "1"}, wait=10)
        assert status in (200, 201) and bought["order"]["status"] == "filled", bought
        status, rested = clients["c"].post_order({"market": "BTC-USD", "side": "buy", "type": "post_only",
                                                  "price": "50.00", "qty": "0.1"}, wait=10)
        assert status in (200, 201), rested
        order_ids = [sold["order"]["id"], bought["order"]["id"], rested["order"]["id"]]
        wait_until(lambda: converged(nodes), 30, interval=0.3, message="every node converges:\n" + snapshot(nodes))
        for node in nodes:
            for order_id in order_ids:
                assert node.get(f"/orders/{order_id}").get("final") is not False, (node.name, order_id)
            trades = node.get("/trades/BTC-USD")["trades"]
            assert trades and trades[-1]["taker_order_id"] == bought["order"]["id"], (node.name, trades)
        history.assert_clean()


def test_reachability_in_every_position_and_a_port_mapping_gateway_makes_a_node_public(tmp_path) -> None:
    """Public, behind a cone NAT, behind a symmetric NAT, behind a UPnP-IGD gateway and behind a gateway
    that speaks only NAT-PMP: behind either gateway the node maps its port, a dial-back through the mapping
    reaches it, and it becomes public: linked directly, known at the mapped address, no relay needed. At
    stop the mapping is removed."""
    with wan_or_skip(2, ["cone", "symmetric", "upnp", "natpmp"]) as net:
        ids = node_ids(tmp_path, ["v0"])
        common = SETTINGS | {"validators": ",".join(ids), "bootstrap_peers": f"{net.public[0].address}:{P2P_PORT}"}
        v0 = net.node(tmp_path, net.public[0], "v0", **common)
        p1 = net.node(tmp_path, net.public[1], "p1", **common)
        cone = net.node(tmp_path, net.sites[0].hosts[0], "cone", **common)
        symmetric = net.node(tmp_path, net.sites[1].hosts[0], "symmetric", **common)
        upnp = net.node(tmp_path, net.sites[2].hosts[0], "upnp", **common)
        natpmp = net.node(tmp_path, net.sites[3].hosts[0], "natpmp", **common)
        nodes = [v0, p1, cone, symmetric, upnp, natpmp]
        start_all(nodes)
        expected = {"v0": "public", "p1": "public", "cone": "private", "symmetric": "private", "upnp": "public",
                    "natpmp": "public"}
        wait_nat(nodes, lambda: {n.name: n.status().get("reachability") for n in nodes} == expected, 60,
                 "reachability in every position")
        for node, site, kind in ((upnp, net.sites[2], "upnp-igd"), (natpmp, net.sites[3], "nat-pmp")):
            nat = node.status()["nat"]
            gateway = site.wan_address
            assert nat["port_mapping"]["mapped"] == [gateway, P2P_PORT], nat["port_mapping"]
            assert nat["port_mapping"]["gateway"] == kind, nat["port_mapping"]
            mapped = next(x for x in nat["addresses"] if x["host"] == gateway)
            assert mapped["how"] == "mapped" and mapped["confirmed"], mapped
            assert not nat["relay_client"]["relays"]      # public: it needs no relay
            # it is linked directly (no relay) and known at the mapped address
            wait_nat(nodes, lambda: (link_to(v0, node.node_id) or {}).get("host") == gateway
                     and (link_to(v0, node.node_id) or {}).get("via", "x") is None, 10,
                     f"v0 knows {node.name} at its mapped address")
        # the CLI says it too
        shown = upnp.cli("status")
        assert shown.returncode == 0 and "public" in shown.stdout and net.sites[2].wan_address in shown.stdout, \
            shown.stdout
        for node, site in ((upnp, net.sites[2]), (natpmp, net.sites[3])):
            node.stop()
            rules = subprocess.run(["ip", "netns", "exec", site.router_ns, "nft", "list", "chain", "inet",
                                    "filter", "prerouting_miniupnpd"], capture_output=True, text=True).stdout
            assert str(P2P_PORT) not in rules, (node.name, rules)       # the mapping went with the node


def test_the_relay_dies_mid_trade_and_the_pair_relinks_through_another_losing_no_order(tmp_path) -> None:
    """Two nodes behind symmetric NATs (no punching through those) are linked through one of two relays
    while one of them places an order every 100 ms; the relay carrying them is killed (SIGKILL). They link
    again through the other relay, and every order accepted is final on every node that is still up."""
    with wan_or_skip(3, ["symmetric", "symmetric"]) as net:
        ids = node_ids(tmp_path, ["v0"])
        common = SETTINGS | {"validators": ",".join(ids), "bootstrap_peers": f"{net.public[0].address}:{P2P_PORT}"}
        v0 = net.node(tmp_path, net.public[0], "v0", **common, relay_service="false")   # the validator relays nobody
        r1 = net.node(tmp_path, net.public[1], "r1", **common)
        r2 = net.node(tmp_path, net.public[2], "r2", **common)
        a = net.node(tmp_path, net.sites[0].hosts[0], "a", **common)
        b = net.node(tmp_path, net.sites[1].hosts[0], "b", **common)
        nodes = [v0, r1, r2, a, b]
        start_all(nodes)
        relays = {r1.node_id: r1, r2.node_id: r2}
        wait_nat(nodes, lambda: all(set(n.status()["nat"]["relay_client"]["relays"]) == set(relays) for n in (a, b)),
                 40, "a and b hold slots on both relays")
        wait_nat(nodes, lambda: (link_to(a, b.node_id) or {}).get("via") in relays, 40, "a and b linked via a relay")
        relayed = link_to(a, b.node_id)
        assert relayed is not None
        carrier = relays[relayed["via"]]
        survivor = r2 if carrier is r1 else r1

        history = History()
        clients = {n.name: RecordingClient(history, n) for n in nodes}
        accepted: list[str] = []
        stop = threading.Event()

        def trade() -> None:
            i = 0
            while not stop.is_set():
                status, body = clients["a"].post_order({"market": "BTC-USD", "side": "buy", "type": "post_only",
                                                        "price": f"{40 + i % 10}.00", "qty": "0.1"}, wait=5)
                if status in (200, 201, 202):
                    accepted.append(body["order"]["id"])
                i += 1
                stop.wait(0.1)

        trader = threading.Thread(target=trade, daemon=True)
        trader.start()
        wait_until(lambda: len(accepted) >= 5, 20, message="orders flowing")
        carrier.kill()
        wait_nat([v0, survivor, a, b], lambda: (link_to(a, b.node_id) or {}).get("via") == survivor.node_id
                 and (link_to(b, a.node_id) or {}).get("via") == survivor.node_id, 40,
                 "a and b linked again, through the surviving relay")
        placed = len(accepted)
        wait_until(lambda: len(accepted) >= placed + 5, 20, message="orders still flowing after the relay died")
        stop.set()
        trader.join(15)
        alive = [v0, survivor, a, b]
        alive_clients = [clients[n.name] for n in alive]
        wait_until(lambda: converged(alive), 30, interval=0.3, message="the nodes still up converge:\n"
                   + snapshot(alive))
        assert final_everywhere(alive_clients, accepted), "an accepted order is not final everywhere"
        history.assert_clean()


def test_a_node_behind_nat_is_found_in_the_dht_by_its_relayed_address(tmp_path) -> None:
    """With the DHT as the only way to reach each other (peer exchange off; the seeker wants no link beyond its
    bootstrap, so a relay's word on whom it serves does not make it dial), a node finds the record of a node
    behind a symmetric NAT: it names the relay's address (how = relayed) and nothing unreachable, and the
    lookup links to the node through that relay."""
    with wan_or_skip(2, ["symmetric", "cone"]) as net:
        ids = node_ids(tmp_path, ["v0"])
        common = SETTINGS | {"validators": ",".join(ids), "bootstrap_peers": f"{net.public[0].address}:{P2P_PORT}",
                             "discovery_pex": "false", "discovery_dht": "true", "target_outbound": 1}
        v0 = net.node(tmp_path, net.public[0], "v0", **common)
        p1 = net.node(tmp_path, net.public[1], "p1", **common)
        hidden = net.node(tmp_path, net.sites[0].hosts[0], "hidden", **common)
        seeker = net.node(tmp_path, net.sites[1].hosts[0], "seeker", **common)
        nodes = [v0, p1, hidden, seeker]
        start_all(nodes)
        wait_nat(nodes, lambda: hidden.status()["nat"]["relay_client"]["relayed_addresses"], 40,
                 "the hidden node holds a relay slot")
        relay_host, relay_port, relay_id = hidden.status()["nat"]["relay_client"]["relayed_addresses"][0]

        def found() -> dict | None:
            status, body = seeker.api("GET", f"/dht/nodes/{hidden.node_id}", timeout=20)
            record = body.get("record") if status == 200 else None
            relayed = [x for x in (record or {}).get("addresses", []) if x["how"] == "relayed"]
            return record if relayed and link_to(seeker, hidden.node_id) is not None else None

        wait_nat(nodes, found, 60, "the seeker finds the hidden node's relayed address in the DHT and links")
        record = found() or {}
        assert {"host": relay_host, "port": relay_port, "how": "relayed"} in record["addresses"], record
        assert not any(x["how"] in ("listen", "observed") for x in record["addresses"]), record  # nothing unreachable
        link = link_to(seeker, hidden.node_id)
        assert link is not None and link["via"] is not None
