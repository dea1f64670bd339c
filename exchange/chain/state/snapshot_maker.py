"""Who encodes the state at a snapshot height, and when its digest is known.

A network whose genesis sets `snapshot_lag` L certifies the snapshot of height S in the state hash of height
S + L, not S: the encoding (every resting order, account and recent trade) then need not run in the event loop
at S, where at every node at once it would pause the chain for as long as the state is big. `ChainState` asks
the maker to `start` at S and for the `digest` at S + L. `InlineSnapshots` encodes at once (the simulator, unit
tests, and a replay at start-up); `exchange/chain/store/snapshot_fork.py` encodes in a forked child that sees the
state as it was at S while the node goes on. A network with no lag encodes in `ChainState.apply_block` itself.
"""
from __future__ import annotations

import hashlib
import time
from typing import Callable, Literal, Protocol, Sequence

import msgpack

from exchange.chain.types.codec import bin_header

SNAPSHOT_DOMAIN = "exchange-node/snapshot/v1"
KEEP_DIGESTS = 4        # digests of the newest snapshots kept (only the newest is still to be certified)


Parts = Callable[[], Sequence[bytes]]      # the state's snapshot as pieces that join to its bytes
_PREFIX = msgpack.packb([SNAPSHOT_DOMAIN, b""], use_bin_type=True)[:-2]     # the array and the domain, no bin


def snapshot_digest(data: bytes) -> bytes:
    """`codec.digest(SNAPSHOT_DOMAIN, data)`: sha256 over `[domain, data]` packed, with the data hashed where it
    lies rather than copied into the packing (a worker thread hashes it while the loop goes on)."""
    hasher = hashlib.sha256(_PREFIX)
    hasher.update(bin_header(len(data)))
    hasher.update(data)
    return hasher.digest()


class SnapshotLost(Exception):
    """The encoding of a snapshot did not finish (its worker died): the state it was taken from is gone, so the
    node cannot compute the hash that certifies it and must rebuild it from its stored blocks (a restart)."""


HoldWay = Literal["fork", "join", "encode", "wait"]     # forked; joined from kept rows; encoded whole; a late child


class LoopHeld:
    """How long taking snapshots held the event loop: a fork (the kernel copies the page tables of the whole
    process), a join of the state's kept rows, an encoding done at once, or a wait for a late child. Operators read
    it as Redis users read `latest_fork_usec`: it grows with the state, and every node holds its loop at the same
    heights."""

    __slots__ = ("last_seconds", "longest_seconds", "count", "last_at", "last_way")

    def __init__(self) -> None:
        self.last_way: HoldWay | None = None
        self.last_seconds = 0.0
        self.longest_seconds = 0.0
        self.count = 0
        self.last_at: float | None = None      # time.monotonic() when the last hold ended

    def add(self, seconds: float, way: HoldWay) -> None:
        self.last_way = way
        self.last_seconds = seconds
        self.longest_seconds = max(self.longest_seconds, seconds)
        self.count += 1
        self.last_at = time.monotonic()

    def ago(self) -> float | None:
        """Seconds since the last hold ended (None: none yet): what came right after a fork is slower on every node
        (the kernel copies each page the node writes while the child shares it), so latency tails are read
        against it."""
        return None if self.last_at is None else time.monotonic() - self.last_at


class SnapshotMaker(Protocol):
    held: LoopHeld

    def start(self, height: int, parts: Parts) -> None:
        """Encode the state as it is now (`parts()`, joined), the snapshot of `height`."""

    def known(self, height: int, data: bytes) -> None:
        """A snapshot of `height` we started from (restored or installed): its digest is certified later."""

    def digest(self, height: int) -> bytes:
        """The digest of the snapshot of `height`, waiting for its encoding if need be (raises SnapshotLost)."""

    def take_ready(self) -> list[tuple[int, bytes]]:
        """Snapshots encoded since the last call, (height, bytes), for the store."""

    def close(self) -> None:
        """Stop any encoding under way (the node stops)."""


class DigestBook:
    """The digests of the newest snapshots, by height (bounded)."""

    def __init__(self) -> None:
        self._digests: dict[int, bytes] = {}

    def put(self, height: int, value: bytes) -> None:
        self._digests[height] = value
        for old in sorted(self._digests)[:-KEEP_DIGESTS]:
            del self._digests[old]

    def get(self, height: int) -> bytes | None:
        return self._digests.get(height)


class InlineSnapshots:
    """Encodes at once, in the caller's thread: the digest is known before `start` returns."""

    def __init__(self) -> None:
        self._digests = DigestBook()
        self._ready: list[tuple[int, bytes]] = []
        self.held = LoopHeld()

    def start(self, height: int, parts: Parts) -> None:
        started = time.perf_counter()
        data = b"".join(parts())
        self._digests.put(height, snapshot_digest(data))
        self._ready = [(height, data)]      # only the newest waits for the store
        self.held.add(time.perf_counter() - started, "encode")

    def known(self, height: int, data: bytes) -> None:
        self._digests.put(height, snapshot_digest(data))

    def digest(self, height: int) -> bytes:
        value = self._digests.get(height)
        if value is None:
            raise SnapshotLost(f"no snapshot of height {height} was taken here")
        return value

    def take_ready(self) -> list[tuple[int, bytes]]:
        ready, self._ready = self._ready, []
        return ready

    def close(self) -> None:
        self._ready = []
