"""Block sync: how a node that is behind gets the certified blocks it lacks, and helps others get theirs.

Three ways in, one way to apply. A certified block arrives as a decision broadcast, as a catch-up a
validator sends to one it heard voting at a height already decided (`help_behind`, `send_catchups`), or in
a sync answer to our request (`on_sync_request` / `on_sync_response`, at most one request in flight, to
the best peer by claimed height). Blocks ahead of the next height wait in a bounded buffer; the next one
is applied on its quorum certificate (`on_certified`), checked against our own state first.

Claimed heights (heartbeats, sync answers) are hints, never trusted: a peer that claims blocks and hands
none over is struck and its claims stop counting for a while, and the map of claims is bounded, since a
fresh key costs nothing.
"""
from __future__ import annotations

import logging

from exchange.chain.blocks import Block, Commit, Header, Malformed
from exchange.chain.core_view import CoreView
from exchange.crypto import node_id_for
from exchange.chain.effects import PENALTY_INVALID, NeedSnapshot, SendTo
from exchange.app.txs import InvalidTx

log = logging.getLogger("exchange.chain")

MAX_HEARD = 4096            # neighbours whose claimed heights are remembered (pruned to half, newest first)


class BlockSync:
    """One node's catch-up bookkeeping: claimed heights, the request in flight, held blocks, help owed."""

    def __init__(self, core: CoreView) -> None:
        self.core = core
        self._buffered: dict[int, tuple[Block, Commit, str | None]] = {}
        self._buffered_bytes = 0
        self._heard: dict[str, tuple[int, float]] = {}                # node id -> (its claimed height, when)
        self._heard_lag: dict[str, int] = {}          # node id -> our height minus its claim, when it claimed
        self._unbacked: dict[str, tuple[int, float]] = {}             # node id -> (claims it failed to back, last)
        self._sync_inflight: tuple[str, float] | None = None
        self._catchup_sent: dict[str, tuple[int, float]] = {}         # node -> (height, when) last helped
        self._maybe_behind: dict[str, tuple[int, float]] = {}         # node -> (height heard at, since when)
        self._future_warned = 0

    def tick(self, now: float) -> None:
        self.sync_if_behind(now)
        if self._maybe_behind:
            self.send_catchups(now)

    def next_deadline(self) -> float | None:
        """When the earliest catch-up owed falls due (None: none owed)."""
        catchup = min((since for _, since in self._maybe_behind.values()), default=None)
        return None if catchup is None else catchup + self.core.config.catchup_delay

    def help_behind(self, validator: bytes, height: int, sender: str | None) -> None:
        """A validator heard at a height we decided. Usually only its vote was late (the fifth precommit
        arrives after the quorum of four) and the decision broadcast reaches it anyway; if it is still
        not past that height `catchup_delay` later (`send_catchups`), it gets the certified block."""
        if validator not in self.core.state.validators.index:
            return                      # not a validator of ours (and unverified): nothing to keep for it
        node = node_id_for(validator)
        known = self._maybe_behind.get(node)
        if known is None or height > known[0]:
            self._maybe_behind[node] = (height, self.core.now if known is None else known[1])

    def moved_on(self, validator: bytes, height: int) -> None:
        """A validator's vote or proposal at `height` (above ours): it has every block below it."""
        if not self._maybe_behind:
            return
        node = node_id_for(validator)
        known = self._maybe_behind.get(node)
        if known is not None and known[0] < height:
            del self._maybe_behind[node]

    def send_catchups(self, now: float) -> None:
        due = [(node, height) for node, (height, since) in self._maybe_behind.items()
               if now - since >= self.core.config.catchup_delay]
        for node, height in due:
            del self._maybe_behind[node]
            heard = self._heard.get(node)
            if heard is None or heard[0] < height:      # its own heartbeat does not say it has the block
                self._send_catchup(node, height)

    def _send_catchup(self, node: str, height: int) -> None:
        """That height's certified block, at most once per `sync_retry` for a height it was sent."""
        sent = self._catchup_sent.get(node)
        if sent is not None and sent[0] >= height and self.core.now - sent[1] < self.core.config.sync_retry:
            return
        stored = self.core.blocks.get(height)
        if stored is not None:
            self._catchup_sent[node] = (height, self.core.now)
            self.core.emit(SendTo(node, {"type": "chain_decision", "id": stored[0].id.hex(),
                                                "body": [stored[0].wire(), stored[1].wire()]}))

    def on_certified(self, block: Block, commit: Commit, sender: str | None, now: float) -> None:
        """A block with its quorum certificate (a decision broadcast, or a catch-up answer)."""
        self.core.counters["decisions_received"] += 1
        if commit.height != block.height or commit.block_id != block.id:
            self.core.penalize(sender, PENALTY_INVALID, "commit_not_for_block")
            return
        height = block.height
        if height <= self.core.state.height:
            return
        if height > self.core.state.height + 1:
            if self._buffer(block, commit, sender):
                self.note_ahead(sender, height, now)
            return
        self._take_certified(block, commit, sender, now)
        while self.core.state.height + 1 in self._buffered and not self.core.halted:
            block, commit, source = self._unbuffer(self.core.state.height + 1)
            self._take_certified(block, commit, source, now)

    def _buffer(self, block: Block, commit: Commit, sender: str | None) -> bool:
        """Hold a certified block until the ones before it arrive. Its parent and state cannot be checked yet,
        so what anyone can make us hold is bounded: heights within `max_buffered_blocks` of ours,
        `max_buffered_bytes` in all, and a quarter of that per sender; and its certificate must check out against
        our validator set first. False when it does not: a block made up (a fresh key's garbage signatures), or
        one signed by a set that changes before its height, which the sync fetches once we get there; either
        way it is neither held nor believed as a claim of that height. Nobody is penalised (an honest peer may
        pass on a block of a later set)."""
        height, size = block.height, block.size
        config = self.core.config
        if height > self.core.state.height + config.max_buffered_blocks or height in self._buffered:
            return True
        if not self.core.check.commit_ok(commit, block):
            self.core.counters["ahead_unverified"] = self.core.counters.get("ahead_unverified", 0) + 1
            return False
        by_sender = sum(b.size for b, _, s in self._buffered.values() if s == sender)
        if self._buffered_bytes + size > config.max_buffered_bytes or by_sender + size > config.max_buffered_bytes // 4:
            self.core.counters["buffer_refused"] = self.core.counters.get("buffer_refused", 0) + 1
            return True
        self._buffered[height] = (block, commit, sender)
        self._buffered_bytes += size
        return True

    def _unbuffer(self, height: int) -> tuple[Block, Commit, str | None]:
        entry = self._buffered.pop(height)
        self._buffered_bytes -= entry[0].size
        return entry

    def prune_buffered(self) -> None:
        for height in [h for h in self._buffered if h <= self.core.state.height]:
            self._unbuffer(height)

    def _take_certified(self, block: Block, commit: Commit, sender: str | None, now: float) -> None:
        state = self.core.state
        if not self.core.check.commit_ok(commit, block):
            self.core.penalize(sender, PENALTY_INVALID, "bad_commit")
            return
        header = block.header
        if header.prev_id != state.last_block_id or header.chain_id != self.core.chain_id:
            self.core.penalize(sender, PENALTY_INVALID, "certified_block_wrong_parent")
            return
        if header.app_hash != state.hash:
            # a quorum certified a block built on a state other than ours: our state diverged (a bug, or a
            # corrupted store); going on would serve wrong books, so stop and say so
            self.core.halt(f"state diverged at height {header.height}: the network's app hash is "
                       f"{header.app_hash.hex()[:16]}, ours {state.hash.hex()[:16]}")
            return
        if header.time_ms <= state.time_ms:
            self.core.halt(f"a certified block at height {header.height} moves time backwards ({header.time_ms} ms, "
                       f"after {state.time_ms} ms): a quorum certified what every honest node refuses")
            return
        if header.time_ms > self.core.now_ms + self.core.config.max_clock_drift_ms:
            # a quorum may certify a time far ahead; we do not apply it before our clock gets there (the block
            # is fetched again then), so nobody can expire every order by moving time
            self._future_certified(header)
            return
        try:
            txs = self.core.check.decode(block)
        except (Malformed, InvalidTx) as exc:
            self.core.halt(f"a certified block at height {header.height} does not decode: {exc}")
            return
        self.core.apply(block, commit, announce=False, refused=self.core.check.refused_txs(txs))
        self.core.start_height(now)

    def _future_certified(self, header: Header) -> None:
        ahead = header.time_ms - self.core.now_ms
        self.core.counters["future_certified_blocks"] = self.core.counters.get("future_certified_blocks", 0) + 1
        if self._future_warned != header.height:
            self._future_warned = header.height
            log.error("a certified block at height %d is %.1f s ahead of this node's clock: not applied until the "
                      "clock gets there (check this machine's clock if every node reports it)", header.height,
                      ahead / 1000)

    def on_sync_request(self, body: object, sender: str | None) -> None:
        if sender is None or type(body) is not list or len(body) != 2 \
                or not all(type(v) is int and v >= 1 for v in body):
            raise Malformed("bad_sync_request")
        first, last = body[0], min(body[1], self.core.state.height, body[0] + self.core.config.sync_batch - 1)
        items = []
        size = 0
        for height in range(first, last + 1):
            stored = self.core.blocks.get(height)
            if stored is None:
                break
            size += stored[0].size
            items.append([stored[0].wire(), stored[1].wire()])
            if size > self.core.config.max_block_bytes:
                break
        first_kept = getattr(self.core.blocks, "first_height", 1)
        self.core.emit(SendTo(sender, {"type": "chain_sync_response", "body": [items, self.core.state.height, first_kept]}))

    def on_sync_response(self, body: object, sender: str | None, now: float) -> None:
        if type(body) is not list or len(body) not in (2, 3) or type(body[0]) is not list or type(body[1]) is not int:
            raise Malformed("bad_sync_response")
        if self._sync_inflight is not None and self._sync_inflight[0] == sender:
            self._sync_inflight = None
        items, their_height = body[0], body[1]
        their_first = body[2] if len(body) == 3 and type(body[2]) is int else 1
        if not items and their_first > self.core.state.height + 1 and their_height > self.core.state.height and sender:
            self.core.emit(NeedSnapshot(sender))      # they compacted the blocks we lack
            return
        if sender is not None:
            self._heard[sender] = (their_height, now)
            self._heard_lag[sender] = self.core.state.height - their_height
            if not items and their_height > self.core.state.height:
                # it claims blocks we lack yet hands over none: its claims stop counting until it backs one
                self._strike(sender, now)
                self.core.penalize(sender, 10.0, "claimed_height_not_backed")
                return
            if items:
                self._unbacked.pop(sender, None)
        for item in items:
            if type(item) is not list or len(item) != 2:
                raise Malformed("bad_sync_item")
            block, commit = Block.from_wire(item[0]), Commit.from_wire(item[1])
            if block.height == self.core.state.height + 1:
                before = self.core.state.height
                self.on_certified(block, commit, sender, now)
                if self.core.state.height == before:
                    return
                self.core.counters["synced_blocks"] += 1
        if self.core.state.height < their_height:
            self._request_sync(sender, now)

    def peer_height(self, node_id: str, height: int, now: float) -> None:
        """A neighbour's chain height (from its heartbeat). A validator neighbour at our height is live even
        when nothing is being decided: an idle chain (a long EMPTY_BLOCK_INTERVAL) sends no votes, and its
        quorum must not look lost between blocks."""
        self.core.set_now(now)
        if height >= self.core.state.height:
            self.core.heard_validator(node_id, now)
        self._heard[node_id] = (height, now)
        self._heard_lag[node_id] = self.core.state.height - height
        if len(self._heard) > MAX_HEARD:
            self._forget_unheard(now)
        if height > self.core.state.height + 1:
            self.note_ahead(node_id, height, now)

    def _forget_unheard(self, now: float) -> None:
        """Anyone may link with a fresh key and say a height: keep the claims of the last minute, and of
        those at most MAX_HEARD, the newest."""
        keep = sorted(((t, node) for node, (_, t) in self._heard.items() if now - t <= 60.0), reverse=True)
        kept = {node for _, node in keep[:MAX_HEARD // 2]}
        for node in [node for node in self._heard if node not in kept]:
            del self._heard[node]
            self._heard_lag.pop(node, None)

    def note_ahead(self, peer: str | None, height: int, now: float) -> None:
        if peer is not None and height > self.core.state.height:
            heard = self._heard.get(peer)
            if heard is None or heard[0] < height:
                self._heard[peer] = (height, now)
            self._request_sync(peer, now)

    def best_claimed(self, now: float, within: float = 10.0, validators_only: bool = False) -> tuple[int, str] | None:
        """The highest height a recent peer claims (with who), among peers that back what they claim: one
        that was asked for the blocks it claims and handed over none no longer counts until it does. With
        `validators_only`, only the current validators' claims count (a fresh key costs nothing, so a
        stranger's claim must not make a node call itself behind)."""
        members = set(self.core.state.validators.node_ids) if validators_only else None
        return max(((h, node) for node, (h, t) in self._heard.items()
                    if now - t < within and not self._discounted(node, now)
                    and (members is None or node in members)), default=None)

    def _strike(self, node: str, now: float) -> None:
        count, _ = self._unbacked.get(node, (0, now))
        self._unbacked[node] = (count + 1, now)

    def _discounted(self, node: str, now: float) -> bool:
        """Two unbacked claims in the last 30 s: ignore what it claims for now (a slow honest peer recovers)."""
        strikes = self._unbacked.get(node)
        return strikes is not None and strikes[0] >= 2 and now - strikes[1] < 30.0

    def _request_sync(self, peer: str | None, now: float) -> None:
        if peer is None:
            return
        inflight = self._sync_inflight
        if inflight is not None and now - inflight[1] < self.core.config.sync_retry:
            return
        if inflight is not None:          # the last request went unanswered
            self._strike(inflight[0], now)
        self._sync_inflight = (peer, now)
        first = self.core.state.height + 1
        self.core.emit(SendTo(peer, {"type": "chain_sync_request",
                                            "body": [first, first + self.core.config.sync_batch - 1]}))

    def sync_if_behind(self, now: float) -> None:
        best = self.best_claimed(now)
        if best is not None and best[0] > self.core.state.height and now - self.core.last_commit_at > self.core.config.sync_retry:
            self._request_sync(best[1], now)

    def live_and_caught_up(self, key: bytes) -> bool:
        """A standby that would vote at once if given a seat: heard within `live_after`, at most two blocks
        behind us when it last said its height. Its claim is compared with our height at that moment, not
        now: under steady traffic blocks come faster than heartbeats, and a live standby would otherwise
        look behind between any two of them (no successor for a leave, no promotion)."""
        if key == self.core.public_key:
            return True
        node_id = node_id_for(key)
        heard = self._heard.get(node_id)
        return heard is not None and self.core.now - heard[1] <= self.core.config.live_after \
            and self._heard_lag.get(node_id, 3) <= 2

