"""How many transactions this validator puts in the blocks it proposes: as many as the network decides within
`target` seconds, learnt from the heights it saw decided.

A block's byte limit is what every validator accepts; how long a block takes is what everyone waits for. Every
node checks and applies every transaction of a block before the next height can start, and an order placed
meanwhile waits for all of it, so a backlog ordered in one block of thousands (a burst from a crowd of peers)
holds every honest order for seconds. Ordered in blocks of what the network decides within `target`, the same
backlog leaves in as many short heights, and an honest order (its lane has a turn in every block, `mempool.reap`)
waits one of them.

The limit is learnt the way TCP learns a window, from what the proposer sees: each height that started with
transactions waiting and was decided in its first round took `seconds` for `ops` transactions (the previous
block's application, this one's checks and votes: the whole network's pace, on the clock the core is given).
A height over `target` with at least `floor` transactions sets the limit to what would have fitted; one at least
half the limit within half the target raises it by a quarter (by `floor` at least), up to the ceiling (the
block's own limits). Heights that waited
for work, or needed a second round (a proposer down, a proposal late), say nothing of how long transactions take,
and are not counted. Only the proposer's own choice changes: validation accepts any block within the byte and
transaction limits, so validators learning different limits agree on every block.
"""
from __future__ import annotations

FLOOR = 64              # transactions: the limit never goes below this (a short height is mostly fixed costs)
START = 128             # transactions: the limit before any height has been measured


class BlockPace:
    def __init__(self, target: float, ceiling: int, *, floor: int = FLOOR, start: int = START) -> None:
        self.target = target        # seconds; 0: no pace, blocks hold up to `ceiling`
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.limit = ceiling if target <= 0 else max(self.floor, min(start, ceiling))
        self.lowered = 0            # heights that set the limit lower (for /status)

    def observe(self, ops: int, seconds: float) -> None:
        """A height that started with transactions waiting was decided in round 0 after `seconds`, holding `ops`."""
        if self.target <= 0 or ops <= 0:
            return
        if seconds > self.target and ops >= self.floor:
            fitted = max(self.floor, int(ops * self.target / seconds))
            if fitted < self.limit:
                self.limit = fitted
                self.lowered += 1
        elif 2 * ops >= self.limit and 2 * seconds <= self.target:
            self.limit = min(self.ceiling, self.limit + max(self.floor, self.limit // 4))

    def view(self) -> dict[str, float | int]:
        return {"target_s": self.target, "limit": self.limit, "ceiling": self.ceiling, "lowered": self.lowered}
