"""Discovery orchestrator: runs every enabled strategy side by side and feeds one address book.

Candidates are deduplicated by address in the PeerManager's book (which keeps the
highest-priority source) and by node id when dialling (a node we hold or are opening a link to is
not dialled again at another address; the handshake keeps one link per node); the manager dials
best-first in the seed's order: persisted, bootstrap, mDNS, Grape, peer exchange. A failing
strategy never stops the others.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Callable, Iterable

from p2p.discovery.base import Candidate, CandidateSink, DiscoveryStrategy, StrategyStats, StrategyView
from p2p.peer_hooks import PeerHooks, proven_id

if TYPE_CHECKING:
    from p2p.connection import PeerLink
    from p2p.peers import PeerManager

log = logging.getLogger("p2p.discovery")


class DeferredStrategy(DiscoveryStrategy):
    """A strategy built only when discovery starts, e.g. because it needs the bound listen port.
    It shares its stats with the strategy it builds, so GET /status shows the real counts."""

    def __init__(self, name: str, factory: Callable[[], DiscoveryStrategy]) -> None:
        super().__init__()
        self.name = name
        self._factory = factory
        self.inner: DiscoveryStrategy | None = None

    async def run(self, sink: CandidateSink) -> None:
        self.inner = self._factory()
        self.inner.stats = self.stats
        await self.inner.run(sink)

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()


class DiscoveryOrchestrator:
    def __init__(self, peers: PeerManager, strategies: Iterable[DiscoveryStrategy]) -> None:
        self.peers = peers
        self.strategies: dict[str, DiscoveryStrategy] = {s.name: s for s in strategies}
        self._tasks: list[asyncio.Task[None]] = []

    def peer_hooks(self) -> PeerHooks:
        """Dials and links counted for the strategy that named the address."""
        return PeerHooks("discovery", on_dial_result=(self._on_dial_result,), on_open=(self._on_open,))

    def _on_dial_result(self, source: str, ok: bool) -> None:
        strategy = self.strategies.get(source)
        if strategy is not None:
            strategy.stats.dialled += 1

    def _on_open(self, link: PeerLink) -> None:
        record = self.peers.peers.get(proven_id(link))
        strategy = self.strategies.get(record.source if record else link.source)
        if strategy is not None:
            strategy.stats.connected += 1

    def sink_for(self, strategy: DiscoveryStrategy) -> CandidateSink:
        def sink(candidate: Candidate) -> None:
            if self.peers.add_candidate(candidate):
                log.debug("%s found a candidate", strategy.name,
                          extra={"address": f"{candidate.host}:{candidate.port}", "peer": candidate.node_id})
        return sink

    async def _run(self, strategy: DiscoveryStrategy) -> None:
        try:
            await strategy.run(self.sink_for(strategy))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken strategy must never take the node down
            strategy.stats.last_error = f"{type(exc).__name__}: {exc}"
            strategy.stats.last_error_at = time.time()
            log.exception("discovery strategy %s stopped", strategy.name, extra={"reason": type(exc).__name__})

    def start(self) -> None:
        for strategy in self.strategies.values():
            self._tasks.append(asyncio.create_task(self._run(strategy), name=f"discovery.{strategy.name}"))
            log.info("discovery strategy %s started", strategy.name)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for strategy in self.strategies.values():
            try:
                await strategy.close()
            except Exception:
                log.exception("closing discovery strategy %s", strategy.name)

    def stats(self) -> dict[str, StrategyView]:
        return {name: s.stats.as_dict() for name, s in self.strategies.items()}


__all__ = ["Candidate", "DeferredStrategy", "DiscoveryOrchestrator", "DiscoveryStrategy", "StrategyStats"]
