"""Peer exchange with real exchange-node processes: a chain learns the whole network; a flood of bogus
addresses from one peer, claims in strangers' hellos, and 10,000 fake addresses from forty subnets change
nothing that matters (the tried table stays honest, the book bounded, and a restart dials the
peers it reached before any address a stranger told it)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import time

from config import Settings
from node.identity import NodeIdentity
from p2p.discovery.pex import MAX_ENTRIES, MSG_TYPE
from p2p.peers import PeerManager
from tests.harness import closed_port, free_ports, wait_until
from tests.wire import HandshakeRefused, RawPeer
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


def short_of_network(status: dict, nodes: int, target: int) -> bool:
    """A node (its /status) knows fewer than 95% of the `nodes` - 1 others, or holds fewer than `target` links."""
    p2p = status["p2p"]
    return p2p["known_nodes"] < 0.95 * (nodes - 1) or p2p["peers_connected"] < target


def converged(nodes, target: int) -> bool:
    return not any(short_of_network(node.status(), len(nodes), target) for node in nodes)


def laggards(nodes, target: int) -> list[str]:
    """For a failure's message: each node short of the network, with what it knows, its links and its peers."""
    short = []
    for node in nodes:
        status = node.status()
        if short_of_network(status, len(nodes), target):
            p2p = status["p2p"]
            short.append(f"{node.name}: knows {p2p['known_nodes']}, links {p2p['peers_connected']}, "
                         f"pex {status['discovery']['pex']}, peers "
                         f"{sorted((p['status'], p['source']) for p in node.peers())}")
    return short


def test_chain_of_20_learns_network_within_10s(cluster):
    nodes = start_chain(cluster, 20, heartbeat_interval=1.0)  # lighter on 2 shared cores
    started = time.monotonic()
    try:
        wait_until(lambda: converged(nodes, target=8), 10.0, interval=0.2)
    except AssertionError:
        raise AssertionError("not every node knows >=95% of the others and holds >= TARGET_OUTBOUND (8) "
                             "links within 10 s:\n" + "\n".join(laggards(nodes, target=8))) from None
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


def test_a_hub_its_friends_dial_trusts_none_of_the_addresses_claimed_and_relinks_to_its_friends_after_a_restart(
        cluster):
    """The other way round from the last test: here the friends dialled the hub, so their addresses are claims
    too (the README's first node, which everyone dials): none of them, and none of 300 strangers' claims, is
    trusted, yet the restarted hub finds its friends again (the claims of peers linked at the stop)."""
    port = free_ports(1)[0]
    hub = cluster.node("hub", p2p_port=port, heartbeat_interval=1.0)
    friends = [cluster.node(f"h{i}", bootstrap_peers=hub.p2p_address, heartbeat_interval=1.0) for i in range(3)]
    honest = {f.node_id for f in friends}
    wait_until(lambda: hub.connected_ids() == honest, 15, message="the hub links to its 3 friends")
    asyncio.run(_poison(hub, fakes=300, pex_identities=40))        # 300 claims + 2,000 addresses by PEX
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


HONEST = 5
DIAL_FAILED = re.compile(r"dial \(\w+\) ([0-9.]+):(\d+) failed")
ATTACKERS = 40              # each from a /24 of its own on loopback: 127.(10+i).0.1
PEX_MESSAGES = 5            # ... each handing over 5 full peer-exchange messages: 40 x 5 x 50 = 10,000 addresses


def _attacker_source(i: int) -> str:
    return f"127.{10 + i}.0.1"


def _fakes(i: int, honest: list[tuple[str, int, str]]) -> list[list[list]]:
    """Attacker i's peer-exchange messages: addresses nothing listens at, spread over many /16s of loopback,
    a few naming an honest node's id at a fake address and a fake id at an honest node's address."""
    messages = []
    for m in range(PEX_MESSAGES):
        entries: list[list] = []
        for k in range(MAX_ENTRIES):
            n = (i * PEX_MESSAGES + m) * MAX_ENTRIES + k
            host = f"127.{100 + n % 150}.{n // 150 % 250}.{n % 250 + 1}"
            if k == 0:
                entries.append([host, 20_000 + n % 40_000, honest[n % len(honest)][2]])
            elif k == 1:
                entries.append([honest[n % len(honest)][0], honest[n % len(honest)][1], f"{n:040x}"])
            else:
                entries.append([host, 20_000 + n % 40_000, f"{n:040x}"])
        messages.append(entries)
    return messages


