"""Start-up over stored history: the snapshot to start from, the blocks replayed on top of it, and what the
node may sign after damage (the signing floor).

Each stored block is replayed only if it follows the state replayed before it; a block log that starts
after height 1 needs a snapshot covering the heights before it. Then `check_history` compares what the
block log, the consensus WAL and the stored signing floor say: history that is damaged or lost must come
back from peers before the node serves orders (`HistoryCheck.recovering`), and the node never signs at a
height it may already have signed at. Last, `restore_outbox` hands our transactions no block holds yet on again.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

from exchange.chain.core import ChainCore
from exchange.chain.mempool.own_orders import OwnOrders
from exchange.chain.recovery.history_recovery import Recovering, store_dir
from exchange.chain.ports import ChainStore
from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import NewOrderOp, SignedTx
from exchange.chain.store.block_store import SIGN_FROM_UNKNOWN
from exchange.chain.consensus.tendermint import wal_record_height
from exchange.wire import Wire

log = logging.getLogger("exchange.chain")


class HistoryCheck(NamedTuple):
    """`recovering`: what must come back from peers before orders are served (None: nothing);
    `wal_top`: the highest height with a signed record in a trustworthy WAL (0: none)."""

    recovering: Recovering | None
    wal_top: int


def exchange_of(core: ChainCore) -> ExchangeState:
    """The core's application, which boot made an ExchangeState: the core sees only its Protocol."""
    app = core.state.app
    assert isinstance(app, ExchangeState)
    return app


class StoredChainUnusable(Exception):
    """What DATA_DIR holds cannot be started from (inconsistent blocks, a gap no snapshot covers, another
    chain than the settings name): the message says why and what to do; the command line exits 3 with it."""


def replay(store: ChainStore, core: ChainCore, start: int | None) -> int:
    """Fold our stored blocks into the state, checking each against the state it claims to follow: a stored
    block or snapshot that does not fit is never served from."""
    replayed = 0
    for block, commit in store.blocks(start):
        header = block.header
        if header.prev_id != core.state.last_block_id or header.app_hash != core.state.hash:
            raise StoredChainUnusable(f"stored block {header.height} in {store_dir(store, 'blocks')} does "
                             f"not follow the state replayed before it (height {core.height}); the stored chain "
                             f"is inconsistent: move {store_dir(store)} aside to resynchronise from peers")
        core.load_block(block, commit)
        replayed += 1
    return replayed


def restore_snapshot(store: ChainStore, core: ChainCore, params: ExchangeParams) -> int | None:
    """Start from the newest stored snapshot when the blocks before it were compacted away."""
    first = store.first_height
    if first <= 1:
        return None
    loaded = store.load_snapshot()
    if loaded is None or loaded[0] + 1 < first:
        raise StoredChainUnusable(f"the block log starts at height {first} but no usable snapshot "
                         f"covers the heights before it; move {store_dir(store)} aside to resynchronise from peers")
    height, data = loaded
    chain_id = core.chain_id
    core.state.restore(data, lambda app_bytes: ExchangeState.restore(params, app_bytes, chain_id))
    stored = store.get(height)
    if stored is not None:      # the next block we propose carries the commit of this one
        core.last_commit = stored[1]
    log.info("restored the state at height %d from a snapshot (%d bytes)", height, len(data))
    return height + 1


def check_history(store: ChainStore, core: ChainCore, now: float, wal: list[Wire] | None) -> HistoryCheck:
    """Stored history that is damaged or lost must come back from peers before we serve orders, and we never
    sign at a height we may already have signed at. An intact WAL says exactly what we signed at the height
    we were deciding (the core re-sends it when it gets there). A damaged one costs that height only if a
    lost record may be of it (`WalDamage.verdict`: records lost between intact ones of decided heights
    cost nothing, and the WAL is then used as it is); otherwise that height is skipped. The floor is stored
    before the evidence behind it is repaired, so a crash meanwhile keeps it. `wal`: the WAL's intact
    records of heights no stored block decided."""
    missing = list(store.missing_heights)
    wal_top = max((h for h in map(wal_record_height, wal or []) if h is not None), default=0)
    # a block log whose newest file the disk cut short looks torn, not damaged: the WAL says how far we got
    # (an intact record of height h, even in a damaged WAL, means h - 1 was decided)
    known_top = max(store.last_height, wal_top - 1)
    verdict = None
    if not store.wal_trustworthy:
        verdict = store.wal_damage().verdict(known_top)
        if verdict.sign_from <= 1:
            log.warning("%s", verdict.text)
            store.accept_wal_damage()
    wal_ok = store.wal_trustworthy
    wal_top_kept = wal_top if wal_ok else 0
    needed = 1
    recovering: Recovering | None = None
    if missing or known_top > core.height:
        ranges = ", ".join(f"{r.start}-{r.stop - 1}" for r in missing) or f"{core.height + 1}-{known_top}"
        damage = "; ".join(store.blocks_damage) or f"{store_dir(store, 'blocks')} ends early"
        recovering = {"since": now, "need_height": known_top, "missing": ranges,
                      "tail_damaged": store.blocks_tail_damaged, "damage": damage}
        log.error("stored blocks %s are damaged or lost (%s): replayed up to height %d; fetching certified "
                  "copies from peers before serving orders", ranges, damage, core.height)
        # how far we had signed is unknown when the newest blocks are damaged: follow the peers first
        needed = SIGN_FROM_UNKNOWN if store.blocks_tail_damaged else known_top + (1 if wal_ok else 2)
    elif not wal_ok:
        if core.state.validators.keys == (core.public_key,):
            # the only validator: whatever it signed at the height in progress never left this node (a
            # decision leaves only once its block is durable), so nobody holds a signature to contradict
            log.warning("the consensus WAL is damaged; this node is the only validator, so it signs the height "
                        "in progress afresh")
            verdict = None
        else:
            needed = known_top + 2
    if verdict is not None and not wal_ok:
        log.error("%s", verdict.text)
    floor = store.load_sign_from()
    if needed > floor:
        store.save_sign_from(needed)
        floor = needed
    core.consensus.sign_from = max(floor, wal_top if wal_ok else 0)
    if floor == SIGN_FROM_UNKNOWN and recovering is None:
        recovering = {"since": now, "need_height": core.height, "missing": "the signing record",
                      "tail_damaged": True, "damage": store_dir(store, "signing")}
    if floor == SIGN_FROM_UNKNOWN:
        log.warning("not signing at any height until caught up with peers: we may have signed there before "
                    "the damage")
    elif floor > known_top + 1:
        log.warning("not signing at heights %d..%d (signing from height %d): we may have signed there before "
                    "the damage", known_top + 1, floor - 1, floor)
    elif floor > core.height + 1:
        log.warning("not signing below height %d: heights %d..%d are decided; catching up with peers first",
                    floor, core.height + 1, floor - 1)
    return HistoryCheck(recovering, wal_top_kept)


def restore_outbox(store: ChainStore, core: ChainCore, own_orders: OwnOrders, now: float) -> None:
    """Our accepted transactions not yet in a block are handed on again; those a replayed block holds (a
    crash came between the block and the outbox's 'done' record) leave the outbox."""
    app = exchange_of(core)
    pending: list[SignedTx] = []
    final: list[SignedTx] = []
    for tx in store.outbox():
        in_block = app.replay.seen(tx.id, tx.expires) or (
            isinstance(tx.ops[0], NewOrderOp) and app.order(tx.order_id(0)) is not None)
        (final if in_block else pending).append(tx)
    if final:
        store.outbox_done([tx.id for tx in final])
    core.intake.restore(own_orders.restore(pending), now)
