"""DeliveryQueue: messages held for peers we cannot reach yet, bounded, expiring, drained at a warm-up rate.

Each target has its own FIFO of at most `max_messages` (the oldest is dropped to make room) and every
message expires `ttl` seconds after it was queued. When the target becomes reachable the queue drains
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


class _TargetQueue:
    __slots__ = ("items", "bucket", "drain_started")

    def __init__(self) -> None:
        self.items: deque[Held] = deque()
        self.bucket: TokenBucket | None = None
        self.drain_started = 0.0


class DeliveryQueue:
    def __init__(self, max_messages: int = 1000, ttl: float = 60.0, *, max_targets: int = 1024,
                 start_rate: float = 20.0, max_rate: float = 2000.0, clock: Callable[[], float] = time.monotonic,
                 protection: Protection | None = None) -> None:
        self.max_messages = max_messages
        self.ttl = ttl
        self.max_targets = max_targets
        self.start_rate = start_rate
        self.max_rate = max_rate
        self._clock = clock
        self.protection = protection or Protection()
        self._queues: dict[str, _TargetQueue] = {}

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

    def put(self, target: str, message: Message, on_settled: Callable[[SendResult], None] | None = None
            ) -> tuple[bool, Held | None]:
        """Queue a message. Returns (accepted, evicted): not accepted when there are too many targets
        already; `evicted` is the oldest message pushed out of a full queue (settle it as dropped)."""
        queue = self._queues.get(target)
        if queue is None:
            if len(self._queues) >= self.max_targets:
                return False, None
            queue = self._queues[target] = _TargetQueue()
        evicted = queue.items.popleft() if len(queue.items) >= self.max_messages else None
        queue.items.append(self.hold(message, on_settled))
        return True, evicted

    def hold(self, message: Message, on_settled: Callable[[SendResult], None] | None = None) -> Held:
        """A Held for `message` as `put` would queue it (expiry, protection verdict), queued nowhere yet."""
        return Held(message, self._clock() + self.ttl, on_settled, self.protection.covers())

    def expire(self) -> list[Held]:
        """Remove and return every message past its expiry (queues are in expiry order)."""
        now = self._clock()
        gone: list[Held] = []
        for target in list(self._queues):
            items = self._queues[target].items
            while items and items[0].expires <= now:
                gone.append(items.popleft())
            if not items:
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
                expired.append(items.popleft())
            elif head.guard is None or bucket.try_take() or not protection.limited("queue.warmup", head.guard):
                ready.append(items.popleft())
            else:
                break
        if not items:
            del self._queues[target]
            return ready, expired, 0.0
        return ready, expired, max(bucket.wait_time(), 0.001)

    def requeue_front(self, target: str, held: list[Held]) -> None:
        """Put messages taken but not sent back at the head, in order (the route vanished mid-flush)."""
        if not held:
            return
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = _TargetQueue()
        queue.items.extendleft(reversed(held))

