"""Nothing in the state grows with history. 100,000 orders through one state (200,000 in `make soak`), with a
steady book (each account cancels the order it placed K orders ago), hold the same memory after 50,000 orders
as after 75,000 and 100,000: closed orders, trades and the replay window are all at their bounds by 50,000.

Bounds for these parameters (5,000 closed orders, 1,000 trades per market, 10 s TTL at 2,000 tx/s
of block time, so at most 22,000 remembered tx ids; at most 400 resting orders): the traced memory
of the state stays under STATE_BOUND, and moves by less than DRIFT between the checkpoints.
Memory is measured as the bytes of every object reachable from the state (`sys.getsizeof` over
the reference graph), which costs nothing while the orders run, unlike tracing every allocation.
"""
from __future__ import annotations

import gc
import random
import sys
from collections import deque
from types import FunctionType, ModuleType

import pytest

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import Op, SignedTx
from tests.unit.chain.state_helpers import CHAIN, T0, account, cancel, new

PER_BLOCK = 200
BLOCK_MS = 100
ACCOUNTS = 20
KEEP = 20
STATE_BOUND = 8 * 2 ** 20
DRIFT = 2 ** 19


def steady_transactions(seed: int, orders: int):
    """Each transaction cancels the account's order from KEEP of its transactions ago and places a new one."""
    rng = random.Random(seed)
    keys = [account(n) for n in range(ACCOUNTS)]
    recent: list[deque[str]] = [deque(maxlen=KEEP) for _ in range(ACCOUNTS)]
    for n in range(orders):
        who = rng.randrange(ACCOUNTS)
        ops: list[Op] = []
        if len(recent[who]) == KEEP:
            ops.append(cancel("BTC-USD", recent[who][0]))
        side = rng.choice(("buy", "sell"))
        ticks = 10_000 + rng.randint(-20, 20) + (3 if side == "sell" else -3)
        ops.append(new("BTC-USD", side, f"{ticks // 100}.{ticks % 100:02d}", f"0.{rng.randint(1, 50):04d}"))
        block_time = T0 + (n // PER_BLOCK) * BLOCK_MS
        tx = SignedTx(CHAIN, keys[who], f"m{n}", block_time + 8_000, tuple(ops), bytes(64))
        recent[who].append(tx.order_id(len(ops) - 1))
        yield tx


def reachable_bytes(root: object) -> int:
    """Bytes of every distinct object reachable from `root` (classes, modules and functions excluded)."""
    seen: set[int] = set()
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, ModuleType, FunctionType)):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def memory_stays_bounded(orders: int, every: int) -> None:
    params = ExchangeParams("BTC-USD", order_ttl_ms=10_000, closed_order_history=5_000, trade_history=1_000)
    state = ExchangeState(params, CHAIN)
    checkpoints = {}
    trades = 0
    txs = steady_transactions(19, orders)
    for height in range(1, orders // PER_BLOCK + 1):
        state.begin_block(height, T0 + (height - 1) * BLOCK_MS)
        for _ in range(PER_BLOCK):
            state.apply_tx(next(txs))
        trades += len(state.end_block()._trade_rows)
        if height * PER_BLOCK >= 50_000 and height * PER_BLOCK % every == 0:
            checkpoints[height * PER_BLOCK] = reachable_bytes(state)
    print("state memory by orders applied:", {n: f"{b / 2 ** 20:.1f} MiB" for n, b in checkpoints.items()})
    assert len(state.closed) == 5_000 and len(state.venues["BTC-USD"].trades) == 1_000 and trades > 20_000
    assert len(state.open_orders) <= ACCOUNTS * KEEP
    assert len(state.replay) <= (10_000 + 1_000) // BLOCK_MS * PER_BLOCK
    assert max(checkpoints.values()) < STATE_BOUND
    assert max(checkpoints.values()) - min(checkpoints.values()) < DRIFT, checkpoints


def test_memory_is_bounded_under_100k_orders():
    memory_stays_bounded(100_000, every=25_000)


@pytest.mark.soak
def test_memory_is_bounded_under_200k_orders():
    memory_stays_bounded(200_000, every=50_000)
