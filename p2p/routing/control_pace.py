"""ControlPace: how many prunes this node sends each neighbour a second.

A prune answers a duplicate copy, so an honest node sends one for nearly every broadcast whose origin is new to
it; when every copy has an origin of its own (fresh keys are free), its prunes to a neighbour follow the
attacker's broadcast rate, not its own doing, and past the neighbour's inbound rate (ROUTER_RATE_LIMIT) they got
the honest node flood-banned by its neighbours. Sent within a per-neighbour bucket well under that rate, a prune
skipped costs only another duplicate of that origin later, when the prune is tried again.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from p2p.resilience.token_bucket import TokenBucket

PRUNE_RATE = 200.0          # prunes a second to one neighbour: a tenth of the default ROUTER_RATE_LIMIT
PRUNE_BURST = 400.0
MAX_NEIGHBOURS = 4_096      # buckets kept (least recently used forgotten: a forgotten one starts full)


class ControlPace:
    """One bucket per neighbour for the prunes we send it."""

    def __init__(self, rate: float = PRUNE_RATE, burst: float = PRUNE_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def may_prune(self, neighbour: str) -> bool:
        """Whether a prune to `neighbour` fits its bucket now (taking it if so)."""
        bucket = self._buckets.pop(neighbour, None) or TokenBucket(self.rate, self.burst, clock=self.clock)
        self._buckets[neighbour] = bucket
        if len(self._buckets) > MAX_NEIGHBOURS:
            self._buckets.popitem(last=False)
        return bucket.try_take()

    def forget(self, neighbour: str) -> None:
        self._buckets.pop(neighbour, None)
