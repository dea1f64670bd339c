"""Peer exchange with real exchange-node processes: a chain learns the whole network, a flood
of bogus addresses from one peer changes nothing that matters."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time

from config import Settings
from node.identity import NodeIdentity
from p2p.discovery.pex import MAX_ENTRIES, MSG_TYPE
from p2p.peers import PeerManager
from tests.harness import free_ports, wait_until
from node.configs import peer_config


def start_chain(cluster, n: int, **settings) -> list:
    """n nodes started together; node i knows only node i-1's address (fixed free ports)."""
    ports = free_ports(n)
    nodes = [cluster.node(f"c{i}", start=False, p2p_port=ports[i],
                          bootstrap_peers=f"127.0.0.1:{ports[i - 1]}" if i else None, **settings)
             for i in range(n)]
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(60)
    return nodes


def converged(nodes, target: int) -> bool:
    need = 0.95 * (len(nodes) - 1)
    for node in nodes:
        p2p = node.status()["p2p"]
        if p2p["known_nodes"] < need or p2p["peers_connected"] < target:
            return False
    return True


def test_chain_of_20_learns_network_within_10s(cluster):
    nodes = start_chain(cluster, 20, heartbeat_interval=1.0)  # lighter on 2 shared cores
    started = time.monotonic()
    wait_until(lambda: converged(nodes, target=8), 10.0, interval=0.2,
               message="every node knows >=95% of the others and holds >= TARGET_OUTBOUND (8) links")
    elapsed = time.monotonic() - started
    statuses = [n.status() for n in nodes]
    for s in statuses:
        assert s["p2p"]["peers_connected"] <= 50  # MAX_PEERS
    pex = statuses[-1]["discovery"]["pex"]
    assert pex["found"] > 0 and pex["received"] > 0 and pex["dropped"] == 0
    # `exchange-node peers` says who found each peer; the tail of the chain learned most by pex
    sources = {p["source"] for p in nodes[-1].peers() if p["status"] == "connected"}
    assert "pex" in sources, sources
    print(f"chain of 20 converged {elapsed:.2f}s after the last node was ready")


async def _flood(port: int, data_dir, messages: int, per_message: int) -> dict:
    """A rogue peer: handshakes properly, then pushes `messages` peerexchange messages of bogus
    loopback addresses (refused on dial) and undialable ones as fast as it can."""
    settings = dataclasses.replace(Settings(), data_dir=data_dir, p2p_host="127.0.0.1", p2p_port=0,
                                   target_outbound=0, discovery_mdns=False)
    identity = NodeIdentity.load_or_create(data_dir)
    rogue = PeerManager(peer_config(settings), identity, verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for)
    await rogue.start()
    try:
        link = await rogue.dial("127.0.0.1", port)
        started = time.monotonic()
        n = 0
        for _ in range(messages):
            entries = []
            for _ in range(per_message):
                n += 1
                if n % 10 == 0:
                    entries.append(["224.0.0.1", 1000 + n % 60000, None])
                else:
                    entries.append([f"127.88.{n // 250 % 250}.{n % 250 + 1}", 1024 + n % 60000, f"{n:040x}"])
            if not link.send({"type": MSG_TYPE, "peers": entries}):
                break
            await asyncio.sleep(0)
        flood_seconds = time.monotonic() - started
        await asyncio.sleep(0.5)
        return {"node_id": identity.node_id, "closed": link.close_reason, "seconds": flood_seconds}
    finally:
        await rogue.stop()


