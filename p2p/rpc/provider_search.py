"""Finding a provider when no linked peer offers a service: the RPC layer asks a `ProviderFinder` (the DHT's
provider records) to link to one, then waits for that peer's service list to name it.

Bounded so that calls for a service nobody offers cannot turn into a lookup storm: concurrent calls for
one service share one search, a search that found nobody is not repeated for `retry_after` seconds (those
calls fail at once with NO_PEERS, as before), and at most `max_searches` run at a time.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Protocol


class ProviderFinder(Protocol):
    async def link_provider(self, service: str, timeout: float) -> bool:
        """Link to some node that serves `service`; whether a link to one now exists."""
        ...


class ProviderSearch:
    def __init__(self, finder: ProviderFinder, offered: Callable[[str], bool], *, retry_after: float = 10.0,
                 max_searches: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
        self.finder = finder
        self._offered = offered
        self.retry_after = retry_after
        self.max_searches = max_searches
        self.clock = clock
        self._running: dict[str, asyncio.Task[bool]] = {}
        self._failed_at: dict[str, float] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.counters = {"searches": 0, "found": 0, "not_found": 0, "skipped": 0}

    async def find(self, service: str, timeout: float) -> bool:
        """Whether a linked peer offers `service` after searching for one (at most `timeout` seconds)."""
        if self._offered(service):
            return True
        task = self._running.get(service)
        if task is None:
            failed = self._failed_at.get(service)
            if (failed is not None and self.clock() - failed < self.retry_after) \
                    or len(self._running) >= self.max_searches or timeout <= 0:
                self.counters["skipped"] += 1
                return False
            self.counters["searches"] += 1
            task = self._running[service] = asyncio.ensure_future(self._search(service, timeout))
            task.add_done_callback(lambda _: self._running.pop(service, None))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            return self._offered(service)

    async def _search(self, service: str, timeout: float) -> bool:
        deadline = self.clock() + timeout
        try:
            linked = await self.finder.link_provider(service, timeout)
            if linked and not self._offered(service):       # its service list follows the handshake
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.setdefault(service, []).append(waiter)
                try:
                    await asyncio.wait_for(waiter, max(0.0, deadline - self.clock()))
                except TimeoutError:
                    pass
        except Exception:  # noqa: BLE001 - a failed search is a search that found nobody
            pass
        found = self._offered(service)
        self.counters["found" if found else "not_found"] += 1
        if found:
            self._failed_at.pop(service, None)
        else:
            self._failed_at[service] = self.clock()
            if len(self._failed_at) > 1024:
                self._failed_at.pop(next(iter(self._failed_at)))
        return found

    def offered(self, service: str) -> None:
        """A linked peer now offers `service` (RpcService's index changed): wake the search waiting for it."""
        for waiter in self._waiters.pop(service, []):
            if not waiter.done():
                waiter.set_result(None)
