"""The questions a light client asks of the exchange state, each answered by a chain of proofs from the state root
down to the entries (keys and values as `layout.py` places them), and checked here with nothing but that root.

    book      top[MARKETS] -> markets[market] -> levels: the first `depth` of each side, or every level
    trades    top[MARKETS] -> markets[market] -> block trades: every trade of the state's block in the market
    order     top[ORDERS] -> orders[order id]: the record, or proof that the state holds none
    account   top[ACCOUNTS] -> accounts[account] -> fills (the newest `limit`) and positions (all)

`prove_*` (run by a node on its `StateCommitment`'s maps) and `verify_*` (run by a client) walk the same steps;
the verifier raises ProofError for any proof that does not lead from the root to exactly what was asked.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from exchange.commitments import layout
from exchange.commitments.layout import ASKS, BIDS, name_key, side_range
from exchange.commitments.proofs import Failure, Proof, ProofError
from exchange.commitments.tree import MerkleMap
from exchange.commitments.verify import verify_first, verify_get, verify_range

Level = tuple[int, int, int]         # price (ticks), lots, orders
_ALL_NAMES = (bytes(layout.NAME_KEY_BYTES), b"\xff" * layout.NAME_KEY_BYTES)
_ALL_LEVELS = (bytes(layout.LEVEL_KEY_BYTES), b"\xff" * layout.LEVEL_KEY_BYTES)
_ALL_TRADES = (bytes(layout.TRADE_KEY_BYTES), b"\xff" * layout.TRADE_KEY_BYTES)


class Maps(Protocol):
    """What a node proves from: the top map and the maps under it (`exchange.app.commitment.StateCommitment`)."""

    top: MerkleMap
    market_map: MerkleMap
    orders: MerkleMap
    account_map: MerkleMap

    def market_levels(self, symbol: str) -> MerkleMap | None: ...

    def market_trades(self, symbol: str) -> MerkleMap | None: ...

    def account_maps(self, account: str) -> tuple[MerkleMap, MerkleMap] | None: ...   # (fills, positions)


@dataclass(frozen=True)
class Book:
    bids: list[Level]
    asks: list[Level]


@dataclass(frozen=True)
class Account:
    fills: list[list[object]]            # [market, *trade row], newest first
    positions: dict[bytes, int]          # name_key(asset) -> amount


# ------------------------------------------------------------------ proving (a node)

def prove_book(maps: Maps, market: str, depth: int | None) -> list[Proof]:
    proofs = [maps.top.prove_get(layout.MARKETS)[1], maps.market_map.prove_get(name_key(market))[1]]
    levels = maps.market_levels(market)
    if levels is None:
        return proofs
    if depth is None:
        return [*proofs, levels.prove_range(*_ALL_LEVELS)[1]]
    return [*proofs, *(levels.prove_first(*side_range(side, layout.LEVEL_KEY_BYTES), depth)[1] for side in (BIDS, ASKS))]


def prove_block_trades(maps: Maps, market: str) -> list[Proof]:
    proofs = [maps.top.prove_get(layout.MARKETS)[1], maps.market_map.prove_get(name_key(market))[1]]
    trades = maps.market_trades(market)
    return proofs if trades is None else [*proofs, trades.prove_range(*_ALL_TRADES)[1]]


def prove_order(maps: Maps, order_id: str) -> list[Proof]:
    return [maps.top.prove_get(layout.ORDERS)[1], maps.orders.prove_get(name_key(order_id))[1]]


def prove_account(maps: Maps, account: str, limit: int) -> list[Proof]:
    proofs = [maps.top.prove_get(layout.ACCOUNTS)[1], maps.account_map.prove_get(name_key(account))[1]]
    held = maps.account_maps(account)
    if held is None:
        return proofs
    fills, positions = held
    return [*proofs, fills.prove_first(*layout.fills_range(), limit)[1], positions.prove_range(*_ALL_NAMES)[1]]


# ------------------------------------------------------------------ verifying (a client)

def verify_book(root: bytes, market: str, depth: int | None, proofs: Sequence[Proof]) -> Book:
    record = _walk(root, layout.MARKETS, name_key(market), proofs, 2)
    if record is None:
        raise ProofError(Failure.VALUE_MISSING, f"the state holds no market {market!r}")
    levels_root = _roots(record)[0]
    if depth is None:
        _count(proofs, 3)
        entries = verify_range(levels_root, *_ALL_LEVELS, proofs[2])
    else:
        if depth < 1:
            raise ProofError(Failure.BAD_QUERY, "depth must be at least 1")
        _count(proofs, 4)
        entries = [*verify_first(levels_root, *side_range(BIDS, layout.LEVEL_KEY_BYTES), depth, proofs[2]),
                   *verify_first(levels_root, *side_range(ASKS, layout.LEVEL_KEY_BYTES), depth, proofs[3])]
    bids: list[Level] = []
    asks: list[Level] = []
    for key, value in entries:
        lots, orders = _ints(value, 2)
        (bids if key[0] == BIDS else asks).append((layout.price_of(key), lots, orders))
    return Book(bids, asks)


def verify_block_trades(root: bytes, market: str, proofs: Sequence[Proof]) -> list[list[object]]:
    """Every trade of the state's block in `market` (the trade rows, in the order the block made them)."""
    record = _walk(root, layout.MARKETS, name_key(market), proofs, 2)
    if record is None:
        raise ProofError(Failure.VALUE_MISSING, f"the state holds no market {market!r}")
    _count(proofs, 3)
    rows = []
    for index, (key, value) in enumerate(verify_range(_roots(record)[2], *_ALL_TRADES, proofs[2])):
        row = _decoded(value)
        if key != layout.trade_key(index) or not isinstance(row, list) or len(row) != 10:
            raise ProofError(Failure.MALFORMED, "the block's trades are not ten-field rows numbered from 0")
        rows.append(row)
    return rows


