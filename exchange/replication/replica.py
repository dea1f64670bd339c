"""Replica: the I/O-free state machine that keeps this node's book identical to every other node's.

Inputs are plain calls with the current time passed in (`submit_*`, `receive`, `tick`,
`peer_up`/`peer_down`, `mark_durable`); outputs are queued in `outbox` (messages to broadcast or
send, peers to penalise) and `records` (what must be appended to the event log). There is no
wall clock, no global randomness and no I/O in here, so a seeded simulation drives it exactly.

Finality. Each member M beacons a signed checkpoint (seq s_M, head hash, lamport L_M), promising
that all its later events have lamport > L_M. The stability watermark W is the minimum over live
members (self included) of L_M, where M counts only once we hold M's events verified up to s_M.
Every event with lamport <= W is then known, so the book is the matching engine folded over them
in key order (lamport, origin, seq). A member silent for `member_timeout` leaves the minimum; an
event that turns up below the applied prefix later (a healed partition) rolls the ledger back.
"""
from __future__ import annotations

import bisect
import heapq
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

from exchange.markets import MarketRegistry
from exchange.replication.chain import OriginChain
from exchange.replication.ledger import FinalLedger
from exchange.replication.records import (GENESIS, Checkpoint, MalformedRecord, ReplEvent, cancel_body,
                                          check_body, pack)

log = logging.getLogger("exchange.replication")

# Penalty points (the peer manager bans at 100, decaying by half each minute).
PENALTY_FORGED = 50.0        # contradicts what the origin signed and we verified: the sender made it up
PENALTY_OFF_CHAIN = 25.0     # an unverified copy its origin's checkpoint later excluded, from the peer that wrote it
PENALTY_RELAYED = 5.0        # ... relayed by a neighbour that did not write it (it may be an innocent relay)
PENALTY_MALFORMED = 20.0


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    beacon_interval: float = 0.1      # a beacon at least this often
    eager_beacon_gap: float = 0.01    # ... and this soon after our clock or sequence moved
    member_timeout: float = 5.0       # silent members leave the watermark
    sync_interval: float = 1.0        # periodic anti-entropy with one random peer
    gap_delay: float = 0.25           # a gap older than this is pulled (broadcast repair usually wins)
    pull_timeout: float = 0.5         # an unanswered pull may be retried after this
    startup_grace: float = 0.5        # hear the network before finalising anything
    sync_batch: int = 2000            # events per sync response
    snapshot_every: int = 1000
    keep_snapshots: int = 8
    snapshot_threshold: int = 5000    # a peer with this many final events answers a fresh node with a snapshot
    snapshot_join: bool = True        # a fresh node asks for a snapshot (else it pulls every event)
    auto_durable: bool = False        # simulation: own events are durable the moment they exist
    max_message_bytes: int = 900_000  # a snapshot bigger than this is not sent (events are paged instead)


