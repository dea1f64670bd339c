"""Building transactions and blocks for state tests, and a seeded random trading workload.

The state machine never verifies signatures (the caller does, before `apply_tx`), so these
transactions carry a zero signature unless a test signs one: building 200,000 orders then costs
no Ed25519 time.
"""
from __future__ import annotations

import random
from decimal import Decimal
from typing import Iterable

from exchange.crypto import SIGNATURE_BYTES
from exchange.app import BlockResult, ExchangeParams, ExchangeState
from exchange.app.txs import CancelAllOp, CancelOp, GrantOp, NewOrderOp, Op, ReplaceOp, ScheduleCancelOp, SignedTx

CHAIN = "ab" * 32
T0 = 1_700_000_000_000
BLOCK_MS = 100
MARKETS = "BTC-USD,ETH-USD:0.01:0.001,ETH-BTC:0.00001:0.001"


def account(n: int) -> bytes:
    """A fixed 32-byte account key for test account `n`."""
    return bytes([n % 256]) * 31 + bytes([n // 256])


def new(market: str, side: str, price: str | None, qty: str, kind: str = "limit", stp: str | None = None) -> NewOrderOp:
    return NewOrderOp.parse(market, side, kind, price, qty, stp)


def cancel(market: str, order_id: str) -> CancelOp:
    return CancelOp.parse(market, order_id)


def replace(market: str, order_id: str, price: str | None, qty: str) -> ReplaceOp:
    return ReplaceOp.parse(market, order_id, price, qty)


def grant(account_hex: str, asset: str, limit: str) -> GrantOp:
    return GrantOp.parse(account_hex, asset, limit)


class TxMaker:
    """Unique nonces; `expires` defaults to `lifetime` ms after `base_time` (move it along with the blocks)."""

    def __init__(self, lifetime: int = 60_000) -> None:
        self.count = 0
        self.base_time = T0
        self.lifetime = lifetime

    def __call__(self, who: int | bytes, ops: Iterable[Op], expires: int | None = None, chain: str = CHAIN,
                 nonce: str | None = None) -> SignedTx:
        self.count += 1
        key = account(who) if isinstance(who, int) else who
        return SignedTx(chain, key, nonce or f"n{self.count}", expires or self.base_time + self.lifetime, tuple(ops),
                        bytes(SIGNATURE_BYTES))


class Chain:
    """Drives a state block by block with heights 1, 2, ... and times T0, T0 + BLOCK_MS, ..."""

    def __init__(self, state: ExchangeState | None = None, params: ExchangeParams | None = None) -> None:
        self.state = state or ExchangeState(params or ExchangeParams(MARKETS), CHAIN)
        self.results: list[BlockResult] = []

    def next_time(self) -> int:
        return T0 + self.state.height * BLOCK_MS

    def block(self, txs: Iterable[SignedTx], time_ms: int | None = None) -> BlockResult:
        state = self.state
        state.begin_block(state.height + 1, self.next_time() if time_ms is None else time_ms)
        for tx in txs:
            state.apply_tx(tx)
        result = state.end_block()
        self.results.append(result)
        return result


def trade_positions(results: Iterable[BlockResult], markets: str = MARKETS) -> dict[str, dict[str, Decimal]]:
    """Positions summed straight from the published trades (Decimal arithmetic, independent of the state)."""
    positions: dict[str, dict[str, Decimal]] = {}
    for result in results:
        for trade in result.trades:
            base, quote = trade["market"].split("-")
            qty, price = Decimal(trade["qty"]), Decimal(trade["price"])
            for who, sign in ((trade["buyer"], 1), (trade["seller"], -1)):
                held = positions.setdefault(who, {})
                held[base] = held.get(base, Decimal(0)) + sign * qty
                held[quote] = held.get(quote, Decimal(0)) - sign * qty * price
    return positions


def state_positions(state: ExchangeState, accounts: Iterable[str]) -> dict[str, dict[str, Decimal]]:
    """The state's positions as Decimals, zero amounts and empty accounts left out."""
    found = {}
    for who in accounts:
        held = {asset: Decimal(v) for asset, v in state.position(who)["positions"].items() if Decimal(v)}
        if held:
            found[who] = held
    return found


def nonzero(positions: dict[str, dict[str, Decimal]]) -> dict[str, dict[str, Decimal]]:
    cleaned = {who: {a: v for a, v in held.items() if v} for who, held in positions.items()}
    return {who: held for who, held in cleaned.items() if held}


class Workload:
    """A seeded random mix over several accounts and markets: limit orders around a drifting mid, some
    market/ioc/fok/post_only orders, cancels and replaces of one's own orders and of others' (refused),
    a few malformed values (refused per op), and (`timers`) cancel-alls, dead-man's switches armed, moved
    and cleared, and good-til-time orders, so block time cancels orders too."""

    PRICES = {"BTC-USD": (Decimal("100.00"), Decimal("0.01")), "ETH-USD": (Decimal("20.00"), Decimal("0.01")),
              "ETH-BTC": (Decimal("0.20000"), Decimal("0.00001"))}
    LOTS = {"BTC-USD": Decimal("0.0001"), "ETH-USD": Decimal("0.001"), "ETH-BTC": Decimal("0.001")}

    def __init__(self, seed: int, accounts: int = 6, timers: bool = True) -> None:
        self.rng = random.Random(seed)
        self.timers = timers
        self.accounts = accounts
        self.make = TxMaker(lifetime=5_000)
        self.placed: list[tuple[int, str, str]] = []   # (account, market, order id)

    def price(self, market: str) -> str:
        mid, tick = self.PRICES[market]
        return str(mid + tick * self.rng.randint(-15, 15))

    def qty(self, market: str) -> str:
        return str(self.LOTS[market] * self.rng.randint(1, 40))

    def tx(self) -> SignedTx:
        rng = self.rng
        who = rng.randrange(self.accounts)
        if self.timers and rng.random() < 0.03:
            return self.make(who, [self.timer_op()])
        roll = rng.random()
        if roll < 0.2 and self.placed:
            owner, market, order_id = rng.choice(self.placed[-60:])
            if rng.random() < 0.85:
                who = owner
            op: Op = (cancel(market, order_id) if roll < 0.13
                      else replace(market, order_id, self.price(market), self.qty(market)))
            return self.make(who, [op])
        ops = []
        for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 5)):
            market = rng.choice(list(self.PRICES))
            kind = rng.choices(["limit", "market", "ioc", "fok", "post_only"], [70, 8, 8, 6, 8])[0]
            price = None if kind == "market" else self.price(market)
            qty = self.qty(market) if rng.random() > 0.02 else "0.00000001"
            stp = rng.choice([None, None, None, "cancel_oldest", "cancel_both", "decrement_and_cancel"])
            until = (self.make.base_time + BLOCK_MS * rng.randint(0, 20)
                     if self.timers and kind == "limit" and rng.random() < 0.1 else None)
            ops.append(NewOrderOp.parse(market, rng.choice(["buy", "sell"]), kind, price, qty, stp, until))
        tx = self.make(who, ops)
        self.placed.extend((who, op.market, tx.order_id(i)) for i, op in enumerate(ops))
        return tx

    def timer_op(self) -> Op:
        rng = self.rng
        if rng.random() < 0.4:
            return CancelAllOp.parse(rng.choice([None, *self.PRICES]), rng.choice([None, "buy", "sell"]))
        at = None if rng.random() < 0.2 else self.make.base_time + BLOCK_MS * rng.randint(-1, 30)
        return ScheduleCancelOp.parse(at)

    def blocks(self, txs: int, per_block: int = 25) -> list[list[SignedTx]]:
        """`txs` transactions in blocks of `per_block`, each expiring 5 s after its block's time."""
        blocks: list[list[SignedTx]] = []
        for start in range(0, txs, per_block):
            self.make.base_time = T0 + len(blocks) * BLOCK_MS
            blocks.append([self.tx() for _ in range(min(per_block, txs - start))])
        return blocks
