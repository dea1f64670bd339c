"""How many operations one account may have admitted to a validator's mempool, counted in blocks.

Accounts and orders cost nothing, so besides each neighbour's budget (tx_budget.py) and the mempool's
lanes, one account's rate is bounded the way dYdX bounds it: by windows of blocks, every one of which must
pass (`ACCOUNT_OPS_PER_BLOCK` operations in the block being filled, `ACCOUNT_OPS_PER_100_BLOCKS` in the
last hundred). A transaction over either is refused `account_rate` (the API answers 429 with
Retry-After; a follower's outbox hands it on again later), and is counted only once it is admitted.
Counting is local to each validator, like CometBFT's CheckTx: it shapes what enters mempools and so
blocks, not what a block may hold. The map of accounts is bounded (least recently counted forgotten
first: a forgotten account starts again at zero, which the neighbour budgets and lanes still bound).
"""
from __future__ import annotations

from collections import OrderedDict, deque


class AccountRate:
    def __init__(self, windows: tuple[tuple[int, int], ...] = ((1, 2_000), (100, 50_000)),
                 max_accounts: int = 65_536) -> None:
        self.windows = tuple((blocks, limit) for blocks, limit in windows if blocks > 0 and limit > 0)
        self.span = max((blocks for blocks, _ in self.windows), default=0)
        self.max_accounts = max_accounts
        self._counts: OrderedDict[bytes, deque[list[int]]] = OrderedDict()   # account -> [[height, ops], ...]
        self.refused = 0

    def allows(self, account: bytes, ops: int, height: int) -> bool:
        """Whether `ops` more operations of `account` fit every window ending at block `height`."""
        entries = self._counts.get(account)
        if not self.windows or entries is None:
            return not self.windows or all(ops <= limit for _, limit in self.windows)
        for blocks, limit in self.windows:
            if sum(n for h, n in entries if h > height - blocks) + ops > limit:
                return False
        return True

    def record(self, account: bytes, ops: int, height: int) -> None:
        if not self.windows:
            return
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

    def __len__(self) -> int:
        return len(self._counts)
