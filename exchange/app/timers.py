"""What the chain does by block time alone: good-til-time orders and accounts' dead-man's switches.

Both are judged from the block's consensus time, not any node's clock, so a switch fires even when the
node its owner used is gone, and every node cancels the same orders in the same block. An order's
`until` lives here while it rests (forgotten when it leaves the book); a switch is one time per account.
`due` hands out what is due in a fixed order (time, then switches before orders, then key), so the
cancellations and the closed-order history they write are the same bytes everywhere.

Entries are found through a heap with lazy deletion: moving or clearing a switch, or an order leaving
the book, leaves a stale heap entry that `due` skips. The heap is rebuilt once it holds more than twice
the live entries, so an account refreshing its switch every second cannot grow it without bound.
"""
from __future__ import annotations

import heapq

from exchange.wire import Wire

SWITCH, ORDER = 0, 1            # heap kinds: at one time, switches fire before single orders expire
MAX_SWITCH_MS = 86_400_000      # a switch is set at most this far past the block's time


class Timers:
    def __init__(self) -> None:
        self.order_until: dict[str, int] = {}     # resting order id -> until (ms)
        self.switches: dict[str, int] = {}        # account -> when its switch fires (ms)
        self._heap: list[tuple[int, int, str]] = []

    def __bool__(self) -> bool:
        return bool(self.order_until or self.switches)

    def set_order(self, order_id: str, until: int) -> None:
        self.order_until[order_id] = until
        self._push(until, ORDER, order_id)

    def drop_order(self, order_id: str) -> None:
        self.order_until.pop(order_id, None)

    def set_switch(self, account: str, at: int | None) -> None:
        """Arm (or move) `account`'s switch to fire at `at`; None disarms it."""
        if at is None:
            self.switches.pop(account, None)
            return
        self.switches[account] = at
        self._push(at, SWITCH, account)

    def due(self, now_ms: int) -> list[tuple[int, str]]:
        """(kind, key) of every live timer at or before `now_ms`, each removed, in the order they fire."""
        fired: list[tuple[int, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            at, kind, key = heapq.heappop(heap)
            live = self.switches if kind == SWITCH else self.order_until
            if live.get(key) == at:
                del live[key]
                fired.append((kind, key))
        return fired

    def _push(self, at: int, kind: int, key: str) -> None:
        heapq.heappush(self._heap, (at, kind, key))
        if len(self._heap) > 2 * (len(self.order_until) + len(self.switches)) + 64:
            self._heap = [(at, SWITCH, key) for key, at in self.switches.items()] + \
                         [(at, ORDER, key) for key, at in self.order_until.items()]
            heapq.heapify(self._heap)

    # ------------------------------------------------------------------ snapshots

    def rows(self) -> list[list[Wire]]:
        """`[[[account, at], ...], [[order id, until], ...]]`, each sorted by key."""
        return [[[key, at] for key, at in sorted(self.switches.items())],
                [[key, at] for key, at in sorted(self.order_until.items())]]

    @classmethod
    def from_rows(cls, switches: list[Wire], orders: list[Wire]) -> Timers:
        timers = cls()
        for account, at in switches:
            timers.set_switch(account, at)
        for order_id, until in orders:
            timers.set_order(order_id, until)
        return timers
