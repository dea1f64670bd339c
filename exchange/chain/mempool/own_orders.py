"""Our users' transactions between the API's answer and finality: who waits for which, the cancels held back
until the order they cancel is in a block, and what the order views show meanwhile.

A transaction the API accepted is in the outbox on disk (the service wrote it before answering) and in the
core's own list (handed on until a block has it). Here are the rest of its loose ends: the API's futures,
resolved with the transaction's result once the block holding it is durable (`settle`), or with None when
it expired unordered (`expired`); and cancels of orders no block holds yet, which wait here (`hold`) and
go to the chain only once the order rests on the book (`release`), so the chain orders a cancel after
the order it cancels. A cancel whose order never rested is dropped unsent and answered `Withdrawn`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable, NamedTuple

from exchange.chain.core import ChainCore
from exchange.chain.ports import ChainStore, Refusal
from exchange.app.results import TxResult
from exchange.app.txs import CancelOp, NewOrderOp, SignedTx

log = logging.getLogger("exchange.chain")


class Withdrawn(NamedTuple):
    """What a held transaction's future resolves to when it was dropped unsent: a cancel of an order that
    never rested on the book (`order_never_landed`, or the order's final status, e.g. `order_filled`)."""

    reason: str


# An order's view as the order API shows it, here one answered 202 that no block holds yet: the same JSON object
# as the exchange's views of final orders (exchange/app/views.py builds those untyped), which the API lists and
# merges with it, so it keeps their type.
OrderView = dict[str, Any]

# What a future `OwnOrders` answers resolves to: the transaction's result once final here, Withdrawn when it was
# dropped unsent, None when it expired unordered (or was refused before it was queued).
TxOutcome = TxResult | Withdrawn | None


class OwnOrders:
    """The API's waits on our own transactions, and the cancels held for their orders."""

    def __init__(self, store: ChainStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self._waiters: dict[str, list[asyncio.Future[TxOutcome]]] = {}
        self._held: dict[str, list[SignedTx]] = {}      # our pending tx id -> our txs to hand on once a block has it
        self._submitted_at: dict[str, float] = {}
        self.finality_observers: list[Callable[[float], None]] = []    # seconds from submit to final here

    def wait_for(self, tx: SignedTx, future: asyncio.Future[TxOutcome], *, timed: bool = True) -> None:
        """`future` resolves when `tx` is final here (or expires); `timed`: its latency is observed."""
        self._waiters.setdefault(tx.id, []).append(future)
        if timed:
            self._submitted_at.setdefault(tx.id, self.clock())

    def hold(self, first_id: str, tx: SignedTx) -> None:
        """`tx` (a cancel) goes to the chain only once our pending transaction `first_id` left the outbox."""
        self._held.setdefault(first_id, []).append(tx)

    def restore(self, pending: list[SignedTx]) -> list[SignedTx]:
        """After a restart, of our pending transactions: hold again the cancels of orders also pending; the rest
        (returned) are handed on again."""
        by_prefix = {tx.id[:30]: tx for tx in pending}
        for tx in pending:
            first = by_prefix.get(cancelled_prefix(tx) or "")
            if first is not None and first is not tx:
                self.hold(first.id, tx)
        held = {tx.id for txs in self._held.values() for tx in txs}
        return [tx for tx in pending if tx.id not in held]

    def settle(self, tx_results: Iterable[TxResult], core: ChainCore | None) -> bool:
        """A block holding these results is durable: answer who waits, release what waited for them. Whether
        anything was handed to the core (the caller pumps it)."""
        now = self.clock()
        released = False
        for tx_result in tx_results:
            tx_id = tx_result.tx_id
            if tx_id in self._held:
                released = self.release(tx_id, core) or released
            waiters = self._waiters.pop(tx_id, None)
            submitted = self._submitted_at.pop(tx_id, None)
            if submitted is not None:
                for observe in self.finality_observers:
                    observe(now - submitted)
            for future in waiters or ():
                if not future.done():
                    future.set_result(tx_result)
        return released

    def expired(self, tx_id: str, core: ChainCore | None) -> bool:
        """Our transaction expired unordered: its waiters get None. Like `settle`, whether the core got work."""
        for future in self._waiters.pop(tx_id, []):
            if not future.done():
                future.set_result(None)
        return tx_id in self._held and self.release(tx_id, core)

    def release(self, first_id: str, core: ChainCore | None) -> bool:
        """`first` left the outbox: hand on what waited for it, or drop it when there is nothing to cancel.
        Whether anything was handed to the core."""
        held = self._held.pop(first_id, [])
        if core is None:
            return False
        app = core.state.app
        handed = False
        for tx in held:
            op = tx.ops[0]
            order = app.order(op.order_id) if isinstance(op, CancelOp) else None
            if order is not None and order["status"] in ("open", "partially_filled"):
                why = core.submit(tx, self.clock(), own=True)
                if why is None or why == "duplicate":
                    self._submitted_at.setdefault(tx.id, self.clock())
                    handed = True
                    continue
                outcome = Withdrawn(why)
            else:
                outcome = Withdrawn("order_never_landed" if order is None else f"order_{order['status']}")
            log.info("cancel %s not handed on: %s", tx.id, outcome.reason)
            self.store.outbox_done([tx.id])
            for future in self._waiters.pop(tx.id, []):
                if not future.done():
                    future.set_result(outcome)
        return handed

    def cancel_waits(self) -> None:
        """At stop: nobody waits any more."""
        for waiters in self._waiters.values():
            for future in waiters:
                if not future.done():
                    future.cancel()

    def views(self, core: ChainCore, account: str | None, reason: str,
              refusal: Callable[[str], Refusal | None]) -> list[OrderView]:
        """Our users' orders answered 202 that no block holds yet, newest first: status `pending` with the
        reason and the validators' last refusal of its transaction (`refusal(tx id)`), and `cancel` when a
        cancel of it waits for it."""
        app = core.state.app
        cancels = {cancelled_prefix(tx): tx.id for txs in self._held.values() for tx in txs}
        views: list[OrderView] = []
        for tx in reversed(self.store.outbox()):
            if account is not None and tx.owner.hex() != account:
                continue
            for index, op in enumerate(tx.ops):
                if not isinstance(op, NewOrderOp) or app.order(tx.order_id(index)) is not None:
                    continue
                view = pending_view(tx, index, op, reason, refusal(tx.id))
                cancel = cancels.get(tx.id[:30]) if len(tx.ops) == 1 else None
                if cancel is not None:
                    view["cancel"] = {"tx_id": cancel, "status": "pending", "reason": "waits_for_the_order"}
                views.append(view)
        return views


def pending_view(tx: SignedTx, index: int, op: NewOrderOp, reason: str | None,
                 refusal: Refusal | None = None) -> OrderView:
    """An order of ours no block holds yet, shaped like a final order's view; a pending one (with a `reason`)
    also says what the validators last said when none took it (`validator_refusal`, null when none refused)."""
    view: OrderView = {"id": tx.order_id(index), "status": "pending", "reason": reason, "market": op.market,
                       "side": op.side, "type": op.type, "price": op.price, "qty": op.qty, "remaining": op.qty,
                       "filled": "0", "account": tx.owner.hex(), "stp": op.stp, "tx_id": tx.id, "final": False}
    if reason is not None:
        view["validator_refusal"] = refusal
    return view


def cancelled_prefix(tx: SignedTx) -> str | None:
    """The tx id prefix (order ids start with it) of the order a one-cancel transaction cancels."""
    if len(tx.ops) == 1 and isinstance(tx.ops[0], CancelOp):
        return tx.ops[0].order_id[:30]
    return None
