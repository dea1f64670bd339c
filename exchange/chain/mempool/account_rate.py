"""How many operations one account, and one network group, may have admitted to a validator's mempool: by
windows of blocks and by block time.

Accounts and orders cost nothing, so besides each neighbour's budget (tx_budget.py) and the mempool's lanes,
one account's rate is bounded the way dYdX bounds it: by windows of blocks, every one of which must pass
(`ACCOUNT_OPS_PER_BLOCK` in the block being filled, `ACCOUNT_OPS_PER_100_BLOCKS` in the last hundred), *and* by
time. Windows of blocks grow with block speed (a block every 50 ms is twenty windows a second), so each account
also has a token bucket of `ACCOUNT_OPS_RATE` operations a second (bursts of `ACCOUNT_OPS_BURST`), and a group
of accounts arriving together one of `GROUP_OPS_RATE` (the intake charges our own API's accounts as one group; a
neighbour's or follower's network has its share of what is looked at in tx_budget.py); a transaction
weighs one operation more than it holds (TX_WEIGHT: a cancel-all of nothing still costs a signature, an outbox
entry and a place in a block). Once a group's bucket is below half, an account passes only if it spent no more
than an equal part of what the group spent since (max-min fairness): the heaviest accounts of a group are refused
first and a light one on the same node keeps its share. The bucket's last tenth (`LIGHT_SHARE`) is kept for
transactions no bigger than it: accounts that had spent nothing yet took the lower half batch by batch down to
nothing, and a light account's next order, arriving in the few milliseconds before a refill, was refused.

The buckets run on block time (the last block's `time_ms`), not this machine's clock: validators at the same
height refill them alike whatever their clocks, and the same sequence of blocks and transactions gives the same
refusals on every node (a relay refused here is not one a peer's clock let through). Integer milli-operations,
so nothing rounds differently. Accounts in `ACCOUNT_RATE_EXEMPT` (an operator's own market maker) are not
counted, and /status lists them. A transaction over any limit is refused `account_rate` (the API answers 429
with Retry-After; a follower's outbox hands it on again later), and is counted only once it is admitted.
Counting is local to each validator, like CometBFT's CheckTx: it shapes what enters mempools and so blocks, not
what a block may hold. The maps are bounded (least recently counted forgotten first: a forgotten account starts
again with a full bucket, which the group buckets, neighbour budgets and lanes still bound).
"""
from __future__ import annotations

from collections import OrderedDict, deque


TX_WEIGHT = 4       # a transaction weighs four operations more than it holds: its signature, outbox entry, block slot
LIGHT_SHARE = 10    # the last 1/LIGHT_SHARE of a group's bucket goes only to transactions no bigger than it


def weight(ops: int) -> int:
    """What a transaction of `ops` operations takes from the buckets, in milli-operations."""
    return (ops + TX_WEIGHT) * 1000


class BlockTimeBucket:
    """A token bucket refilled by block time in integer milli-operations: `rate` operations a second up to
    `burst`."""

    __slots__ = ("rate", "burst", "level", "stamp")

    def __init__(self, rate: int, burst: int, time_ms: int) -> None:
        self.rate, self.burst = rate, burst * 1000
        self.level, self.stamp = self.burst, time_ms

    def tokens(self, time_ms: int) -> int:
        """Milli-operations available at block time `time_ms` (a time before the stamp adds nothing)."""
        return min(self.burst, self.level + max(0, time_ms - self.stamp) * self.rate)

    def take_milli(self, cost: int, time_ms: int) -> None:
        self.level = self.tokens(time_ms) - cost
        self.stamp = max(self.stamp, time_ms)


class GroupBucket(BlockTimeBucket):
    """A group's bucket, and what each of its accounts spent since it last stood at half or more (`spent`): the
    lower half goes to whoever spent less than the fair share of that."""

    __slots__ = ("spent", "total")

    def __init__(self, rate: int, burst: int, time_ms: int) -> None:
        super().__init__(rate, burst, time_ms)
        self.spent: dict[bytes, int] = {}
        self.total = 0

    def fair(self, account: bytes, cost: int, time_ms: int, max_accounts: int) -> bool:
        """Whether `account` may take `cost` milli-operations: always while the bucket holds half or more; below,
        only if what it spent since is no more than an equal part of all that was (so the heaviest stop first)."""
        left = self.tokens(time_ms)
        if left < cost:
            return False
        if left >= self.burst // 2:
            return True
        mine = self.spent.get(account)
        if mine is None and len(self.spent) >= max_accounts:
            return False
        accounts = len(self.spent) + (mine is None)
        light = self.burst // LIGHT_SHARE
        return ((mine or 0) + cost) * accounts <= self.total + cost and (cost <= light or left - cost >= light)

    def charge(self, account: bytes, cost: int, time_ms: int) -> None:
        if self.tokens(time_ms) >= self.burst // 2:
            self.spent.clear()
            self.total = 0
        self.take_milli(cost, time_ms)
        self.spent[account] = self.spent.get(account, 0) + cost
        self.total += cost


