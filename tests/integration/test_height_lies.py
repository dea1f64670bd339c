"""Real processes: peers lying about their height. As filed, a heartbeat or an unchecked vote claiming
height 2^62 from a fresh key every 5 s kept `/ready` at 503 for 96 % of 45 s.

Four validators and a follower, an honest client placing one order every 200 ms at the follower; then, for
ATTACK_SECONDS, a fresh key every second links to every node and, every 0.3 s on each link, claims height
2^62 - 1 in its heartbeats and sends a `chain_vote` at height 2^62 with a garbage signature (naming a real
validator as its signer, or itself). A claim counts only when f + 1 validators make it, so `/ready` stays 200
on every node, honest orders stay as fast as before, the chain commits throughout, no node asks a liar for the
blocks it claims, and no honest node penalises another.
"""
from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from dataclasses import dataclass

from exchange.chain.types.blocks import MAX_HEIGHT, PRECOMMIT
from node.identity import NodeIdentity
from tests.flood import HonestClient, p99
from tests.harness import NodeProcess, converged, wait_until
from tests.redteam.attacker import envelope, honest_nodes_intact
from tests.wire import RawPeer, read_until_goodbye

FAST = {"heartbeat_interval": 0.2}
ATTACK_SECONDS = 20.0
NEW_LIAR_EVERY = 1.0
LIE_EVERY = 0.3
LIE = MAX_HEIGHT - 1                    # the highest height a heartbeat may carry
SAMPLE_EVERY = 0.2
HEIGHT = re.compile(r"at height (\d+)")


class ReadySampler:
    """GET /ready on every node every SAMPLE_EVERY seconds, from a thread: (when, node name, status, height)."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = nodes
        self.samples: list[tuple[float, str, int, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            for node in self.nodes:
                try:
                    status, body = node.api("GET", "/ready", timeout=2.0)
                except OSError:
                    status, body = 0, None
                reasons = " ".join(c.get("detail", "") or "" for c in (body or {}).get("checks", []))
                found = HEIGHT.search(reasons)
                self.samples.append((time.monotonic(), node.name, status, int(found.group(1)) if found else None))
            self._stop.wait(max(0.0, SAMPLE_EVERY - (time.monotonic() - began)))

    def of(self, name: str, start: float, end: float) -> list[tuple[float, int, int | None]]:
        return [(t, status, height) for t, node, status, height in self.samples if node == name and start <= t < end]


@dataclass
class Attack:
    liars: int
    links: int
    received: dict[str, int]            # message type -> how many the nodes sent the liars
    goodbyes: dict[str, int]            # why the nodes closed liars' links


async def _lie(nodes: list[NodeProcess], chain_id: str, validator_key: bytes) -> Attack:
    """The attack: how many liars linked, what the nodes sent them and why they closed their links."""
    peers: list[tuple[RawPeer, str, NodeIdentity, int]] = []
    received: dict[str, int] = {}
    goodbyes: dict[str, int] = {}

    async def read(peer: RawPeer) -> None:
        goodbye = await read_until_goodbye(peer, received)
        if goodbye is not None:
            reason = str(goodbye.get("reason"))
            goodbyes[reason] = goodbyes.get(reason, 0) + 1

    readers = []
    liars = 0
    end = time.monotonic() + ATTACK_SECONDS
    next_liar = time.monotonic()
    while time.monotonic() < end:
        if time.monotonic() >= next_liar:
            identity = NodeIdentity.generate()
            liars += 1
            for node in nodes:
                host, port = node.p2p_address.rsplit(":", 1)
                peer = await RawPeer.connect(host, int(port))
                await peer.handshake(identity, chain=[chain_id, LIE])
                peers.append((peer, node.node_id, identity, liars))
                readers.append(asyncio.create_task(read(peer)))
            next_liar += NEW_LIAR_EVERY
        for peer, dst, identity, n in peers:
            if peer.writer.is_closing():
                continue
            peer.send({"type": "heartbeat", "ts": time.time(), "chain": [chain_id, LIE]})
            signer = validator_key if n % 2 else identity.public_key_bytes
            peer.send(envelope("chain_vote", identity.node_id, dst,
                               [PRECOMMIT, MAX_HEIGHT, 0, None, signer, os.urandom(64)]))
        await asyncio.sleep(LIE_EVERY)
    for peer, *_ in peers:
        peer.close()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return Attack(liars, len(peers), received, goodbyes)


def test_fresh_keys_claiming_height_2_62_keep_no_node_from_ready_nor_slow_honest_orders(cluster):
    validators = cluster.chain(4, seat_rule="any", **FAST)
    follower = cluster.node("honest", bootstrap_peers=validators[0].p2p_address, **FAST)
    nodes = [*validators, follower]
    wait_until(lambda: converged(nodes), 20)
    wait_until(lambda: all(node.api("GET", "/ready")[0] == 200 for node in nodes), 20, message="every node ready")
    chain_id = validators[0].status()["chain_id"]
    validator_key = NodeIdentity.load(validators[0].data_dir / "node_key").public_key_bytes
    sampler = ReadySampler(nodes)
    client = HonestClient(follower)
    sampler.start()
    client.start()
    try:
        time.sleep(4.0)                                     # the honest baseline, before any lie
        attack_start = time.monotonic()
        attack = asyncio.run(_lie(nodes, chain_id, validator_key))
        attack_end = time.monotonic()
        time.sleep(2.0)
    finally:
        client.stop.set()
        client.join(40)
        sampler.stop()

    for node in nodes:
        during = sampler.of(node.name, attack_start, attack_end)
        ready = sum(1 for _, code, _ in during if code == 200)
        assert during and ready >= 0.99 * len(during), \
            (node.name, f"/ready 200 in {ready} of {len(during)} samples",
             [(round(t - attack_start, 1), code) for t, code, _ in during if code != 200][:10])
        heights = [(t, h) for t, _, h in during if h is not None]
        rises = [t for (t, h), (_, before) in zip(heights[1:], heights) if h > before]
        gaps = [b - a for a, b in zip([attack_start, *rises], [*rises, attack_end])]
        assert rises and max(gaps) <= 3.0, (node.name, f"no block for {max(gaps, default=0):.1f} s during the attack")

    base = client.window(0, attack_start)
    during_orders = client.window(attack_start, attack_end)
    assert base and during_orders and None not in base + during_orders, client.samples
    base_p99, during_p99 = p99(base), p99(during_orders)      # type: ignore[arg-type]
    assert during_p99 <= max(2 * base_p99, 0.25), (f"honest p99 {during_p99 * 1000:.0f} ms during the lies vs "
                                                    f"{base_p99 * 1000:.0f} ms before")
    # ignored: nobody asked a liar for the blocks it claims, and every node's height is the real one
    assert attack.received.get("chain_sync_request", 0) == 0, attack
    assert attack.liars >= ATTACK_SECONDS / NEW_LIAR_EVERY - 1, attack
    tops = [node.status()["height"] for node in nodes]
    assert max(tops) < 10_000, tops
    honest_nodes_intact(nodes)
    print(f"\n{attack.liars} fresh liars ({attack.links} links) claiming {LIE}; honest p99 "
          f"{base_p99 * 1000:.0f} ms before, {during_p99 * 1000:.0f} ms during; liars were sent {attack.received}, "
          f"closed {attack.goodbyes}")
