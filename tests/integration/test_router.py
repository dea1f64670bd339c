"""MessageRouter between real node processes: broadcast along a 10-node line, relay, queue across a
restart and expiry, and a flooding peer cut off while honest traffic continues."""
from __future__ import annotations

import asyncio
import time

from config import load_settings
from node.identity import NodeIdentity
from p2p.framing import encode_frame
from p2p.origin_auth import OriginAuth
from p2p.peers import PeerManager
from p2p.transport import DialError
from tests.harness import NodeProcess, free_ports, wait_until
from node.configs import peer_config

LINE = {"target_outbound": 1, "max_peers": 2, "discovery_pex": "false", "debug_api": "true"}


def received(node: NodeProcess) -> dict[str, list]:
    """id -> [id, origin, ts, first_received, copies, handled, hops] of notes this node handled."""
    return {row[0]: row for row in node.get("/debug/received?type=note")["received"]}


def router_stats(node: NodeProcess) -> dict:
    return node.status()["router"]


def start_line(cluster, n: int, **settings) -> list[NodeProcess]:
    """n nodes, node i dialling node i-1 only; started together (ports chosen up front) to save time."""
    ports = free_ports(n)
    nodes = []
    for i, port in enumerate(ports):
        bootstrap = f"127.0.0.1:{ports[i - 1]}" if i else None
        nodes.append(cluster.node(f"n{i}", start=False, p2p_port=port, bootstrap_peers=bootstrap, **LINE, **settings))
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(40)
    for i, node in enumerate(nodes):
        want = {nodes[j].node_id for j in (i - 1, i + 1) if 0 <= j < n}
        wait_until(lambda: node.connected_ids() == want, 15, message=f"{node.name} linked to its line neighbours")
    return nodes


def test_broadcast_along_a_ten_node_line_is_handled_once_by_every_node(cluster) -> None:
    nodes = start_line(cluster, 10)
    status, body = nodes[0].api("POST", "/debug/broadcast", {"type": "note", "payload": {"hello": "line"}})
    assert status == 200, body
    (mid,) = body["ids"]
    for node in nodes[1:]:
        wait_until(lambda: mid in received(node), 10, message=f"{node.name} got the broadcast")
    time.sleep(0.3)  # any stray copy would have arrived by now
    for hops, node in enumerate(nodes[1:]):
        row = received(node)[mid]
        assert row[1] == nodes[0].node_id
        assert (row[4], row[5]) == (1, 1), f"{node.name}: copies={row[4]} handled={row[5]}"
        assert row[6] == hops
        stats = router_stats(node)
        assert stats["duplicates"].get("note", 0) == 0 and stats["received"]["note"] == 1
    assert mid not in received(nodes[0])  # the origin does not hand its own broadcast to itself
    metrics = nodes[5].api_url + "/metrics"
    import urllib.request
    text = urllib.request.urlopen(metrics, timeout=10).read().decode()
    assert 'exchange_node_router_messages_received_total{type="note"} 1.0' in text
    assert "exchange_node_router_amplification 1.0" in text


def test_relay_queue_across_restart_and_expiry(cluster) -> None:
    a, b, c = start_line(cluster, 3, queue_ttl=3)

    # A has no link to C: it relays through B once B's heartbeat told A that B links to C.
    outcomes: list[dict] = []       # the API's answers

    def relayed() -> bool:
        status, result = a.api("POST", "/debug/send", {"node_id": c.node_id, "payload": f"r{len(outcomes)}"})
        assert status == 200, result
        outcomes.append(result)
        return result["outcome"] == "relayed" and result["via"] == b.node_id

    wait_until(relayed, 5, interval=0.2, message="a relays to c through b")
    sent_ids = [o["id"] for o in outcomes]
    wait_until(lambda: set(sent_ids) <= set(received(c)), 5, message="relayed (and briefly queued) sends arrive")
    assert all(row[5] == 1 and row[4] == 1 for row in received(c).values())
    assert router_stats(b)["events"]["relayed"] >= 1

    # C goes offline: A queues, and delivers once when C is back (within QUEUE_TTL).
    assert c.stop() == 0
    wait_until(lambda: b.connected_ids() == {a.node_id}, 5, message="b notices c left")
    wait_until(lambda: c.node_id not in router_stats(a)["relay_targets"], 5,
               message="B's heartbeats tell A that B no longer reaches C")
    flushed_before = router_stats(a)["events"]["flushed"]  # the first sends may have waited for the route
    status, result = a.api("POST", "/debug/send", {"node_id": c.node_id, "payload": "while-offline"})
    assert (status, result["outcome"]) == (200, "queued"), result
    held = result["id"]
    assert router_stats(a)["queue"]["messages"] == 1
    c.start()
    wait_until(lambda: held in received(c), 8, message="queued message delivered after c restarts")
    time.sleep(0.5)
    row = received(c)[held]
    assert (row[4], row[5]) == (1, 1)
    stats = router_stats(a)
    assert stats["events"]["flushed"] == flushed_before + 1 and stats["queue"]["messages"] == 0

    # Offline past the TTL: dropped and counted, never delivered.
    assert c.stop() == 0
    wait_until(lambda: b.connected_ids() == {a.node_id}, 5, message="b notices c left again")
    wait_until(lambda: c.node_id not in router_stats(a)["relay_targets"], 5, message="A learns C is gone again")
    status, result = a.api("POST", "/debug/send", {"node_id": c.node_id, "payload": "too-late"})
    assert result["outcome"] == "queued", result
    late = result["id"]
    wait_until(lambda: router_stats(a)["events"]["expired"] == 1, 6, message="queued message expires")
    stats = router_stats(a)
    assert stats["dropped"]["expired"] == 1 and stats["queue"]["messages"] == 0
    c.start()
    wait_until(lambda: b.node_id in c.connected_ids(), 8)
    wait_until(lambda: c.node_id in router_stats(a)["relay_targets"], 5, message="A learns C is reachable again")
    time.sleep(0.3)  # a flush, had anything been left, would have arrived by now
    assert late not in received(c)


