"""RouterConfig: the MessageRouter's tunables, built from Settings by the composition root (node/configs.py)."""
from __future__ import annotations

from dataclasses import dataclass

from p2p.grenache.limits import GrenacheLimits


@dataclass(frozen=True, slots=True)
class GrenacheMessagesConfig:
    """Where the Grenache message path serves and announces (DISCOVERY_GRENACHE with GRENACHE_MESSAGES), and what
    each client of its endpoint may take (frames a second, connections)."""

    grape_urls: tuple[str, ...]
    service: str
    host: str
    port: int
    announce_interval: float
    limits: GrenacheLimits


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """What the MessageRouter needs to know; every value comes from Settings, none has a default here."""

    max_frame_bytes: int
    seen_cache_size: int
    seen_cache_ttl: float          # signed messages older than half of it are refused as replays
    queue_max_messages: int
    queue_target_bytes: int        # encoded bytes held for one unreachable node ...
    queue_max_bytes: int           # ... and for all of them together
    queue_ttl: float
    rate_limit: float              # messages/s accepted from one peer
    rate_burst: int
    flood_ban: float               # seconds a peer that keeps flooding is banned
    graft_peer_bytes: int          # bytes/s of cached broadcasts re-sent to one neighbour
    graft_total_bytes: int         # ... and to all together
    open_type_rate: float          # copies/s of a type any key may author one neighbour may hand over
    open_type_total_rate: float    # ... and all neighbours together, shared equally by their networks
    broadcast_cache_bytes: int     # bytes of recent broadcasts kept to answer grafts
    diagnostic_types: bool         # carry "note" broadcasts (DEBUG_API): tests and benchmarks, never production
    broadcast_mode: str
    broadcast_max_hops: int
    grenache: GrenacheMessagesConfig | None   # None: no Grenache message path
