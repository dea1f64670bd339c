"""The two strategies that need no network to find candidates: remembered peers and bootstrap addresses."""
from __future__ import annotations

import asyncio
from typing import Sequence

from p2p.discovery.base import CLAIMED, Candidate, CandidateSink, DiscoveryStrategy
from p2p.peer_store import PeerStore


class PersistedDiscovery(DiscoveryStrategy):
    """Peers remembered in `.peers.json` from earlier runs, offered first at start."""

    name = "persisted"

    def __init__(self, store: PeerStore) -> None:
        super().__init__()
        self.store = store

    async def run(self, sink: CandidateSink) -> None:
        for stored in await asyncio.to_thread(self.store.load):
            self.stats.found += 1
            source = CLAIMED if stored.source == CLAIMED else self.name     # a claim stays unverified
            sink(Candidate(stored.host, stored.port, source, stored.node_id))


class BootstrapDiscovery(DiscoveryStrategy):
    """BOOTSTRAP_PEERS, offered at start and again every `refresh` seconds so a node that lost
    every peer finds its way back in."""

    name = "bootstrap"

    def __init__(self, addresses: Sequence[tuple[str, int]], refresh: float = 30.0) -> None:
        super().__init__()
        self.addresses = list(addresses)
        self.refresh = refresh

    async def run(self, sink: CandidateSink) -> None:
        if not self.addresses:
            return
        first = True
        while True:
            for host, port in self.addresses:
                if first:
                    self.stats.found += 1
                sink(Candidate(host, port, self.name))
            first = False
            await asyncio.sleep(self.refresh)
