"""The canonical snapshot of an ExchangeState: msgpack of exactly the state, nothing derived.

Every validator encodes the same state to the same bytes, so the chain can certify
`sha256(snapshot())` and a new node can start from any peer's copy. The encoding is a
msgpack array, in this order:

    [format, params digest, chain id | nil, height, time_ms, app hash,
     [book snapshot per market, in MARKETS order]          (exchange.snapshot.book_snapshot)
     [closed order row, oldest first]                      (up to closed_order_history)
     [[trade row, oldest first] per market, MARKETS order] (up to trade_history each)
     [[account, [[asset, amount], ...]], ...]              (sorted; non-zero amounts)
     [[account, [[asset, limit], ...]], ...] | nil          (credit grants, sorted; nil: credit off)
     [[expiry bucket, [tx id, ...]], ...]                  (replay window, sorted)
     [[[account, at], ...], [[order id, until], ...]]       (timers.py; formats 2 and 3)
     [[order id, client id], ...]                           (client_ids.py, sorted; formats 3 and 4)
     [[account, agent, markets, operations, cap, expires], ...]    (agents.py, sorted; formats 4 and 5)
     [[order id, market, side, trigger type, price, qty, trigger, reduce only, account, [height, tx, op], stp,
       agent's cap | nil], ...]]                            (triggers.py, waiting trigger orders, sorted; format 5)

Format 1 has no timers (12 items); a state with a dead-man's switch armed or a good-til-time order
resting is written in format 2 (13 items), one where an order holds a client id in format 3 (14
items), one where an account has approved an agent key in format 4 (15 items), and one with a trigger order
waiting in format 5 (16 items); the items before the last are written even when empty. A network that
never uses them writes what it always did.

A closed order row is `[id, market, side, type, price, qty, remaining, account, [height, tx,
op], stp, status, reason]` (side, type, price, qty, remaining and stp are nil where a refused op
never had them); a trade row is `[id, price, qty, maker order, taker order, taker side, maker
account, taker account, height, time_ms]`. Open-order credit reservations are derived from
the books on restore. Size is bounded by the state: open orders, closed_order_history closed
orders, trade_history trades per market, one row per account holding a position, and the
replay window (rate x TTL, see replay.py).

`decode_state` checks every field's type and range, that positions sum to zero per asset, and
finally that re-encoding gives the very same bytes, so only canonical snapshots are accepted.
"""
from __future__ import annotations

import gc
import re
import sys
from typing import Any, Callable, Container, TYPE_CHECKING, cast

import msgpack

from exchange.app.packed_rows import array_header, packb
from exchange.app.positions import Positions
from exchange.app.replay import ReplayWindow
from exchange.app.timers import Timers
from exchange.app.triggers import TRIGGER_TYPES, Trigger
from exchange.app.txs import CLIENT_ID, ApproveAgentOp, InvalidTx
from exchange.app.views import order_key
from exchange.errors import ExchangeError
from exchange.orders import Order, OrderStatus, OrderType, SelfTradeMode, Side
from exchange.wire import Unchecked, Wire

if TYPE_CHECKING:
    from exchange.app.machine import ExchangeState

SNAPSHOT_FORMAT = 1
TIMERS_FORMAT = 2
CLIENT_IDS_FORMAT = 3
AGENTS_FORMAT = 4
TRIGGERS_FORMAT = 5
_FORMATS = {12: SNAPSHOT_FORMAT, 13: TIMERS_FORMAT, 14: CLIENT_IDS_FORMAT, 15: AGENTS_FORMAT, 16: TRIGGERS_FORMAT}
_CLOSED_STATUSES = {status.value: status for status in
                    (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)}
_SIDES = {side.value: side for side in Side}
_TYPES = {kind.value: kind for kind in OrderType}
_STP_MODES = {mode.value: mode for mode in SelfTradeMode}
_TX_ID = re.compile(r"[0-9a-f]{32}")
_ACCOUNT = re.compile(r"[0-9a-f]{64}")


class InvalidStateSnapshot(ExchangeError):
    """A state snapshot that is malformed, not canonical, or for other parameters or another chain."""


def encode_state(state: ExchangeState) -> bytes:
    """The whole state as one msgpack document."""
    return b"".join(encode_state_parts(state))


