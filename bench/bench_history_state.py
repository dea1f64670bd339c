"""What history in consensus state costs: snapshot size, encoding and a joiner's restore at 10^6 kept trades,
against the kept window once the history lives in the indexer's database.

The state is built directly (trade rows appended to a market's kept log, 1,000 accounts trading), not by running
a network for hours: `trade_history` = 10^6 (the most a network could keep, what a day of candles at ~12 trades/s
would need) is the "before"; the default window (10,000) and 1,000 the "after". For each: the snapshot's bytes,
the time to encode it (`ExchangeState.snapshot`) and to restore it (`ExchangeState.restore`, the joiner's CPU
side of a state sync: decode, check, rebuild the state commitment), and its sha256 (what certifying it costs).
Moving the bytes between nodes is not in these figures (bench chain measures state sync over links).
Run: `python -m bench history_state [--before=N] [--quick] [--smoke]`.
"""
from __future__ import annotations

import gc
import hashlib
import time

from bench.options import parse_options
from bench.table import print_table
from exchange.app import ExchangeParams, ExchangeState
from exchange.app.history import TradeRow

ACCOUNTS = [hashlib.sha256(b"account %d" % n).hexdigest() for n in range(1_000)]
CHAIN_ID = "b" * 64


def state_with(trades: int, window: int) -> ExchangeState:
    """A state whose BTC-USD log keeps the newest `window` of `trades` trades, ten trades a block, a block a
    second; the rest of the state empty (the same in every row: only the history differs)."""
    state = ExchangeState(ExchangeParams("BTC-USD", trade_history=window), CHAIN_ID)
    log = state.venues["BTC-USD"].trades
    for n in range(trades - min(trades, window), trades):
        row: TradeRow = (f"{n:032x}:{n + 1:032x}", 10_000 + n % 500, 1 + n % 9, f"{n:032x}", f"{n + 1:032x}",
                         "buy" if n % 2 else "sell", ACCOUNTS[n % 1_000], ACCOUNTS[(n * 7 + 1) % 1_000], 1 + n // 10,
                         1_700_000_000_000 + (n // 10) * 1_000)
        log.append(row)
    state.height, state.time_ms = 1 + trades // 10, 1_700_000_000_000 + (trades // 10) * 1_000
    return state


def measure(trades: int, window: int) -> tuple[int, float, float, float]:
    """(snapshot bytes, encode s, restore s, sha256 s) of a state keeping `window` of `trades` trades."""
    state = state_with(trades, window)
    gc.collect()
    started = time.perf_counter()
    data = state.snapshot()
    encoded = time.perf_counter() - started
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    digested = time.perf_counter() - started
    params = state.params
    del state
    gc.collect()
    started = time.perf_counter()
    restored = ExchangeState.restore(params, data, CHAIN_ID)
    took = time.perf_counter() - started
    assert len(restored.venues["BTC-USD"].trades) == min(trades, window)
    return len(data), encoded, took, digested


def main(flags: list[str]) -> None:
    opts = parse_options(flags, {"before": 1_000_000}, quick={"before": 200_000}, smoke={"before": 20_000})
    total = opts["before"]
    rows = []
    base: tuple[int, float, float, float] | None = None
    for label, window in ((f"history in state ({total:,} kept, baseline)", total), ("window 10,000 (default)", 10_000),
                          ("window 1,000", 1_000)):
        size, encoded, restored, digested = measure(total, window)
        base = base or (size, encoded, restored, digested)
        rows.append([label, f"{size / 1e6:.2f}", f"{size / base[0]:.3f}x", encoded * 1000, restored * 1000,
                     f"{restored / base[2]:.3f}x", digested * 1000])
    print_table(f"Snapshot of the exchange state after {total:,} trades (one market, 1,000 accounts)",
                ["trades kept in consensus state", "MB", "size vs baseline", "encode ms", "restore ms",
                 "restore vs baseline", "sha256 ms"], rows)
