"""A live node's snapshots: gathered in the event loop from the rows the state keeps packed, or forked when big.

Every node takes a snapshot at the same height. Forking for it (`snapshot_fork.py`) keeps the encoding out of
the loop, but the fork is not free: the kernel copies the page tables while the loop waits, then a page for each
one the node writes while the child still shares it, and the child's encoding competes with the node. The state
keeps its rows packed (`exchange/app/packed_rows.py`), so in the loop a snapshot is a list of mostly kept
pieces: only the rows that changed since the last one are packed again. Those pieces are bytes no one changes,
so the state at that height is captured once the list is made; a worker thread joins them and computes the
digest (hashlib lets go of the interpreter lock while it hashes), and the bytes go to the store when it is done.
The pieces are handed to the worker at a random moment within SPREAD_SECONDS: every node gathers at the same
height, and the joins, digests and file writes of nodes that share cores (a test machine, one host's virtual
machines) then neither all land at once nor on the rounds right after that height. The chain needs the digest
only `snapshot_lag` heights later; asked for sooner, the pieces are joined there and then, or the worker waited
for.

The collector's long-lived objects are frozen at each snapshot, as before a fork (`snapshot_fork.py`), and thawed
every few. A snapshot is gathered this way while the last one was at most `join_max_bytes`: the gathering grows
with the pieces (a price level's runs, a run of closed orders, an account), but the worker's join holds the
interpreter lock for as long as it copies the bytes, and past about that size a fork's pause is shorter. After a
bigger one the next is forked, as is every snapshot before the node is live (the replay at start-up encodes them
at once).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from exchange.chain.store.snapshot_fork import ForkedSnapshots, running_loop
from exchange.chain.state.snapshot_maker import KEEP_DIGESTS, DigestBook, Parts, SnapshotLost, snapshot_digest

log = logging.getLogger("exchange.chain")

SPREAD_SECONDS = 0.5       # a gathered snapshot is handed to the worker within this long, at a random moment
JOIN_MAX_BYTES = 16 << 20  # the largest last snapshot after which the next is gathered in the loop rather than forked


class LiveSnapshots:
    def __init__(self, on_ready: Callable[[], None] = lambda: None, join_max_bytes: int = JOIN_MAX_BYTES,
                 spread_seconds: float = SPREAD_SECONDS, rng: random.Random | None = None) -> None:
        self.on_ready = on_ready
        self.join_max_bytes = join_max_bytes
        self.spread_seconds = spread_seconds
        self._rng = rng or random.Random()
        self.forks = ForkedSnapshots(on_ready)
        self.held = self.forks.held
        self.joined = 0
        self._last_bytes = 0                            # the last snapshot's size, joined or forked
        self._digests = DigestBook()
        self._waiting: dict[int, tuple[asyncio.TimerHandle, Sequence[bytes]]] = {}   # gathered, not yet handed over
        self._joining: dict[int, Future[tuple[bytes, bytes]]] = {}     # (bytes, digest) from the worker, by height
        self._lost: dict[int, str] = {}
        self._ready: list[tuple[int, bytes]] = []
        self._worker: ThreadPoolExecutor | None = None

    @property
    def live(self) -> bool:
        return self.forks.live

    @live.setter
    def live(self, value: bool) -> None:
        self.forks.live = value

    # ------------------------------------------------------------------ SnapshotMaker
    def start(self, height: int, parts: Parts) -> None:
        loop = running_loop()
        if not self.live or loop is None or self._last_bytes > self.join_max_bytes:
            self.forks.start(height, parts)
            return
        started = time.perf_counter()
        self.forks.freeze_long_lived()      # as a fork does: the state is long-lived, full collections need not walk it
        pieces = parts()
        self.held.add(time.perf_counter() - started, "join")
        self.joined += 1
        self._waiting[height] = (loop.call_later(self._rng.uniform(0.0, self.spread_seconds), self._hand_over,
                                                 loop, height), pieces)
        for old in sorted(self._waiting)[:-KEEP_DIGESTS]:
            self._waiting.pop(old)[0].cancel()

    def _hand_over(self, loop: asyncio.AbstractEventLoop, height: int) -> None:
        """The pieces of `height` to the worker, which joins and digests them."""
        _, pieces = self._waiting.pop(height)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-join")
        joining = self._worker.submit(_join_and_digest, pieces)
        self._joining[height] = joining
        for old in sorted(self._joining)[:-KEEP_DIGESTS]:
            self._joining.pop(old).cancel()
        joining.add_done_callback(lambda _: _call_soon(loop, self._collect, height, joining))

    def known(self, height: int, data: bytes) -> None:
        self.forks.known(height, data)

    def digest(self, height: int) -> bytes:
        waiting = self._waiting.pop(height, None)
        if waiting is not None:                 # due before the worker was handed it: joined here, now
            waiting[0].cancel()
            joined: Future[tuple[bytes, bytes]] = Future()
            try:
                joined.set_result(_join_and_digest(waiting[1]))
            except Exception as exc:  # noqa: BLE001 - as from the worker: the snapshot is lost, and says why
                joined.set_exception(exc)
            self._joining[height] = joined
        joining = self._joining.get(height)
        if joining is not None:
            self._collect(height, joining)      # waits for the worker if it is not done yet
        value = self._digests.get(height)
        if value is not None:
            return value
        if height in self._lost:
            raise SnapshotLost(self._lost[height])
        return self.forks.digest(height)

    def take_ready(self) -> list[tuple[int, bytes]]:
        forked = self.forks.take_ready()
        if forked:
            self._last_bytes = len(forked[-1][1])
        ready, self._ready = sorted(self._ready + forked, key=lambda taken: taken[0]), []
        return ready[-1:]       # only the newest waits for the store

    def close(self) -> None:
        self.forks.close()
        self._ready = []
        for handle, _ in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        self._joining.clear()
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._worker = None

    # ------------------------------------------------------------------ the worker's results, in the loop
    def _collect(self, height: int, joining: Future[tuple[bytes, bytes]]) -> None:
        """The joined bytes and digest of `height` to the book and the store (once, whoever asks first)."""
        if self._joining.get(height) is not joining:
            return
        try:
            data, value = joining.result()
        except Exception as exc:  # noqa: BLE001 - whatever stopped the worker, the snapshot is gone with it
            self._joining.pop(height, None)
            self._lost[height] = f"the snapshot of height {height} was lost: joining it failed: {exc!r}"
            log.error("%s", self._lost[height])
            for old in sorted(self._lost)[:-KEEP_DIGESTS]:
                del self._lost[old]
            return
        del self._joining[height]
        self._digests.put(height, value)
        self._last_bytes = len(data)
        if not self._ready or self._ready[-1][0] < height:
            self._ready = [(height, data)]      # only the newest waits for the store
            self.on_ready()


def _join_and_digest(pieces: Sequence[bytes]) -> tuple[bytes, bytes]:
    data = b"".join(pieces)
    return data, snapshot_digest(data)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass        # the loop closed (the node stopped): nobody waits for this snapshot any more
