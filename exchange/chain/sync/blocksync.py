"""Block sync: how a node that is behind gets the certified blocks it lacks, and helps others get theirs.

Three ways in, one way to apply. A certified block arrives as a decision broadcast, as a catch-up a
validator sends to one it heard voting at the height just decided (`help_behind`, `send_catchups`), or in
a sync answer to our request (`on_sync_request` / `on_sync_response`, at most one request in flight). Blocks
ahead of the next height wait in a bounded buffer; the next one is applied on its quorum certificate
(`on_certified`), checked against our own state first.

Claimed heights (heartbeats, votes, sync answers) are hints (`claims.py`): one counts only when f + 1
current validators claim it or we checked a quorum certificate at that height (`network_height`), and sync
asks a claimant of that height. A stranger's claim is tried only when nothing counts (fewer than f + 1
validators heard within `live_after`) and no block came for `sync_retry`. What we serve is budgeted per peer with a global cap
(`sync_budget.py`), and a catch-up is sent only for the last two heights, so old votes replayed cannot make
us send every block we keep.
"""
from __future__ import annotations

import random
from typing import Protocol

import logging

from exchange.chain.types.blocks import Block, BlockSource, Commit, Header, Malformed
from exchange.chain.sync.claims import HeightClaims
from exchange.chain.consensus.block_check import BlockCheck
from exchange.chain.sync.sync_budget import Bucket, SyncBudget
from exchange.crypto import node_id_for
from exchange.chain.effects import PENALTY_INVALID, NeedSnapshot, SendTo
from exchange.app.txs import InvalidTx
from exchange.chain.effects import ChainEffect
from exchange.chain.state.view import CoreBasics

log = logging.getLogger("exchange.chain")

CLAIMS_WITHIN = 10.0        # s a claim counts after it was made
CATCHUP_WINDOW = 2          # a validator heard voting this many heights below ours or less is sent the block
AHEAD_CHECKS_PER_S = 4.0    # certificates of blocks far ahead whose signatures we check, a second, from anyone
PRUNE_EVERY = 1.0           # s between prunes of the per-identity maps


class SyncCore(CoreBasics, Protocol):
    """The core as block sync uses it: the state it checks blocks against, applies certified blocks
    and starts heights through, and the effects it emits.
    Read-only (a part writes only the basics' `counters`)."""

    def apply(self, block: Block, commit: Commit, *, announce: bool, refused: dict[int, str] | None = None) -> None: ...

    @property
    def blocks(self) -> BlockSource: ...

    def emit(self, effect: ChainEffect) -> None: ...

    def halt(self, reason: str) -> None: ...

    @property
    def halted(self) -> str | None: ...

    def heard_validator(self, sender: str | None, now: float) -> None: ...

    @property
    def last_commit_at(self) -> float: ...

    @property
    def now(self) -> float: ...

    @property
    def now_ms(self) -> int: ...

    def penalize(self, peer: str | None, points: float, reason: str) -> None: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def rng(self) -> random.Random: ...

    def set_now(self, now: float) -> None: ...

    def start_height(self, now: float) -> None: ...


