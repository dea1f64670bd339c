"""The chain's exchange state machine: orders/s through `ExchangeState.apply_tx`, with and without
Ed25519 verification of every transaction first (its own benchmark).

Workload: fixed-seed limit orders from 8 accounts on one market, priced around a mid so many
cross, in runs of 250 from one account on one side, in blocks of 500 orders (begin_block,
apply_tx each, end_block; the block's trade and order-update views are not built, as on a
validator nobody watches). Three shapes of the very same order sequence: one op per
transaction, 10, and 250 ops under one signature (the most a transaction may carry), which
verifies once per 250 orders; all match and trade identically, so they differ only by
per-transaction cost.
Transactions are signed before timing. Variants run interleaved, `--repeat` times each, and
the median is shown; CPU time of this process is the main figure (the box is shared), wall
time beside it.

Batch verification: libsodium (PyNaCl) and OpenSSL (`cryptography`) verify one signature per
call and offer no batch API; no maintained Python binding of a batch verifier (such as
ed25519-dalek's) is on the registries here. The last table checks whether verification runs
in parallel on two threads (PyNaCl calls libsodium through cffi, which releases the GIL).
Run: `python -m bench state [--orders=N] [--repeat=N] [--smoke]`.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from bench.options import parse_options
from bench.table import print_table
from exchange.crypto import SigningKey, verify
from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import NewOrderOp, SignedTx, sign_tx

CHAIN = "ab" * 32
T0 = 1_700_000_000_000
SEED = 20261123
ORDERS = 40_000
REPEAT = 3
ORDERS_PER_BLOCK = 500
RUN = 250   # orders in a row from one account, on one side (the largest transaction)
SHAPES = (1, 10, 250)   # ops per transaction; each divides RUN
KEYS = [SigningKey(bytes([n + 1]) * 32) for n in range(8)]


def signed_transactions(orders: int, ops_per_tx: int) -> list[SignedTx]:
    """The same order sequence for every shape: runs of RUN orders from one account on one side,
    cut into transactions of `ops_per_tx` ops, so both shapes match and trade identically."""
    rng = random.Random(SEED)
    ops, owners = [], []
    for n in range(orders):
        if n % RUN == 0:
            key, side = rng.choice(KEYS), rng.choice(("buy", "sell"))
        ticks = 10_000 + rng.randint(-20, 20) + (5 if side == "sell" else -5)
        ops.append(NewOrderOp.parse("BTC-USD", side, "limit", f"{ticks // 100}.{ticks % 100:02d}",
                                    f"0.{rng.randint(1, 99):04d}", None))
        owners.append(key)
    return [sign_tx(owners[start].sign, owners[start].public_key, CHAIN, f"b{start}", T0 + 60_000,
                    ops[start:start + ops_per_tx]) for start in range(0, orders - orders % ops_per_tx, ops_per_tx)]


def run(txs: list[SignedTx], ops_per_tx: int, check_signatures: bool) -> tuple[float, float]:
    """(cpu seconds, wall seconds) to verify (optionally) and apply every transaction."""
    state = ExchangeState(ExchangeParams("BTC-USD", max_open_orders=None), CHAIN)   # 8 accounts rest more than 1,000
    per_block = max(1, ORDERS_PER_BLOCK // ops_per_tx)
    cpu, wall = time.process_time(), time.perf_counter()
    height = 0
    for start in range(0, len(txs), per_block):
        height += 1
        state.begin_block(height, T0 + height)
        for tx in txs[start:start + per_block]:
            if check_signatures and not verify(tx.account, tx.sig, tx.signed_bytes):
                raise AssertionError("a benchmark transaction failed verification")
            state.apply_tx(tx)
        state.end_block()
    return time.process_time() - cpu, time.perf_counter() - wall


def verify_all(txs: list[SignedTx], threads: int) -> float:
    started = time.perf_counter()
    if threads == 1:
        ok = all(verify(tx.account, tx.sig, tx.signed_bytes) for tx in txs)
    else:
        with ThreadPoolExecutor(threads) as pool:
            ok = all(pool.map(lambda tx: verify(tx.account, tx.sig, tx.signed_bytes), txs, chunksize=256))
    assert ok
    return time.perf_counter() - started


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"orders": ORDERS, "repeat": REPEAT}, smoke={"orders": 1_000, "repeat": 1})
    orders, repeat = opts["orders"], opts["repeat"]
    rows = []
    for ops_per_tx in SHAPES:
        txs = signed_transactions(orders, ops_per_tx)
        count = len(txs) * ops_per_tx
        samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(repeat):
            for check in (False, True):
                samples[check].append(run(txs, ops_per_tx, check))
        rates = {check: (count / statistics.median(c for c, _ in runs), count / statistics.median(w for _, w in runs))
                 for check, runs in samples.items()}
        for check in (False, True):
            cpu_rate, wall_rate = rates[check]
            rows.append([f"{ops_per_tx} op/tx", "verify + apply" if check else "apply only", cpu_rate,
                         1e6 / cpu_rate, wall_rate, f"{cpu_rate / rates[False][0]:.2f}x"])
    print_table(f"ExchangeState: {orders:,} limit orders, blocks of {ORDERS_PER_BLOCK}, median of {repeat}",
                ["shape", "mode", "orders/s (cpu)", "us/order", "orders/s (wall)", "vs apply only"], rows)
    single = signed_transactions(min(orders, 20_000), 1)
    one, two = verify_all(single, 1), verify_all(single, 2)
    print_table(f"Ed25519 verification of {len(single):,} transactions (PyNaCl/libsodium)",
                ["threads", "verifies/s (wall)", "us/verify", "speed-up"],
                [[1, len(single) / one, one / len(single) * 1e6, "1.00x"],
                 [2, len(single) / two, two / len(single) * 1e6, f"{one / two:.2f}x"]])
    print(f"  (load avg {os.getloadavg()[0]:.2f} after the run; no batch verification API in PyNaCl or cryptography)")