def verify_order(root: bytes, order_id: str, proofs: Sequence[Proof]) -> list[object] | None:
    _count(proofs, 2)
    record = _walk(root, layout.ORDERS, name_key(order_id), proofs, 2)
    if record is None:
        return None
    value = _decoded(record)
    if not isinstance(value, list) or len(value) != 9:
        raise ProofError(Failure.MALFORMED, "an order record is not nine fields")
    return value


def verify_account(root: bytes, account: str, limit: int, proofs: Sequence[Proof]) -> Account:
    record = _walk(root, layout.ACCOUNTS, name_key(account), proofs, 2)
    if record is None:
        _count(proofs, 2)
        return Account([], {})
    _count(proofs, 4)
    _, fills_root, positions_root = _roots(record)
    fills = []
    for _, value in verify_first(fills_root, *layout.fills_range(), limit, proofs[2]):
        row = _decoded(value)
        if not isinstance(row, list) or len(row) != 11 or not isinstance(row[0], str):
            raise ProofError(Failure.MALFORMED, "a fill is not a market and a ten-field trade row")
        fills.append(row)
    positions = {}
    for key, value in verify_range(positions_root, *_ALL_NAMES, proofs[3]):
        amount = _decoded(value)
        if not isinstance(amount, str) or not amount.lstrip("-").isdigit():
            raise ProofError(Failure.MALFORMED, "a position is not a decimal integer")
        positions[key] = int(amount)
    return Account(fills, positions)


def _walk(root: bytes, part: bytes, key: bytes, proofs: Sequence[Proof], at_least: int) -> bytes | None:
    """The value under `key` in the `part` map of the state `root`, through the first two proofs."""
    if len(proofs) < at_least:
        raise ProofError(Failure.INCOMPLETE, f"{len(proofs)} proofs, at least {at_least} needed")
    part_root = verify_get(root, part, proofs[0])
    if part_root is None or len(part_root) != 32:
        raise ProofError(Failure.MALFORMED, "the state root holds no such part")
    return verify_get(part_root, key, proofs[1])


def _count(proofs: Sequence[Proof], wanted: int) -> None:
    if len(proofs) != wanted:
        raise ProofError(Failure.MALFORMED, f"{len(proofs)} proofs where the question takes {wanted}")


def _roots(record: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        return layout.roots_of(record)
    except ValueError as exc:
        raise ProofError(Failure.MALFORMED, f"a record of roots: {exc}") from None


def _decoded(value: bytes) -> object:
    try:
        return layout.unpack(value)
    except ValueError:
        raise ProofError(Failure.MALFORMED, "a value is not msgpack") from None


def _ints(value: bytes, count: int) -> list[int]:
    decoded = _decoded(value)
    if not (isinstance(decoded, list) and len(decoded) == count and all(type(v) is int and v >= 0 for v in decoded)):
        raise ProofError(Failure.MALFORMED, f"a value is not {count} non-negative integers")
    return decoded