def test_flood_of_10000_bogus_addresses_from_one_peer(cluster, tmp_path):
    hub = cluster.node("hub", discovery_pex="true", heartbeat_interval=1.0)
    friends = [cluster.node(f"f{i}", bootstrap_peers=hub.p2p_address, heartbeat_interval=1.0) for i in range(3)]
    wait_until(lambda: len(hub.connected_ids()) == 3, 5.0, message="hub has its 3 real peers")
    verified_before = {f.node_id for f in friends}

    result = asyncio.run(_flood(hub.p2p_port, tmp_path / "rogue", messages=10_000 // MAX_ENTRIES,
                                per_message=MAX_ENTRIES))
    time.sleep(1.0)
    status = hub.status()
    p2p, pex = status["p2p"], status["discovery"]["pex"]
    # real peers kept (a wait only because a very busy box can delay a heartbeat and a redial)
    wait_until(lambda: hub.connected_ids() >= verified_before, 5.0, message="hub keeps its 3 verified peers")
    assert p2p["known_addresses"] <= 2000  # the book's cap
    # only a burst got in (receive rate limit), and of that at most the per-reporter intake cap
    # per-link limit (burst 5, then 1/s while the hub works through the backlog): of the 200
    # messages sent only a handful are read, the rest are dropped until the ban cuts the link
    assert pex["received"] <= 20 and pex["dropped"] >= 40, (pex, result)
    assert pex["found"] <= 100, pex
    assert p2p["known_addresses"] <= 3 + 100 + 2, p2p
    # the flood cost the rogue its link: ~50 messages over the rate limit get it banned, the rest
    # of its 200 messages are never read
    rogue = {p["node_id"]: p for p in hub.peers()}.get(result["node_id"])
    assert rogue is not None and rogue["status"] == "banned", rogue
    assert hub.proc.poll() is None
    # and the node still works: a newcomer is learned and linked
    late = cluster.node("late", bootstrap_peers=friends[0].p2p_address)
    wait_until(lambda: late.node_id in {p["node_id"] for p in hub.peers()} or
               hub.status()["p2p"]["known_nodes"] >= 4, 5.0, message="hub still learns real peers")


async def _poison(hub, fakes: int, pex_identities: int) -> None:
    """`fakes` handshakes with fresh keys, each claiming a closed loopback port as its listen address, and
    `pex_identities` more that each hand over one full peer-exchange message of bogus loopback addresses."""
    from tests.harness import closed_port
    from tests.wire import RawPeer
    host, port = hub.p2p_address.rsplit(":", 1)
    for n in range(fakes + pex_identities):
        peer = await RawPeer.connect(host, int(port))
        try:
            await peer.handshake(NodeIdentity.generate(), listen_port=closed_port())
            if n >= fakes:
                peer.send({"type": MSG_TYPE, "peers": [[f"127.88.{n % 250}.{k + 1}", 1024 + n, f"{n * 100 + k:040x}"]
                                                       for k in range(MAX_ENTRIES)]})
                await peer.writer.drain()
        finally:
            peer.close()


def test_addresses_peers_claim_are_dialled_before_they_are_trusted_and_a_restart_links_to_honest_peers(cluster):
    port = free_ports(1)[0]
    hub = cluster.node("hub", p2p_port=port, heartbeat_interval=1.0)
    friends = [cluster.node(f"h{i}", bootstrap_peers=hub.p2p_address, heartbeat_interval=1.0) for i in range(3)]
    honest = {f.node_id for f in friends}
    wait_until(lambda: hub.connected_ids() == honest, 15, message="the hub links to its 3 friends")
    asyncio.run(_poison(hub, fakes=300, pex_identities=200))       # 300 claims + 10,000 addresses by PEX
    # the fakes hung up: each claimed address gets a check dial (a feeler, or the redial after the close)
    wait_until(lambda: hub.status()["p2p"]["counters"]["dial_failures"] >= 50, 60,
               message="the hub dials the claimed addresses to check them")
    p2p = hub.status()["p2p"]
    assert p2p["known_addresses"] > 100, p2p                        # the poison is in the book ...
    assert p2p["verified_addresses"] == 0, p2p                      # ... none of it trusted (and the friends
    assert hub.connected_ids() == honest                            # dialled the hub: their claims wait too)
    assert hub.stop() == 0
    saved = json.loads((hub.data_dir / ".peers.json").read_text())["peers"]
    # remembered: the friends linked at the stop, as claims (unverified); none of the fakes
    assert {row["node_id"] for row in saved} == honest and {row["source"] for row in saved} == {"claimed"}, saved
    logged = hub.log_path.stat().st_size
    hub.start()
    wait_until(lambda: honest <= hub.connected_ids(), 20, message="the restarted hub is linked to its friends again")
    with open(hub.log_path, "rb") as log:
        log.seek(logged)
        linked = [line for line in log.read().decode(errors="replace").splitlines() if "peer connected" in line]
    first = [line.split("peer connected ", 1)[1].split()[0] for line in linked[:3]]
    assert all(any(node_id.startswith(prefix) for node_id in honest) for prefix in first), linked[:5]
