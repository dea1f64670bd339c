"""A bootstrap address that was down when the node started is still reached once it comes up, even
after the node filled its outbound links through other peers: otherwise the two sides of the
network stay split (seen with 20 nodes started at once, each bootstrapped to the one before)."""
from __future__ import annotations

import asyncio

from config import load_settings
from node.identity import NodeIdentity
from p2p.discovery.base import Candidate
from p2p.peers import PeerManager
from tests.harness import free_ports


async def make_manager(tmp_path, name: str, port: int = 0, **settings) -> PeerManager:
    cli = {"data_dir": str(tmp_path / name), "p2p_host": "127.0.0.1", "p2p_port": port} | settings
    manager = PeerManager(load_settings(env={}, cli=cli), NodeIdentity.generate(), verify=NodeIdentity.verify,
                          node_id_for=NodeIdentity.node_id_for)
    await manager.start()
    return manager


async def test_bootstrap_peer_down_at_start_is_reached_although_outbound_target_is_met(tmp_path):
    (late_port,) = free_ports(1)
    other = await make_manager(tmp_path, "other", target_outbound=0)
    node = await make_manager(tmp_path, "node", target_outbound=1, peer_reconnect_interval=2.0)
    late = None
    try:
        node.add_candidate(Candidate("127.0.0.1", late_port, "bootstrap"))   # nobody listens there yet
        async with asyncio.timeout(5):
            while not node.book.get(("127.0.0.1", late_port)).failures:
                await asyncio.sleep(0.02)
        await node.dial("127.0.0.1", other.listen_port)                        # the outbound target is met
        assert node.outbound_count == 1
        late = await make_manager(tmp_path, "late", port=late_port, target_outbound=0)
        async with asyncio.timeout(6):                                         # backoff capped at 2 s here
            while late.node_id not in node.links:
                await asyncio.sleep(0.02)
        assert node.links[late.node_id].direction == "outbound"
        # reached once, the address is an ordinary known peer: no more dials beyond the target for it
        assert node.book.get(("127.0.0.1", late_port)).last_connected is not None
    finally:
        for manager in (node, other, late):
            if manager is not None:
                await manager.stop()
