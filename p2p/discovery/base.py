"""The contract every discovery strategy satisfies, so the orchestrator can run them side by side."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, TypedDict

#: Dial priority of each source, lowest first (the seed's order).
# "claimed": remembered from a peer that dialled us, its address never dialled by us (unverified; dialled after
# the verified remembered ones, which sort first within a priority)
CLAIMED = "claimed"
SOURCE_PRIORITY: dict[str, int] = {"persisted": 0, CLAIMED: 0, "bootstrap": 1, "mdns": 2, "grape": 3, "pex": 4,
                                   "dht": 4, "inbound": 5}


@dataclass(frozen=True, slots=True)
class Candidate:
    """An address some strategy believes a node listens on; unverified until a handshake succeeds."""

    host: str
    port: int
    source: str
    node_id: str | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class StrategyView(TypedDict):
    found: int
    dialled: int
    connected: int
    last_error: str | None
    last_error_at: float | None


@dataclass(slots=True)
class StrategyStats:
    """Per-strategy counters shown in GET /status."""

    found: int = 0
    dialled: int = 0
    connected: int = 0
    last_error: str | None = None
    last_error_at: float | None = None

    def as_dict(self) -> StrategyView:
        return {"found": self.found, "dialled": self.dialled, "connected": self.connected,
                "last_error": self.last_error, "last_error_at": self.last_error_at}


CandidateSink = Callable[[Candidate], None]


class DiscoveryStrategy(abc.ABC):
    """A source of candidates. `run` loops until cancelled and must never raise for network trouble:
    it records the error in `stats`, logs once, backs off and tries again."""

    name: str = "abstract"

    def __init__(self) -> None:
        self.stats = StrategyStats()

    @abc.abstractmethod
    async def run(self, sink: CandidateSink) -> None:
        """Feed candidates to `sink` until cancelled."""

    async def close(self) -> None:  # noqa: B027 - a hook: most strategies hold nothing to release
        """Release resources (unregister services, close sessions). Called once at shutdown."""
