"""What applying a block did: per transaction, per operation, and for the block as a whole.

A transaction's `status` is `applied` (its operations ran; each has its own outcome),
`rejected` (`wrong_chain` or `expires_too_far`: nothing ran and nothing is remembered, since a
transaction whose expiry is too far out now may fit the window later), `duplicate` (already
applied inside the replay window; nothing ran) or `expired` (included at or after its
`expires`: nothing ran, and each of its new orders is recorded as rejected with reason
`expired`, so an order a client was told is pending always resolves).

Each operation reports `order_id` (the order it created: new and replace), `target` (the order
it cancelled or replaced, or the account a grant is for), `outcome` (for new and replace, the
order's status right after matching: open, partially_filled, filled, cancelled or rejected; for
cancel `cancelled` or `rejected`; for grant `granted` or `rejected`) and `reason` (a stable code
when rejected or cancelled).

A block's *timed* results are what block time alone did before its first transaction (`timers.py`):
`schedule_cancel` / `fired` with reason `<n>_cancelled` for an account's dead-man's switch (target: the
account), `until` / `cancelled` / `good_til_time` for a good-til-time order (target: the order). A
`cancel_all` op reports `cancelled` with reason `<n>_cancelled` and its scope (`market/side`, `*` for
any) as target; `schedule_cancel` reports `armed`, `cleared` or `rejected` (`at_out_of_range`).

`results_hash` covers, in order, every transaction's result (id, account, index in the block,
status, reason and every operation's outcome), every trade of the block, then the timed results
when there are any; `app_hash` chains it onto the previous block's app hash, so equal app hashes
mean equal results over the whole chain.
"""
from __future__ import annotations

import hashlib
from typing import Container, NamedTuple, TypedDict

import msgpack

from exchange.app.history import TradeRow
from exchange.app.views import OrderMoment, View, order_view_as, trade_view
from exchange.markets import Market, MarketRegistry
from exchange.orders import Order

APPLIED, REJECTED, DUPLICATE, EXPIRED = "applied", "rejected", "duplicate", "expired"
GENESIS_DOMAIN = b"exchange-node/state/v1\n"


class OpResultDict(TypedDict):
    op: str
    order_id: str | None
    target: str | None
    outcome: str
    reason: str | None


class TxResultDict(TypedDict):
    tx_id: str
    account: str
    tx_index: int
    status: str
    reason: str | None
    ops: list[OpResultDict]


class OpResult(NamedTuple):
    """The outcome of one operation of a transaction."""

    op: str
    order_id: str | None
    target: str | None
    outcome: str
    reason: str | None

    def to_dict(self) -> OpResultDict:
        return OpResultDict(op=self.op, order_id=self.order_id, target=self.target, outcome=self.outcome,
                            reason=self.reason)


class TxResult(NamedTuple):
    """The outcome of one transaction at position `tx_index` of its block.

    Tuples, so the results hash packs them as they are (no per-transaction conversion)."""

    tx_id: str
    account: str
    tx_index: int
    status: str
    reason: str | None
    ops: list[OpResult]

    def to_dict(self) -> TxResultDict:
        return {"tx_id": self.tx_id, "account": self.account, "tx_index": self.tx_index,
                "status": self.status,
                "reason": self.reason, "ops": [op.to_dict() for op in self.ops]}


class BlockResult:
    """Everything one block changed, in the shapes the API and the market-data stream publish.

    `trades`: trade views (decimal strings) in execution order. `book_changes`: per market the
    levels the block touched, `[side, price, new total size]` with size "0" for a level that
    emptied, bids then asks, best first. `order_updates`: per account the views of its orders
    the block changed, as they stood at the end of the block, in the order first touched.
    Trade and order views are built on first use (a validator nobody watches never pays for them).
    """

    __slots__ = ("height", "time_ms", "txs", "book_changes", "results_hash", "app_hash", "_trade_rows",
                 "_order_moments", "_registry", "_trades", "_order_updates", "timed")

    def __init__(self, height: int, time_ms: int, txs: list[TxResult], trade_rows: list[tuple[Market, TradeRow]],
                 book_changes: dict[str, list[list[str]]], order_moments: list[tuple[Order, OrderMoment]],
                 registry: MarketRegistry, results_hash: bytes, app_hash: bytes,
                 timed: list[OpResult] | None = None) -> None:
        self.height, self.time_ms, self.txs, self.book_changes = height, time_ms, txs, book_changes
        self.timed: list[OpResult] = timed or []
        self.results_hash, self.app_hash = results_hash, app_hash
        self._trade_rows, self._order_moments, self._registry = trade_rows, order_moments, registry
        self._trades: list[View] | None = None
        self._order_updates: dict[str, list[View]] | None = None

    @property
    def trades(self) -> list[View]:
        if self._trades is None:
            self._trades = [trade_view(row, market) for market, row in self._trade_rows]
        return self._trades

    @property
    def order_updates(self) -> dict[str, list[View]]:
        if self._order_updates is None:
            updates: dict[str, list[View]] = {}
            fired = self._fired()
            for order, moment in self._order_moments:
                updates.setdefault(order.owner, []).append(self._update_view(order, moment, fired))
            self._order_updates = updates
        return self._order_updates

    def order_updates_of(self, accounts: Container[str]) -> list[View]:
        """The views of `accounts`' orders this block changed (a node streams only its own accounts' orders:
        building every order's view on every node was a seventh of a follower's work under load)."""
        fired = self._fired()
        return [self._update_view(order, moment, fired) for order, moment in self._order_moments
                if order.owner in accounts]

    def _fired(self) -> frozenset[str]:
        """The orders a trigger placed in this block (its timed `trigger` results)."""
        return frozenset(r.order_id for r in self.timed if r.op == "trigger" and r.order_id is not None) \
            if self.timed else frozenset()

    def _update_view(self, order: Order, moment: OrderMoment, fired: frozenset[str]) -> View:
        """An order's view as this block left it; an order a trigger placed in this block says `"triggered": true`."""
        view = order_view_as(order, self._registry, moment)
        if fired and order.id in fired:
            view["triggered"] = True
        return view

    def __repr__(self) -> str:
        return (f"BlockResult(height={self.height} txs={len(self.txs)} trades={len(self._trade_rows)} "
                f"app_hash={self.app_hash.hex()[:16]})")


def results_hash(height: int, time_ms: int, txs: list[TxResult], trades: list[tuple[Market, TradeRow]],
                 timed: list[OpResult] | None = None) -> bytes:
    """sha256 over the canonical msgpack encoding of a block's results (a block with nothing timed hashes as it
    did before timers existed)."""
    body: list[object] = [height, time_ms, txs, [[market.symbol, row] for market, row in trades]]
    if timed:
        body.append(timed)
    return hashlib.sha256(msgpack.packb(body, use_bin_type=True)).digest()


def chain_app_hash(previous: bytes, block_results_hash: bytes) -> bytes:
    return hashlib.sha256(previous + block_results_hash).digest()


def genesis_app_hash(params_digest: bytes) -> bytes:
    return hashlib.sha256(GENESIS_DOMAIN + params_digest).digest()
