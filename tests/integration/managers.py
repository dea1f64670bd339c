"""A started PeerManager on loopback, for tests of the peer layer without a whole node."""
from __future__ import annotations

from config import load_settings
from node.configs import peer_config
from node.identity import NodeIdentity
from p2p.peers import PeerManager


async def make_manager(tmp_path, name: str, port: int = 0, **settings) -> PeerManager:
    cli = {"data_dir": str(tmp_path / name), "p2p_host": "127.0.0.1", "p2p_port": port} | settings
    manager = PeerManager(peer_config(load_settings(env={}, cli=cli)), NodeIdentity.generate(),
                          verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for)
    await manager.start()
    return manager
