"""Our users' transactions, from the API's call to its answer: checked, made durable in the outbox, then
handed to the core (`submit`); a cancel of an order no block holds yet held until a block has the order
(`submit_after`); the orders answered 202 and still in no block (`pending_orders`), and why they wait.

The order of the steps is the service's durability rule for the API: a transaction is in the outbox on disk
before `submit` returns, so a 202 "pending" survives a crash and the node keeps handing the order on until a
block has it. The waits themselves and the cancels held back are `own_orders.py`'s.
"""
from __future__ import annotations

import asyncio
from typing import Callable

from exchange.app.txs import SignedTx
from exchange.chain.mempool.forwarding import ForwardRefusals
from exchange.chain.mempool.own_orders import OrderView, OwnOrders, TxOutcome
from exchange.chain.ports import ChainStore, CoreGate, NotReady, Refusal


class Submissions:
    """The API's door to the chain for our users' transactions (the service's `submissions`)."""

    def __init__(self, gate: CoreGate, store: ChainStore, own_orders: OwnOrders, clock: Callable[[], float],
                 counters: dict[str, int], refusals: ForwardRefusals) -> None:
        self.gate = gate
        self.store = store
        self.own_orders = own_orders
        self.clock = clock
        self.counters = counters
        self.refusals = refusals        # what the validators last said of our pending transactions
        # made durable in this pass of the event loop, for `_hand_on_durable`: (tx, its outcome, the refusal)
        self._durable: list[tuple[SignedTx, asyncio.Future[TxOutcome], asyncio.Future[str | None]]] = []

    async def submit(self, tx: SignedTx) -> tuple[str | None, asyncio.Future[TxOutcome]]:
        """Take our user's transaction: check it, make it durable in the outbox, then hand it to the chain.
        Returns (refusal reason or None, a future resolving to its TxResult once final, or to None if it
        expired first). Raises NotReady, or StorageError when the outbox cannot be written (nothing left
        this node then)."""
        core = self.gate.accepting_core()
        future: asyncio.Future[TxOutcome] = asyncio.get_running_loop().create_future()
        why = core.intake.precheck(tx)
        if why is not None:     # "duplicate": a final block holds it, even if its first answer is still on its way
            future.set_result(None)
            return why, future
        await self.store.outbox_add([tx])
        return await self._hand_on(tx, future), future

    async def _hand_on(self, tx: SignedTx, future: asyncio.Future[TxOutcome]) -> str | None:
        """Hand `tx`, durable now, to the core with every other one made durable in this pass of the event loop
        (one outbox sync wakes its writers together): they are queued before a height starts, so they share it.
        `future` waits for its outcome from then on. Returns its refusal or None; raises NotReady (its outbox
        entry dropped) when the core cannot take it."""
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._durable.append((tx, future, answer))
        if len(self._durable) == 1:
            asyncio.get_running_loop().call_soon(self._hand_on_durable)
        return await answer

    def _hand_on_durable(self) -> None:
        batch, self._durable = self._durable, []
        try:
            core = self.gate.usable_core()      # durable now: a disk error since then no longer concerns these orders
        except NotReady as exc:
            self.store.outbox_done([tx.id for tx, _, _ in batch])
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        try:
            answers = core.intake.submit_many([tx for tx, _, _ in batch], self.clock())
        except Exception as exc:     # a bug: each caller gets it (their API answers 500), none waits forever
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            raise
        for (tx, future, answer), why in zip(batch, answers):
            if why is not None and why != "duplicate":
                self.store.outbox_done([tx.id])
                future.set_result(None)
            else:       # waited for before the pump can settle it
                self.counters["submitted"] += 1
                self.own_orders.wait_for(tx, future)
            if not answer.done():       # else the caller gave up; the transaction's fate is the same
                answer.set_result(why)
        self.gate.schedule_pump()

    async def submit_after(self, tx: SignedTx, first: SignedTx) -> tuple[str | None, asyncio.Future[TxOutcome]]:
        """Take a cancel of our own order `first` that no block holds yet: durable in the outbox now, handed on
        only once a block has `first`, so the chain orders it after the order. If the order then rests on the
        book the cancel goes to the chain; if it never rested (it expired unordered, was rejected or filled at
        once) the cancel is dropped unsent and its future resolves to Withdrawn(why). Returns like `submit`."""
        if not self._pending_here(first.id):
            return await self.submit(tx)
        core = self.gate.accepting_core()
        future: asyncio.Future[TxOutcome] = asyncio.get_running_loop().create_future()
        why = core.intake.precheck(tx)     # signature, expiry, market (the order it names is unknown to the state yet)
        if why is not None:
            future.set_result(None)
            return why, future
        await self.store.outbox_add([tx])
        self.own_orders.wait_for(tx, future, timed=False)
        self.own_orders.hold(first.id, tx)
        if not self._pending_here(first.id) and self.own_orders.release(first.id, self.gate.core):
            self.gate.schedule_pump()       # a block took the order (or it expired) while we wrote
        return None, future

    def _pending_here(self, tx_id: str) -> bool:
        return any(tx.id == tx_id for tx in self.store.outbox())

    def pending_orders(self, account: str | None = None) -> list[OrderView]:
        """Our users' orders answered 202 that no block holds yet, newest first (`own_orders.py`)."""
        core = self.gate.core
        return [] if core is None else self.own_orders.views(core, account, self.pending_reason(), self.refusal)

    def pending_order(self, order_id: str) -> tuple[SignedTx, OrderView] | None:
        """(its transaction, its view) for one of `pending_orders`, or None."""
        for view in self.pending_orders():
            if view["id"] == order_id:
                tx = next(tx for tx in self.store.outbox() if tx.id == view["tx_id"])
                return tx, view
        return None

    def signature_valid(self, tx: SignedTx) -> bool:
        """Whether a client's transaction's signature verifies, checked once per node: a good one is remembered,
        so the chain's intake, mempool and block checks do not check it again."""
        core = self.gate.core
        if core is None:
            return tx.signature_valid()
        if core.mempool.is_verified(tx):
            return True
        if not tx.signature_valid():
            return False
        core.mempool.remember_verified(tx)
        return True

    def signed_here(self, tx: SignedTx) -> None:
        """A transaction this node signed itself with one of its accounts: its signature is known good."""
        core = self.gate.core
        if core is not None:
            core.mempool.remember_verified(tx)

    @staticmethod
    async def wait(future: asyncio.Future[TxOutcome], timeout: float) -> TxOutcome:
        """The transaction's outcome, or None when `timeout` passes first (the future stays live)."""
        if future.done():
            return future.result()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            return None

    def refusal(self, tx_id: str) -> Refusal | None:
        """What the validators said the last time our pending transaction `tx_id` was handed on and none took
        it (`sender_quota`, `account_rate`, `mempool_full`, ...), or None; this node keeps handing it on."""
        return self.refusals.latest(tx_id)

    def pending_reason(self) -> str:
        """Why our transactions are not final yet: `no_chain_yet`, `no_quorum` or `not_final_yet`."""
        core = self.gate.core
        if core is None:
            return "no_chain_yet"
        if not core.quorum_present(self.clock()):
            return "no_quorum"
        return "not_final_yet"
