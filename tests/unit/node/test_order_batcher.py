"""OrderBatcher: an idle account's order leaves at once; a busy account's orders wait for its transaction in
flight and then leave together, one signature for all of them."""
from __future__ import annotations

import asyncio
import os

from exchange.app.txs import MAX_OPS, NewOrderOp, SignedTx
from node.accounts import Account
from node.order_batcher import OrderBatcher

CHAIN_ID = "c1" * 32


def op(i: int = 0) -> NewOrderOp:
    return NewOrderOp.parse("BTC-USD", "buy", "limit", f"{100 + i}.00", "1.0", None)


def new_order_ops(tx: SignedTx) -> list[NewOrderOp]:
    """A batch's operations: the batcher is only given new orders."""
    ops = []
    for each in tx.ops:
        assert isinstance(each, NewOrderOp), each
        ops.append(each)
    return ops


class Chain:
    """A submit that stays in flight until the test lets it land."""

    def __init__(self) -> None:
        self.submitted: list[SignedTx] = []
        self.gates: list[asyncio.Event] = []

    async def submit(self, tx: SignedTx) -> tuple[None, None]:
        self.submitted.append(tx)
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return None, None


def batcher(chain: Chain) -> OrderBatcher:
    return OrderBatcher(lambda: CHAIN_ID, lambda: 60_000, chain.submit)


async def test_an_idle_accounts_order_leaves_on_the_next_loop_pass() -> None:
    chain, alice = Chain(), Account("alice", os.urandom(32))
    orders = batcher(chain)
    tx, index, _ = await orders.add(alice, op())
    assert (len(tx.ops), index) == (1, 0)
    assert chain.submitted == [tx]
    chain.gates[0].set()


async def test_orders_placed_while_a_transaction_is_in_flight_leave_together_when_it_lands() -> None:
    chain, alice = Chain(), Account("alice", os.urandom(32))
    orders = batcher(chain)
    first = await orders.add(alice, op())
    waiting = [orders.add(alice, op(i)) for i in range(1, 6)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(chain.submitted) == 1 and not any(f.done() for f in waiting)
    chain.gates[0].set()
    await first[2]
    answers = await asyncio.gather(*waiting)
    assert len(chain.submitted) == 2
    second = chain.submitted[1]
    assert [a[0] for a in answers] == [second] * 5 and [a[1] for a in answers] == list(range(5))
    assert [o.price for o in new_order_ops(second)] == [op(i).price for i in range(1, 6)]
    assert second.signature_valid()
    chain.gates[1].set()


async def test_a_full_transaction_never_waits_and_other_accounts_do_not_wait_for_a_busy_one() -> None:
    chain = Chain()
    alice, bob = Account("alice", os.urandom(32)), Account("bob", os.urandom(32))
    orders = batcher(chain)
    await orders.add(alice, op())
    full = [orders.add(alice, op(i % 50)) for i in range(MAX_OPS)]
    bobs = await orders.add(bob, op())
    assert (await full[0])[0] is chain.submitted[1] and len(chain.submitted[1].ops) == MAX_OPS
    assert bobs[0] is chain.submitted[2] and bobs[0].account == bob.public_key
    for gate in chain.gates:
        gate.set()


async def test_a_failed_submission_lets_the_accounts_next_orders_go() -> None:
    alice = Account("alice", os.urandom(32))
    attempts: list[SignedTx] = []
    gate = asyncio.Event()

    async def failing(tx: SignedTx) -> None:
        attempts.append(tx)
        await gate.wait()
        raise RuntimeError("disk on fire")

    orders = OrderBatcher(lambda: CHAIN_ID, lambda: 60_000, failing)
    _, _, first = await orders.add(alice, op())
    later = orders.add(alice, op(1))
    gate.set()
    try:
        await first
    except RuntimeError:
        pass
    tx, _, second = await later
    assert attempts == [attempts[0], tx] and len(tx.ops) == 1
    second.cancel()
