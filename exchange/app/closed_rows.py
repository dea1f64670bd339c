"""The closed orders' section of a snapshot, kept packed in runs, so a snapshot costs a piece per run, not per order.

The history of closed orders (`history.ClosedOrders`) is the longest part of a busy node's snapshot, and only
ever changes at its two ends: an order that closes is added at the newest end, and the oldest are forgotten past
the history's limit. A closed order's row never changes once the order is closed (filled, cancelled or refused
is final: nothing in the state machine writes to an order after it leaves the book), so each row is packed once,
at the end of the block that closed it (`pack`), on every node, in the blocks' own order. Every RUN consecutive
rows are joined into one piece. A snapshot is then a header, the part of the oldest run still kept (one slice),
the whole runs, and the newest rows not yet a run: a few hundred pieces for a full history, however many orders
closed since the last snapshot, and nothing for a forked child (`exchange/chain/store/snapshot_fork.py`) to pack
again.

The unit tests compare every snapshot they take with the document built the plain way
(`tests/snapshot_reference.py`), whatever the run length.
"""
from __future__ import annotations

from collections import deque
from enum import Enum
from itertools import accumulate
from typing import NamedTuple

import msgpack

from exchange.app.history import ClosedOrders
from exchange.app.views import order_key
from exchange.orders import Order
from exchange.wire import Wire

RUN = 256       # rows joined into one kept piece


def closed_row(order: Order) -> Wire:
    """A closed order's row in the snapshot (app/snapshot.py says what each field is)."""
    return [order.id, order.market, _value(order.side), _value(order.type), order.price, order.quantity,
            order.remaining, order.owner, list(order_key(order)), _value(order.self_trade), order.status.value,
            order.reason]


def _value(member: Enum | None) -> object:
    return None if member is None else member.value


class _Run(NamedTuple):
    first: int              # the place of its first row in the whole sequence of closed orders
    joined: bytes           # its RUN rows, joined
    starts: list[int]       # where each row starts in `joined`


class ClosedRows:
    """One state's closed-order rows, packed once each and joined RUN at a time."""

    __slots__ = ("_runs", "_newest", "_newest_first", "_packed")

    def __init__(self) -> None:
        self._runs: deque[_Run] = deque()   # oldest first
        self._newest: list[bytes] = []      # the rows after the last run, fewer than RUN
        self._newest_first = 0              # the place of `_newest[0]` in the whole sequence
        self._packed = 0                    # how many closed orders have been packed (or were gone unpacked)

    def pack(self, closed: ClosedOrders) -> None:
        """Packs the rows of the orders closed since the last call (at the end of each block)."""
        unpacked = closed.added - self._packed
        if not unpacked:
            return
        kept_from = closed.added - len(closed)
        if kept_from > self._packed:        # some closed and were forgotten unpacked: all packed before is forgotten too
            self._newest = []
            self._newest_first = kept_from
            unpacked = len(closed)
        newest, packb = self._newest, _PACKER.pack
        for order in closed.newest(unpacked):
            newest.append(packb(closed_row(order)))
            if len(newest) == RUN:
                self._runs.append(_Run(self._newest_first, b"".join(newest), [0, *accumulate(map(len, newest))]))
                self._newest_first += RUN
                newest.clear()
        self._packed = closed.added
        self._forget(kept_from)

    def parts(self, closed: ClosedOrders, parts: list[bytes]) -> None:
        """Appends to `parts` what joins to `packb([closed_row(order) for order in closed])`."""
        self.pack(closed)
        kept_from = closed.added - len(closed)
        self._forget(kept_from)
        parts.append(_PACKER.pack_array_header(len(closed)))
        runs = iter(self._runs)
        oldest = next(runs, None)
        if oldest is not None:
            skip = kept_from - oldest.first
            parts.append(oldest.joined[oldest.starts[skip]:] if skip > 0 else oldest.joined)
            parts += (run.joined for run in runs)
        parts += self._newest[max(0, kept_from - self._newest_first):]

    def _forget(self, kept_from: int) -> None:
        """Drops the runs whose every row is older than the oldest closed order kept."""
        runs = self._runs
        while runs and runs[0].first + RUN <= kept_from:
            runs.popleft()


_PACKER = msgpack.Packer(use_bin_type=True)