def encode_state_parts(state: ExchangeState) -> list[bytes]:
    """`encode_state` in the pieces it joins. The cyclic garbage collector is paused meanwhile: the rows built
    here (a list per order packed again) hold no cycles and are freed by reference counting, while their numbers
    would start full collections over the whole heap, which on a large book cost more than the encoding
    itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _encode_state(state)
    finally:
        if enabled:
            gc.enable()


def _encode_state(state: ExchangeState) -> list[bytes]:
    """The document above in pieces: the rows of orders, positions and replay buckets come packed from
    `state.packed_rows` (packed_rows.py), which packs again only what changed since the last snapshot."""
    venues = state.venues.values()
    rows = state.packed_rows
    waiting = bool(state.triggers)
    agents = waiting or bool(state.agents)
    named = agents or bool(state.client_ids)
    timed = named or bool(state.timers)
    items = 16 if waiting else 15 if agents else 14 if named else 13 if timed else 12
    parts = [array_header(items), packb(_FORMATS[items]),
             packb(state.params.digest()), packb(state.chain_id), packb(state.height), packb(state.time_ms),
             packb(state.results_chain), array_header(len(venues))]
    for venue in venues:
        rows.book(venue.engine.book, venue.engine.market, parts)
    rows.closed(state.closed, parts)
    parts.append(packb([list(venue.trades) for venue in venues]))
    rows.positions(state.positions, _wide, parts)
    parts.append(packb(None if state.credit is None else state.credit.grant_rows()))
    rows.replay(state.replay, parts)
    if timed:
        parts.append(packb(state.timers.rows()))
    if named:
        parts.append(packb(state.client_ids.rows()))
    if agents:
        parts.append(packb(state.agents.rows()))
    if waiting:
        parts.append(packb(trigger_rows(state)))
    return parts


def trigger_rows(state: ExchangeState) -> list[Wire]:
    """The waiting trigger orders' rows, sorted by order id."""
    rows: list[Wire] = []
    for order_id in sorted(state.triggers.entries):
        entry = state.triggers.entries[order_id]
        order = entry.order
        rows.append([order_id, order.market, order.side.value, entry.kind, order.price, order.quantity, entry.trigger,
                     entry.reduce_only, order.owner, list(order_key(order)),
                     None if order.self_trade is None else order.self_trade.value, entry.cap])
    return rows


def _need(ok: bool, message: str, code: str = "malformed_snapshot") -> None:
    if not ok:
        raise InvalidStateSnapshot(code, f"state snapshot: {message}")


def _uint(value: Unchecked) -> bool:
    return type(value) is int and value >= 0


def _list(value: Unchecked, length: int | None = None) -> bool:
    return type(value) is list and (length is None or len(value) == length)


def decode_state(state: ExchangeState, data: bytes) -> ExchangeState:
    """Fill a fresh `state` (built with the right params and chain id) from `data`."""
    _need(type(data) is bytes, "must be bytes")
    try:
        body = msgpack.unpackb(data, raw=False, use_list=True)
    except Exception as error:  # noqa: BLE001 - msgpack raises many types for hostile bytes; all mean "not a snapshot"
        raise InvalidStateSnapshot("malformed_snapshot", f"state snapshot is not msgpack: {error}") from None
    _need(_list(body) and len(body) in _FORMATS, "must be a 12- to 16-item array")
    fmt, params_digest, chain_id, height, time_ms, app_hash, books, closed, trades, positions, grants, replay = body[:12]
    expected = _FORMATS[len(body)]
    _need(fmt == expected, f"format {fmt!r} is not {expected}", "unsupported_snapshot")
    _need(params_digest == state.params.digest(), "made under other exchange parameters", "params_mismatch")
    _need(chain_id is None or type(chain_id) is str, "chain id must be a string")
    _need(state.chain_id is None or chain_id == state.chain_id, f"is for chain {chain_id!r}", "chain_mismatch")
    _need(_uint(height) and _uint(time_ms), "height and time must be non-negative integers")
    _need(type(app_hash) is bytes and len(app_hash) == 32, "app hash must be 32 bytes")
    state.chain_id, state.height, state.time_ms, state._app_hash = chain_id, height, time_ms, app_hash
    _restore_books(state, books)
    _restore_closed(state, closed)
    _restore_trades(state, trades)
    _restore_positions(state, positions)
    _restore_grants(state, grants)
    _restore_replay(state, replay)
    if len(body) == 16:                    # first: a client id may be held by a waiting trigger order
        _restore_triggers(state, body[15])
    if len(body) >= 13:
        _restore_timers(state, body[12])
    if len(body) >= 14:
        _restore_client_ids(state, body[13])
    if len(body) >= 15:
        _restore_agents(state, body[14])
    _need(encode_state(state) == data, "is not in canonical form (order, duplicates or encoding)", "non_canonical")
    return state


def _restore_client_ids(state: ExchangeState, rows: Unchecked) -> None:
    _need(_list(rows), "client ids must be a list")       # empty ones are refused as not canonical
    for row in rows:
        _need(_list(row, 2) and type(row[1]) is str and CLIENT_ID.fullmatch(row[1]) is not None, f"client id {row!r}")
        order = state.open_orders.get(row[0]) if type(row[0]) is str else None
        order = order or (state.closed.get(row[0]) if type(row[0]) is str else None)
        waiting = state.triggers.get(row[0]) if type(row[0]) is str else None
        order = order or (waiting.order if waiting is not None else None)
        _need(order is not None, f"client id {row!r} names no order the state keeps")
        _need(order is not None and state.client_ids.claim(order.owner, row[1], row[0]) is True,
              f"client id {row!r} is held twice by one account")


