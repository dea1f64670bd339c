"""DeliveryQueue: messages held for peers we cannot reach yet, bounded, expiring, drained at a warm-up rate.

Each target has its own FIFO of at most `max_messages` and `max_target_bytes` (the oldest is dropped to make
room: what is newest matters most to a peer that comes back), all targets together at most `max_bytes` (past it
the target holding the most bytes gives up its oldest, so a peer gone for long, or a flood of messages for one
target, cannot push out another target's few), and every message expires `ttl` seconds after it was queued. A
message's size is its encoded size, counted once as it is queued. When the target becomes reachable the queue drains
through a token bucket whose rate starts at `start_rate` and doubles every second up to `max_rate`,
so a peer back from downtime is never hit by thousands of messages at once. The warm-up is storm
protection (p2p/resilience/protection.py): each message draws its verdict when it is queued, and a
message the protection does not cover (mode off, or outside the canary share), or only watches
(shadow), is ready without a token. Pure bookkeeping: the router does the sending; the clock is
injectable.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from p2p.messages import Message
from p2p.resilience.protection import ENFORCE, Protection
from p2p.resilience.token_bucket import TokenBucket

if TYPE_CHECKING:
    from p2p.routing.envelope import SendResult


@dataclass(slots=True)
class Held:
    """One queued message and who wants to hear how it ended."""

    message: Message
    expires: float
    on_settled: Callable[[SendResult], None] | None = None
    guard: str | None = ENFORCE  # the protection verdict drawn for it (see Protection.covers)
    size: int = 0                # its encoded bytes, as counted against the queue's byte budgets


class _TargetQueue:
    __slots__ = ("items", "bucket", "drain_started", "bytes", "earliest")

    def __init__(self) -> None:
        self.items: deque[Held] = deque()
        self.bucket: TokenBucket | None = None
        self.drain_started = 0.0
        self.bytes = 0
        self.earliest = float("inf")    # no item expires before this (it may be one already gone)

    def hold(self, held: Held) -> None:
        self.earliest = min(self.earliest, held.expires)


class DeliveryQueue:
    def __init__(self, max_messages: int = 1000, ttl: float = 60.0, *, max_targets: int = 1024,
                 max_target_bytes: int = 4 << 20, max_bytes: int = 32 << 20,
                 start_rate: float = 20.0, max_rate: float = 2000.0, clock: Callable[[], float] = time.monotonic,
                 protection: Protection | None = None) -> None:
        self.max_messages = max_messages
        self.ttl = ttl
        self.max_targets = max_targets
        self.max_target_bytes = max_target_bytes
        self.max_bytes = max_bytes
        self.start_rate = start_rate
        self.max_rate = max_rate
        self._clock = clock
        self.protection = protection or Protection()
        self._queues: dict[str, _TargetQueue] = {}
        self.bytes = 0                # held by every target together

    def __len__(self) -> int:
        return sum(len(q.items) for q in self._queues.values())

    def pending(self, target: str) -> int:
        queue = self._queues.get(target)
        return len(queue.items) if queue else 0

    def targets(self) -> list[str]:
        return list(self._queues)

    @property
    def pending_targets(self) -> int:
        return len(self._queues)

    def put(self, target: str, message: Message, on_settled: Callable[[SendResult], None] | None = None,
            size: int = 0, ttl: float | None = None) -> tuple[str | None, list[Held]]:
        """Queue a message of `size` encoded bytes, for `ttl` seconds if that is shorter than the queue's own (an
        answer held a few seconds expires then, whatever waits before it). Returns (refusal, evicted): why it was not queued
        ("too_many_queues", "too_large_to_hold") or None, and the older messages pushed out to make room for it
        (settle them as dropped)."""
        if size > min(self.max_target_bytes, self.max_bytes):
            return "too_large_to_hold", []
        queue = self._queues.get(target)
        if queue is None:
            if len(self._queues) >= self.max_targets:
                return "too_many_queues", []
            queue = self._queues[target] = _TargetQueue()
        evicted: list[Held] = []
        while queue.items and (len(queue.items) >= self.max_messages or queue.bytes + size > self.max_target_bytes):
            evicted.append(self._pop_oldest(queue))
        while self.bytes + size > self.max_bytes:
            heaviest = max(self._queues, key=self._target_bytes)
            evicted.append(self._pop_oldest(self._queues[heaviest]))
            if heaviest != target and not self._queues[heaviest].items:
                del self._queues[heaviest]
        held = self.hold(message, on_settled, ttl)
        held.size = size
        queue.items.append(held)
        queue.hold(held)
        queue.bytes += size
        self.bytes += size
        return None, evicted

    def _target_bytes(self, target: str) -> int:
        return self._queues[target].bytes

    def _pop_oldest(self, queue: _TargetQueue) -> Held:
        held = queue.items.popleft()
        self._uncount(queue, held)
        return held

    def _uncount(self, queue: _TargetQueue, held: Held) -> None:
        queue.bytes -= held.size
        self.bytes -= held.size

    def hold(self, message: Message, on_settled: Callable[[SendResult], None] | None = None,
             ttl: float | None = None) -> Held:
        """A Held for `message` as `put` would queue it (expiry, protection verdict), queued nowhere yet."""
        expires = self._clock() + (self.ttl if ttl is None else min(ttl, self.ttl))
        return Held(message, expires, on_settled, self.protection.covers())

    def expire(self) -> list[Held]:
        """Remove and return every message past its expiry, wherever it waits in its queue (a short-lived answer
        may wait behind older messages); a queue is looked through only when something in it is due."""
        now = self._clock()
        gone: list[Held] = []
        for target in list(self._queues):
            queue = self._queues[target]
            if queue.earliest <= now:
                kept: deque[Held] = deque()
                for held in queue.items:
                    if held.expires <= now:
                        self._uncount(queue, held)
                        gone.append(held)
                    else:
                        kept.append(held)
                queue.items = kept
                queue.earliest = min((held.expires for held in kept), default=float("inf"))
            if not queue.items:
                del self._queues[target]
        return gone

    def start_drain(self, target: str) -> None:
        """The target became reachable: restart its warm-up from `start_rate`."""
        queue = self._queues.get(target)
        if queue is not None:
            queue.drain_started = self._clock()
            queue.bucket = TokenBucket(self.start_rate, max(1.0, self.start_rate / 10), clock=self._clock, initial=1)

    def take(self, target: str) -> tuple[list[Held], list[Held], float]:
        """(ready, expired, wait): messages that may go now under the warm-up rate, messages found
        expired on the way, and seconds until the next may go (0 when the queue is now empty, which
        also forgets the target)."""
        queue = self._queues.get(target)
        if queue is None:
            return [], [], 0.0
        if queue.bucket is None:
            self.start_drain(target)
        bucket = queue.bucket
        assert bucket is not None
        now = self._clock()
        rate = min(self.max_rate, self.start_rate * 2.0 ** (now - queue.drain_started))
        if rate != bucket.rate:
            bucket.set_rate(rate, max(1.0, rate / 10))
        ready: list[Held] = []
        expired: list[Held] = []
        items = queue.items
        protection = self.protection
        while items:
            head = items[0]
            if head.expires <= now:
                expired.append(self._pop_oldest(queue))
            elif head.guard is None or bucket.try_take() or not protection.limited("queue.warmup", head.guard):
                ready.append(self._pop_oldest(queue))
            else:
                break
        if not items:
            del self._queues[target]
            return ready, expired, 0.0
        return ready, expired, max(bucket.wait_time(), 0.001)

    def requeue_front(self, target: str, held: list[Held]) -> None:
        """Put messages taken but not sent back at the head, in order (the route vanished mid-flush). They were
        counted when queued and are counted again; the budgets are checked at the next `put`."""
        if not held:
            return
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = _TargetQueue()
        queue.items.extendleft(reversed(held))
        for item in held:
            queue.hold(item)
        added = sum(h.size for h in held)
        queue.bytes += added
        self.bytes += added

