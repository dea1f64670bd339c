"""A Byzantine peer for real-process tests: a node identity the test holds, speaking the wire protocol by
hand (tests/wire.py) from a thread of its own, so that it can be listed in VALIDATORS and then lie with
genuine signatures.

It links to the nodes it is given, keeps each link alive with heartbeats (announcing whatever chain id
and height the test sets, true or not), reads and drops what the nodes send, and sends only what the
test asks: votes for any height, round and block, signed with its own validator key.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Coroutine

from exchange.chain.types.blocks import Vote
from node.identity import NodeIdentity
from tests.wire import RawPeer, read_until_goodbye

HEARTBEAT = 0.3


def identity_not_smallest(others: list[str]) -> NodeIdentity:
    """A fresh identity whose node id is not the smallest of `others` and itself (the smallest listed
    validator founds a pinned network, and a Byzantine founder is a different test)."""
    while True:
        identity = NodeIdentity.generate()
        if identity.node_id > min(others):
            return identity


class ByzantinePeer:
    def __init__(self, identity: NodeIdentity, network: str = "exchange-mainnet") -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.public_key = identity.public_key_bytes
        self.network = network
        self.chain_id = ""                       # what our heartbeats announce
        self.height = 0
        self.links: dict[str, RawPeer] = {}      # node id -> link
        self.received: dict[str, int] = {}       # message type -> count
        self.goodbyes: list[tuple[str, str | None]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="byzantine-peer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ from the test's thread
    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def link(self, address: str) -> str:
        """Link to the node listening at host:port; returns its node id."""
        return self.run(self._link(address))

    def try_link(self, address: str) -> bool:
        """`link`, False while nothing listens there yet."""
        try:
            self.link(address)
            return True
        except OSError:
            return False

    def announce(self, chain_id: str, height: int) -> None:
        self.chain_id, self.height = chain_id, height

    def send_vote(self, kind: int, height: int, round_: int, block_id: bytes | None) -> None:
        """One vote signed with our validator key, sent straight to every linked node."""
        vote = Vote.create(self.chain_id, kind, height, round_, block_id, self.public_key, self.identity.sign)
        self._loop.call_soon_threadsafe(self._send_all, "chain_vote", vote.wire())

    def linked(self) -> set[str]:
        return {node_id for node_id, peer in self.links.items() if not peer.writer.is_closing()}

    def close(self) -> None:
        async def stop() -> None:
            for peer in self.links.values():
                peer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self.run(stop(), timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # ------------------------------------------------------------------ on its own loop
    async def _link(self, address: str) -> str:
        host, port = address.rsplit(":", 1)
        peer = await RawPeer.connect(host, int(port))
        hello = await peer.handshake(self.identity, network=self.network, chain=[self.chain_id, self.height])
        node_id = hello["node_id"]
        self.links[node_id] = peer
        self._loop.create_task(self._heartbeats(node_id, peer))
        self._loop.create_task(self._drain(node_id, peer))
        return node_id

    async def _heartbeats(self, node_id: str, peer: RawPeer) -> None:
        while not peer.writer.is_closing():
            peer.send({"type": "heartbeat", "ts": time.time(), "chain": [self.chain_id, self.height]})
            await asyncio.sleep(HEARTBEAT)

    async def _drain(self, node_id: str, peer: RawPeer) -> None:
        try:
            goodbye = await read_until_goodbye(peer, self.received)
            if goodbye is not None:
                self.goodbyes.append((node_id, goodbye.get("reason")))
        finally:
            peer.close()

    def _send_all(self, kind: str, body: Any) -> None:
        for node_id, peer in self.links.items():
            if not peer.writer.is_closing():
                peer.send({"type": kind, "id": os.urandom(12).hex(), "origin": self.node_id, "dst": node_id,
                           "ts": time.time(), "hops": 0, "body": body})