async def test_flooding_peer_is_cut_off_within_a_second_while_honest_traffic_flows(cluster, tmp_path) -> None:
    limits = {"router_rate_limit": 300, "router_rate_burst": 600, "debug_api": "true", "discovery_pex": "false"}
    victim = await asyncio.to_thread(cluster.node, "victim", **limits)
    honest = await asyncio.to_thread(cluster.node, "honest", bootstrap_peers=victim.p2p_address, **limits)
    await asyncio.to_thread(wait_until, lambda: honest.node_id in victim.connected_ids(), 10)

    # The attacker does the real signed handshake with its own identity, then floods at 10x the limit.
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / "attacker"), "p2p_host": "127.0.0.1",
                                          "p2p_port": 0, "heartbeat_interval": 0.5})
    identity = NodeIdentity.generate()
    attacker = PeerManager(peer_config(settings), identity, verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for)
    await attacker.start()
    signer = OriginAuth.for_peers(attacker, max_age=60.0)
    try:
        host, port = victim.p2p_address.rsplit(":", 1)
        frames = []
        for seq in range(9000):  # signed up front, so the flood itself costs the attacker nothing
            note = {"type": "note", "origin": identity.node_id, "ts": time.time(), "hops": 0, "payload": "x" * 100,
                    "seq": seq}
            signer.sign_broadcast(note)  # well signed: only its rate gives it away
            frames.append(encode_frame(note))
        link = await attacker.dial(host, int(port))
        await asyncio.to_thread(honest.api, "POST", "/debug/load", {"rate": 20, "duration": 3, "size": 200})
        loop = asyncio.get_running_loop()
        started = loop.time()
        seq = 0
        while link.is_open and loop.time() - started < 3.0 and seq + 30 <= len(frames):
            for _ in range(30):  # 30 every 10 ms = 3000 msgs/s = 10x ROUTER_RATE_LIMIT
                link.send_frame(frames[seq])
                seq += 1
            await asyncio.sleep(0.01)
        cut_after = loop.time() - started
        await asyncio.wait_for(asyncio.shield(link.lost), 2) if hasattr(link, "lost") else None
        assert not link.is_open
        assert link.close_reason == "remote_banned", link.close_reason
        assert cut_after < 1.0, f"flooder still connected after {cut_after:.2f}s"
        print(f"flooder cut off {cut_after:.2f}s after the flood started ({seq} frames sent)")

        # banned: a new handshake is refused
        # (not `except Exception`: it would also catch the AssertionError below, whose text says "banned")
        try:
            await attacker.dial(host, int(port))
        except DialError as exc:
            assert "banned" in str(exc), exc
        else:
            raise AssertionError("a banned peer could reconnect")

        await asyncio.to_thread(wait_until, lambda: not honest.get("/debug/load")["running"], 10)
        sent = honest.get("/debug/load")["sent"]
        honest_notes = [row for row in (await asyncio.to_thread(received, victim)).values()
                        if row[1] == honest.node_id]
        assert len(honest_notes) == sent >= 55
        stats = (await asyncio.to_thread(victim.status))["router"]
        assert stats["events"]["flood_bans"] == 1 and stats["events"]["throttled"] > 0
        assert stats["dropped"]["throttled"] == stats["events"]["throttled"]
        assert honest.node_id in victim.connected_ids()
        assert "flooded past 300 messages/s" in victim.log_path.read_text()
    finally:
        await attacker.stop()
