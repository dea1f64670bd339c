"""ChainState: the replicated state every node folds committed blocks into, deterministically.

It wraps the exchange application (books, orders, trades, positions: any `Application`) with what
consensus itself needs from the log: the height and time, the id of the last block, the validator
set for the next height (changed only by membership transactions), who signed the commits recorded
in blocks (for the proposer rotation and to find absent validators), and a state hash that the next
block's header must carry, so a node whose state diverged can never vote for, or accept, a block.
Every `snapshot_interval` heights the state is snapshotted, and the hash covers the snapshot's digest,
so a node may start from a peer's snapshot and check it against the chain's quorum certificates: at the
same height, or `snapshot_lag` heights later where the genesis sets one (the encoding then runs off the
event loop: `snapshot_maker.py`). Where the genesis sets `snapshot_min_ms`, a snapshot also waits until
that much block time has passed since the last one (at most SNAPSHOT_FORCED_AFTER intervals): a snapshot
costs every node the same whatever the block rate, and a flood that makes blocks many times faster would
otherwise make snapshots as much more frequent. Which heights are snapshots follows from the chain alone
(block times, and the height and time of the snapshot a node started from), so every node agrees.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, Protocol, Sequence, TypedDict

import msgpack

from exchange.chain.types.blocks import GENESIS_PARENT, Block, Malformed
from exchange.chain.types.codec import bin_header, digest, pack, unpack
from exchange.chain.types.genesis import Genesis
from exchange.chain.state.membership import MembershipTx, Recover
from exchange.chain.state.outcome import BlockOutcome
from exchange.chain.state.seats import Seats
from exchange.chain.state.snapshot_maker import InlineSnapshots, SnapshotMaker, snapshot_digest
from exchange.app.txs import InvalidTx, SignedTx
from exchange.chain.types.validators import ValidatorSet, ValidatorSummary
from exchange.wire import Wire

log = logging.getLogger("exchange.chain")

class Application(Protocol):
    """The exchange state machine (exchange/app.py) as the chain drives it."""

    def precheck(self, tx: SignedTx, chain_id: str, now_ms: int) -> str | None: ...
    def begin_block(self, height: int, time_ms: int) -> None: ...
    # what these return is the application's (the exchange's TxResult and BlockResult): the chain passes the
    # block's result on in BlockOutcome.exchange and reads none of it
    def apply_tx(self, tx: SignedTx) -> object: ...
    def reject_tx(self, tx: SignedTx, reason: str) -> object: ...
    def end_block(self) -> object: ...
    @property
    def app_hash(self) -> bytes: ...
    def snapshot(self) -> bytes: ...
    def snapshot_parts(self) -> Sequence[bytes]: ...    # what joins to snapshot(), in pieces
    def order(self, order_id: str) -> Mapping[str, object] | None: ...   # its view (the chain reads `status`)


class ChainStateStatus(TypedDict):
    height: int
    time_ms: int
    last_block_id: str
    validators: ValidatorSummary
    app_hash: str


class SnapshotView(TypedDict):
    """The network's snapshot rules (from its genesis) and the newest snapshot height, for /status."""
    interval: int
    lag: int
    min_seconds: float
    last_height: int        # 0: none yet
    last_time_ms: int
    loop_held_last_ms: float        # how long taking the last one held the event loop
    loop_held_last_by: str | None   # how: "join" (kept rows), "fork", "encode" (whole, at once), "wait" (a late child)
    loop_held_longest_ms: float     # the longest since the node started
    loop_held_ago_s: float | None   # seconds since the last one ended (None: none taken here yet)


def decode_item(item: object) -> SignedTx | MembershipTx:
    """One block transaction from its wire form (raises Malformed / InvalidTx)."""
    if type(item) is not list or len(item) != 2:
        raise Malformed("bad_tx_item")
    if item[0] == "a":
        return SignedTx.from_wire(item[1])
    if item[0] == "m":
        return MembershipTx.from_wire(item[1])
    raise Malformed("bad_tx_item")