class BlockSync:
    """One node's catch-up bookkeeping: claimed heights, the request in flight, held blocks, help owed."""

    def __init__(self, core: SyncCore, check: BlockCheck) -> None:
        self.core = core
        self.check = check
        config = core.config
        self._buffered: dict[int, tuple[Block, Commit, str | None]] = {}
        self._buffered_bytes = 0
        self.claims = HeightClaims()
        self.budget = SyncBudget(config.sync_peer_rate, config.sync_peer_bytes, config.sync_total_bytes)
        self._verified_ahead = 0                  # the highest height above ours whose certificate we checked
        self._ahead_checks = Bucket(AHEAD_CHECKS_PER_S, AHEAD_CHECKS_PER_S, core.now)
        self._sync_inflight: tuple[str, float] | None = None
        self._catchup_sent: dict[str, tuple[int, float]] = {}         # node -> (height, when) last helped
        self._maybe_behind: dict[str, tuple[int, float]] = {}         # node -> (height heard at, since when)
        self._future_warned = 0
        self._pruned_at = core.now

    def tick(self, now: float) -> None:
        self.sync_if_behind(now)
        if self._maybe_behind:
            self.send_catchups(now)
        if now - self._pruned_at >= PRUNE_EVERY:
            self.prune(now)

    def prune(self, now: float) -> None:
        """Forget old claims and strikes, and help owed to nodes that hold no seat now."""
        self._pruned_at = now
        self.claims.prune(now)
        members = set(self.core.state.validators.node_ids)
        for table in (self._catchup_sent, self._maybe_behind):
            for node in [node for node in table if node not in members]:
                del table[node]

    def next_deadline(self) -> float | None:
        """When the earliest catch-up owed falls due (None: none owed)."""
        catchup = min((since for _, since in self._maybe_behind.values()), default=None)
        return None if catchup is None else catchup + self.core.config.catchup_delay

    def help_behind(self, validator: bytes, height: int, sender: str | None) -> None:
        """A validator heard at a height we decided. Usually only its vote was late (the fifth precommit
        arrives after the quorum of four) and the decision broadcast reaches it anyway; if it is still
        not past that height `catchup_delay` later (`send_catchups`), it gets the certified block. Only for
        the last CATCHUP_WINDOW heights: a validator further behind syncs by asking, and anyone can replay a
        validator's old precommits (they are in every commit) to have us send it one block for each."""
        if validator not in self.core.state.validators.index or height <= self.core.state.height - CATCHUP_WINDOW:
            return                      # not a validator of ours (and unverified), or old: nothing to keep for it
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
            heard = self.claims.heard(node)
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
                self._check_ahead(block, commit, sender, now)
                self.note_ahead(sender, height, now)
            elif block.header.validators_hash == self.core.state.validators.hash:
                # it names our set and that set did not sign it: whoever sent it made it up (an honest node
                # never passes on a block ahead of it: judge_certified)
                self.core.penalize(sender, PENALTY_INVALID, "bad_commit_ahead")
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
        way it is neither held nor believed as a claim of that height. Its sender is penalised only when the block
        names our current set (`on_certified`): one of a later set may come from an honest peer."""
        height, size = block.height, block.size
        config = self.core.config
        if height > self.core.state.height + config.max_buffered_blocks or height in self._buffered:
            return True
        if not self.check.commit_ok(commit, block):
            self.core.counters["ahead_unverified"] = self.core.counters.get("ahead_unverified", 0) + 1
            return False
        self._verified_ahead = max(self._verified_ahead, height)    # our validators certified it: reached
        by_sender = sum(b.size for b, _, s in self._buffered.values() if s == sender)
        if self._buffered_bytes + size > config.max_buffered_bytes or by_sender + size > config.max_buffered_bytes // 4:
            self.core.counters["buffer_refused"] = self.core.counters.get("buffer_refused", 0) + 1
            return True
        self._buffered[height] = (block, commit, sender)
        self._buffered_bytes += size
        return True

    def _check_ahead(self, block: Block, commit: Commit, sender: str | None, now: float) -> None:
        """A certified block above the next height that names our current validator set: once its certificate
        checks out, its height counts as reached (`network_height`) though no validator told us so. At most
        AHEAD_CHECKS_PER_S checks a second, only of heights above what counts already; a certificate that
        fails for the set its block names was made up by whoever sent it."""
        state = self.core.state
        if block.height <= max(self._verified_ahead, state.height + 1) or block.header.chain_id != self.core.chain_id \
                or block.header.validators_hash != state.validators.hash:
            return
        if self._ahead_checks.level(now) < 1.0:
            self.core.counters["ahead_checks_skipped"] = self.core.counters.get("ahead_checks_skipped", 0) + 1
            return
        self._ahead_checks.spend(1.0, now)
        if commit.verify(self.core.chain_id, state.validators, self.core.verify):
            self._verified_ahead = block.height
        else:
            self.core.penalize(sender, PENALTY_INVALID, "bad_commit_ahead")

    def _unbuffer(self, height: int) -> tuple[Block, Commit, str | None]:
        entry = self._buffered.pop(height)
        self._buffered_bytes -= entry[0].size
        return entry

    def prune_buffered(self) -> None:
        for height in [h for h in self._buffered if h <= self.core.state.height]:
            self._unbuffer(height)

    def _take_certified(self, block: Block, commit: Commit, sender: str | None, now: float) -> None:
        state = self.core.state
        if not self.check.commit_ok(commit, block):
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
            txs = self.check.decode(block)
        except (Malformed, InvalidTx) as exc:
            self.core.halt(f"a certified block at height {header.height} does not decode: {exc}")
            return
        self.core.apply(block, commit, announce=False, refused=self.check.refused_txs(txs))
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
        """Up to `sync_batch` stored blocks from the height asked, within a block's worth of bytes and what the
        sender's budget allows (`sync_budget.py`); over budget, nothing (counted: the asker times out and asks
        again)."""
        if sender is None or type(body) is not list or len(body) != 2 \
                or not all(type(v) is int and v >= 1 for v in body):
            raise Malformed("bad_sync_request")
        now = self.core.now
        capped = sender not in self.core.state.validators.node_ids
        allowed = self.budget.allowance(sender, now, capped=capped)
        if allowed <= 0:
            self.core.counters["sync_requests_refused"] = self.core.counters.get("sync_requests_refused", 0) + 1
            return
        limit = min(self.core.config.max_block_bytes, allowed)
        first, last = body[0], min(body[1], self.core.state.height, body[0] + self.core.config.sync_batch - 1)
        items = []
        size = 0
        for height in range(first, last + 1):
            stored = self.core.blocks.get(height)
            if stored is None:
                break
            size += stored[0].size
            items.append([stored[0].wire(), stored[1].wire()])
            if size >= limit:
                break
        self.budget.spend(sender, size, now, capped=capped)
        first_kept = getattr(self.core.blocks, "first_height", 1)
        self.core.emit(SendTo(sender, {"type": "chain_sync_response", "body": [items, self.core.state.height, first_kept]}))

    def on_sync_response(self, body: object, sender: str | None, now: float) -> None:
        if type(body) is not list or len(body) not in (2, 3) or type(body[0]) is not list or type(body[1]) is not int:
            raise Malformed("bad_sync_response")
        asked = self._sync_inflight is not None and self._sync_inflight[0] == sender
        if asked:
            self._sync_inflight = None
        items, their_height = body[0], body[1]
        their_first = body[2] if len(body) == 3 and type(body[2]) is int else 1
        ours = self.core.state.height
        if not items and their_first > ours + 1 and their_height > ours and sender:
            if asked:
                self.core.emit(NeedSnapshot(sender))      # they compacted the blocks we lack
            return
        if sender is not None:
            self.claims.record(sender, their_height, now, ours)
            if not items and their_height > ours:
                # it claims blocks we lack yet hands over none: its claims stop counting until it backs one
                self.claims.strike(sender, now)
                self.core.penalize(sender, 10.0, "claimed_height_not_backed")
                return
            if items:
                self.claims.backed(sender)
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
        if asked and sender is not None and self.core.state.height < their_height:
            self._request_sync(sender, now)

    def peer_height(self, node_id: str, height: int, now: float) -> None:
        """A neighbour's chain height (from its heartbeat). A validator neighbour at our height is live even
        when nothing is being decided: an idle chain (a long EMPTY_BLOCK_INTERVAL) sends no votes, and its
        quorum must not look lost between blocks."""
        self.core.set_now(now)
        if height >= self.core.state.height:
            self.core.heard_validator(node_id, now)
        self.claims.record(node_id, height, now, self.core.state.height)
        if height > self.core.state.height + 1:
            self.note_ahead(node_id, height, now)

    def note_ahead(self, peer: str | None, height: int, now: float) -> None:
        """`peer` showed a height above ours (a heartbeat, a vote or proposal, a certified block): if what
        counts (`network_height`) is now above ours, ask a claimant of it at once."""
        if peer is None or height <= self.core.state.height:
            return
        self.claims.raise_to(peer, height, now)
        if peer in self.core.state.validators.node_ids and not self.claims.discounted(peer, now):
            self._request_sync(peer, now)       # a validator's claim is put to the test: it backs it or is struck
        else:
            self._sync_counted(now)

    def network_height(self, now: float, within: float = CLAIMS_WITHIN) -> int | None:
        """A height the network has certainly reached, as far as we can tell: the (f + 1)-th highest of the
        current validators' recent claims (at least one of them is honest), or a height above ours whose
        certificate we checked, whichever is higher. None: fewer than f + 1 validators heard within `within`
        seconds and no certificate ahead. A stranger's claim never raises it."""
        validators = self.core.state.validators
        claimed = self.claims.validators_height(validators.node_ids, validators.skip, now, within)
        verified = self._verified_ahead if self._verified_ahead > self.core.state.height else None
        return max((h for h in (claimed, verified) if h is not None), default=None)

    def validators_highest(self, now: float, within: float = CLAIMS_WITHIN) -> int | None:
        """The highest height a current validator claimed within `within` seconds, of those not discounted
        for failing to back a claim (a validator's claim ahead of ours is put to the test when it arrives):
        an upper bound where one is needed (recovering a damaged tail must not stop short of what we may
        have signed), which no stranger can raise and a lying validator holds up only until it is struck."""
        validators = self.core.state.validators
        return self.claims.validators_height(validators.node_ids, 1, now, within)

    def highest_claim(self, now: float, within: float = CLAIMS_WITHIN) -> int | None:
        """The highest height anyone claimed within `within` seconds, of those not discounted: what the only
        validator, recovering a damaged tail, must reach (it has no other validator to believe)."""
        return self.claims.highest(now, within)

    def _sync_counted(self, now: float) -> bool:
        """Ask for blocks toward `network_height` when it is above ours; whether there was one to ask."""
        target = self.network_height(now)
        if target is None or target <= self.core.state.height:
            return False
        if self._asking(now):
            return True             # asked already: no search of every claim for each heartbeat meanwhile
        source = self.claims.source(target, self.core.state.validators.node_ids, now, CLAIMS_WITHIN, self.core.rng)
        if source is None:
            return False
        self._request_sync(source, now)
        return True

    def _asking(self, now: float) -> bool:
        """A request of ours is in flight, not yet `sync_retry` old."""
        inflight = self._sync_inflight
        return inflight is not None and now - inflight[1] < self.core.config.sync_retry

    def _request_sync(self, peer: str, now: float) -> None:
        if self._asking(now):
            return
        inflight = self._sync_inflight
        if inflight is not None:          # the last request went unanswered
            self.claims.strike(inflight[0], now)
        self._sync_inflight = (peer, now)
        first = self.core.state.height + 1
        self.core.emit(SendTo(peer, {"type": "chain_sync_request",
                                            "body": [first, first + self.core.config.sync_batch - 1]}))

    def sync_if_behind(self, now: float) -> None:
        """No block for `sync_retry`: ask toward what counts, or else, when nothing counts (we hear fewer than
        f + 1 validators: say every validator we know left the set while we were away), try a peer that
        claims more than we have (a current validator first). "Hear" is the core's own `live_after`, not the
        CLAIMS_WITHIN that what counts is held for: a validator that went silent at our height (it crashed, or
        the set moved on without us while we were cut off) would otherwise keep us from a peer that has the
        blocks for up to CLAIMS_WITHIN, and a quorum that needs us would wait as long."""
        if now - self.core.last_commit_at <= self.core.config.sync_retry or self._sync_counted(now) \
                or self.network_height(now, within=self.core.config.live_after) is not None or self._asking(now):
            return
        source = self.claims.source(self.core.state.height + 1, self.core.state.validators.node_ids, now,
                                    CLAIMS_WITHIN, self.core.rng)
        if source is not None:
            self._request_sync(source, now)

    def live_and_caught_up(self, key: bytes) -> bool:
        """A standby that would vote at once if given a seat: heard within `live_after`, at most two blocks
        behind us when it last said its height. Its claim is compared with our height at that moment, not
        now: under steady traffic blocks come faster than heartbeats, and a live standby would otherwise
        look behind between any two of them (no successor for a leave, no promotion)."""
        if key == self.core.public_key:
            return True
        node_id = node_id_for(key)
        heard, lag = self.claims.heard(node_id), self.claims.lag(node_id)
        return heard is not None and self.core.now - heard[1] <= self.core.config.live_after \
            and lag is not None and lag <= 2

