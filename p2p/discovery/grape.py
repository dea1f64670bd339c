"""GrapeDiscovery: announce our TCP port under a service name on a Grenache Grape and look up the others."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Iterable, Sequence

from p2p.discovery.base import Candidate, CandidateSink, DiscoveryStrategy
from p2p.grenache.grape import GrapeClient, GrapeError
from p2p.resilience.backoff import Backoff

log = logging.getLogger(__name__)

_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_MAX_REMEMBERED = 10_000


class GrapeDiscovery(DiscoveryStrategy):
    """Keeps `announce_port` announced under `service_name` and feeds every other announced address.

    Schedule: announce and look up at once on start; then announce every `announce_interval`
    and look up every `lookup_interval` seconds (each with +-10% jitter so nodes do not sync up).
    Grape forgets a record after about 1-2 x its `--dpa`, so the operator must keep
    `announce_interval <= dpa / 2` (the default 30 s suits Grape's default dpa of 120 s); this
    class cannot know the grape's dpa and does not clamp.

    Every lookup feeds all the addresses found (the sink must tolerate repeats, as with the
    bootstrap strategy), except our own: `own_addresses`, plus our port on any loopback host,
    which is always this process. `stats.found` counts distinct addresses.

    When the grapes fail (unreachable, or answering with an error), `run` records
    `stats.last_error`, logs one WARNING for the whole outage, retries after full-jitter
    `Backoff` delays, and on the first success logs one INFO, re-announces (a restarted grape has
    lost our record) and looks up at once. It never raises for network trouble; cancellation
    ends it. `close()` releases the HTTP session.
    """

    name = "grape"

    def __init__(self, urls: Sequence[str], service_name: str, announce_port: int, *,
                 announce_interval: float = 30.0, lookup_interval: float = 5.0,
                 own_addresses: Iterable[tuple[str, int]] | None = None, client_timeout: float = 2.0,
                 backoff: Backoff | None = None, rng: random.Random | None = None) -> None:
        super().__init__()
        if not service_name:
            raise ValueError("service_name must not be empty")
        if not 0 < int(announce_port) < 65536:
            raise ValueError(f"invalid announce_port {announce_port!r}")
        if announce_interval <= 0 or lookup_interval <= 0:
            raise ValueError("announce_interval and lookup_interval must be positive")
        self.service_name = service_name
        self.announce_port = int(announce_port)
        self.announce_interval = float(announce_interval)
        self.lookup_interval = float(lookup_interval)
        self.own_addresses = {(h, int(p)) for h, p in (own_addresses or ())}
        self.own_addresses.update((h, self.announce_port) for h in _LOOPBACK_HOSTS)
        self.client = GrapeClient(urls, timeout=client_timeout)
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self._rng = rng or random.Random()
        self._seen: set[tuple[str, int]] = set()
        self._outage_since: float | None = None
        self._sink_error_logged = False

    @property
    def healthy(self) -> bool:
        """False while the grapes are failing (between the WARNING and the recovery INFO)."""
        return self._outage_since is None

    async def run(self, sink: CandidateSink) -> None:
        loop = asyncio.get_running_loop()
        next_announce = next_lookup = loop.time()
        while True:
            try:
                if loop.time() >= next_announce:
                    await self.client.announce(self.service_name, self.announce_port)
                    next_announce = loop.time() + self._jitter(self.announce_interval)
                if loop.time() >= next_lookup:
                    found = await self.client.lookup(self.service_name)
                    self._feed(found, sink)
                    next_lookup = loop.time() + self._jitter(self.lookup_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - GrapeError by contract; anything else must not stop discovery either
                self._on_failure(exc)
                await asyncio.sleep(max(0.05, self.backoff.next_delay()))
                next_announce = next_lookup = loop.time()  # on recovery: re-announce and look up at once
                continue
            if self._outage_since is not None:
                self._on_recovery()
            await asyncio.sleep(max(0.0, min(next_announce, next_lookup) - loop.time()))

    async def close(self) -> None:
        await self.client.close()

    def _jitter(self, interval: float) -> float:
        return interval * self._rng.uniform(0.9, 1.1)

    def _feed(self, addresses: list[tuple[str, int]], sink: CandidateSink) -> None:
        for address in addresses:
            if address in self.own_addresses:
                continue
            if address not in self._seen:
                if len(self._seen) >= _MAX_REMEMBERED:
                    self._seen.clear()
                self._seen.add(address)
                self.stats.found += 1
            try:
                sink(Candidate(address[0], address[1], self.name))
            except Exception:  # a faulty sink is a bug elsewhere; keep discovering
                if not self._sink_error_logged:
                    self._sink_error_logged = True
                    log.exception("grape discovery: candidate sink failed")

    def _on_failure(self, exc: Exception) -> None:
        detail = str(exc) if isinstance(exc, GrapeError) else f"{type(exc).__name__}: {exc}"
        self.stats.last_error = detail
        self.stats.last_error_at = time.time()
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            if isinstance(exc, GrapeError):
                log.warning("grape discovery: grape failing (%s); retrying with backoff", detail,
                            extra={"address": self.client.current_url, "reason": "grape_unreachable"})
            else:
                log.warning("grape discovery: unexpected error; retrying with backoff", exc_info=exc,
                            extra={"address": self.client.current_url, "reason": type(exc).__name__})

    def _on_recovery(self) -> None:
        down_for = time.monotonic() - (self._outage_since or time.monotonic())
        self._outage_since = None
        self.backoff.reset()
        log.info("grape discovery: grape reachable again after %.1fs", down_for,
                 extra={"address": self.client.current_url})
