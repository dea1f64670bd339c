"""In-process nodes with real PeerManagers, links and RpcServices, for RPC tests."""
from __future__ import annotations

import asyncio
import contextlib
import random

from config import Settings, load_settings
from node.configs import peer_config
from node.identity import NodeIdentity
from p2p.peers import PeerManager
from p2p.rpc.builtins import Builtins
from p2p.rpc.service import RpcConfig, RpcService


class Node:
    def __init__(self, peers: PeerManager, rpc: RpcService, builtins: Builtins) -> None:
        self.peers = peers
        self.rpc = rpc
        self.builtins = builtins
        self.node_id = peers.node_id


def local_peers(tmp_path, name: str) -> tuple[Settings, NodeIdentity, PeerManager]:
    """Settings, a fresh identity and a PeerManager (not started) on loopback, fast heartbeats, no dialling."""
    settings = load_settings(env={}, cli={"data_dir": str(tmp_path / name), "p2p_host": "127.0.0.1", "p2p_port": 0,
                                          "target_outbound": 0, "heartbeat_interval": 0.2})
    identity = NodeIdentity.generate()
    peers = PeerManager(peer_config(settings), identity, verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for)
    return settings, identity, peers


async def make_node(tmp_path, name: str, config: RpcConfig | None = None, services: dict | None = None) -> Node:
    settings, identity, peers = local_peers(tmp_path, name)
    rpc = peers.attach(RpcService(peers, config or RpcConfig(warmup_period=0), rng=random.Random(1)))
    builtins = Builtins(peers.node_id)
    builtins.register_all(rpc, test_services=True)
    for service, handler in (services or {}).items():
        rpc.register(service, handler)
    rpc.start()
    await peers.start()
    return Node(peers, rpc, builtins)


@contextlib.asynccontextmanager
async def nodes(tmp_path, *specs):
    made = []
    try:
        for i, spec in enumerate(specs):
            made.append(await make_node(tmp_path, f"n{i}", **spec))
        yield made
    finally:
        for node in made:
            await node.rpc.stop()
            await node.peers.stop()


async def link(a: Node, b: Node) -> None:
    await a.peers.dial("127.0.0.1", b.peers.listen_port)
    async with asyncio.timeout(3):
        while b.node_id not in a.peers.links or a.node_id not in b.peers.links:
            await asyncio.sleep(0.005)


async def eventually(predicate, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def blocking_handler():
    """A handler that never answers; says when it started and when it was cancelled."""
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(payload, peer):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    return started, cancelled, slow
