"""ExchangeState: the deterministic fold of committed blocks into books, orders, trades and positions.

Every node folds the same blocks through `begin_block`, `apply_tx` (once per transaction, in
block order) and `end_block`, and so holds the same state: there is no I/O, no clock and no
randomness here, iteration is only ever over insertion-ordered dicts or sorted keys, and
amounts are integers. Signatures are checked by the caller before `apply_tx`; everything else a
transaction says is judged here, and no content makes `apply_tx` raise.

Rules:
- A transaction is applied at most once, only while `block_time < expires <= block_time +
  order_ttl_ms` (see `replay.py`); its id is remembered until block time passes its `expires`.
  One included at or after its `expires` is recorded `expired`, its new orders as rejected.
- Orders take time priority from `created_key = (height, tx index in block, op index)`; an
  order's id is `tx.order_id(op index)`. The engine's owner is the account id (hex), so
  self-trade prevention is per account, in the market's mode unless the op names one.
- Only an order's account may cancel or replace it: otherwise `not_owner`; an id never seen
  (or forgotten) is `unknown_order`; a closed one `not_open`; one in another market than the
  op names `market_mismatch`. A refused cancel or replace changes nothing.
- A new or replace op that was judged always leaves a record under its order id, even when
  refused (status rejected, with the reason), so an order a client was told is pending always
  resolves. A transaction refused whole (`wrong_chain`, `expires_too_far`, `duplicate`) judged
  no op and leaves none; an `expired` one leaves rejected records, except under ids that are
  still known (so a transaction applied earlier and included again after its expiry leaves its
  orders as they are, unless the history has already forgotten them).
- Positions and credit: `positions.py`, `credit.py`. Bounded history: `history.py`.
- An account may have at most `max_open_orders` resting orders (when the network has the cap): a
  limit or post-only order beyond it is refused `too_many_open_orders` before it matches.
- An account that holds nothing (no position: it never traded) rests an order at most
  `fresh_order_ttl_ms` of block time (when the network has the rule): the order rests good-til-time
  then, or earlier if its own `until` says so, and is cancelled `good_til_time` like any other. Under the
  same rule, an immediate order (market, IOC, FOK) that closes without ever resting while its account still
  holds nothing (it found nothing to trade with) leaves no record in the closed-order history and takes no
  client id:
  free keys could fill the history, and every node keeps it (a resting one is paced by the TTL and the caps,
  and keeps its record so its client can find it). Its result is in the block's results; this node keeps the
  newest few in `recent_fresh`, not part of the state: no rule and no listing reads it, only a look-up by id,
  so its client can still find it here.
- `cancel_all` cancels the account's open orders in its scope, oldest first (by created key, never
  by arrival at this node, so a node restored from a snapshot cancels in the same order).
- A new order's client id (`client_ids.py`) is refused `duplicate_client_id` while another order of the same
  account that the state still knows (open, or in the closed-order history) holds it; any record a new op
  leaves takes it otherwise (a rejected one too, so a client finds out what became of its order). A replace
  hands it on to the order it makes.
- An agent's transaction (`for=` another account, `agents.py`) runs only while that account's approval of the
  signing key stands (else refused whole, `agent_not_approved` / `agent_expired`); each op outside the scope is
  refused with its reason, as are grants and approvals by an agent.
- Trigger orders (`triggers.py`) wait outside the book; after a block's transactions every market's last trade
  price places what it crossed, markets in order, oldest created first (timed results `trigger`). A reduce-only
  order trades at most the account's position against it, judged when it is placed or fires (`reduce_only`).
- An atomic batch (`atomic` first) is judged whole before any of its ops runs; one refusal refuses them all
  (`op_<i>_<reason>` on the marker, `batch_refused` on the others).
- Block time alone (`timers.py`): at `begin_block`, before any transaction, every dead-man's switch
  due fires (all the account's open orders cancelled, reason `scheduled_cancel`) and every
  good-til-time order due is cancelled (reason `good_til_time`); each is a *timed* result of the
  block, part of its results hash. A switch is armed only for a time after the block's and at most
  MAX_SWITCH_MS past it (else `at_out_of_range`); an order's `until` at or before the block's time is
  refused `until_passed`. A replace keeps the replaced order's `until`.

Heights start at 1 after the genesis (height 0); block times never go backwards.

Over 500 lines on purpose: one deterministic fold, whose order of applying the rules must read in one
place; the rules that stand alone are its sibling modules (credit, positions, replay, timers, history).
"""
from __future__ import annotations

import heapq
import sys
from typing import Any, Iterable, cast

from exchange.app.agents import Agents, scope_problem
from exchange.app.candles import candles, trades_between
from exchange.app.client_ids import ClientIds
from exchange.app.commitment import StateCommitment, app_hash
from exchange.app.credit import CreditBook, worst_case
from exchange.app.history import FRESH_UNRESTED_KEPT, ClosedOrders, TradeRow, trade_log
from exchange.app.params import ExchangeParams
from exchange.app.packed_rows import PackedRows
from exchange.app.positions import Positions
from exchange.app.replay import ReplayWindow
from exchange.app.timers import MAX_SWITCH_MS, ORDER, SWITCH, Timers
from exchange.app.triggers import MAX_FIRED_PER_BLOCK, Trigger, Triggers
from exchange.app.results import (APPLIED, DUPLICATE, EXPIRED, REJECTED, BlockResult, OpResult, TxResult,
                                          chain_app_hash, genesis_app_hash, results_hash)
from exchange.app.views import View, order_key, order_moment, order_view, trade_view
from exchange.app.txs import (MAX_OPS, RESTING_TYPES, ApproveAgentOp, AtomicOp, CancelAllOp, CancelOp, GrantOp,
                              NewOrderOp, Op, ReplaceOp, RevokeAgentOp, ScheduleCancelOp, SignedTx)
from exchange.commands import ReplaceOrder
from exchange.display import depth_view
from exchange.errors import ExchangeError, UnknownMarket
from exchange.events import OrderAccepted, OrderCancelled, OrderReduced, OrderRejected, Trade
from exchange.markets import Market
from exchange.matching import MatchingEngine
from exchange.orders import Order, OrderStatus, OrderType, SelfTradeMode, Side

_SIDES = {side.value: side for side in Side}
# a trigger type maps to what it places (a take-profit with a price places a limit order: `_place_kind`)
_TYPES = {**{kind.value: kind for kind in OrderType}, "stop_market": OrderType.MARKET,
          "stop_limit": OrderType.LIMIT, "take_profit": OrderType.MARKET}
_LIMIT = OrderType.LIMIT
UNTRIGGERED = "untriggered"
CAP_WALK_ORDERS = 256        # resting orders a capped agent's market order is priced from, at most
_STP_MODES = {mode.value: mode for mode in SelfTradeMode}
_BUY, _SELL = Side.BUY, Side.SELL
_MARKET = OrderType.MARKET
_IMMEDIATE = frozenset({OrderType.MARKET, OrderType.IOC, OrderType.FOK})
_OPEN, _PARTIAL, _REJECTED = OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.REJECTED
_RESTING = (_OPEN, _PARTIAL)
_ORDER_STATUSES = frozenset(status.value for status in OrderStatus) | {UNTRIGGERED}
EMPTIED_LEVEL = "0"
ORDER_ID_PREFIX = 30
_OP_SUFFIX = [f"{index:02x}" for index in range(MAX_OPS)]
PARSE_MEMORY = 4096


MAX_LIMIT_UNITS = (1 << 62) - 1