def _restore_agents(state: ExchangeState, rows: Unchecked) -> None:
    _need(_list(rows), "agents must be a list")
    for row in rows:
        _need(_list(row, 6) and type(row[0]) is str and _ACCOUNT.fullmatch(row[0]) is not None, f"agent row {row!r}")
        try:
            approval = ApproveAgentOp.parse(*row[1:])
        except InvalidTx as error:
            raise InvalidStateSnapshot("malformed_snapshot", f"state snapshot: agent row {row!r}: {error}") from None
        _need(state.agents.scope(row[0], approval.agent) is None and state.agents.room_for(row[0], approval.agent) is None,
              f"agent row {row!r} is held twice or past the bounds")
        state.agents.approve(row[0], approval)


def _restore_triggers(state: ExchangeState, rows: Unchecked) -> None:
    _need(_list(rows), "trigger orders must be a list")
    for row in rows:
        _need(_list(row, 12), f"trigger order {row!r} is not a 12-item row")
        order_id, market, side, kind, price, qty, trigger, reduce_only, owner, key, mode, cap = row
        _need(type(order_id) is str and order_id not in state.open_orders and order_id not in state.closed
              and order_id not in state.triggers, f"trigger order id {order_id!r} is not a new string")
        _need(market in state.venues and side in _SIDES and kind in TRIGGER_TYPES and type(reduce_only) is bool
              and type(owner) is str and _ACCOUNT.fullmatch(owner) is not None, f"trigger order {order_id}: fields")
        _need(_uint(qty) and qty > 0 and _uint(trigger) and trigger > 0 and (price is None or (_uint(price) and price > 0))
              and (price is not None) == (kind == "stop_limit" or (kind == "take_profit" and price is not None))
              and state.triggers.room_for(owner) is None and (cap is None or _uint(cap)),
              f"trigger order {order_id}: sizes, price, cap or bounds")
        order = Order()
        order.id, order.market, order.owner = order_id, market, sys.intern(owner)
        order.side, order.type = _SIDES[side], OrderType.MARKET if price is None else OrderType.LIMIT
        order.price, order.quantity, order.remaining = price, qty, qty
        order.created_key, order.status, order.reason = _check_key(key, state.height), OrderStatus.OPEN, None
        order.self_trade = _member(_STP_MODES, mode, "stp")
        state.triggers.add(Trigger(order, kind, trigger, reduce_only, cap))


def _check_key(key: Unchecked, height: int) -> tuple[int, int, int]:
    _need(type(key) in (list, tuple) and len(key) == 3 and all(_uint(part) for part in key) and key[0] <= height,
          f"created key {key!r} is not [height, tx, op] at or below the snapshot height")
    return tuple(key)


def _restore_books(state: ExchangeState, books: Unchecked) -> None:
    _need(_list(books, len(state.venues)), "needs one book per market")
    for venue, book in zip(state.venues.values(), books):
        try:
            venue.engine.restore(book)
        except ExchangeError as error:
            raise InvalidStateSnapshot(error.code, f"state snapshot: {venue.market.symbol} book: {error.message}") \
                from None
        for order in venue.engine.book.orders.values():
            _need(order.id not in state.open_orders, f"order {order.id} rests twice")
            order.created_key = _check_key(order.created_key, state.height)
            order.owner = sys.intern(order.owner)
            state.open_orders[order.id] = order
            state.index(order)
            if state.credit is not None:
                state.credit.reserve(order, venue.units, order.remaining)


def _restore_closed(state: ExchangeState, rows: Unchecked) -> None:
    _need(_list(rows) and len(rows) <= state.closed.limit, "closed orders must be a list within the history limit")
    for row in rows:
        _need(_list(row, 12), f"closed order {row!r} is not a 12-item row")
        order_id, market, side, kind, price, qty, remaining, owner, key, mode, status, reason = row
        _need(type(order_id) is str and order_id not in state.open_orders and order_id not in state.closed,
              f"closed order id {order_id!r} is not a new string")
        _need(type(market) is str and type(owner) is str, f"closed order {order_id}: market and account are strings")
        _need(status in _CLOSED_STATUSES and (reason is None or type(reason) is str),
              f"closed order {order_id}: status {status!r} / reason {reason!r}")
        _need(all(v is None or _uint(v) for v in (price, qty, remaining))
              and (qty is None) == (remaining is None) and (qty is None or remaining <= qty),
              f"closed order {order_id}: price and sizes")
        order = Order()
        order.id, order.market, order.owner = order_id, market, sys.intern(owner)
        order.side, order.type, order.self_trade = (_member(_SIDES, side, "side"), _member(_TYPES, kind, "type"),
                                                   _member(_STP_MODES, mode, "stp"))
        order.price, order.quantity, order.remaining = price, qty, remaining
        order.created_key, order.status, order.reason = _check_key(key, state.height), _CLOSED_STATUSES[status], reason
        state.closed.add(order)


