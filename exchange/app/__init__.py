"""The exchange application: the state machine every node folds committed blocks into, and the
transactions (txs.py: signed operations of accounts) it applies. The chain (exchange/chain) orders
those transactions and drives ExchangeState block by block; this package knows nothing of consensus.

txs.py        the signed transaction format and its operations
machine.py    ExchangeState: begin_block / apply_tx / end_block, precheck, queries, snapshot
params.py     ExchangeParams: the exchange rules in the genesis (markets, TTL, history, credit)
assets.py     per-asset integer scales and each market's lot/tick -> asset unit multipliers
positions.py  every account's position per asset, moved by trades
credit.py     credit limits (defaults, grants) and open-order worst-case reservations
replay.py     the replay window: committed tx ids until their expiry
history.py    bounded closed-order and trade history
results.py    TxResult / OpResult / BlockResult, results hash and app hash chaining
views.py      API-shaped dicts with decimal strings
snapshot.py   canonical msgpack snapshot and its strict decoder

The state does no I/O and reads no clock; it trusts the caller only for signatures (verified
before `apply_tx`) and for the block sequence (heights and consensus times).
"""
from exchange.app.machine import ExchangeState, InvalidQuery
from exchange.app.params import ExchangeParams, InvalidParams
from exchange.app.results import BlockResult, OpResult, TxResult
from exchange.app.snapshot import InvalidStateSnapshot

__all__ = ["BlockResult", "ExchangeParams", "ExchangeState", "InvalidParams", "InvalidQuery", "InvalidStateSnapshot",
           "OpResult", "TxResult"]
