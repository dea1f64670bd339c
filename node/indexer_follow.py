"""Following a network's certified blocks from one or more nodes into the history database.

`Follower.step` asks the node it is on for the blocks after the replica's height (`/chain/blocks`), checks and
applies them (`node/indexer_replica.py`) and writes the ones vouched for (`node/indexer.py` `add_blocks`), past
what the database already held. A node whose answer fails a check is named in the log and the follower moves
to the next `--node`; what it verified before the failing block is written, nothing after it. The chain id is
learnt from the first node on first use and kept in the database: a node of another chain is refused.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from node.indexer import HistoryStore
from node.indexer_replica import BlockSource, Diverged, Replica, VerifiedBlock
from node.light.verify import Proven, Refused, proven

log = logging.getLogger("exchange_node.indexer")
ANSWER_SECONDS = 30.0                   # a node's whole answer, however it drips: past it the node is unreachable
ANSWER_BYTES = 64 * 1024 * 1024         # an answer's body read at most (`/chain/blocks` answers about 4 MiB)


@dataclass
class NodeBlocks:
    """A node's public chain routes as a BlockSource (`call`: node/cli/client.py's)."""

    url: str
    token: str | None
    call: Callable[..., tuple[int, object]]

    def _get(self, path: str) -> object:
        from node.cli.client import ApiFailure, NodeUnreachable

        try:
            return self.call(self.url, "GET", path, token=self.token, timeout=ANSWER_SECONDS, deadline=ANSWER_SECONDS,
                             max_bytes=ANSWER_BYTES)[1]
        except NodeUnreachable as exc:
            raise Refused(self.url, "unreachable", f"{path}: {exc.reason}") from None
        except ApiFailure as exc:
            code = exc.error.get("code") if exc.status < 500 else "unreachable"
            raise Refused(self.url, str(code or "http_error"), f"{path}: HTTP {exc.status}: {exc}") from None

    def genesis(self) -> object:
        return self._get("/chain/genesis")

    def epochs(self) -> object:
        return self._get("/chain/epochs")

    def blocks(self, start: int) -> object:
        return self._get(f"/chain/blocks?from={start}")


class Follower:
    """One replica, several nodes to ask, one database."""

    def __init__(self, store: HistoryStore, sources: Sequence[BlockSource]) -> None:
        if not sources:
            raise ValueError("no node to follow")
        self.store = store
        self.sources = list(sources)
        self.on = 0                             # the index of the node asked now
        self.replica: Replica | None = None
        self.held = store.progress()            # (height, block id) written before this start
        self.snapshot: tuple[int, bytes] | None = None     # the replay's newest, until a written height covers it

    @property
    def source(self) -> BlockSource:
        return self.sources[self.on]

    def next_node(self) -> None:
        self.on = (self.on + 1) % len(self.sources)

    def _proven(self) -> Proven:
        source = self.source
        return proven(source.url, self.store.chain_id(), source.genesis(), source.epochs())

    def step(self) -> tuple[int, int]:
        """Ask the current node once: (blocks it answered, new trades written). Raises Refused (after writing what
        was verified before the failing block) or Diverged."""
        if self.replica is None:
            chain = self._proven()
            self.store.claim(chain.chain_id)
            self.replica = self._resumed(Replica(chain))
        replica, url = self.replica, self.source.url
        answer = self.source.blocks(replica.next_height)
        items = answer.get("blocks") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise Refused(url, "malformed", "its blocks answer is not {\"blocks\": [...]}")
        last = answer.get("last_height") if isinstance(answer, dict) else None
        if not items and isinstance(last, int) and last >= replica.next_height:
            log.warning("%s says it holds blocks up to %d but served none from %d", url, last, replica.next_height)
        vouched: list[VerifiedBlock] = []
        try:
            for item in items:
                try:
                    done = replica.take(url, item)
                except Refused as exc:
                    if exc.reason != "unproven_set":
                        raise
                    replica.chain = self._proven()       # a set change since the proofs were fetched
                    done = replica.take(url, item)
                if done is not None:
                    vouched.append(done)
        finally:
            added = self._write(vouched)
        return len(items), added

    def _resumed(self, replica: Replica) -> Replica:
        """The replica from the snapshot the database keeps, or from the genesis when it keeps none (or one that
        does not restore)."""
        kept = self.store.snapshot()
        if kept is not None:
            try:
                replica.resume(kept[1])
                log.info("resuming the replay from its snapshot of height %d", kept[0])
            except ValueError as exc:
                log.error("the replay's snapshot of height %d does not restore (%s): replaying from the genesis",
                          kept[0], exc)
                replica = Replica(replica.chain)
        return replica

    def _write(self, vouched: list[VerifiedBlock]) -> int:
        held = self.held
        if held is not None:
            for block in vouched:
                if block.height == held[0] and block.block_id != held[1]:
                    raise Diverged(f"the database holds block {held[1][:16]} at height {held[0]}, the chain "
                                   f"{block.block_id[:16]}")
            vouched = [block for block in vouched if block.height > held[0]]
        if self.replica is not None:
            self.snapshot = self.replica.take_snapshot() or self.snapshot
        top = max([held[0] if held else 0, *(block.height for block in vouched)])
        keep = self.snapshot if self.snapshot is not None and self.snapshot[0] <= top else None
        added = self.store.add_blocks(vouched, keep)
        if keep is not None:
            self.snapshot = None
        return added


def follow(follower: Follower, interval: float, running: Callable[[], bool],
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Index until `running()` says stop: polling every `interval` seconds once caught up, moving to the next
    node when one is refused or answers no new block (a node withholding blocks cannot pin the indexer while
    another serves them). Diverged propagates: the indexer stops."""
    while running():
        try:
            answered, added = follower.step()
        except Refused as exc:
            others = len(follower.sources) > 1
            log.log(logging.WARNING if exc.reason == "unreachable" else logging.ERROR,
                    "refused %s (%s): %s%s", exc.node, exc.reason, exc.message,
                    "; trying the next node" if others else "; retrying")
            follower.next_node()
            sleep(interval)
            continue
        if added:
            log.info("indexed %d trades up to height %d", added, follower.replica.state.height - 1
                     if follower.replica else 0)
        if answered == 0:              # caught up, or withholding: the next poll asks the next node
            follower.next_node()
            sleep(interval)