class InvalidQuery(ExchangeError):
    """A query the state cannot answer as asked (bad status filter, bad limit)."""


class Venue:
    """One market's engine and the per-market parts of the state around it."""

    __slots__ = ("market", "engine", "units", "trades", "touched", "digest", "_prices", "_sizes")

    def __init__(self, market: Market, params: ExchangeParams) -> None:
        self.market = market
        self.engine = MatchingEngine(market)
        self.units = params.assets.markets[market.symbol]
        self.trades = trade_log(params.trade_history)
        self.touched: set[int] = set()    # level keys (bids -price, asks +price) this block changed
        self.digest: str | None = None    # the book digest, cached until the book changes
        self._prices: dict[str, int] = {}  # decimal text -> ticks, for texts that parsed
        self._sizes: dict[str, int] = {}   # decimal text -> lots

    def parse(self, price: str | None, qty: str) -> tuple[int | None, int]:
        """(ticks, lots) of an op's decimal texts; raises the market's ExchangeError for a bad one.

        Orders cluster on few prices and sizes, so texts that parsed are remembered (up to
        PARSE_MEMORY each; a pure speed-up, the answer is the market's either way)."""
        lots = self._sizes.get(qty)
        if lots is None:
            lots = _remember(self._sizes, qty, self.market.parse_qty(qty))
        if price is None:
            return None, lots
        ticks = self._prices.get(price)
        if ticks is None:
            ticks = _remember(self._prices, price, self.market.parse_price(price))
        return ticks, lots


def _remember(memory: dict[str, int], text: str, value: int) -> int:
    if len(memory) >= PARSE_MEMORY:
        memory.clear()
    memory[text] = value
    return value


def level_key(order: Order) -> int:
    """The book's sort key of an order's level: asks by price, bids by minus price."""
    price = order.price
    assert price is not None  # an order that rests or rested
    return -price if order.side is _BUY else price


