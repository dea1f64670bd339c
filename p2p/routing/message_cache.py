"""The broadcast cache: recent broadcasts as ready-to-send frames, for answering grafts (Plumtree's repair)."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from p2p.routing.envelope import MessageId


class _CacheEntry:
    __slots__ = ("frame", "haves", "expires")

    def __init__(self, frame: bytes, haves: set[str], expires: float) -> None:
        self.frame = frame
        self.haves = haves  # neighbours known to have the message (never sent it again)
        self.expires = expires



class MessageCache:
    """Recent broadcasts as ready-to-send frames (answers grafts), bounded by count, bytes and age: a flood of
    large broadcasts pushes the oldest out instead of growing the node's memory."""

    def __init__(self, max_size: int = 20_000, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_size = max_size
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[MessageId, _CacheEntry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, mid: MessageId, frame: bytes, haves: set[str]) -> _CacheEntry:
        now = self._clock()
        entries = self._entries
        old = entries.pop(mid, None)
        if old is not None:
            self.bytes -= len(old.frame)
        while entries and (len(entries) >= self.max_size or self.bytes + len(frame) > self.max_bytes
                           or next(iter(entries.values())).expires <= now):
            self.bytes -= len(entries.popitem(last=False)[1].frame)
        entry = entries[mid] = _CacheEntry(frame, haves, now + self.ttl)
        self.bytes += len(frame)
        return entry

    def get(self, mid: MessageId) -> _CacheEntry | None:
        entry = self._entries.get(mid)
        if entry is not None and entry.expires <= self._clock():
            return None
        return entry
