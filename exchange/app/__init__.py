"""The exchange application: the state machine every node folds committed blocks into, and the
transactions (txs.py: signed operations of accounts) it applies. The chain (exchange/chain) orders
those transactions and drives ExchangeState block by block; this package knows nothing of consensus.

txs.py           the signed transaction format and its operations
machine.py       ExchangeState: begin_block / apply_tx / end_block, precheck, queries, snapshot
params.py        ExchangeParams: the exchange rules in the genesis (markets, TTL, history, credit)
assets.py        per-asset integer scales and each market's lot/tick -> asset unit multipliers
positions.py     every account's position per asset, moved by trades
credit.py        credit limits (defaults, grants) and open-order worst-case reservations
agents.py        agent keys: keys an account approves to trade for it within a scope, and revokes
client_ids.py    accounts' own names for their orders, unique among their open and recent orders
triggers.py      stop-market, stop-limit and take-profit orders waiting for the last trade price
timers.py        what block time alone does: good-til-time orders and dead-man's switches
replay.py        the replay window: committed tx ids until their expiry
history.py       bounded closed-order and trade history
candles.py       pages of trades with cursors, and OHLCV candles, from the kept trade log
results.py       TxResult / OpResult / BlockResult, results hash and app hash chaining
views.py         API-shaped dicts with decimal strings
snapshot.py      canonical msgpack snapshot and its strict decoder
packed_rows.py   the snapshot's many rows kept packed between snapshots
resting_rows.py  a book's resting orders packed in runs per price level, for the snapshot
closed_rows.py   the closed orders' section of a snapshot, packed in runs

The state does no I/O and reads no clock; it trusts the caller only for signatures (verified
before `apply_tx`) and for the block sequence (heights and consensus times).
"""
from exchange.app.machine import ExchangeState, InvalidQuery
from exchange.app.params import ExchangeParams, InvalidParams
from exchange.app.results import BlockResult, OpResult, TxResult
from exchange.app.snapshot import InvalidStateSnapshot

__all__ = ["BlockResult", "ExchangeParams", "ExchangeState", "InvalidParams", "InvalidQuery", "InvalidStateSnapshot",
           "OpResult", "TxResult"]