class ExchangeState:
    """The exchange state of one chain; see the module docstring for the rules."""

    def __init__(self, params: ExchangeParams, chain_id: str | None = None, commitments: bool = True) -> None:
        self.params = params
        self.chain_id = chain_id          # when set, transactions for another chain are refused
        self.height = 0
        self.time_ms = 0
        self._app_hash = genesis_app_hash(params.digest())
        self._ttl = params.order_ttl_ms
        self.venues = {market.symbol: Venue(market, params) for market in params.registry}
        self.open_orders: dict[str, Order] = {}
        self.by_account: dict[str, dict[str, None]] = {}    # account -> ids of its open orders
        self.timers = Timers()
        self._cap = params.max_open_orders
        self._fresh_ttl = params.fresh_order_ttl_ms
        self.client_ids = ClientIds()
        self.agents = Agents(params.order_ttl_ms)
        self.triggers = Triggers()
        self.closed = ClosedOrders(params.closed_order_history, self._forget_closed)
        self.recent_fresh = ClosedOrders(min(FRESH_UNRESTED_KEPT, params.closed_order_history))   # this node's only
        self._forgotten: list[str] = []         # ids the closed-order history forgot this block
        self._triggers_added: list[str] = []    # trigger orders that began waiting this block
        self.positions = Positions()
        self.credit = CreditBook(params.default_limits) if params.default_limits is not None else None
        self.replay = ReplayWindow()
        self.packed_rows = PackedRows()     # the snapshot's rows, packed again only when they change
        self._in_block = False
        self._txs: list[TxResult] = []
        self._trades: list[tuple[Market, TradeRow]] = []
        self._touched_orders: dict[str, Order] = {}
        self._timed: list[OpResult] = []
        self.commitment = StateCommitment(self.venues, params.trade_history) if commitments else None
        self._hash = self._committed_hash()

    @property
    def app_hash(self) -> bytes:
        """What the chain certifies for this state: the results chain and the state root, in one hash
        (commitment.py); the results chain alone without commitments."""
        return self._hash

    @property
    def results_chain(self) -> bytes:
        """sha256 chain over every block's results hash, from a genesis hash of the params."""
        return self._app_hash

    @property
    def state_root(self) -> bytes | None:
        return None if self.commitment is None else self.commitment.root

    def _committed_hash(self) -> bytes:
        return self._app_hash if self.commitment is None else app_hash(self._app_hash, self.commitment.root)

    def _forget_closed(self, order_id: str) -> None:
        self.client_ids.forget(order_id)
        self._forgotten.append(order_id)

    # ------------------------------------------------------------------ admission

    def precheck(self, tx: SignedTx, chain_id: str, now_ms: int) -> str | None:
        """Why `tx` should be refused at the API edge or by the mempool, or None.

        Stricter than `apply_tx` (a bad op refuses the whole transaction here), never looser:
        anything already committed inside the replay window is refused as `duplicate`. The
        window is judged against the later of `now_ms` and the last block's time.
        """
        if tx.chain_id != chain_id:
            return "wrong_chain"
        problem = self.inclusion_problem(tx, max(now_ms, self.time_ms))
        if problem is not None:
            return problem
        account = tx.owner.hex()
        scope = None if tx.acting_for is None else self.agents.scope(account, tx.account_hex)
        for op in tx.ops:
            problem = (None if scope is None else self._agent_problem(scope, op, account)) or self._op_problem(op, account)
            if problem is not None:
                return problem
        if type(tx.ops[0]) is AtomicOp:
            refused = self._batch_problem(tx.ops, account)
            return None if refused is None else refused[1]
        return None

    def inclusion_problem(self, tx: SignedTx, block_time_ms: int) -> str | None:
        """Why `apply_tx` would refuse `tx` as a whole in a block at `block_time_ms`, or None; a
        proposer keeps a transaction that is `expires_too_far` until the chain's time catches up."""
        if self.chain_id is not None and tx.chain_id != self.chain_id:
            return "wrong_chain"
        expires = tx.expires
        if expires <= block_time_ms:
            return "expired"
        if expires > block_time_ms + self._ttl:
            return "expires_too_far"
        if self.replay.seen(tx.id, expires):
            return "duplicate"
        if tx.acting_for is not None:
            scope = self.agents.scope(tx.acting_for.hex(), tx.account_hex)
            if scope is None:
                return "agent_not_approved"
            if scope.expires is not None and scope.expires <= block_time_ms:
                return "agent_expired"
        return None

    def _op_problem(self, op: Op, account: str) -> str | None:
        if isinstance(op, GrantOp):
            return self._grant_problem(op, account)
        if isinstance(op, ApproveAgentOp):
            return self._approve_problem(op, account)
        if isinstance(op, RevokeAgentOp):
            return None if self.agents.scope(account, op.agent) is not None else "unknown_agent"
        if isinstance(op, AtomicOp):
            return None
        if isinstance(op, ScheduleCancelOp):
            return None
        if isinstance(op, CancelAllOp):
            return None if op.market is None or op.market in self.venues else "unknown_market"
        venue = self.venues.get(op.market)
        if venue is None:
            return "unknown_market"
        if isinstance(op, NewOrderOp):
            if op.client_id is not None and self.client_ids.holder(account, op.client_id) is not None:
                return "duplicate_client_id"
            problem = op.price_problem() or _parse_problem(venue, op.price, op.qty)
            if problem is None and op.trigger is not None:
                problem = None if _parse_problem(venue, op.trigger, op.qty) is None else "invalid_trigger"
            return problem
        target = self.open_orders.get(op.order_id) or self.closed.get(op.order_id)
        if target is not None and target.owner != account:
            return "not_owner"
        if target is not None and target.market != op.market:
            return "market_mismatch"
        return _parse_problem(venue, op.price, op.qty) if isinstance(op, ReplaceOp) else None

    # ------------------------------------------------------------------ blocks

    def begin_block(self, height: int, time_ms: int) -> None:
        """Start block `height` (the next one) at consensus time `time_ms` (never before the last)."""
        if self._in_block:
            raise RuntimeError(f"block {self.height} has not ended")
        if type(height) is not int or height != self.height + 1:
            raise ValueError(f"block {height!r} does not follow height {self.height}")
        if type(time_ms) is not int or time_ms < self.time_ms:
            raise ValueError(f"block time {time_ms!r} is before the last block's {self.time_ms}")
        self.height, self.time_ms = height, time_ms
        self.replay.prune(time_ms)
        if self.agents:
            self.agents.drop_expired(time_ms)
        self._in_block = True
        if self.timers:
            self._fire_timers(time_ms)

    def apply_tx(self, tx: SignedTx) -> TxResult:
        """Apply the next transaction of the block (signature already verified by the caller)."""
        if not self._in_block:
            raise RuntimeError("apply_tx outside a block")
        index = len(self._txs)
        account = sys.intern((tx.account if tx.acting_for is None else tx.acting_for).hex())
        problem = self.inclusion_problem(tx, self.time_ms)
        if problem is None:
            self.replay.add(tx.id, tx.expires)
            result = TxResult(tx.id, account, index, APPLIED, None, self._run_ops(tx, account, index))
        elif problem == "expired":
            ops = [self._refuse_op(tx, account, index, op_index, op, "expired") for op_index, op in enumerate(tx.ops)]
            result = TxResult(tx.id, account, index, EXPIRED, "expired", ops)
        else:
            result = TxResult(tx.id, account, index, DUPLICATE if problem == "duplicate" else REJECTED, problem, [])
        self._txs.append(result)
        return result

    def reject_tx(self, tx: SignedTx, reason: str) -> TxResult:
        """Record a transaction of the block that must not run (its signature failed every node's check):
        a quorum may certify it, but no account's state moves on its say."""
        if not self._in_block:
            raise RuntimeError("reject_tx outside a block")
        result = TxResult(tx.id, sys.intern(tx.account.hex()), len(self._txs), REJECTED, reason, [])
        self._txs.append(result)
        return result

    def end_block(self) -> BlockResult:
        """Finish the block: its trades, level changes and order updates, and the new app hash."""
        if not self._in_block:
            raise RuntimeError("end_block outside a block")
        if self.triggers:
            self._fire_triggers()
        self._in_block = False
        digest = results_hash(self.height, self.time_ms, self._txs, self._trades, self._timed)
        self._app_hash = chain_app_hash(self._app_hash, digest)
        moments = [(order, order_moment(order)) for order in self._touched_orders.values()]
        self.packed_rows.pack_resting(self._touched_orders.values(),
                                      {symbol: venue.engine.book for symbol, venue in self.venues.items()})
        self.packed_rows.pack_closed(self.closed)
        if self.commitment is not None:
            self.commitment.apply_block(self, self._touched_orders.values(), self._forgotten, self._triggers_added,
                                        ((market.symbol, row) for market, row in self._trades))
        self._forgotten, self._triggers_added = [], []
        self._hash = self._committed_hash()
        result = BlockResult(self.height, self.time_ms, self._txs, self._trades, self._book_changes(), moments,
                             self.params.registry, digest, self._app_hash, self._timed)
        self._txs, self._trades, self._touched_orders, self._timed = [], [], {}, []
        return result

    def _book_changes(self) -> dict[str, list[list[str]]]:
        changes = {}
        for symbol, venue in self.venues.items():
            if not venue.touched:
                continue
            market, book = venue.market, venue.engine.book
            rows = []
            for key in sorted(venue.touched):   # bids (negative keys) best first, then asks best first
                side, name = (book.bids, "buy") if key < 0 else (book.asks, "sell")
                level = side.levels.get(key)
                rows.append([name, market.format_price(abs(key)),
                             EMPTIED_LEVEL if level is None else market.format_qty(level.volume)])
            changes[symbol] = rows
            venue.touched = set()
            venue.digest = None
        return changes

    # ------------------------------------------------------------------ operations

    def _run_ops(self, tx: SignedTx, account: str, index: int) -> list[OpResult]:
        results = []
        prefix, height = tx.id[:ORDER_ID_PREFIX], self.height   # order ids as `tx.order_id(op_index)` makes them
        scope = None if tx.acting_for is None else self.agents.scope(account, tx.account_hex)
        if type(tx.ops[0]) is AtomicOp:
            refused = self._batch_problem(tx.ops, account, scope)
            if refused is not None:
                return self._refuse_batch(tx, account, index, *refused)
        for op_index, op in enumerate(tx.ops):
            if scope is not None:
                problem = self._agent_problem(scope, op, account)
                if problem is not None:
                    results.append(self._refuse_op(tx, account, index, op_index, op, problem))
                    continue
            if isinstance(op, NewOrderOp):
                cap = None if scope is None or op.trigger is None else self._agent_cap(tx, op)   # a trigger keeps it
                results.append(self._new(prefix + _OP_SUFFIX[op_index], (height, index, op_index), account, op, cap))
            elif isinstance(op, CancelOp):
                results.append(self._cancel(account, op))
            elif isinstance(op, CancelAllOp):
                results.append(self._cancel_all(account, op))
            elif isinstance(op, ScheduleCancelOp):
                results.append(self._schedule_cancel(account, op))
            elif isinstance(op, ReplaceOp):
                results.append(self._replace(prefix + _OP_SUFFIX[op_index], (height, index, op_index), account, op))
            elif isinstance(op, GrantOp):
                results.append(self._grant(account, op))
            elif isinstance(op, ApproveAgentOp):
                results.append(self._approve_agent(account, op))
            elif isinstance(op, RevokeAgentOp):
                results.append(self._revoke_agent(account, op))
            else:
                results.append(OpResult("atomic", None, None, "accepted", None))
        return results

    # ------------------------------------------------------------------ atomic batches

    def _batch_problem(self, ops: tuple[Op, ...], account: str,
                       scope: ApproveAgentOp | None = None) -> tuple[int, str] | None:
        """(index, reason) of the first operation of an atomic batch that would be refused, judged on the state
        before any runs with what the earlier ones change on it (targets they cancel or replace, open orders and
        triggers they add, client ids they take), or None. What only matching decides (a fill-or-kill that
        cannot fill, credit used by the batch's own earlier fills) is each order's own outcome."""
        gone: set[str] = set()
        claimed: set[str] = set()
        reducing: dict[tuple[str, str], int] = {}     # lots earlier reduce-only orders of the batch take, per side
        resting, waiting = len(self.by_account.get(account, ())), len(self.triggers.by_account.get(account, ()))
        for index, op in enumerate(ops[1:], 1):
            problem = (None if scope is None else self._agent_problem(scope, op, account)) or self._op_problem(op, account)
            if problem is None and isinstance(op, NewOrderOp):
                problem = self._batched_new_problem(op, account, claimed, reducing)
                waiting += op.trigger is not None
                resting += op.trigger is None and op.type in RESTING_TYPES
                if problem is None and op.trigger is not None and waiting > self.triggers.room_limit(account):
                    problem = "too_many_triggers"
                if problem is None and op.type in RESTING_TYPES and self._cap is not None and resting > self._cap:
                    problem = "too_many_open_orders"
            elif problem is None and isinstance(op, (CancelOp, ReplaceOp)):
                target = op.order_id
                order, problem = (None, "not_open") if target in gone else self._owned_open(target, account, op.market)
                waiting_here = self.triggers.get(target)
                if order is None and waiting_here is not None and target not in gone and isinstance(op, CancelOp):
                    owned = waiting_here.order.owner == account and waiting_here.order.market == op.market
                    problem, waiting = (None, waiting - 1) if owned else ("not_owner", waiting)
                elif order is not None:
                    resting -= isinstance(op, CancelOp)
                gone.add(target)
            if problem is not None:
                return index, problem
        return None

    def _batched_new_problem(self, op: NewOrderOp, account: str, claimed: set[str],
                             reducing: dict[tuple[str, str], int]) -> str | None:
        """What refuses a batch's new order before it would match: a client id taken (in the batch too), a reduce-only
        order with nothing left to reduce (the position less what the batch's earlier reduce-only orders may take),
        a passed until, a post-only order that would take at the book's best price."""
        if op.client_id is not None:
            if op.client_id in claimed:
                return "duplicate_client_id"
            claimed.add(op.client_id)
        venue = self.venues[op.market]           # _op_problem checked the market, the price and the size
        price, qty = venue.parse(op.price, op.qty)
        side = _SIDES[op.side]
        if op.reduce_only:
            taken = reducing.get((op.market, op.side), 0)
            left = self._reducible(account, venue, side, qty + taken) - taken
            if left <= 0:
                return "reduce_only"
            if op.trigger is None:              # a trigger's is judged when it fires
                reducing[(op.market, op.side)] = taken + left
        if op.until is not None and op.until <= self.time_ms:
            return "until_passed"
        if op.type == "post_only" and price is not None:
            book = venue.engine.book
            best = next(iter((book.asks if side is _BUY else book.bids).iter_levels()), None)
            if best is not None and (price >= best.price if side is _BUY else price <= best.price):
                return "post_only_would_take"
        return None

    def _refuse_batch(self, tx: SignedTx, account: str, index: int, at: int, reason: str) -> list[OpResult]:
        """A batch judged refused: nothing runs; the refused operation says why, the others `batch_refused`."""
        results = [OpResult("atomic", None, None, "rejected", f"op_{at}_{reason}")]
        results.extend(self._refuse_op(tx, account, index, op_index, op, reason if op_index == at else "batch_refused")
                       for op_index, op in enumerate(tx.ops) if op_index)
        return results

    # ------------------------------------------------------------------ agent keys (agents.py)

    def _agent_cap(self, tx: SignedTx, op: NewOrderOp) -> int | None:
        """The notional cap (quote units) of the agent that signs `tx`, for `op`'s market; None when uncapped."""
        if tx.acting_for is None:
            return None
        scope = self.agents.scope(tx.acting_for.hex(), tx.account_hex)
        venue = self.venues.get(op.market)
        if scope is None or scope.cap is None or venue is None:
            return None
        return self.params.assets.parse(venue.units.quote, scope.cap)   # checked when the scope was approved

    def _agent_problem(self, scope: ApproveAgentOp, op: Op, account: str) -> str | None:
        """Why an agent with `scope` may not do `op` for `account`, or None."""
        problem = scope_problem(scope, op)
        if problem is None and scope.cap is not None and isinstance(op, (NewOrderOp, ReplaceOp)):
            return self._over_cap(scope.cap, op, account)
        return problem

    def _over_cap(self, cap: str, op: NewOrderOp | ReplaceOp, account: str) -> str | None:
        """`over_notional_cap` when the order's notional (price times size, in its quote asset; a market order's
        from the book as it stands) passes `cap`. A value the op itself cannot use is left to the op's own rules."""
        venue = self.venues.get(op.market)
        if venue is None:
            return None
        try:
            price, qty = venue.parse(op.price, op.qty)
            limit = self.params.assets.parse(venue.units.quote, cap)
        except ExchangeError:      # the op's own rules refuse a price or size it cannot use; the cap was checked
            return None            # against every quote asset of the scope when it was approved
        if price is not None:
            notional: int | None = qty * price * venue.units.quote_unit
        else:
            side = op.side if isinstance(op, NewOrderOp) else None
            notional = self._book_notional(venue, account, side == "buy", qty)
        return "over_notional_cap" if notional is None or notional > limit else None

    def _book_notional(self, venue: Venue, account: str, buy: bool, qty: int) -> int | None:
        """What `qty` lots taken from the book's other side (others' orders, best first) are worth, in quote units;
        None when pricing them would look at more than CAP_WALK_ORDERS resting orders. Every node walks this for every
        capped market order at the API and in the block, and matching may never walk it (self-trade prevention cancels
        an order at its first own maker): unbounded, one 250-op transaction walked a 10,000-order book 250 times. A
        capped agent's market order too deep to price within the bound is refused as over its cap; a limit order
        states its price and is priced at once."""
        book = venue.engine.book
        notional, needed, looked = 0, qty, 0
        for level in (book.asks if buy else book.bids).iter_levels():
            for maker in level.live_orders():
                looked += 1
                if looked > CAP_WALK_ORDERS:
                    return None
                if maker.owner == account:
                    continue
                take = min(needed, maker.remaining)
                notional += take * level.price
                needed -= take
                if not needed:
                    return notional * venue.units.quote_unit
        return notional * venue.units.quote_unit

    def _approve_problem(self, op: ApproveAgentOp, account: str) -> str | None:
        if op.agent == account:
            return "agent_is_self"
        markets = list(self.venues) if op.markets is None else op.markets.split(",")
        if any(market not in self.venues for market in markets):
            return "unknown_market"
        if op.cap is not None:
            try:
                for market in markets:
                    self.params.assets.parse(self.venues[market].units.quote, op.cap, "cap")
            except ExchangeError:
                return "invalid_cap"
        if op.expires is not None and op.expires <= self.time_ms:
            return "expires_passed"
        return self.agents.room_for(account, op.agent)

    def _approve_agent(self, account: str, op: ApproveAgentOp) -> OpResult:
        reason = self._approve_problem(op, account)
        if reason is not None:
            return OpResult("approve_agent", None, op.agent, "rejected", reason)
        self.agents.approve(account, op)
        return OpResult("approve_agent", None, op.agent, "approved", None)

    def _revoke_agent(self, account: str, op: RevokeAgentOp) -> OpResult:
        if not self.agents.revoke(account, op.agent):
            return OpResult("revoke_agent", None, op.agent, "rejected", "unknown_agent")
        return OpResult("revoke_agent", None, op.agent, "revoked", None)

    def agents_of(self, account: str) -> list[View]:
        """`[{"agent", "markets", "operations", "cap", "expires", "expired"}, ...]` by agent key."""
        return [{"agent": agent, "markets": None if a.markets is None else a.markets.split(","),
                 "operations": a.operations.split(","), "cap": a.cap, "expires": a.expires,
                 "expired": a.expires is not None and a.expires <= self.time_ms}
                for agent, a in sorted(self.agents.of(account).items())]

    def _new(self, order_id: str, key: tuple[int, int, int], account: str, op: NewOrderOp,
             cap: int | None = None) -> OpResult:
        """Place `op` (`cap`: the notional cap of the agent that signed it, kept by a trigger order)."""
        client_id = op.client_id
        if client_id is None:
            return self._place(order_id, key, account, op, cap)
        if self.client_ids.holder(account, client_id) is not None:
            return self._refused("new", order_id, None, op.market, _SIDES[op.side], _TYPES[op.type], None, None,
                                 account, key, None if op.stp is None else _STP_MODES[op.stp], "duplicate_client_id")
        result = self._place(order_id, key, account, op, cap)
        self._claim(account, client_id, order_id)
        return result

    def _claim(self, account: str, client_id: str, order_id: str) -> None:
        """The record under `order_id` (open, or closed and still kept) takes `client_id` if it is free."""
        if order_id in self.open_orders or order_id in self.closed or order_id in self.triggers:
            self.client_ids.claim(account, client_id, order_id)

    def _place(self, order_id: str, key: tuple[int, int, int], account: str, op: NewOrderOp,
               cap: int | None = None) -> OpResult:
        side, kind = _SIDES[op.side], _TYPES[op.type]
        mode = None if op.stp is None else _STP_MODES[op.stp]
        venue = self.venues.get(op.market)
        if venue is None:
            return self._refused("new", order_id, None, op.market, side, kind, None, None, account, key, mode,
                                 "unknown_market")
        try:
            price, qty = venue.parse(op.price, op.qty)
        except ExchangeError as error:
            return self._refused("new", order_id, None, op.market, side, kind, None, None, account, key, mode,
                                 _field_code(error))
        if op.trigger is not None:
            return self._new_trigger(order_id, key, account, venue, op, price, qty, mode, cap)
        if op.reduce_only:
            reducible = self._reducible(account, venue, side, qty)
            if not reducible:
                return self._refused("new", order_id, None, op.market, side, kind, price, qty, account, key, mode,
                                     "reduce_only")
            qty = reducible
        return self._submit(order_id, key, account, venue, side, kind, price, qty, mode, op.until,
                            op.type in RESTING_TYPES)

    def _submit(self, order_id: str, key: tuple[int, int, int], account: str, venue: Venue, side: Side,
                kind: OrderType, price: int | None, qty: int, mode: SelfTradeMode | None, until: int | None,
                may_rest: bool) -> OpResult:
        """Place a judged order on the book: the open-order cap, a passed until and credit refuse it first."""
        symbol = venue.market.symbol
        if may_rest:
            why = self._resting_problem(account, until)
            if why is not None:
                return self._refused("new", order_id, None, symbol, side, kind, price, qty, account, key, mode, why)
        if self.credit is not None and (kind is _MARKET) == (price is None):
            extra = (self._market_buy_cost(venue, account, qty) if price is None and side is _BUY
                     else worst_case(side, price, qty, venue.units)[1])
            if not self._credit_allows(self.credit, account, venue, side, extra):
                return self._refused("new", order_id, None, symbol, side, kind, price, qty, account, key, mode,
                                     "credit_limit")
        events = venue.engine.place_order(order_id, side, kind, qty, price, account, key, mode)
        first = events[0]
        if type(first) is not OrderAccepted:   # then OrderRejected: place_order's first event is one of the two
            return self._refused("new", order_id, None, symbol, side, kind, price, qty, account, key, mode,
                                 cast(OrderRejected, first).reason)
        order = first.order
        self._absorb(venue, events, order)
        if order_id in self.open_orders:
            if self._fresh_ttl is not None and account not in self.positions.amounts:
                fresh = self.time_ms + self._fresh_ttl      # it holds nothing: its orders rest a while only
                until = fresh if until is None else min(until, fresh)
            if until is not None:
                self.timers.set_order(order_id, until)
        # `_value_` rather than `.value`, a Python-level descriptor in 3.11, on this hot path
        return OpResult("new", order_id, None, order.status._value_, order.reason)

    def _reducible(self, account: str, venue: Venue, side: Side, qty: int) -> int:
        """How many of `qty` lots a reduce-only order may trade: at most the account's position in the market's
        base asset, and only against it (a sell while long, a buy while short), so it never grows or flips."""
        held, unit = self.positions.get(account, venue.units.base), venue.units.base_unit
        if side is _BUY:
            return min(qty, -held // unit) if held < 0 else 0
        return min(qty, held // unit) if held > 0 else 0

    # ------------------------------------------------------------------ trigger orders (triggers.py)

    def _new_trigger(self, order_id: str, key: tuple[int, int, int], account: str, venue: Venue, op: NewOrderOp,
                     price: int | None, qty: int, mode: SelfTradeMode | None, cap: int | None) -> OpResult:
        """Keep a stop-market, stop-limit or take-profit order until the last trade price crosses its trigger."""
        side, kind = _SIDES[op.side], _MARKET if price is None else _LIMIT
        assert op.trigger is not None     # the caller's branch
        try:
            trigger = venue.parse(op.trigger, op.qty)[0]
        except ExchangeError:
            trigger = None
        why = "invalid_trigger" if trigger is None else self.triggers.room_for(account)
        if why is not None or trigger is None:
            return self._refused("new", order_id, None, op.market, side, kind, price, qty, account, key, mode,
                                 why or "invalid_trigger")
        order = Order()    # the order it places, kept outside the book (its self-trade mode None: the market's)
        order.id, order.market, order.side, order.type, order.price = order_id, op.market, side, kind, price
        order.quantity = order.remaining = qty
        order.owner, order.created_key, order.status, order.reason = account, key, _OPEN, None
        order.self_trade = mode  # type: ignore[assignment]
        self.triggers.add(Trigger(order, op.type, trigger, op.reduce_only, cap))
        self._triggers_added.append(order_id)
        if self._fresh_ttl is not None and account not in self.positions.amounts:
            self.timers.set_order(order_id, self.time_ms + self._fresh_ttl)   # it holds nothing: it waits a while only
        return OpResult("new", order_id, None, UNTRIGGERED, None)

    def _fire_triggers(self) -> None:
        """After the block's transactions: place the trigger orders their market's last trade price crossed
        (markets in their order, oldest created first, at most MAX_FIRED_PER_BLOCK in all), each a timed result
        of the block."""
        budget = MAX_FIRED_PER_BLOCK
        for symbol, venue in self.venues.items():
            if not venue.trades or not budget:
                continue
            for entry in self.triggers.due(symbol, venue.trades[-1][1], budget):
                budget -= 1
                self._timed.append(self._fire(venue, entry))

    def _fire(self, venue: Venue, entry: Trigger) -> OpResult:
        order = entry.order
        if self.timers.order_until:
            self.timers.drop_order(order.id)
        key, qty = order_key(order), order.quantity
        if entry.reduce_only:
            qty = self._reducible(order.owner, venue, order.side, qty)
            if not qty:
                self._refused("trigger", order.id, None, order.market, order.side, order.type, order.price,
                              order.quantity, order.owner, key, order.self_trade, "reduce_only")
                return OpResult("trigger", order.id, order.market, "rejected", "reduce_only")
        if entry.cap is not None:      # placed by a capped agent: its notional is judged as it is placed now
            notional = (qty * order.price * venue.units.quote_unit if order.price is not None
                        else self._book_notional(venue, order.owner, order.side is _BUY, qty))
            if notional is None or notional > entry.cap:
                self._refused("trigger", order.id, None, order.market, order.side, order.type, order.price,
                              order.quantity, order.owner, key, order.self_trade, "over_notional_cap")
                return OpResult("trigger", order.id, order.market, "rejected", "over_notional_cap")
        placed = self._submit(order.id, key, order.owner, venue, order.side, order.type, order.price, qty,
                              order.self_trade, None, order.type is _LIMIT)
        return OpResult("trigger", order.id, order.market, placed.outcome, placed.reason)

    def _cancel_trigger(self, entry: Trigger, reason: str) -> None:
        order = entry.order
        self.triggers.remove(order.id)
        if self.timers.order_until:
            self.timers.drop_order(order.id)
        order.status, order.reason = OrderStatus.CANCELLED, reason
        self.closed.add(order)
        self._touched_orders[order.id] = order

    def _trigger_view(self, entry: Trigger) -> View:
        venue = self.venues[entry.order.market]
        return {**order_view(entry.order, self.params.registry), "status": UNTRIGGERED, "type": entry.kind,
                "trigger_price": venue.market.format_price(entry.trigger), "reduce_only": entry.reduce_only}

    def _resting_problem(self, account: str, until: int | None) -> str | None:
        """Why an order that may rest is refused before it matches: the account's cap, or a passed until."""
        if until is not None and until <= self.time_ms:
            return "until_passed"
        if self._cap is not None and len(self.by_account.get(account, ())) >= self._cap:
            return "too_many_open_orders"
        return None

    def _cancel(self, account: str, op: CancelOp) -> OpResult:
        target = op.order_id
        venue = self.venues.get(op.market)
        if venue is None:
            return OpResult("cancel", None, target, "rejected", "unknown_market")
        waiting = self.triggers.get(target)
        if waiting is not None:
            if waiting.order.owner != account or waiting.order.market != op.market:
                return OpResult("cancel", None, target, "rejected",
                                "not_owner" if waiting.order.owner != account else "market_mismatch")
            self._cancel_trigger(waiting, "requested")
            return OpResult("cancel", None, target, "cancelled", "requested")
        order, reason = self._owned_open(target, account, op.market)
        if order is None:
            return OpResult("cancel", None, target, "rejected", reason)
        venue.engine.cancel_order(target, account)
        self._left_book(venue, order, order.remaining)
        return OpResult("cancel", None, target, "cancelled", order.reason)

    def _cancel_all(self, account: str, op: CancelAllOp) -> OpResult:
        if op.market is not None and op.market not in self.venues:
            return OpResult("cancel_all", None, op.scope, "rejected", "unknown_market")
        count = self._cancel_orders_of(account, "cancel_all", op.market, op.side)
        return OpResult("cancel_all", None, op.scope, "cancelled", f"{count}_cancelled")

    def _cancel_orders_of(self, account: str, reason: str, market: str | None = None, side: str | None = None) -> int:
        """Cancel `account`'s open orders (in `market`, on `side` when given), oldest first; returns how many."""
        ids = self.by_account.get(account)
        if not ids:
            return self._cancel_triggers_of(account, reason, market, side) if self.triggers else 0
        chosen = [order for order in map(self.open_orders.__getitem__, ids)
                  if (market is None or order.market == market) and (side is None or order.side._value_ == side)]
        chosen.sort(key=order_key)
        for order in chosen:
            venue = self.venues[order.market]
            venue.engine.cancel_order(order.id, account)
            self._left_book(venue, order, order.remaining)
            order.reason = reason
        return len(chosen) + self._cancel_triggers_of(account, reason, market, side)

    def _cancel_triggers_of(self, account: str, reason: str, market: str | None, side: str | None) -> int:
        """After the resting orders: `account`'s waiting triggers in the scope, oldest created first."""
        if account not in self.triggers.by_account:
            return 0
        chosen = [e for e in self.triggers.of(account, market) if side is None or e.order.side._value_ == side]
        for entry in chosen:
            self._cancel_trigger(entry, reason)
        return len(chosen)

    def _schedule_cancel(self, account: str, op: ScheduleCancelOp) -> OpResult:
        at = op.at
        if at is not None and not self.time_ms < at <= self.time_ms + MAX_SWITCH_MS:
            return OpResult("schedule_cancel", None, account, "rejected", "at_out_of_range")
        self.timers.set_switch(account, at)
        return OpResult("schedule_cancel", None, account, "cleared" if at is None else "armed", None)

    def _fire_timers(self, now_ms: int) -> None:
        """Block time reached some switches and good-til-time orders: cancel what they name (the block's
        timed results, before its first transaction)."""
        for kind, key in self.timers.due(now_ms):
            if kind == SWITCH:
                count = self._cancel_orders_of(key, "scheduled_cancel")
                self._timed.append(OpResult("schedule_cancel", None, key, "fired", f"{count}_cancelled"))
            elif kind == ORDER:
                order = self.open_orders.get(key)
                if order is None:
                    waiting = self.triggers.get(key)      # a fresh account's trigger order: it waited long enough
                    if waiting is not None:
                        self._cancel_trigger(waiting, "good_til_time")
                        self._timed.append(OpResult("until", None, key, "cancelled", "good_til_time"))
                    continue
                venue = self.venues[order.market]
                venue.engine.cancel_order(key, order.owner)
                self._left_book(venue, order, order.remaining)
                order.reason = "good_til_time"
                self._timed.append(OpResult("until", None, key, "cancelled", "good_til_time"))

    def _replace(self, order_id: str, key: tuple[int, int, int], account: str, op: ReplaceOp) -> OpResult:
        target = op.order_id
        venue = self.venues.get(op.market)
        if venue is None:
            return self._refused("replace", order_id, target, op.market, None, None, None, None, account, key, None,
                                 "unknown_market")
        old, reason = self._owned_open(target, account, op.market)
        if old is None and target in self.triggers:
            reason = "trigger_not_replaceable"
        if old is None:
            return self._refused("replace", order_id, target, op.market, None, None, None, None, account, key, None,
                                 reason or "unknown_order")
        try:
            price, qty = venue.parse(op.price, op.qty)
        except ExchangeError as error:
            return self._refused("replace", order_id, target, op.market, old.side, old.type, None, None, account, key,
                                 old.self_trade, _field_code(error))
        if self.credit is not None and price is not None:
            held = worst_case(old.side, old.price, old.remaining, venue.units)[1]
            extra = worst_case(old.side, price, qty, venue.units)[1] - held
            if not self._credit_allows(self.credit, account, venue, old.side, extra):
                return self._refused("replace", order_id, target, op.market, old.side, old.type, price, qty, account,
                                     key, old.self_trade, "credit_limit")
        events = venue.engine.replace(ReplaceOrder(target, order_id, qty, price, key, account))
        first = events[0]
        if type(first) is OrderRejected:
            return self._refused("replace", order_id, target, op.market, old.side, old.type, price, qty, account, key,
                                 old.self_trade, first.reason)
        placed = events[1]    # [OrderCancelled(old), OrderAccepted(new), ...]
        assert type(placed) is OrderAccepted
        order = placed.order
        until = self.timers.order_until.get(target)
        self.client_ids.move(target, order_id)
        self._absorb(venue, events, order)
        if until is not None and order_id in self.open_orders:
            self.timers.set_order(order_id, until)
        return OpResult("replace", order_id, target, order.status._value_, order.reason)

    def _grant(self, account: str, op: GrantOp) -> OpResult:
        reason = self._grant_problem(op, account)
        if reason is not None or self.credit is None:
            return OpResult("grant", None, op.account, "rejected", reason)
        self.credit.grant(op.account, op.asset, self.params.assets.parse(op.asset, op.limit))
        return OpResult("grant", None, op.account, "granted", None)

    def _grant_problem(self, op: GrantOp, account: str) -> str | None:
        if self.credit is None:
            return "credit_disabled"
        if account != self.params.credit_authority:
            return "not_authority"
        if op.asset not in self.params.assets:
            return "unknown_asset"
        try:
            units = self.params.assets.parse(op.asset, op.limit, "limit")
        except ExchangeError as error:
            return _field_code(error)
        if units > MAX_LIMIT_UNITS:
            return "limit_too_large"       # positions and limits stay 62-bit integers in every encoding
        return None

    def _refuse_op(self, tx: SignedTx, account: str, index: int, op_index: int, op: Op, reason: str) -> OpResult:
        """The result of an op that never ran; new and replace ops leave a rejected order record."""
        key = (self.height, index, op_index)
        if type(op) is NewOrderOp:
            result = self._refused(op.name, tx.order_id(op_index), None, op.market, _SIDES[op.side], _TYPES[op.type],
                                   None, None, account, key, None if op.stp is None else _STP_MODES[op.stp], reason)
            if op.client_id is not None and self.client_ids.holder(account, op.client_id) is None:
                self._claim(account, op.client_id, tx.order_id(op_index))
            return result
        if type(op) is ReplaceOp:
            return self._refused(op.name, tx.order_id(op_index), op.order_id, op.market, None, None, None, None,
                                 account, key, None, reason)
        target: str | None
        if type(op) is CancelOp:
            target = op.order_id
        elif type(op) is GrantOp:
            target = op.account
        elif type(op) is ApproveAgentOp or type(op) is RevokeAgentOp:
            target = op.agent
        elif type(op) is CancelAllOp:
            target = op.scope
        else:
            target = account
        return OpResult(op.name, None, target, "rejected", reason)

    # ------------------------------------------------------------------ bookkeeping

    def _owned_open(self, order_id: str, account: str, symbol: str) -> tuple[Order | None, str | None]:
        """The open order `order_id` if `account` owns it and it rests in `symbol`, else the reason."""
        order = self.open_orders.get(order_id)
        if order is None:
            closed = self.closed.get(order_id)
            if closed is None:
                return None, "unknown_order"
            return None, "not_owner" if closed.owner != account else "not_open"
        if order.owner != account:
            return None, "not_owner"
        if order.market != symbol:
            return None, "market_mismatch"
        return order, None

    def _refused(self, op: str, order_id: str, target: str | None, symbol: str, side: Side | None,
                 kind: OrderType | None, price: int | None, qty: int | None, account: str, key: tuple[int, int, int],
                 mode: SelfTradeMode | None, reason: str) -> OpResult:
        if order_id not in self.open_orders and order_id not in self.closed:
            order = Order()   # a refused op's record: fields it never had stay None
            order.id, order.market, order.owner, order.created_key = order_id, symbol, account, key
            # the ignores: Order types these fields as a placed order has them, and this record keeps None where the
            # op never had a value (the views, views.order_view_as, read them as optional)
            order.side, order.type, order.self_trade = side, kind, mode  # type: ignore[assignment]
            order.price, order.quantity, order.remaining = price, qty, qty  # type: ignore[assignment]
            order.status, order.reason = _REJECTED, reason
            self.closed.add(order)
            self._touched_orders[order_id] = order
        return OpResult(op, order_id, target, "rejected", reason)

    def _absorb(self, venue: Venue, events: list[Any], taker: Order) -> None:
        """Fold the engine's events for one taker into positions, trades, history and the block's records."""
        # events are `Event`s, typed Any: the loop dispatches on `type(event)` kept in a local, which mypy cannot narrow
        credit, open_orders, closed, touched_orders = self.credit, self.open_orders, self.closed, self._touched_orders
        units, touched, taker_id = venue.units, venue.touched, taker.id
        touched_orders[taker_id] = taker
        for event in events:
            kind = type(event)
            if kind is Trade:
                maker, price, qty = event.maker, event.price, event.quantity
                touched.add(-price if maker.side is _BUY else price)
                if taker.side is _BUY:
                    self.positions.settle(taker.owner, maker.owner, units, price, qty)
                else:
                    self.positions.settle(maker.owner, taker.owner, units, price, qty)
                row = (f"{taker_id}:{maker.id}", price, qty, maker.id, taker_id, taker.side._value_, maker.owner,
                       taker.owner, self.height, self.time_ms)
                venue.trades.append(row)
                self._trades.append((venue.market, row))
                if credit is not None:
                    credit.release(maker, units, qty)
                touched_orders[maker.id] = maker
                if not maker.remaining:
                    del open_orders[maker.id]
                    self._unindex(maker)
                    closed.add(maker)
            elif kind is OrderCancelled or kind is OrderReduced:
                if event.order_id != taker_id:  # a resting order: self-trade prevention or the replaced one
                    order = open_orders[event.order_id]
                    if kind is OrderCancelled:
                        self._left_book(venue, order, event.remaining)
                    else:
                        touched.add(level_key(order))
                        if credit is not None:
                            credit.release(order, units, event.reduced_by)
                        touched_orders[order.id] = order
        if taker.status in _RESTING:
            open_orders[taker_id] = taker
            self.index(taker)
            touched.add(level_key(taker))
            if credit is not None:
                credit.reserve(taker, units, taker.remaining)
        else:
            self._record_unrested(taker)

    def _record_unrested(self, order: Order) -> None:
        """An order closed without resting joins the history, unless it was an immediate order (market, IOC,
        FOK) of an account that holds nothing under the fresh-account rule: then only this node's short
        `recent_fresh` keeps it (the module docstring says why). A refused op or a limit order cancelled by
        self-trade prevention keeps its record: its client was told a final answer it may come back for."""
        if self._fresh_ttl is not None and order.type in _IMMEDIATE and order.owner not in self.positions.amounts:
            self.recent_fresh.add(order)
            self.client_ids.forget(order.id)        # a replace moved one to it
        else:
            self.closed.add(order)

    def _left_book(self, venue: Venue, order: Order, remaining: int) -> None:
        """A resting order was cancelled with `remaining` lots unfilled."""
        del self.open_orders[order.id]
        self._unindex(order)
        venue.touched.add(level_key(order))
        if self.credit is not None:
            self.credit.release(order, venue.units, remaining)
        self.closed.add(order)
        self._touched_orders[order.id] = order

    def index(self, order: Order) -> None:
        """A resting order joins its account's open orders."""
        ids = self.by_account.get(order.owner)
        if ids is None:
            ids = self.by_account[order.owner] = {}
        ids[order.id] = None

    def _unindex(self, order: Order) -> None:
        ids = self.by_account[order.owner]
        del ids[order.id]
        if not ids:
            del self.by_account[order.owner]
        if self.timers.order_until:
            self.timers.drop_order(order.id)

    def _credit_allows(self, credit: CreditBook, account: str, venue: Venue, side: Side, extra: int) -> bool:
        asset = venue.units.quote if side is _BUY else venue.units.base
        return credit.allows(account, asset, self.positions.get(account, asset), extra)

    def _market_buy_cost(self, venue: Venue, account: str, qty: int) -> int:
        """The most a market buy of `qty` lots can pay: the cheapest `qty` lots others rest on the book."""
        cost, needed = 0, qty
        for level in venue.engine.book.asks.iter_levels():
            for maker in level.live_orders():
                if maker.owner == account:
                    continue
                take = min(needed, maker.remaining)
                cost += take * level.price
                needed -= take
                if not needed:
                    return cost * venue.units.quote_unit
        return cost * venue.units.quote_unit

    # ------------------------------------------------------------------ queries

    def order(self, order_id: str) -> View | None:
        """An order by id, open or closed (closed ones while the history keeps them)."""
        order = self.open_orders.get(order_id) or self.closed.get(order_id) or self.recent_fresh.get(order_id)
        if order is None:
            waiting = self.triggers.get(order_id)
            return None if waiting is None else self._with_client_id(self._trigger_view(waiting))
        view = order_view(order, self.params.registry)
        until = self.timers.order_until.get(order_id)
        if until is not None:
            view["until"] = until
        if self.client_ids:
            self._with_client_id(view)
        return view

    def _with_client_id(self, view: View) -> View:
        client_id = self.client_ids.client_id(view["id"])
        if client_id is not None:
            view["client_id"] = client_id
        return view

    def orders_by_client_id(self, client_id: str, account: str | None = None) -> list[View]:
        """The order holding `client_id` for `account`, or for every account (by account id) when None."""
        if account is None:
            ids = self.client_ids.by_client_id(client_id)
        else:
            held = self.client_ids.holder(account, client_id)
            ids = [] if held is None else [held]
        return [view for view in map(self.order, ids) if view is not None]

    def switch(self, account: str) -> int | None:
        """When `account`'s dead-man's switch fires (ms since the Unix epoch, block time), or None."""
        return self.timers.switches.get(account)

    def open_count(self, account: str) -> int:
        return len(self.by_account.get(account, ()))

    def orders(self, account: str | None = None, status: str | None = None, limit: int = 100) -> list[View]:
        """Orders newest first, optionally of one account and one status (`open` means resting)."""
        if status is not None and status not in _ORDER_STATUSES:
            raise InvalidQuery("invalid_status", f"status must be one of {', '.join(sorted(_ORDER_STATUSES))}",
                               "status")
        if type(limit) is not int or limit < 0:
            raise InvalidQuery("invalid_limit", "limit must be a non-negative integer", "limit")
        if status == UNTRIGGERED or (status is None and self.triggers):
            waiting = [self._trigger_view(e) for e in self.triggers.entries.values()
                       if account is None or e.order.owner == account]
            waiting = heapq.nlargest(limit, waiting, key=lambda v: (v["height"], v["tx_index"], v["op_index"]))
            if status == UNTRIGGERED:
                return [self._with_client_id(view) for view in waiting]
            return ([self._with_client_id(view) for view in waiting] + self._listed(account, status, limit))[:limit]
        return self._listed(account, status, limit)

    def _listed(self, account: str | None, status: str | None, limit: int) -> list[View]:
        """Orders of the books and the closed history, newest first (`orders` without the waiting triggers)."""
        pool: Iterable[Order] = self.open_orders.values()
        if status not in (None, "open", "partially_filled"):
            pool = iter(self.closed)
        elif status is None:
            pool = [*pool, *self.closed]
        wanted = (OrderStatus.OPEN.value, OrderStatus.PARTIALLY_FILLED.value) if status == "open" else (status,)
        chosen = (order for order in pool if (account is None or order.owner == account)
                  and (status is None or order.status.value in wanted))
        registry = self.params.registry
        views = [order_view(order, registry) for order in heapq.nlargest(limit, chosen, key=order_key)]
        return [self._with_client_id(view) for view in views] if self.client_ids else views

    def has_digest(self, market: str) -> bool:
        """Whether the book's digest at this height is computed already (False for an unknown market)."""
        venue = self.venues.get(market)
        return venue is not None and venue.digest is not None

    def book(self, market: str, depth: int | None = None, with_digest: bool = True) -> View:
        """`{"market", "bids": [[price, qty], ...], "asks": ..., "digest", "height"}`, best first (`digest` None
        unless `with_digest`: it encodes the whole book, once per height the book changed at)."""
        venue = self.venues.get(market)
        if venue is None:
            raise UnknownMarket("unknown_market", f"unknown market {market!r}", "market")
        if venue.digest is None and with_digest:
            venue.digest = venue.engine.digest()
        return {**depth_view(venue.engine, depth, with_digest=False), "digest": venue.digest if with_digest else None,
                "height": self.height}

    def trades(self, market: str, limit: int | None = None) -> list[View]:
        """The market's kept trades, oldest first; the newest `limit` of them when given."""
        venue = self.venues.get(market)
        if venue is None:
            raise UnknownMarket("unknown_market", f"unknown market {market!r}", "market")
        rows = list(venue.trades)
        if limit is not None:
            rows = rows[-limit:] if limit > 0 else []
        return [trade_view(row, venue.market) for row in rows]

    def trades_between(self, market: str, start_ms: int | None = None, end_ms: int | None = None,
                       cursor: str | None = None, limit: int = 1000,
                       account: str | None = None) -> tuple[list[View], str | None]:
        """The market's kept trades in [start, end) by block time, oldest first, a page of `limit` after the
        trade `cursor` names; and the next page's cursor (candles.py). Raises CursorExpired."""
        venue = self.venues.get(market)
        if venue is None:
            raise UnknownMarket("unknown_market", f"unknown market {market!r}", "market")
        rows, after = trades_between(list(venue.trades), start_ms, end_ms, cursor, limit, account)
        return [trade_view(row, venue.market) for row in rows], after

    def candles(self, market: str, interval_ms: int, start_ms: int | None = None,
                end_ms: int | None = None) -> list[View]:
        venue = self.venues.get(market)
        if venue is None:
            raise UnknownMarket("unknown_market", f"unknown market {market!r}", "market")
        rows = venue.trades
        if start_ms is not None and end_ms is None:      # the newest candles (the stream's updates): the tail only
            tail: list[TradeRow] = []
            for row in reversed(rows):
                if row[9] < start_ms:
                    break
                tail.append(row)
            return candles(reversed(tail), interval_ms, start_ms, None, venue.market)
        return candles(rows, interval_ms, start_ms, end_ms, venue.market)

    def position(self, account: str) -> View:
        """`{"account", "positions": {asset: amount}, "limits": {asset: limit or None}, "reserved": {...}}`.

        Every asset of the markets is listed; limits and reserved are empty when credit is off."""
        assets, credit = self.params.assets, self.credit
        view: View = {"account": account, "positions": {
            asset: assets.format(asset, self.positions.get(account, asset)) for asset in assets.scales}}
        limits: dict[str, str | None] = {}
        reserved: dict[str, str] = {}
        if credit is not None:
            held = credit.exposure.get(account, {})
            for asset in assets.scales:
                limit = credit.limit(account, asset)
                limits[asset] = None if limit is None else assets.format(asset, limit)
                reserved[asset] = assets.format(asset, held.get(asset, 0))
        view["limits"], view["reserved"] = limits, reserved
        return view

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The canonical encoding of the whole state between blocks (see `snapshot.py`)."""
        return b"".join(self.snapshot_parts())

    def snapshot_parts(self) -> list[bytes]:
        """`snapshot()` in the pieces it joins: most of them kept from the last snapshot (packed_rows.py)."""
        from exchange.app.snapshot import encode_state_parts
        if self._in_block:
            raise RuntimeError("snapshot inside a block")
        return encode_state_parts(self)

    @classmethod
    def restore(cls, params: ExchangeParams, data: bytes, chain_id: str | None = None) -> ExchangeState:
        """The state a `snapshot()` encodes; raises InvalidStateSnapshot naming what is wrong."""
        from exchange.app.snapshot import decode_state
        state = decode_state(cls(params, chain_id, commitments=False), data)
        state.commitment = StateCommitment.build(state)    # the maps are not in the snapshot: made from its rows
        state._forgotten, state._hash = [], state._committed_hash()
        return state


def _field_code(error: ExchangeError) -> str:
    """A parse error's code, prefixed with its field when the code does not name it already."""
    field = error.field or "value"
    return error.code if error.code.startswith(field) else f"{field}_{error.code}"


def _parse_problem(venue: Venue, price: str | None, qty: str) -> str | None:
    try:
        venue.parse(price, qty)
    except ExchangeError as error:
        return _field_code(error)
    return None