def recovery_of(txs: list[SignedTx | MembershipTx]) -> Recover | None:
    """The recovery a block's decoded transactions carry when it is a recovery block: its first transaction,
    followed only by exchange transactions (those of the block it carries, see `Recover.lock`)."""
    if txs and isinstance(txs[0], Recover) and all(isinstance(tx, SignedTx) for tx in txs[1:]):
        return txs[0]
    return None


def encode_item(tx: SignedTx | MembershipTx) -> Wire:
    return ["a", tx.wire()] if isinstance(tx, SignedTx) else ["m", tx.wire()]


STATE_DOMAIN = "exchange-node/state/v2"
KEEP_CERTIFICATES = 3
SNAPSHOT_FORCED_AFTER = 10      # intervals: a snapshot is due then however little block time passed (a clock held back)


class ChainState:
    def __init__(self, genesis: Genesis, app: Application, snapshots: SnapshotMaker | None = None) -> None:
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.app = app
        self.snapshot_interval = genesis.snapshot_interval
        self.snapshot_lag = genesis.snapshot_lag
        self.snapshot_min_ms = genesis.snapshot_min_ms
        self.snapshots: SnapshotMaker = snapshots if snapshots is not None else InlineSnapshots()
        # snapshot height -> what the state hash that certified it covered besides its digest (lagged networks;
        # a joining peer is given it to check the snapshot against that hash)
        self.certificates: dict[int, Wire] = {}
        self.height = 0
        self.time_ms = 0          # not the founder's clock: a founder whose clock is ahead must not set the chain's time
        self.last_block_id = GENESIS_PARENT
        self.validators = genesis.first_validators()          # the set deciding height + 1
        self.prev_validators = self.validators                # the set that decided `height`
        self.recent_signers: tuple[bytes, ...] = ()
        self.last_seen: dict[bytes, tuple[int, int]] = {k: (0, 0) for k in self.validators.keys}
        self.seats = Seats()                                  # standbys, approvals, bans
        self.snapshot_hash = b""
        self.last_snapshot: tuple[int, bytes] | None = None    # the newest certified snapshot, to store
        self.snapshot_taken = (0, 0)        # height and block time of the newest snapshot (or of the first block)
        self.hash = self._compute_hash()

    # ------------------------------------------------------------------ applying blocks
    def apply_block(self, block: Block, txs: list[SignedTx | MembershipTx] | None = None,
                    refused: dict[int, str] | None = None) -> BlockOutcome:
        """Fold a committed block. Its header and commit were checked by the caller; so were its transactions'
        signatures, and `refused` names (by index) those that failed: they are recorded as failed, never run.
        Membership transactions are judged here against this node's own state, whoever certified them."""
        header = block.header
        if header.height != self.height + 1 or header.prev_id != self.last_block_id:
            raise ValueError(f"block {header.height} does not follow height {self.height}")
        decoded = txs if txs is not None else [decode_item(item) for item in block.txs]
        height, time_ms = header.height, header.time_ms
        certifying = self.certified_at(height)
        # before anything changes: a snapshot whose encoding was lost leaves this block unapplied (SnapshotLost)
        certified_digest = self.snapshots.digest(certifying) if certifying is not None else b""
        commit = header.last_commit
        if commit is not None:
            signers = tuple(commit.signers(self.prev_validators))
            self.recent_signers = signers
            for key in signers:
                if key in self.last_seen:
                    self.last_seen[key] = (commit.height, time_ms)
        if header.proposer in self.last_seen:      # proposing a block that was decided shows it is here too
            self.last_seen[header.proposer] = (height, time_ms)
        app = self.app
        app.begin_block(height, time_ms)
        outcome = BlockOutcome(height, block.id, time_ms, None)
        next_validators = self.validators
        deciding = self.validators          # the set whose commit certifies this block
        recovery = recovery_of(decoded)
        changed = False
        refused = refused or {}
        for index, tx in enumerate(decoded):
            if isinstance(tx, SignedTx):
                reason = refused.get(index)
                if reason is None:
                    app.apply_tx(tx)
                else:
                    app.reject_tx(tx, reason)
                continue
            if index in refused:
                outcome.membership.append((tx, refused[index]))
                continue
            if changed and tx.changes_set:
                outcome.membership.append((tx, "one_change_per_block"))
                continue
            if isinstance(tx, Recover) and tx is not recovery:
                outcome.membership.append((tx, "recover_not_alone"))
                continue
            verdict = self.seats.problem(tx, self.validators, self.genesis, height, time_ms,
                                         lambda key: self.is_absent(key, height, time_ms), self.last_block_id)
            if verdict is None:
                candidate = self.seats.apply(tx, self.validators, height, time_ms)
                if candidate is not None:
                    next_validators, changed = candidate, True
                    if tx is recovery:      # the recovered set certified this very block
                        deciding = candidate
                    log.warning("validator set epoch %d -> %d at height %d: %s (%d validators)",
                                self.validators.epoch, candidate.epoch, height, tx, len(candidate))
            outcome.membership.append((tx, verdict or "applied"))
        # members seen signing leave probation after the block's own changes were judged (as its proposer and
        # every checker judged them: on the seats the block before left)
        self.seats.signed([*(self.recent_signers if commit is not None else ()), header.proposer])
        outcome.exchange = app.end_block()
        self.prev_validators = deciding
        self.validators = next_validators
        outcome.validators_changed = changed
        if changed:
            self.seats.after_change(next_validators)
            for key in next_validators.keys:        # a new validator's absence counts from its first seat
                self.last_seen.setdefault(key, (height, time_ms))
        self.seats.end_block(height, time_ms, block.id)
        self.height, self.time_ms, self.last_block_id = height, time_ms, block.id
        self.last_seen = {k: v for k, v in self.last_seen.items() if k in next_validators}
        self.snapshot_hash = certified_digest
        if height == 1:     # block time counts from the chain's first block (the state's own starts at 0)
            self.snapshot_taken = (0, time_ms)
        if self.snapshot_due(height, time_ms):
            self.snapshot_taken = (height, time_ms)
            if self.snapshot_lag:
                self.snapshots.start(height, self.snapshot_parts)
            else:
                data = self.snapshot()
                self.snapshot_hash = snapshot_digest(data)
                self.last_snapshot = (height, data)
        self.hash = outcome.state_hash = self._compute_hash()
        if certifying is not None:
            self.certificates[certifying] = self._hash_preimage()[:-1]
            for old in sorted(self.certificates)[:-KEEP_CERTIFICATES]:
                del self.certificates[old]
        return outcome

    def snapshot_due(self, height: int, time_ms: int) -> bool:
        """Whether the state after block `height` (of block time `time_ms`) is a snapshot: `snapshot_interval`
        heights after the last one, and `snapshot_min_ms` of block time after it or after the first block (or
        SNAPSHOT_FORCED_AFTER intervals after it, whatever the time)."""
        taken_height, taken_ms = self.snapshot_taken
        since = height - taken_height
        if since < self.snapshot_interval:
            return False
        return time_ms - taken_ms >= self.snapshot_min_ms or since >= SNAPSHOT_FORCED_AFTER * self.snapshot_interval

    def certified_at(self, height: int) -> int | None:
        """The snapshot whose digest the state hash of `height` covers on a lagged network, or None (the next
        snapshot is at least `snapshot_interval` heights on, more than the lag, so the newest is the one)."""
        taken = self.snapshot_taken[0]
        if self.snapshot_lag and taken > 0 and height == taken + self.snapshot_lag:
            return taken
        return None

    def membership_problem(self, tx: MembershipTx, height: int, time_ms: int, seats: Seats | None = None,
                           validators: ValidatorSet | None = None) -> str | None:
        """Why `tx` cannot apply at `height` (on `seats`/`validators` when a block's earlier changes are
        simulated), or None."""
        return (seats or self.seats).problem(tx, validators or self.validators, self.genesis, height, time_ms,
                                             lambda key: self.is_absent(key, height, time_ms), self.last_block_id)

    def is_absent(self, key: bytes, height: int, time_ms: int) -> bool:
        seen_height, seen_time = self.last_seen.get(key, (0, 0))
        return height - seen_height > self.genesis.absent_blocks and time_ms - seen_time >= self.genesis.absent_ms

    # ------------------------------------------------------------------ hashes and snapshots
    def _hash_preimage(self) -> Wire:
        return [self.height, self.last_block_id, self.app.app_hash, self.validators.wire(), self.seats.hash(),
                self.snapshot_hash]

    def _compute_hash(self) -> bytes:
        return digest(STATE_DOMAIN, self._hash_preimage())

    def snapshot(self) -> bytes:
        """The whole state, canonically encoded (the chain certifies its hash every snapshot_interval)."""
        return b"".join(self.snapshot_parts())

    def snapshot_parts(self) -> list[bytes]:
        """`pack([height, time, last block, validators, previous validators, recent signers, last seen, seats,
        the application's snapshot])` in pieces, the application's own pieces last, so nothing is copied before
        the one join that makes the bytes."""
        own = [self.height, self.time_ms, self.last_block_id, self.validators.wire(), self.prev_validators.wire(),
               list(self.recent_signers), sorted([k, h, t] for k, (h, t) in self.last_seen.items()), self.seats.wire()]
        app = self.app.snapshot_parts()
        return [msgpack.Packer().pack_array_header(len(own) + 1), *map(pack, own), bin_header(sum(map(len, app))), *app]

    def restore(self, data: bytes, app_factory: Callable[[bytes], Application]) -> None:
        """Replace this state with a snapshot's (raises ValueError if malformed)."""
        try:
            (height, time_ms, last_id, vals, prev_vals, recent, seen, seats_wire, app_bytes) = unpack(data)
            # a peer's bytes: each field of the type it must be (int(), bytes() of a peer's number would
            # convert or allocate whatever it says)
            if not (type(height) is int and height >= 0 and type(time_ms) is int and time_ms >= 0
                    and type(last_id) is bytes and len(last_id) == len(GENESIS_PARENT) and type(recent) is list
                    and all(type(k) is bytes for k in recent) and type(seen) is list and type(app_bytes) is bytes
                    and all(type(row) is list and len(row) == 3 and type(row[0]) is bytes and type(row[1]) is int
                            and type(row[2]) is int for row in seen)):
                raise ValueError("a field of the wrong type")
            validators = ValidatorSet.from_wire(vals)
            prev_validators = ValidatorSet.from_wire(prev_vals)
            recent_signers = tuple(recent)
            last_seen = {k: (h, t) for k, h, t in seen}
            seats = Seats.from_wire(seats_wire)
            app = app_factory(app_bytes)
        except (TypeError, ValueError, OverflowError, Malformed, InvalidTx) as exc:
            raise ValueError(f"malformed chain snapshot: {exc}") from None
        self.height, self.time_ms, self.last_block_id = height, time_ms, last_id
        self.validators, self.prev_validators = validators, prev_validators
        self.recent_signers, self.last_seen, self.seats = recent_signers, last_seen, seats
        self.app = app
        self.snapshot_taken = (height, time_ms)     # a snapshot is only ever taken (and served) at a snapshot height
        if self.snapshot_lag:       # certified `snapshot_lag` heights later, by the digest of these very bytes
            self.snapshot_hash = b""
            self.snapshots.known(self.height, data)
        else:
            self.snapshot_hash = snapshot_digest(data)
        self.last_snapshot = None
        self.hash = self._compute_hash()

    def snapshot_view(self) -> SnapshotView:
        height, time_ms = self.snapshot_taken
        held = self.snapshots.held
        return {"interval": self.snapshot_interval, "lag": self.snapshot_lag,
                "min_seconds": self.snapshot_min_ms / 1000, "last_height": height,
                "last_time_ms": time_ms if height else 0,
                "loop_held_last_ms": round(held.last_seconds * 1000, 2), "loop_held_last_by": held.last_way,
                "loop_held_longest_ms": round(held.longest_seconds * 1000, 2),
                "loop_held_ago_s": None if (ago := held.ago()) is None else round(ago, 3)}

    def status(self) -> ChainStateStatus:
        return {"height": self.height, "time_ms": self.time_ms, "last_block_id": self.last_block_id.hex(),
                "validators": self.validators.summary(), "app_hash": self.hash.hex()}