class Attackers:
    """ATTACKERS fresh keys, each linked to the hub from its own /24 (a loopback alias), claiming a closed port
    as its listen address in its hello and handing over its peer-exchange messages; they stay linked until
    `close`, on a loop of their own, so they are linked when the hub stops and link again once it is back."""

    def __init__(self, hub, honest: list[tuple[str, int, str]]) -> None:
        self.hub, self.honest = hub, honest
        self.peers: list[RawPeer] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def attack(self) -> int:
        """Link every attacker and flood; returns how many linked."""
        return asyncio.run_coroutine_threadsafe(self._attack(), self.loop).result(60)

    async def _attack(self) -> int:
        host, port = self.hub.p2p_address.rsplit(":", 1)
        linked = 0
        for i in range(ATTACKERS):
            try:
                reader, writer = await asyncio.open_connection(host, int(port), local_addr=(_attacker_source(i), 0))
                peer = RawPeer(reader, writer)
                await peer.handshake(NodeIdentity.generate(), listen_port=closed_port())
            except (OSError, HandshakeRefused, TimeoutError):
                continue
            self.peers.append(peer)
            linked += 1
            for entries in _fakes(i, self.honest):
                peer.send({"type": MSG_TYPE, "peers": entries})
            await peer.writer.drain()
            self.loop.create_task(self._keep(peer))
        return linked

    async def _keep(self, peer: RawPeer) -> None:
        """Heartbeats (the link stays up) and reading whatever the hub sends, until it closes."""
        async def beat() -> None:
            while not peer.writer.is_closing():
                peer.send({"type": "heartbeat", "ts": time.time()})
                await asyncio.sleep(0.5)
        beating = asyncio.create_task(beat())
        try:
            while await peer.next_message(timeout=3600) is not None:
                pass
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            beating.cancel()
            peer.close()

    def close(self) -> None:
        async def stop() -> None:
            for peer in self.peers:
                peer.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _tried(hub) -> list[tuple[str, int]]:
    """The hub's tried (verified) addresses, as it remembers them (its peers file: verified rows, then the claims
    of peers linked, marked "claimed"), once the file holds as many as /status counts."""
    def read() -> list[tuple[str, int]] | None:
        rows = json.loads((hub.data_dir / ".peers.json").read_text())["peers"]
        tried = [(row["host"], row["port"]) for row in rows if row["source"] != "claimed"]
        return tried if len(tried) == hub.status()["p2p"]["verified_addresses"] else None
    wait_until(lambda: read() is not None, 10, message="the peers file holds every verified address")
    return read() or []


def test_ten_thousand_fake_addresses_from_forty_subnets_leave_the_tried_table_honest_and_a_restart_dials_it_first(
        cluster):
    """The hub dialled its five honest friends (BOOTSTRAP_PEERS), so its tried table holds them; 40 attackers,
    each on a /24 of its own, claim closed ports in their hellos and hand over 10,000 fake addresses by peer
    exchange. The book stays bounded, the tried table honest; stopped while the attackers are linked (their
    claims are remembered) and started again while they link back and flood again, the hub dials every tried
    address before any fake one, and links to all five friends."""
    friends = [cluster.node(f"h{i}", heartbeat_interval=1.0) for i in range(HONEST)]
    honest = [(f.p2p_address.rsplit(":", 1)[0], f.p2p_port, f.node_id) for f in friends]
    honest_ids = {f.node_id for f in friends}
    honest_addresses = {(host, port) for host, port, _ in honest}
    port = free_ports(1)[0]
    hub = cluster.node("hub", p2p_port=port, heartbeat_interval=1.0, discovery_pex="true",
                       bootstrap_peers=",".join(f.p2p_address for f in friends))
    wait_until(lambda: honest_ids <= hub.connected_ids() and hub.status()["p2p"]["verified_addresses"] >= HONEST,
               15, message="the hub dialled its five friends")
    assert set(_tried(hub)) == honest_addresses

    attackers = Attackers(hub, honest)
    try:
        assert attackers.attack() == ATTACKERS
        wait_until(lambda: hub.status()["p2p"]["counters"]["dial_failures"] >= 20, 30,
                   message="the hub dials some of what it was told (and fails)")
        status = hub.status()
        p2p, pex = status["p2p"], status["discovery"]["pex"]
        assert pex["received"] >= ATTACKERS * PEX_MESSAGES - 10, pex           # the flood was read ...
        assert 1000 <= p2p["known_addresses"] <= 2000, p2p                     # ... fills the bounded book ...
        tried = _tried(hub)
        honest_share = sum(1 for address in tried if address in honest_addresses) / len(tried)
        assert honest_share >= 0.9 and honest_addresses <= set(tried), tried   # ... and leaves tried honest
        assert honest_ids <= hub.connected_ids()

        assert hub.stop() == 0                                                 # attackers still linked
        saved = json.loads((hub.data_dir / ".peers.json").read_text())["peers"]
        claimed = [row for row in saved if row["source"] == "claimed"]
        assert len(claimed) >= ATTACKERS // 2, saved                           # their claims are remembered
        logged = hub.log_path.stat().st_size
        hub.start()
        assert attackers.attack() >= ATTACKERS // 2                            # back at once, flooding again
        # a friend left without its link dials the hub's address too, and may reach it first: a link either way
        wait_until(lambda: honest_ids <= hub.connected_ids(), 15, message="the restarted hub links its five friends again")
    finally:
        attackers.close()
    with open(hub.log_path, "rb") as log:
        log.seek(logged)
        lines = log.read().decode(errors="replace").splitlines()
    out = [i for i, line in enumerate(lines) if "peer connected" in line and "direction=outbound" in line]
    first = [lines[i].split("peer connected ", 1)[1].split()[0] for i in out[:HONEST]]
    assert first and all(any(node_id.startswith(prefix) for node_id in honest_ids) for prefix in first), lines[:20]
    friend_links = [i for i, line in enumerate(lines) if "peer connected" in line
                    and any(line.split("peer connected ", 1)[1].startswith(node_id[:12]) for node_id in honest_ids)]
    all_linked = friend_links[HONEST - 1]
    dialled = [(i, DIAL_FAILED.search(line)) for i, line in enumerate(lines)]
    fake_dials = [i for i, found in dialled
                  if found is not None and (found.group(1), int(found.group(2))) not in honest_addresses]
    assert not fake_dials or fake_dials[0] > all_linked, \
        ("a fake address was dialled before every friend was linked", lines[fake_dials[0]], lines[all_linked])
    print(f"\nhub: {p2p['known_addresses']} known, tried {len(tried)} ({honest_share:.0%} honest); "
          f"{len(claimed)} claims remembered; after the restart the first {len(first)} outbound links were friends, "
          f"{len(fake_dials)} fake addresses dialled after them")