# Any: the member, or None for a field a refused op's record never had, stored in an Order field typed without None
def _member(members: dict[str, Any], value: Unchecked, name: str) -> Any:
    _need(value is None or value in members, f"{name} {value!r} is unknown")
    return None if value is None else members[value]


def _restore_trades(state: ExchangeState, per_market: Unchecked) -> None:
    _need(_list(per_market, len(state.venues)), "needs one trade list per market")
    for venue, rows in zip(state.venues.values(), per_market):
        _need(_list(rows) and len(rows) <= state.params.trade_history, f"{venue.market.symbol}: too many trades")
        for row in rows:
            _need(_list(row, 10) and _valid_trade(row, state.height), f"{venue.market.symbol}: trade row {row!r}")
            venue.trades.append(tuple(row))


def _valid_trade(row: Wire, height: int) -> bool:
    trade_id, price, qty, maker_id, taker_id, side, maker_account, taker_account, trade_height, time_ms = row
    return (all(type(v) is str for v in (trade_id, maker_id, taker_id, maker_account, taker_account))
            and side in _SIDES and price and qty and all(_uint(v) for v in (price, qty, trade_height, time_ms))
            and trade_height <= height)


def _account_rows(rows: Unchecked, what: str, assets: Container[str], valid: Callable[[Unchecked], bool]) -> list[Wire]:
    _need(_list(rows), f"{what} must be a list")
    for row in rows:
        _need(_list(row, 2) and type(row[0]) is str and _list(row[1]) and row[1], f"{what} row {row!r}")
        for pair in row[1]:
            _need(_list(pair, 2) and pair[0] in assets and valid(pair[1]), f"{what} of {row[0]}: {pair!r}")
    return cast("list[Wire]", rows)


INT64 = range(-(1 << 63), 1 << 63)


def _wide(amount: int) -> int | str:
    """A position beyond what msgpack's integers hold is written as its decimal digits (Python's ints have no
    limit, and a position is the sum of every fill: a few huge trades must not make a snapshot unwritable)."""
    return amount if amount in INT64 else str(amount)


def _narrow(amount: Unchecked) -> int | None:
    if type(amount) is int:
        return amount
    if type(amount) is str and 19 <= len(amount.lstrip("-")) <= 400 and amount.lstrip("-").isdigit():
        value = int(amount)
        return None if value in INT64 else value
    return None


def _restore_positions(state: ExchangeState, rows: Unchecked) -> None:
    assets = state.params.assets
    rows = _account_rows(rows, "positions", assets, lambda amount: _narrow(amount) not in (None, 0))
    rows = [[account, [[asset, _narrow(amount)] for asset, amount in held]] for account, held in rows]
    state.positions = Positions.from_rows(rows)
    unbalanced = {asset: total for asset, total in state.positions.totals().items() if total}
    _need(not unbalanced, f"positions do not sum to zero: {unbalanced}", "positions_unbalanced")


def _restore_grants(state: ExchangeState, rows: Unchecked) -> None:
    if state.credit is None:
        _need(rows is None, "has credit grants but credit is off")
        return
    for account, limits in _account_rows(rows, "grants", state.params.assets, _uint):
        for asset, limit in limits:
            state.credit.grant(account, asset, limit)


def _restore_replay(state: ExchangeState, rows: Unchecked) -> None:
    _need(_list(rows), "replay window must be a list")
    for row in rows:
        _need(_list(row, 2) and _uint(row[0]) and _list(row[1]) and row[1]
              and all(type(i) is str and _TX_ID.fullmatch(i) for i in row[1]), f"replay bucket {row!r}")
    state.replay = ReplayWindow.from_rows(rows, state.time_ms)


def _restore_timers(state: ExchangeState, rows: Unchecked) -> None:
    _need(_list(rows, 2) and _list(rows[0]) and _list(rows[1]), "timers must be [switches, orders]")
    switches, orders = rows
    for row in switches:
        _need(_list(row, 2) and type(row[0]) is str and _uint(row[1]) and row[1] > state.time_ms,
              f"switch {row!r}")
    for row in orders:
        _need(_list(row, 2) and (row[0] in state.open_orders or row[0] in state.triggers) and _uint(row[1])
              and row[1] > state.time_ms, f"good-til-time order {row!r} must rest or wait and be due after the "
              f"snapshot's time")
    state.timers = Timers.from_rows(switches, orders)