class Replica:
    def __init__(self, node_id: str, markets: MarketRegistry, *, public_key: bytes,
                 sign: Callable[[bytes], bytes], verify: Callable[[bytes, bytes, bytes], bool],
                 node_id_for: Callable[[bytes], str], config: ReplicaConfig | None = None,
                 rng: random.Random | None = None, now: float = 0.0) -> None:
        self.node_id = node_id
        self.markets = markets
        self.public_key = public_key
        self._sign, self._verify, self._node_id_for = sign, verify, node_id_for
        self.config = config or ReplicaConfig()
        self.rng = rng or random.Random(0)
        self.started_at = now
        self.lamport = 0
        self.watermark = 0
        self.durable_seq = 0
        self.chains: dict[str, OriginChain] = {}
        self.own = self._chain(node_id)
        self.own.public_key = public_key
        self.ledger = FinalLedger(markets, self.config.snapshot_every, self.config.keep_snapshots)
        self.pending: list[tuple[tuple, ReplEvent]] = []      # verified, not yet final
        self.orders: dict[str, ReplEvent] = {}                 # order id -> its event (verified or own)
        self.last_heard: dict[str, float] = {}                 # live members other than us
        self.peers: set[str] = set()                           # connected neighbours (for pulls)
        self.outbox: list[tuple[str, Any, Any]] = []
        self.records: list[list] = []
        self._unsent: list[ReplEvent] = []
        self._dirty = True
        self._last_beacon = -1e18
        self._own_cp: Checkpoint | None = None
        self._next_sync = now + self.config.sync_interval
        self._inflight: dict[str, float] = {}
        self._scope: dict[str, dict[str, int] | None] = {}     # what the pull in flight to a peer asked for
        self._gap_since: dict[str, float] = {}
        self._hint: dict[str, str] = {}                        # origin -> a peer that had its events
        self._good_sigs: set[bytes] = set()
        self._persisted_w = 0
        self._persisted_at = -1e18
        self._mismatch_streak: dict[str, int] = {}
        self.want_snapshot = False
        self._synced = False
        self.counters: dict[str, int] = {
            "events_created": 0, "events_received": 0, "events_verified": 0, "duplicates": 0, "forged": 0,
            "malformed": 0, "beacons_sent": 0, "beacons_received": 0, "bad_signatures": 0, "equivocations": 0,
            "pulls": 0, "pulls_served": 0, "late_events": 0, "prefix_checks": 0, "prefix_mismatches": 0,
            "digest_mismatches": 0, "snapshots_installed": 0, "members_expired": 0}

    # ------------------------------------------------------------------ helpers and views
    def _chain(self, origin: str) -> OriginChain:
        chain = self.chains.get(origin)
        if chain is None:
            chain = self.chains[origin] = OriginChain(origin)
        return chain

    def ready(self, now: float) -> bool:
        """Finalise only after hearing the network: the start-up grace, or a completed pull from a peer
        plus three beacon intervals (every live member's beacon has arrived by then)."""
        age = now - self.started_at
        return age >= self.config.startup_grace or (self._synced and age >= 3 * self.config.beacon_interval)

    def members(self, now: float) -> list[str]:
        timeout = self.config.member_timeout
        return sorted([self.node_id] + [o for o, t in self.last_heard.items() if now - t <= timeout])

    @property
    def final_count(self) -> int:
        return self.ledger.count

    @property
    def trade_log_hash(self) -> str:
        return self.ledger.trade_hash.hex()

    @property
    def prefix_hash(self) -> str:
        return self.ledger.prefix_hash.hex()

    def digest(self) -> str:
        return self.ledger.digest()

    def engine(self, market: str):
        return self.ledger.engines.get(market)

    def provisional_engine(self, market: str):
        """A copy of the final book with the verified events above W applied in key order (may still change)."""
        from exchange.matching import MatchingEngine

        final = self.ledger.engines.get(market)
        if final is None:
            return None
        engine = MatchingEngine(final.market)
        engine.restore(final.snapshot())
        for _, event in sorted(self.pending, key=lambda item: item[0]):
            if event.market == market:
                FinalLedger.apply_to_engine(event, engine)
        return engine

    def order_state(self, order_id: str) -> tuple[ReplEvent, str, int, str | None] | None:
        """(event, status, remaining lots, reason) of an order this node knows, or None."""
        event = self.orders.get(order_id)
        if event is None:
            return None
        closed = self.ledger.closed.get(order_id)
        if closed is not None:
            return event, closed[0], closed[1], closed[2]
        engine = self.ledger.engines.get(event.market)
        resting = engine.order(order_id) if engine is not None else None
        if resting is not None:
            return event, resting.status.value, resting.remaining, None
        if not self.is_final(event):
            return event, "pending", event.body[5], None
        return event, "rejected", event.body[5], "unknown_market"

    def is_final(self, event: ReplEvent) -> bool:
        """Folded into the book: at or below the watermark (everything verified there is applied)."""
        return event.lamport <= self.watermark

    def stats(self, now: float) -> dict[str, Any]:
        return {"lamport": self.lamport, "watermark": self.watermark, "final_events": self.final_count,
                "pending_events": len(self.pending), "own_seq": self.own.verified, "durable_seq": self.durable_seq,
                "members": self.members(now), "origins": {o[:12]: c.verified for o, c in self.chains.items()},
                "unverified": sum(c.unverified() for c in self.chains.values()),
                "rollbacks": self.ledger.rollbacks, "replayed": self.ledger.replayed,
                "trades": self.ledger.trade_count, "prefix_hash": self.prefix_hash,
                "trade_log_hash": self.trade_log_hash, "ready": self.ready(now), **self.counters}

    def take_outbox(self) -> list[tuple[str, Any, Any]]:
        out, self.outbox = self.outbox, []
        return out

    def take_records(self) -> list[list]:
        out, self.records = self.records, []
        return out

    def _penalize(self, peer: Any, points: float, reason: str) -> None:
        if peer is not None and peer != self.node_id:
            self.outbox.append(("penalize", peer, (points, reason)))

    # ------------------------------------------------------------------ local commands
    def submit_order(self, market: str, side: str, kind: str, price: int | None, qty: int, account: str = "",
                     stp: str | None = None, now: float = 0.0) -> ReplEvent:
        return self._create(check_body(["n", market, side, kind, price, qty, account, stp]), now)

    def submit_cancel(self, order_id: str, account: str | None = None, now: float = 0.0,
                      market: str | None = None) -> ReplEvent:
        """Cancel an order (KeyError if this node does not know it and no market is given)."""
        if market is None:
            market = self.orders[order_id].market
        return self._create(cancel_body(market, order_id, account), now)

    def _create(self, body: list, now: float) -> ReplEvent:
        self.lamport += 1
        own = self.own
        event = ReplEvent(self.node_id, own.verified + 1, self.lamport, own.head, body)
        own.append_own(event)
        self._accept(event)
        self.counters["events_created"] += 1
        self._unsent.append(event)
        self._dirty = True
        if self.config.auto_durable:
            self.mark_durable(event.seq)
        self._advance(now)
        return event

    def mark_durable(self, seq: int) -> None:
        """Own events up to `seq` are on disk: they may now leave this node and be promised in beacons."""
        if seq <= self.durable_seq:
            return
        self.durable_seq = min(seq, self.own.verified)
        ready = [e for e in self._unsent if e.seq <= self.durable_seq]
        if ready:
            self._unsent = [e for e in self._unsent if e.seq > self.durable_seq]
            self.outbox.append(("broadcast", None, {"type": "order", "events": [e.wire() for e in ready]}))
        self._dirty = True

    def _promise(self) -> int:
        """Our lamport promise: later durable own events are above it."""
        if self.durable_seq < self.own.verified:
            return self.own.event(self.durable_seq + 1).lamport - 1
        return self.lamport

    def _own_checkpoint(self) -> Checkpoint:
        promise, seq = self._promise(), self.durable_seq
        cp = self._own_cp
        if cp is None or cp.seq != seq or cp.lamport != promise:
            head = self.own.hash_at(seq) or GENESIS
            cp = self._own_cp = Checkpoint.create(self.node_id, seq, head, promise, self.public_key, self._sign)
            self.own.latest = cp
        return cp

    # ------------------------------------------------------------------ network input
    def receive(self, message: Any, sender: str | None, now: float) -> None:
        """Handle one replication message that arrived from neighbour `sender`."""
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("order", "cancel"):
            # who wrote the message: a broadcast names its author; a relay forwards before it can verify
            authored = sender is not None and message.get("origin") == sender
            self._on_events(message.get("events"), sender, now, authored)
        elif kind == "beacon":
            self._on_beacon(message, sender, now)
        elif kind in ("sync_request", "sync_response"):
            # a unicast may have been relayed: the peer we talk with is its author, not the last hop
            author = message.get("origin")
            peer = author if type(author) is str and len(author) == 40 else sender
            if kind == "sync_request":
                self._on_sync_request(message, peer, now)
            else:
                self._on_sync_response(message, peer, now)
        else:
            return
        self._advance(now)

    def precheck(self, message: dict, sender: str | None) -> bool:
        """Before a relay forwards an event broadcast: False (and a penalty) if any event contradicts
        what we already verified, so a known forgery stops at the first honest node."""
        items = message.get("events")
        if type(items) is not list:
            return False
        chains = self.chains
        clean = True
        for item in items:
            if type(item) is not list or len(item) != 5:
                continue
            chain = chains.get(item[0])
            seq = item[1]
            if chain is None or type(seq) is not int or seq > chain.verified or seq <= chain.base:
                continue
            try:
                event = ReplEvent.from_wire(item)
            except MalformedRecord:
                continue
            if event.hash != chain.hash_at(seq):
                self.counters["forged"] += 1
                log.warning("forged event %s from %s stopped before forwarding", event.key, str(sender)[:12])
                self._penalize(sender, PENALTY_FORGED, "forged_event")
                clean = False
        return clean

    def _on_events(self, items: Any, sender: str | None, now: float, authored: bool = True) -> None:
        if type(items) is not list:
            self.counters["malformed"] += 1
            self._penalize(sender, PENALTY_MALFORMED, "malformed_events")
            return
        touched: dict[str, OriginChain] = {}
        for item in items:
            try:
                event = ReplEvent.from_wire(item)
            except MalformedRecord as exc:
                self.counters["malformed"] += 1
                self._penalize(sender, PENALTY_MALFORMED, f"malformed_event:{exc.code}")
                continue
            self.counters["events_received"] += 1
            chain = self._chain(event.origin)
            if event.origin == self.node_id and event.seq > self.own.verified:
                status = "forged"   # nobody can know our events before we make them
            else:
                status = chain.add(event, (sender, authored))
            if status == "forged":
                self.counters["forged"] += 1
                log.warning("forged event %s from %s dropped", event.key, str(sender)[:12])
                self._penalize(sender, PENALTY_FORGED, "forged_event")
            elif status == "duplicate":
                self.counters["duplicates"] += 1
            else:
                touched[event.origin] = chain
                if sender is not None:
                    self._hint[event.origin] = sender
        for chain in touched.values():
            self._verify_chain(chain, now)

    def _verify_chain(self, chain: OriginChain, now: float) -> None:
        events, forgers, problems = chain.verify()
        for forger, authored in forgers:
            self.counters["forged"] += 1
            self._penalize(forger, PENALTY_OFF_CHAIN if authored else PENALTY_RELAYED, "forged_event")
        for problem in problems:
            log.warning("origin %s: %s", chain.origin[:12], problem)
            if "equivocation" in problem:
                self.counters["equivocations"] += 1
        if events:
            self.counters["events_verified"] += len(events)
            for event in events:
                self._accept(event)
            if chain.latest is not None:
                self.records.append(["c", chain.latest.wire()])
        if chain.has_gap:
            self._gap_since.setdefault(chain.origin, now)
        else:
            self._gap_since.pop(chain.origin, None)

    def _accept(self, event: ReplEvent, persist: bool = True) -> None:
        """A verified (or own) event: index it, queue it for the fold, log it."""
        if event.body[0] == "n":
            self.orders[event.id] = event
        if event.lamport > self.lamport:
            self.lamport = event.lamport
            self._dirty = True          # beacon the higher clock soon: others' watermarks wait for it
        heapq.heappush(self.pending, (event.key, event))
        if persist:
            self.records.append(["e", event.wire()])

    def _checkpoint_ok(self, chain: OriginChain, cp: Checkpoint) -> bool:
        if chain.public_key is not None and cp.public_key != chain.public_key:
            return False
        if cp.signature in self._good_sigs:
            return True
        if not cp.valid(self._verify, self._node_id_for):
            return False
        if len(self._good_sigs) > 4096:
            self._good_sigs.clear()
        self._good_sigs.add(cp.signature)
        chain.public_key = cp.public_key
        return True

    def _take_checkpoint(self, raw: Any, sender: str | None, now: float, live: bool) -> Checkpoint | None:
        try:
            cp = Checkpoint.from_wire(raw)
        except MalformedRecord:
            self.counters["malformed"] += 1
            self._penalize(sender, PENALTY_MALFORMED, "malformed_checkpoint")
            return None
        if cp.origin == self.node_id:
            self._own_checkpoint_seen(cp)
            return None
        chain = self._chain(cp.origin)
        if not self._checkpoint_ok(chain, cp):
            self.counters["bad_signatures"] += 1
            log.warning("checkpoint for %s with a bad signature from %s dropped", cp.origin[:12], str(sender)[:12])
            self._penalize(sender, PENALTY_FORGED, "bad_checkpoint_signature")
            return None
        if live:
            if cp.origin not in self.last_heard:
                log.info("member %s joined (lamport %d, seq %d)", cp.origin[:12], cp.lamport, cp.seq)
            self.last_heard[cp.origin] = now
        if cp.lamport > self.lamport:
            self.lamport = cp.lamport
            self._dirty = True
        status = chain.add_checkpoint(cp)
        if status == "equivocation":
            self.counters["equivocations"] += 1
            log.error("origin %s signed checkpoint %d that contradicts its verified chain", cp.origin[:12], cp.seq)
        elif status == "held":
            self._verify_chain(chain, now)
        if sender is not None and chain.has_gap:
            self._hint[cp.origin] = sender
        return cp

    def _own_checkpoint_seen(self, cp: Checkpoint) -> None:
        """A peer echoes a checkpoint we signed earlier (e.g. before a restart): keep its promise, so our
        next events are above every lamport we ever promised; warn if the network has more of our events
        than our log does (the log was lost: new events would conflict with the old ones)."""
        if cp.lamport <= self.lamport or not self._checkpoint_ok(self.own, cp):
            return
        self.lamport = cp.lamport
        self._dirty = True
        if cp.seq > self.own.verified:
            log.error("peers hold our events up to seq %d but our event log ends at %d: it was lost or truncated;"
                      " new orders from this node would conflict with the old ones", cp.seq, self.own.verified)

    def _on_beacon(self, message: dict, sender: str | None, now: float) -> None:
        self.counters["beacons_received"] += 1
        self._take_checkpoint(message.get("cp"), sender, now, live=True)

    # ------------------------------------------------------------------ anti-entropy
    def peer_up(self, peer: str, now: float) -> None:
        self.peers.add(peer)
        self._pull(peer, now, force=True)

    def peer_down(self, peer: str) -> None:
        self.peers.discard(peer)
        self._inflight.pop(peer, None)

    def _vector(self) -> dict[str, int]:
        vec = {origin: chain.contig for origin, chain in self.chains.items() if chain.contig}
        vec[self.node_id] = self.own.verified
        return vec

    def _busy(self, peer: str, now: float) -> bool:
        sent = self._inflight.get(peer)
        return sent is not None and now - sent < self.config.pull_timeout

    def _pull(self, peer: str, now: float, force: bool = False, upto: dict[str, int] | None = None) -> None:
        """Ask `peer` for what we miss: everything beyond our vector, or (a gap repair) only the named
        origins up to the sequence numbers we know exist, so events still in flight are not sent twice."""
        if not force and self._busy(peer, now):
            return
        self._inflight[peer] = now
        self._scope[peer] = upto
        self.counters["pulls"] += 1
        fresh = self.ledger.count == 0 and all(c.verified == 0 for c in self.chains.values())
        request = {"type": "sync_request", "vec": self._vector(), "n": self.ledger.count,
                   "ph": self.ledger.prefix_hash, "w": self.watermark,
                   "snap": bool(self.want_snapshot or (fresh and self.config.snapshot_join))}
        if upto:
            request["upto"] = upto
        self.outbox.append(("send", peer, request))

    def _on_sync_request(self, message: dict, sender: str | None, now: float) -> None:
        if sender is None:
            return
        vec = message.get("vec")
        if not isinstance(vec, dict):
            self._penalize(sender, PENALTY_MALFORMED, "malformed_sync_request")
            return
        self.counters["pulls_served"] += 1
        self._compare_prefix(message, sender)
        response: dict[str, Any] = {"type": "sync_response", "n": self.ledger.count, "ph": self.ledger.prefix_hash,
                                    "w": self.watermark, "digest": self.digest()}
        if message.get("snap") is True and self.ledger.count >= self.config.snapshot_threshold:
            snapshot = self._export_snapshot()
            if len(pack(snapshot)) <= self.config.max_message_bytes:
                response.update(snapshot=snapshot, more=True)
                self.outbox.append(("send", sender, response))
                return
        budget = self.config.sync_batch
        events: list = []
        cps: list = []
        more = False
        upto = message.get("upto")
        upto = upto if isinstance(upto, dict) else None
        for origin, chain in self.chains.items():
            top = self.durable_seq if origin == self.node_id else chain.verified
            have = vec.get(origin, 0)
            if type(have) is not int:
                continue
            if upto is not None:
                limit = upto.get(origin)
                if type(limit) is not int:
                    continue
                top = min(top, limit)
            cp = self._own_checkpoint() if origin == self.node_id else chain.latest
            if cp is None:
                continue
            if top > have:
                if budget <= 0:
                    more = True
                    continue
                start = max(have, chain.base) + 1
                end = min(top, start + budget - 1)
                events.extend(chain.events[i - chain.base - 1].wire() for i in range(start, end + 1))
                budget -= end - start + 1
                more = more or end < top
            cps.append(cp.wire())
        response.update(events=events, cps=cps, more=more)
        self.outbox.append(("send", sender, response))

    def _on_sync_response(self, message: dict, sender: str | None, now: float) -> None:
        if sender is not None:
            self._inflight.pop(sender, None)
        snapshot = message.get("snapshot")
        if snapshot is not None and (self.want_snapshot or self.ledger.count == 0):
            self._install_snapshot(snapshot, sender)
        cps = message.get("cps", [])
        if type(cps) is list:
            for raw in cps:
                self._take_checkpoint(raw, sender, now, live=False)
        events = message.get("events")
        if events:
            self._on_events(events, sender, now)
        if sender is not None:
            self._compare_prefix(message, sender)
            if message.get("more") is True:
                self._pull(sender, now, force=True, upto=self._scope.get(sender))
            else:
                self._synced = True

    def _compare_prefix(self, message: dict, peer: str) -> None:
        """Their final prefix hash at their count must equal ours at that count (if we got that far)."""
        count, theirs = message.get("n"), message.get("ph")
        if type(count) is not int or type(theirs) is not bytes or count <= 0:
            return
        mine = self.ledger.prefix_hash_at(count)
        if mine is None:
            return
        self.counters["prefix_checks"] += 1
        if mine == theirs:
            self._mismatch_streak.pop(peer, None)
            digest = message.get("digest")
            if (count == self.ledger.count and message.get("w") == self.watermark and isinstance(digest, str)
                    and digest != self.digest()):
                self.counters["digest_mismatches"] += 1
                log.error("BOOK DIGEST MISMATCH with %s at watermark %d: theirs %s ours %s (same final prefix)",
                          peer[:12], self.watermark, digest[:16], self.digest()[:16])
            return
        self.counters["prefix_mismatches"] += 1
        streak = self._mismatch_streak[peer] = self._mismatch_streak.get(peer, 0) + 1
        level = logging.ERROR if streak >= 3 else logging.WARNING
        log.log(level, "FINAL PREFIX MISMATCH with %s at %d events (%d in a row%s)", peer[:12], count, streak,
                "" if streak >= 3 else "; a late event after a partition will roll one of us back")

    # ------------------------------------------------------------------ snapshots (joining node)
    def _export_snapshot(self) -> dict[str, Any]:
        """The final state at W plus, per origin, how many of its events it contains and their head hash."""
        base: dict[str, list] = {}
        w = self.watermark
        for origin, chain in self.chains.items():
            lamports = [e.lamport for e in chain.events]
            count = chain.base + bisect.bisect_right(lamports, w)
            base[origin] = [count, chain.hash_at(count) or GENESIS]
        return {"w": w, "state": self.ledger.export_state(), "base": base}

    def _install_snapshot(self, snapshot: Any, sender: str | None) -> bool:
        try:
            w = snapshot["w"]
            base = snapshot["base"]
            state = snapshot["state"]
            if type(w) is not int or not isinstance(base, dict):
                raise TypeError("bad snapshot")
            self.ledger.import_state(state)
        except Exception as exc:  # a bad snapshot must not take the node down
            log.warning("snapshot from %s refused: %s", str(sender)[:12], exc)
            self._penalize(sender, PENALTY_MALFORMED, "bad_snapshot")
            return False
        for origin, (count, head) in base.items():
            chain = self._chain(origin)
            if origin == self.node_id and chain.verified > count:
                continue
            chain.reset_to(count, bytes(head))
        self.pending = [(k, e) for k, e in self.pending if e.seq > self.chains[e.origin].base]
        heapq.heapify(self.pending)
        self.watermark = max(self.watermark, w)
        self.lamport = max(self.lamport, w)
        self.durable_seq = max(self.durable_seq, self.own.base)
        self.want_snapshot = False
        self.counters["snapshots_installed"] += 1
        self.records.append(["s", snapshot])
        log.info("installed snapshot at watermark %d (%d final events) from %s", w, self.ledger.count,
                 str(sender)[:12])
        return True

    # ------------------------------------------------------------------ time
    def tick(self, now: float) -> None:
        config = self.config
        since = now - self._last_beacon
        if since >= config.beacon_interval or (self._dirty and since >= config.eager_beacon_gap):
            self._beacon(now)
        if self.peers:
            wanted: dict[str, dict[str, int]] = {}
            for origin, since_gap in list(self._gap_since.items()):
                if now - since_gap >= config.gap_delay:
                    # the origin itself has all its events; else whoever last had them; else anyone idle
                    peer = origin if origin in self.peers else self._hint.get(origin)
                    if peer not in self.peers or self._busy(peer, now):
                        idle = sorted(p for p in self.peers if not self._busy(p, now)) or sorted(self.peers)
                        peer = self.rng.choice(idle)
                    wanted.setdefault(peer, {})[origin] = self.chains[origin].max_seen
                    self._gap_since[origin] = now
            for peer, upto in wanted.items():
                self._pull(peer, now, upto=upto)
            if now >= self._next_sync:
                self._next_sync = now + config.sync_interval
                self._pull(self.rng.choice(sorted(self.peers)), now)
        self._advance(now)
        if self.watermark != self._persisted_w and now - self._persisted_at >= 0.5:
            self._persisted_w, self._persisted_at = self.watermark, now
            self.records.append(["w", self.watermark])

    def _beacon(self, now: float) -> None:
        self._last_beacon = now
        self._dirty = False
        self.counters["beacons_sent"] += 1
        cp = self._own_checkpoint()
        self.outbox.append(("broadcast", None, {"type": "beacon", "cp": cp.wire(), "w": self.watermark,
                                                "n": self.ledger.count}))

    def _advance(self, now: float) -> None:
        if not self.ready(now):
            return
        w = self._promise()
        timeout = self.config.member_timeout
        expired = None
        # Silence is judged against the freshest beacon we processed, so a node that is itself too busy
        # to read its sockets does not expel everyone (and then roll back); a hard cap still applies.
        freshest = max(self.last_heard.values(), default=now)
        for origin, heard in self.last_heard.items():
            if now - heard > timeout and (freshest - heard > timeout or now - heard > 3 * timeout):
                expired = (expired or []) + [origin]
                continue
            usable = self.chains[origin].usable_lamport
            if usable < w:
                w = usable
        for origin in expired or ():
            del self.last_heard[origin]
            self.counters["members_expired"] += 1
            log.warning("member %s silent for over %.1fs: left the watermark", origin[:12], timeout)
        if w > self.watermark:
            self.watermark = w
        self._fold()

    def _fold(self) -> None:
        pending = self.pending
        if not pending or pending[0][0][0] > self.watermark:
            return
        ledger = self.ledger
        last = ledger.last_key
        if last is not None and pending[0][0] < last:
            self.counters["late_events"] += 1
            undone = ledger.rollback(pending[0][0])
            if undone is None:
                log.error("late event %s is older than our snapshot base: asking peers for a new snapshot",
                          pending[0][0])
                self.want_snapshot = True
                while pending and pending[0][0] < last:
                    heapq.heappop(pending)
            else:
                log.warning("late event %s below the final prefix: rolled back %d events and replaying",
                            pending[0][0], len(undone))
                for event in undone:
                    heapq.heappush(pending, (event.key, event))
        watermark = self.watermark
        apply = ledger.apply
        pop = heapq.heappop
        while pending and pending[0][0][0] <= watermark:
            apply(pop(pending)[1])

    # ------------------------------------------------------------------ restart from the event log
    def load(self, records: list) -> int:
        """Rebuild from this node's own event log (trusted: everything in it was verified before it was
        written). Returns the number of records used."""
        used = 0
        saved_w = 0
        for record in records:
            try:
                kind, data = record[0], record[1]
                if kind == "e":
                    event = ReplEvent.from_wire(data)
                    chain = self._chain(event.origin)
                    if event.seq == chain.verified + 1 and event.prev == chain.head:
                        chain.append_own(event)
                        self._accept(event, persist=False)
                    elif event.seq > chain.verified:
                        chain.add(event, (None, False))
                elif kind == "c":
                    cp = Checkpoint.from_wire(data)
                    chain = self._chain(cp.origin)
                    chain.public_key = cp.public_key
                    chain.add_checkpoint(cp)
                elif kind == "w":
                    saved_w = max(saved_w, int(data))
                elif kind == "s":
                    self._install_snapshot(data, None)
                    self.records.pop()
                else:
                    continue
                used += 1
            except (MalformedRecord, TypeError, ValueError, IndexError, KeyError) as exc:
                log.warning("event log record skipped: %s", exc)
        for chain in self.chains.values():
            if chain.checkpoints:
                events, _, _ = chain.verify()
                for event in events:
                    self._accept(event, persist=False)
        self.durable_seq = self.own.verified
        self.lamport = max(self.lamport, saved_w)
        self.watermark = max(self.watermark, saved_w)
        self._persisted_w = self.watermark
        self._fold()
        return used
