"""OrderBatcher: orders for one account that arrive together leave together, in one signed transaction.

Every validator verifies every transaction's signature (about 60 us each here), so a busy API that
signed each order apart would spend most of the network's CPU on signatures. Orders placed through the
same account within one event-loop pass (concurrent requests) are put into one transaction (up to
MAX_OPS), signed once; each request still gets its own order id (`tx.order_id(i)`) and its own answer.
The operations of one transaction are independent: each has its own outcome, as in /orders/batch.

While an account's previous transaction is still being handed to the chain (its outbox write, about
one fsync), that account's new orders wait and then leave together, as TCP's Nagle algorithm holds
small segments while one is unacknowledged: an idle account's order leaves at once, a busy account's
orders share signatures in proportion to the load. A full transaction (MAX_OPS) never waits.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Callable, Generic, TypeVar

from exchange.app.txs import MAX_OPS, Op, SignedTx, sign_tx
from node.accounts import Account

# What `submit` returns; the batcher hands it on without reading it.
Result = TypeVar("Result")

# What each op's future resolves to: the signed transaction, the op's index in it, and the one task handing
# that transaction to the chain (its result is what `submit` returned)
Batched = tuple[SignedTx, int, asyncio.Future[Result]]


class _Pending(Generic[Result]):
    __slots__ = ("account", "ops", "futures")

    def __init__(self, account: Account) -> None:
        self.account = account
        self.ops: list[Op] = []
        self.futures: list[asyncio.Future[Batched[Result]]] = []


class OrderBatcher(Generic[Result]):
    def __init__(self, chain_id: Callable[[], str], ttl_ms: Callable[[], int],
                 submit: Callable[[SignedTx], Awaitable[Result]],
                 on_signed: Callable[[SignedTx], None] = lambda tx: None) -> None:
        self._chain_id = chain_id
        self._ttl_ms = ttl_ms
        self._submit = submit
        self._on_signed = on_signed
        self._pending: dict[str, _Pending[Result]] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._in_flight: dict[str, int] = {}     # account id -> its transactions not yet handed to the chain
        self.transactions = 0
        self.operations = 0

    def add(self, account: Account, op: Op) -> asyncio.Future[Batched[Result]]:
        """Queue `op` for `account`; the future resolves to (signed transaction, index of the op in it, the one
        task submitting that transaction)."""
        loop = asyncio.get_running_loop()
        pending = self._pending.get(account.id)
        if pending is None:
            pending = self._pending[account.id] = _Pending(account)
        future = loop.create_future()
        pending.ops.append(op)
        pending.futures.append(future)
        if len(pending.ops) >= MAX_OPS:
            self._sign(self._pending.pop(account.id))
        elif self._flush_handle is None and not self._in_flight.get(account.id):
            self._flush_handle = loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_handle = None
        for account_id in [a for a in self._pending if not self._in_flight.get(a)]:
            self._sign(self._pending.pop(account_id))

    def _handed_on(self, account_id: str) -> None:
        left = self._in_flight.pop(account_id, 1) - 1
        if left > 0:
            self._in_flight[account_id] = left
        elif account_id in self._pending and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _sign(self, batch: _Pending[Result]) -> None:
        account = batch.account
        try:
            tx = sign_tx(account.sign, account.public_key, self._chain_id(), os.urandom(12).hex(),
                         int(time.time() * 1000) + self._ttl_ms() - 1000, batch.ops)
        except Exception as exc:  # noqa: BLE001 - an op that breaks the format was refused before it got here
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        self._on_signed(tx)
        self.transactions += 1
        self.operations += len(batch.ops)
        submitted = asyncio.ensure_future(self._submit(tx))
        self._in_flight[account.id] = self._in_flight.get(account.id, 0) + 1
        submitted.add_done_callback(lambda _: self._handed_on(account.id))
        for index, future in enumerate(batch.futures):
            if not future.done():
                future.set_result((tx, index, submitted))
