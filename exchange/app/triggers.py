"""Trigger orders: stop-market, stop-limit and take-profit orders waiting for the last trade price.

A trigger order rests here, outside the book, until its market's last trade price crosses its trigger:
a stop buys when the price rises to the trigger (sells when it falls to it), a take-profit buys when it falls
to it (sells when it rises to it). The state machine looks at every market's last trade price once per block,
after the block's transactions (`due`), and places what is crossed, oldest created first within a market,
markets in their configured order; what those placements trade moves the price that the next block judges.
So the block whose trades cross a trigger places its order, on every node the same way, and nothing cascades
without bound inside one block. At most MAX_FIRED_PER_BLOCK are placed after one block, markets in their order
and oldest created first within one: the others crossed stay waiting and are judged again, in the same order, at
the next block's last trade price (the price that crossed them stays until a trade moves it), so a crowd of
triggers crossed at once is placed over several blocks instead of holding up one.

Found through two heaps per market (triggers that fire at or below the price, and at or above it) with lazy
deletion: a cancelled trigger leaves a stale entry that `due` skips, and a market's heaps are rebuilt once
they hold more than twice its live entries. Bounded: MAX_PER_ACCOUNT waiting per account, MAX_TOTAL in all.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from exchange.orders import Order

MAX_PER_ACCOUNT = 32
MAX_TOTAL = 100_000
MAX_FIRED_PER_BLOCK = 1_000     # placed after one block, all markets together; the rest at the next block's price
TRIGGER_TYPES = ("stop_market", "stop_limit", "take_profit")


@dataclass(slots=True)
class Trigger:
    """A waiting trigger order: `order` is what it places (type market or limit, not in any book yet)."""

    order: Order
    kind: str              # stop_market | stop_limit | take_profit
    trigger: int           # ticks
    reduce_only: bool
    cap: int | None = None  # placed by an agent with a notional cap (quote units): judged again when it fires

    @property
    def above(self) -> bool:
        """True when it fires as the price reaches the trigger from below (a stop buy, a take-profit sell)."""
        return (self.order.side.value == "buy") == (self.kind != "take_profit")


class Triggers:
    __slots__ = ("entries", "by_account", "_live", "_rising", "_falling")

    def __init__(self) -> None:
        self.entries: dict[str, Trigger] = {}                      # order id -> waiting trigger, in arrival order
        self.by_account: dict[str, dict[str, None]] = {}              # account -> ids of its waiting triggers
        self._live: dict[str, int] = {}                             # market -> waiting triggers
        self._rising: dict[str, list[tuple[int, object, str]]] = {}   # market -> (trigger, key, id): fire at price >= trigger
        self._falling: dict[str, list[tuple[int, object, str]]] = {}  # market -> (-trigger, key, id): fire at price <= trigger

    def __bool__(self) -> bool:
        return bool(self.entries)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.entries

    def get(self, order_id: str) -> Trigger | None:
        return self.entries.get(order_id)

    @staticmethod
    def room_limit(account: str) -> int:
        """How many triggers `account` may have waiting (the same for every account)."""
        return MAX_PER_ACCOUNT

    def room_for(self, account: str) -> str | None:
        if len(self.by_account.get(account, ())) >= MAX_PER_ACCOUNT:
            return "too_many_triggers"
        if len(self.entries) >= MAX_TOTAL:
            return "trigger_table_full"
        return None

    def add(self, entry: Trigger) -> None:
        order = entry.order
        self.entries[order.id] = entry
        self.by_account.setdefault(order.owner, {})[order.id] = None
        self._live[order.market] = self._live.get(order.market, 0) + 1
        if entry.above:
            heapq.heappush(self._rising.setdefault(order.market, []), (entry.trigger, order.created_key, order.id))
        else:
            heapq.heappush(self._falling.setdefault(order.market, []), (-entry.trigger, order.created_key, order.id))
        self._compact(order.market)

    def remove(self, order_id: str) -> Trigger | None:
        entry = self.entries.pop(order_id, None)
        if entry is not None:
            self._live[entry.order.market] -= 1
            owner = entry.order.owner
            ids = self.by_account[owner]
            del ids[order_id]
            if not ids:
                del self.by_account[owner]
        return entry

    def of(self, account: str, market: str | None = None) -> list[Trigger]:
        """`account`'s waiting triggers (in `market` when given), oldest created first (at most MAX_PER_ACCOUNT
        looked at: the account's own index, never the whole table)."""
        entries = self.entries
        found = [entries[i] for i in self.by_account.get(account, ()) if market in (None, entries[i].order.market)]
        found.sort(key=lambda e: e.order.created_key)  # type: ignore[arg-type, return-value]
        return found

    def due(self, market: str, price: int, limit: int = MAX_FIRED_PER_BLOCK) -> list[Trigger]:
        """The triggers of `market` crossed by the last trade price `price`, removed, oldest created first: at most
        `limit` of them; the others crossed stay waiting, judged again at the next block's last trade price."""
        rising, falling = self._rising.get(market), self._falling.get(market)
        if not (rising and rising[0][0] <= price) and not (falling and -falling[0][0] >= price):
            return []
        entries = self.entries
        crossed = [(key, order_id) for trigger, key, order_id in rising or () if trigger <= price
                   and order_id in entries]
        crossed += [(key, order_id) for trigger, key, order_id in falling or () if -trigger >= price
                    and order_id in entries]
        chosen = heapq.nsmallest(limit, crossed) if len(crossed) > limit else sorted(crossed)
        fired: list[Trigger] = []
        for _, order_id in chosen:
            self._take(order_id, fired)
        for heap in (rising, falling):          # fired ones at the tops are gone now: pop them (the rest lazily)
            while heap and heap[0][2] not in entries:
                heapq.heappop(heap)
        self._compact(market)
        return fired

    def _take(self, order_id: str, fired: list[Trigger]) -> None:
        entry = self.remove(order_id)
        if entry is not None:
            fired.append(entry)

    def _compact(self, market: str) -> None:
        if len(self._rising.get(market, ())) + len(self._falling.get(market, ())) > 2 * self._live[market] + 64:
            kept = [e for e in self.entries.values() if e.order.market == market]
            self._rising[market] = [(e.trigger, e.order.created_key, e.order.id) for e in kept if e.above]
            self._falling[market] = [(-e.trigger, e.order.created_key, e.order.id) for e in kept if not e.above]
            heapq.heapify(self._rising[market])
            heapq.heapify(self._falling[market])
