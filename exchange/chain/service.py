"""ChainService: runs a ChainCore inside a node — the network, the disk, the clock and the API's waits.

The core decides; this class carries its decisions out, in order: a write-ahead record is fsynced
before the vote it covers leaves the node, a block is stored before the next height starts, and
a transaction accepted from our API is in the outbox on disk before the API answers (so a 202
"pending" survives a crash and the node keeps handing the order on until a block has it).

It talks to the network only through `ChainNetwork` (send to one node, broadcast, penalise, RPC) and
to the disk only through `ChainStore`, so it runs the same over real links and in tests.

A node with no genesis first runs the founding logic (`founding.py`): it adopts the chain its peers
are on (fetching and checking the genesis), or founds one.

Its parts, each doing one job of I/O for it: `boot.py` (the snapshot to start from, replayed blocks, the
signing floor after damage, the outbox handed on again), `durability.py` (what is written before what
leaves), `ticker.py` (the core's clock), `statesync.py` (serving snapshots, and `snapshot_join`: starting
from a peer's), `history_recovery.py` (`history`: damaged history back from peers, and its deadline),
`own_orders.py` (the API's waits on our own transactions and the cancels held for their orders),
`forwarding.py` (where a follower's transactions go), `founding_loop.py` (founding or adopting a chain),
`seat_handback.py` (`handback`: our seat handed back at stop), and `ports.py` (the network, disk and key it
runs over). Two face our peers and see the service only through `ports.ChainHost`: `peer_chains.py`
(`peer_chains`: what peers say of their chain, `conflicts`, what we say of ours) and `serving.py`
(`serving`: the RPCs `chain.genesis`, `chain.snapshot`, `chain.submit`). The API calls two, which see it only
through `ports.CoreGate`: `submissions.py` (`submissions`: our users' transactions, into the outbox and the
core) and `seat_admin.py` (`seats`: the operator's seat approvals, recovery consent and the view of the set,
`seats_view.py`; `token_desk.py`, `tokens`, waits for its join tokens' blocks). What is left here is the
driver: boot and stop, the pump matching the core's effects, the tick, the gates the API's parts pass
(`usable_core`, `accepting_core`) and /status.

Over 500 lines on purpose: the one place that matches each of the core's effects to its I/O and holds the
gates the API's parts pass; every other job of I/O it does is in the parts named above.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Callable, assert_never

from exchange.chain.types.blocks import Block, Commit, Malformed
from exchange.chain.store.snapshot_live import LiveSnapshots
from exchange.chain.sync.statesync import SnapshotJoin
from exchange.chain.mempool.own_orders import OwnOrders
from exchange.chain.seats.seat_admin import SeatAdmin
from exchange.chain.seats.token_desk import TokenDesk
from exchange.chain.seats.seat_handback import SeatHandback
from exchange.chain.mempool.submissions import Submissions
from exchange.chain.boot import StoredChainUnusable, check_history, exchange_of, replay, restore_outbox, restore_snapshot
from exchange.chain.recovery.history_recovery import HistoryRecovery, Recovering, store_dir
from exchange.chain.sync.peer_chains import PeerChains
from exchange.chain.ports import ChainNetwork, ChainStore, NotReady, Signer
from exchange.chain.sync.serving import ChainServing
from exchange.chain.core import MESSAGE_TYPES as CHAIN_MESSAGE_TYPES, ChainCore
from exchange.chain.config import CoreConfig
from exchange.chain.effects import (Broadcast, ChainEffect, ChainMessage, Committed, Forward, Halt, HoldReading,
                                    NeedSnapshot, OwnDone, Penalize, SendFollowers, SendTo, SendValidators,
                                    WalRecord)
from exchange.crypto import verify as ed25519_verify
from exchange.chain.state.outcome import BlockOutcome
from exchange.chain.store.durability import BlockDurability, UnsavedBlock
from exchange.chain.mempool.forwarding import TxForwarding
from exchange.chain.ticker import Ticker, tick_delay
from exchange.chain.seats.founding import Founding
from exchange.chain.seats.founding_loop import ChainRules, Conflict, FoundingLoop
from exchange.chain.types.genesis import Genesis
from exchange.chain.seats.join_token import JoinToken
from exchange.chain.consensus.halt_watch import HaltWatch
from exchange.app import ExchangeParams, ExchangeState
from exchange.app.params import DEFAULT_FRESH_ORDER_TTL_MS, DEFAULT_MAX_OPEN_ORDERS
from exchange.app.results import BlockResult
from exchange.chain.store.block_store import SIGN_FROM_UNKNOWN
from exchange.app.txs import InvalidTx
from exchange.wire import Wire
from storage import StorageError

SENDS = (SendValidators, SendFollowers, SendTo, Broadcast)      # the effects that are messages leaving the node

log = logging.getLogger("exchange.chain")

MESSAGE_TYPES = (*CHAIN_MESSAGE_TYPES, "chain_status")     # chain_status: a Grenache-only peer's chain
OUTBOX_PROBE_INTERVAL = 1.0


class ChainService:
    def __init__(self, identity: Signer, network: ChainNetwork, store: ChainStore, *, network_id: str,
                 markets: str, order_ttl_ms: int = 120_000, max_validators: int = 7,
                 pinned_validators: tuple[str, ...] = (), found_after: float = 3.0, snapshot_interval: int = 500,
                 snapshot_lag: int = 0, snapshot_min_ms: int = 0,
                 config: CoreConfig | None = None, clock: Callable[[], float] = time.time,
                 recovery_timeout: float = 120.0, join_token: JoinToken | None = None,
                 trusted_chain_id: str | None = None, keep_seat: bool = False, seat_rule: str = "bft",
                 leave_timeout: float = 4.0, absent: tuple[int, int] = (100, 60_000),
                 max_open_orders: int | None = DEFAULT_MAX_OPEN_ORDERS,
                 fresh_order_ttl_ms: int | None = DEFAULT_FRESH_ORDER_TTL_MS) -> None:
        self.identity = identity
        self.network = network
        self.store = store
        self.network_id = network_id
        self.order_ttl_ms = order_ttl_ms
        self.pinned_validators = pinned_validators
        self.config = config or CoreConfig()
        self.clock = clock
        self.core: ChainCore | None = None
        self.genesis: Genesis | None = None
        self.join_token = join_token
        if join_token is not None and trusted_chain_id is not None and join_token.chain_id != trusted_chain_id:
            raise ValueError(f"JOIN_TOKEN is for chain {join_token.chain_id[:16]} but CHAIN_ID is {trusted_chain_id[:16]}")
        trusted = trusted_chain_id or (join_token.chain_id if join_token is not None else None)
        self.founding = Founding(identity.node_id, identity.public_key_bytes, found_after=found_after,
                                 started=clock(), pinned=pinned_validators, trusted_chain=trusted,
                                 trusted_by="CHAIN_ID" if trusted_chain_id else "JOIN_TOKEN")
        self.trust = "founded" if trusted is None else ("chain_id" if trusted_chain_id else "join_token")
        self.founding_status = "starting"
        self.counters = {"submitted": 0, "committed_own": 0, "expired_own": 0, "forward_failures": 0,
                         "status_sent": 0, "status_received": 0, "ticks": 0}
        self.peer_chains = PeerChains(self, self.founding, network, network_id, clock, self.counters)
        self.note_conflict = self.peer_chains.note_conflict     # a peer on another chain (the founding loop's)
        self.founding_loop = FoundingLoop(
            self, ChainRules(network_id=network_id, markets=markets, order_ttl_ms=order_ttl_ms,
                             max_open_orders=max_open_orders, fresh_order_ttl_ms=fresh_order_ttl_ms,
                             max_validators=max_validators,
                             snapshot_interval=snapshot_interval, snapshot_lag=snapshot_lag,
                             snapshot_min_ms=snapshot_min_ms, seat_rule=seat_rule,
                             absent=absent),
            self.founding, network, store, identity.public_key_bytes, clock)
        self.block_listeners: list[Callable[[Block, BlockResult | None], None]] = []   # once final here
        self.halted: str | None = None
        self.own_orders = OwnOrders(store, clock)
        self._tasks: list[asyncio.Task[None]] = []
        self._pump_handle: asyncio.Handle | None = None
        self.ticker = Ticker(clock)
        self._ready = asyncio.Event()
        self.handback = SeatHandback(clock, keep_seat, leave_timeout)
        self.finality_observers = self.own_orders.finality_observers
        self.history = HistoryRecovery(store, clock, recovery_timeout)     # damaged history back from peers
        self.fatal_listeners = self.history.fatal_listeners
        self.durability = BlockDurability(store, clock, self._block_saved)
        self.snapshots = LiveSnapshots(self.schedule_pump)  # joined in the loop or forked, on a lagged network
        self.snapshot_join = SnapshotJoin(self, network, store, clock, self._snapshot_installed)
        self.commit_log: deque[tuple[int, float, int]] = deque(maxlen=20_000)   # (height, when final here, ops)
        self.proposed: dict[bytes, int] = {}        # validator key -> its blocks final here since this node started
        self.serving = ChainServing(self, network, store, clock, self.config.snapshot_cache_bytes)   # peers' RPCs
        self._probe: asyncio.Task[bool] | None = None
        self._next_probe = 0.0
        self.halt_watch = HaltWatch(live_after=self.config.live_after)
        self.forwarding = TxForwarding(network, identity.node_id, self.serving.serve_submit, self.counters, clock)
        self.submissions = Submissions(self, store, self.own_orders, clock, self.counters,     # our users' txs
                                       self.forwarding.refusals)
        self.seats = SeatAdmin(self, self.founding, self.proposed, clock)     # the operator's seat commands
        self.tokens = TokenDesk(self.seats)                                  # ... and its join tokens

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.serving.offer()
        genesis = self.store.load_genesis()
        trusted = self.founding.trusted_chain
        if genesis is not None and trusted is not None and genesis.chain_id != trusted:
            raise StoredChainUnusable(f"{self.store_dir()} holds chain {genesis.chain_id[:16]} but "
                             f"{self.founding.trusted_by} names chain {trusted[:16]}: move the directory aside to "
                             f"join that chain, or drop the setting")
        if genesis is not None:
            self.boot(genesis)
        else:
            self._tasks.append(asyncio.create_task(self.founding_loop.run(), name="chain.founding"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="chain.tick"))

    def stop_seconds(self, usual: float) -> float:
        """How long our stop may take (`seat_handback.py`: longer while our seat's hand-back must wait)."""
        return usual if self.core is None else self.handback.stop_seconds(self.core, usual)

    async def stop(self) -> None:
        core = self.core       # a validator stopped on purpose hands its seat back first (`seat_handback.py`)
        if core is not None and core.is_validator and not (self.halted or core.halted):
            await self.handback.give_back(core, self.pump)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._probe is not None:
            await asyncio.gather(self._probe, return_exceptions=True)
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self.pump()
        self.own_orders.cancel_waits()
        await self.store.outbox_flush()
        await self.durability.finish_snapshot()
        self.durability.sync_follower_blocks()
        self.snapshots.close()
        self.store.close()

    def boot(self, genesis: Genesis) -> None:
        """Run the chain `genesis` starts: restore, replay, check the history, start the core."""
        self.genesis = genesis
        params = ExchangeParams.from_wire(genesis.exchange)
        identity = self.identity
        token = self.join_token
        if token is not None and token.chain_id != genesis.chain_id:
            log.error("JOIN_TOKEN is not this chain's (%s): this node follows without asking for a seat",
                      genesis.chain_id[:16])
            token = None
        core = ChainCore(genesis, ExchangeState(params, genesis.chain_id), public_key=identity.public_key_bytes,
                         sign=identity.sign, verify=ed25519_verify, blocks=self.store, config=self.config,
                         rng=random.Random(), now=self.clock(), join_token=token.key if token else None,
                         snapshots=self.snapshots,
                         network_of=self.network.network_of)
        start = restore_snapshot(self.store, core, params)
        replayed = replay(self.store, core, start)
        core.take_effects()
        # the newest snapshot the replay took again: stored already, unless we stopped before it was
        taken = self.snapshots.take_ready() + ([core.state.last_snapshot] if core.state.last_snapshot else [])
        core.state.last_snapshot = None
        for height, data in taken[-1:]:
            if height not in self.store.snapshot_heights():
                self.durability.add_snapshot(height, data)
        self.snapshots.live = True
        now = self.clock()
        wal: list[Wire] | None = self.store.wal_records()     # of a damaged WAL, the intact records
        self.history.recovering, self.durability.wal_top = check_history(self.store, core, now, wal)
        if not self.store.wal_trustworthy:
            wal = None
            self.store.wal_reset()      # what it implied is in the signing floor now
        restore_outbox(self.store, core, self.own_orders, now)
        self.core = core
        core.start(now, wal=wal)
        self.founding_status = "on_chain"
        log.info("chain %s: height %d (%d blocks replayed), %s, %d validators (epoch %d)", genesis.chain_id[:16],
                 core.height, replayed, core.role, len(core.state.validators), core.state.validators.epoch)
        self._roles_changed()
        self._ready.set()
        self.pump()

    def store_dir(self, part: str = "") -> str:
        return store_dir(self.store, part)

    # ------------------------------------------------------------------ messages
    def on_message(self, message: ChainMessage, sender: str) -> None:
        kind = message.get("type", "")
        if kind == "chain_status":          # a Grenache-only peer's chain (linked peers say it in heartbeats)
            return self.peer_chains.on_status(message.get("body"), sender)
        core = self.core
        if core is None:
            return
        origin = message.get("origin")
        if kind != "chain_decision" and type(origin) is str and origin != sender:
            # relayed for `origin`, which signed the wrapper (a certified block is broadcast, its origin unsigned):
            # its budget, its penalties and our answers are that node's, never the neighbour's that carried it
            if kind == "chain_tx" and core.is_validator and origin not in core.state.validators.node_ids:
                core.counters["relayed_tx_dropped"] = core.counters.get("relayed_tx_dropped", 0) + 1
                return      # a follower hands transactions over by `chain.submit`, never in a relayed chain_tx
            sender = origin
        core.on_message(kind, message.get("body"), sender, self.clock(), paced=message.get("paced") is True)
        for hold in core.take_holds():      # before the neighbour's next message is handed over
            self.network.hold_reading(hold.node_id, hold.seconds)
        self.schedule_pump()

    def link_closed(self, node_id: str) -> None:
        """`node_id`'s link closed: it no longer counts among the neighbours sharing the transaction budget."""
        if self.core is not None:
            self.core.intake.tx_budget.forget(node_id)

    def check_decision(self, body: object) -> bool | None:
        """The router's check before it forwards a certified block (see BlockCheck.judge_certified)."""
        core = self.core
        if core is None:
            return None
        try:
            if type(body) is not list or len(body) != 2:
                return False
            return core.check.judge_certified(Block.from_wire(body[0]), Commit.from_wire(body[1]))
        except (Malformed, InvalidTx):
            return False

    def _snapshot_installed(self) -> None:
        """We start again from a peer's snapshot (`statesync.SnapshotJoin`): our role may have changed."""
        self._roles_changed()
        self.pump()

    # ------------------------------------------------------------------ the pump
    def schedule_pump(self) -> None:
        if self._pump_handle is None:
            self._pump_handle = asyncio.get_running_loop().call_soon(self.pump)

    def pump(self) -> None:
        """Carry out the core's effects in order. A consensus message leaves only when everything it depends
        on is on disk (its WAL record, the blocks before its height); while a write fails we hold our votes —
        the network goes on without us — and retry until the disk works again. Whatever a final block lets
        out (the decision broadcast, API answers, the stream, the outbox entry's removal, a snapshot) waits
        until the block itself is durable: for the only validator that block exists nowhere else."""
        self._pump_handle = None
        core = self.core
        if core is None:
            return
        batch = core.take_effects()
        durability = self.durability
        durability.flush()
        wal_failed = False
        sends: list[ChainEffect] = []       # messages waiting for the WAL records before them
        for effect in batch:
            if isinstance(effect, WalRecord):
                self._carry_out(core, effect)
                continue
            if durability.wal_waiting and not wal_failed:
                if isinstance(effect, SENDS):
                    # a message waits for the records after it too, up to the next effect that is not a message,
                    # so they share one fsync: a proposer's proposal and prevote, the only validator's whole height
                    sends.append(effect)
                    continue
                durability.flush()      # a failing disk is tried once per pump, not per effect
                wal_failed = durability.wal_waiting
            for send in sends:
                self._carry_out(core, send)
            sends = []
            self._carry_out(core, effect)
        if durability.wal_waiting and not wal_failed:
            durability.flush()
        for send in sends:
            self._carry_out(core, send)
        for encoded in self.snapshots.take_ready():       # a lagged network's, as the encoder hands them back
            durability.add_snapshot(*encoded)
        self.history.progress(core, durability.wal_top)
        self.ticker.nudge(core)

    def _carry_out(self, core: ChainCore, effect: ChainEffect) -> None:
        match effect:
            case SendValidators(message):
                if self.disk_error is not None and message["type"] in ("chain_vote", "chain_proposal", "chain_recovery"):
                    return
                me = self.identity.node_id
                for node_id in core.state.validators.node_ids:
                    if node_id != me:
                        self.network.send(node_id, message)
            case SendFollowers(message):
                if self.disk_error is not None:
                    return
                for node_id in self.peer_chains.linked_followers(set(core.state.validators.node_ids)):
                    self.network.send(node_id, message)
            case SendTo(node_id, message):
                self.network.send(node_id, message)
            case Broadcast(message):
                if not self.durability.hold(message):
                    self.network.broadcast(message)
            case Penalize(peer, points, reason):
                log.warning("penalising peer %s: %s", peer[:12], reason)
                self.network.penalize(peer, points, reason)
            case HoldReading(peer, seconds):
                self.network.hold_reading(peer, seconds)
            case Committed(block, commit, outcome, holds_own):
                self._committed(block, commit, outcome, holds_own)
            case Forward(tx, proposers):
                asyncio.get_running_loop().create_task(self.forwarding.forward(tx, proposers))
            case OwnDone(tx_id, status):
                self._own_done(tx_id, status)
            case Halt(reason):
                self.halted = reason
            case NeedSnapshot(node_id):
                self.snapshot_join.need(node_id)
            case WalRecord(record):
                self.durability.add_wal(record)              # written by the pump before the next effect
            case _:
                assert_never(effect)

    def _committed(self, block: Block, commit: Commit, outcome: BlockOutcome, holds_own: bool) -> None:
        """A validator stores every block durably before anything follows (for the only validator, or a
        quorum that lost power together, the block exists nowhere else). A follower's block is certified and
        any peer can serve it again, so a follower skips the fdatasync (40 % of a busy follower's samples
        were in it) unless the block holds a transaction of its own outbox (`holds_own`), whose answer must
        not outlive the block on this disk; the rest are synced within FOLLOWER_SYNC_INTERVAL (`durability.py`), before a
        snapshot or an epoch proof, and at stop. A machine crash costs a follower at most that last second
        of blocks, fetched again at restart."""
        core = self.core
        if core is not None and core.state.last_snapshot is not None:    # a network with no lag: taken just now
            self.durability.add_snapshot(*core.state.last_snapshot)
            core.state.last_snapshot = None
        proposer = block.header.proposer
        self.proposed[proposer] = self.proposed.get(proposer, 0) + 1
        durable = core is None or core.is_validator or holds_own
        self.durability.add_block(UnsavedBlock(block, commit, outcome, durable))
        self.tokens.block_applied()
        self.handback.block_applied()
        if self.core is not None and outcome.validators_changed:
            self._roles_changed()
            self.handback.seats_changed()

    def _block_saved(self, entry: UnsavedBlock) -> None:
        """The block is durable: let out what it holds back."""
        block, result = entry.block, _block_result(entry.outcome)
        for message in entry.held:
            self.network.broadcast(message)
        if entry.outcome.validators_changed:
            try:
                self.store.append_epoch(block, entry.commit)
            except StorageError as exc:
                log.error("could not store the proof of the validator set changed at height %d: %s", block.height, exc)
        tx_results = () if result is None else result.txs
        self.store.outbox_done([tx_result.tx_id for tx_result in tx_results])
        self.commit_log.append((block.height, self.clock(), sum(len(tx.ops) for tx in tx_results)))
        if self.own_orders.settle(tx_results, self.core):
            self.schedule_pump()
        for listener in self.block_listeners:
            try:
                listener(block, result)
            except Exception:
                log.exception("block listener failed")

    def _own_done(self, tx_id: str, status: str) -> None:
        self.forwarding.refusals.forget(tx_id)
        if status == "committed":       # its outbox entry goes once the block holding it is durable
            self.counters["committed_own"] += 1
            return
        self.store.outbox_done([tx_id])
        self.counters["expired_own"] += 1
        if self.own_orders.expired(tx_id, self.core):
            self.schedule_pump()

    def _roles_changed(self) -> None:
        assert self.core is not None
        self.forwarding.roles_changed(self.core)

    async def _ticker(self) -> None:
        """The core's clock (`ticker.py`), and what runs on it besides the core's tick."""
        while True:
            await self.ticker.sleep(tick_delay(self.core, self.disk_error is not None, self.clock()))
            self.counters["ticks"] += 1
            self.peer_chains.tell_grenache_members()
            self.durability.sync_follower_blocks(self.clock())
            if self.core is not None:
                try:
                    if self.disk_error is None:
                        self.core.tick(self.clock())
                    else:       # no new heights of ours while nothing can be made durable: retry the disk
                        self.durability.flush()
                    self.pump()
                    self._probe_outbox()
                    self._watch_quorum(self.core)
                except Exception:     # a bug here must not stop the chain's clock
                    log.exception("chain tick failed")

    def _watch_quorum(self, core: ChainCore) -> None:
        """Log a halt (no quorum) loudly and its end, through HaltWatch (at most one WARNING a minute)."""
        now = self.clock()
        said = self.halt_watch.observe(now, core.quorum_present(now), core.validator_liveness(now), core.role,
                                       core.state.validators.quorum)
        if said is not None:
            log.log(*said)

    def _probe_outbox(self) -> None:
        """After an outbox write failed, try a tiny one each second, so the node says it is ready again as
        soon as its disk takes writes (and not only after a user risked an order)."""
        if self.store.outbox_error is None or self.clock() < self._next_probe:
            return
        if self._probe is not None and not self._probe.done():
            return
        self._next_probe = self.clock() + OUTBOX_PROBE_INTERVAL
        self._probe = asyncio.get_running_loop().create_task(self.store.outbox_probe(), name="chain.outbox-probe")

    # ------------------------------------------------------------------ what the API's parts see
    async def wait_ready(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def usable_core(self) -> ChainCore:
        """The core, when it runs and is not halted; else raises NotReady (`ports.CoreGate`)."""
        core = self.core
        if self.fatal:
            raise NotReady("unrecoverable", self.fatal, 60.0)
        if core is None:
            raise NotReady("no_chain_yet", f"this node has not joined a network yet ({self.founding_status})")
        if self.halted or core.halted:
            raise NotReady("halted", f"the chain is halted on this node: {self.halted or core.halted}", 30.0)
        return core

    def accepting_core(self) -> ChainCore:
        """The core, when it also takes orders now; else raises NotReady, or the disk error that stops it."""
        core = self.usable_core()
        if self.recovering is not None:
            raise NotReady("recovering", f"this node is getting its damaged history ({self.recovering['missing']}) back "
                                         f"from peers; orders resume when it has", 5.0)
        if self.disk_error is not None:
            raise self.disk_error
        return core

    @property
    def disk_error(self) -> StorageError | None:
        """A write consensus needs failed: this node holds its votes until the disk works again."""
        return self.durability.disk_error

    @property
    def storage_problem(self) -> StorageError | None:
        """Why this node cannot write what it must (a consensus write, or its last outbox write), or None."""
        return self.disk_error or self.store.outbox_error

    @property
    def recovering(self) -> Recovering | None:
        """Damaged history still to come back from peers before orders are served (`history_recovery.py`)."""
        return self.history.recovering

    @property
    def fatal(self) -> str | None:
        """Why this node gave up (its history could not be recovered in time), or None."""
        return self.history.fatal

    @property
    def state(self) -> ExchangeState:
        return exchange_of(self.usable_core())

    @property
    def conflicts(self) -> dict[str, Conflict]:
        """Peers on another chain than ours, heard lately (bounded: `peer_chains.py`)."""
        return self.peer_chains.conflict_view()

    @property
    def app(self) -> ExchangeState | None:
        """The exchange the core runs (None before a chain), typed: the core holds it as its Application."""
        return None if self.core is None else exchange_of(self.core)

    def status(self) -> dict[str, object]:
        """The chain as /status shows it (under `exchange`): the core's view, this node's founding, halt,
        recovery and disk state, and the service's counters (a JSON object: counters are spread into it)."""
        core = self.core
        base: dict[str, object] = {"founding": self.founding_status, "halted": self.halted, **self.counters,
                                   "recovering": self.recovering,
                                   "fatal": self.fatal, "disk_error": _problem(self.disk_error),
                                   "outbox_error": _problem(self.store.outbox_error),
                                   "unsaved_blocks": self.durability.unsaved_blocks}
        if core is None:
            return base
        sign_from = core.consensus.sign_from
        now = self.clock()
        live_after = self.config.live_after
        liveness = [{"node_id": node, "heard_s": None if age is None else round(age, 1), "us": us,
                     "live": us or (age is not None and age <= live_after)}
                    for node, age, us in core.validator_liveness(now)]
        return {**core.status(now), **base, "network_id": self.network_id, "halt": self.halt_watch.view(now),
                "liveness": liveness,
                "sign_from": None if sign_from >= SIGN_FROM_UNKNOWN else sign_from,
                "markets": exchange_of(core).params.registry.symbols}


def _block_result(outcome: BlockOutcome) -> BlockResult | None:
    """The exchange's result of a final block: the core's application is the ExchangeState `boot` made."""
    result = outcome.exchange
    return result if isinstance(result, BlockResult) else None


def _problem(error: StorageError | None) -> dict[str, str] | None:
    return None if error is None else {"kind": error.kind, "message": str(error)}