class AccountRate:
    """`windows`: (blocks, operations) pairs; `rate`/`burst`: one account's bucket; `group_rate`/`group_burst`:
    one group's (0 turns a limit off); `exempt`: account ids never counted."""

    def __init__(self, windows: tuple[tuple[int, int], ...] = ((1, 2_000), (100, 50_000)), *, rate: int = 0,
                 burst: int = 0, group_rate: int = 0, group_burst: int = 0, exempt: frozenset[bytes] = frozenset(),
                 max_accounts: int = 65_536, max_groups: int = 4_096, max_group_accounts: int = 1_024) -> None:
        self.windows = tuple((blocks, limit) for blocks, limit in windows if blocks > 0 and limit > 0)
        self.span = max((blocks for blocks, _ in self.windows), default=0)
        self.rate, self.burst = (rate, max(burst, rate)) if rate > 0 else (0, 0)
        self.group_rate, self.group_burst = (group_rate, max(group_burst, group_rate)) if group_rate > 0 else (0, 0)
        self.exempt = exempt
        self.max_accounts, self.max_groups, self.max_group_accounts = max_accounts, max_groups, max_group_accounts
        self._counts: OrderedDict[bytes, deque[list[int]]] = OrderedDict()   # account -> [[height, ops], ...]
        self._buckets: OrderedDict[bytes, BlockTimeBucket] = OrderedDict()
        self._groups: OrderedDict[str, GroupBucket] = OrderedDict()
        self.refused = 0
        self.refused_by: dict[str, int] = {}

    def allows(self, account: bytes, ops: int, height: int, time_ms: int = 0, group: str | None = None) -> bool:
        """Whether `ops` more operations of `account` (arriving in `group`, None: counted in no group) fit every
        window ending at block `height` and the buckets at block time `time_ms`."""
        return self.why_not(account, ops, height, time_ms, group) is None

    def why_not(self, account: bytes, ops: int, height: int, time_ms: int = 0, group: str | None = None) -> str | None:
        """Which limit refuses them (`blocks`, `account_time`, `group_time`), or None."""
        if account in self.exempt:
            return None
        entries = self._counts.get(account)
        for blocks, limit in self.windows:
            if (sum(n for h, n in entries if h > height - blocks) if entries else 0) + ops > limit:
                return "blocks"
        cost = weight(ops)
        mine = self._buckets.get(account)
        if self.rate and (mine.tokens(time_ms) if mine is not None else self.burst * 1000) < cost:
            return "account_time"
        shared = self._groups.get(group) if group is not None and self.group_rate else None
        if shared is not None and not shared.fair(account, cost, time_ms, self.max_group_accounts):
            return "group_time"
        if shared is None and group is not None and self.group_rate and cost > self.group_burst * 1000:
            return "group_time"
        return None

    def refuse(self, why: str) -> None:
        self.refused += 1
        self.refused_by[why] = self.refused_by.get(why, 0) + 1

    def record(self, account: bytes, ops: int, height: int, time_ms: int = 0, group: str | None = None) -> None:
        if account in self.exempt:
            return
        if self.windows:
            entries = self._counts.pop(account, None) or deque()
            while entries and entries[0][0] <= height - self.span:
                entries.popleft()
            if entries and entries[-1][0] == height:
                entries[-1][1] += ops
            else:
                entries.append([height, ops])
            self._counts[account] = entries
            if len(self._counts) > self.max_accounts:
                self._counts.popitem(last=False)
        cost = weight(ops)
        if self.rate:
            bucket = self._buckets.pop(account, None) or BlockTimeBucket(self.rate, self.burst, time_ms)
            bucket.take_milli(cost, time_ms)
            self._buckets[account] = bucket
            if len(self._buckets) > self.max_accounts:
                self._buckets.popitem(last=False)
        if group is not None and self.group_rate:
            shared = self._groups.pop(group, None) or GroupBucket(self.group_rate, self.group_burst, time_ms)
            shared.charge(account, cost, time_ms)
            self._groups[group] = shared
            if len(self._groups) > self.max_groups:
                self._groups.popitem(last=False)

    def __len__(self) -> int:
        return max(len(self._counts), len(self._buckets))

    @property
    def groups(self) -> int:
        return len(self._groups)
