"""Property tests: random blocks of transactions against a simple reference model.

The model is the naive reference matcher (one list per market, linear scans) plus a plain dict of
who placed which order id: it predicts every operation's outcome (ownership and market checks
included), every trade and every book, while positions are summed from the published trade log.
After every block: the state's books equal the model's, no order has filled beyond its size,
positions equal the summed trades, and every asset sums to zero over all accounts.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.app import ExchangeParams, ExchangeState
from exchange.app.txs import CancelOp, ReplaceOp, SignedTx
from exchange.commands import CancelOrder, ReplaceOrder
from exchange.orders import OrderType, SelfTradeMode, Side
from tests.unit.chain.state_helpers import (CHAIN, T0, Chain, TxMaker, account, cancel, grant, new, nonzero, replace,
                                            state_positions, trade_positions)
from tests.unit.exchange.reference import ReferenceMatcher

MARKETS = "TEST-USD:1:1:1:100:1:1000,TEST-EUR:1:1:1:100:1:1000"
SYMBOLS = ["TEST-USD", "TEST-EUR"]
ACCOUNTS = [account(n).hex() for n in range(3)]
KINDS = ["limit"] * 4 + ["market", "ioc", "fok", "post_only"]
MODES = [None, *(mode.value for mode in SelfTradeMode)]

new_step = st.tuples(st.just("new"), st.sampled_from(SYMBOLS), st.sampled_from(["buy", "sell"]),
                     st.sampled_from(KINDS), st.integers(95, 105), st.integers(1, 8), st.sampled_from(MODES))
cancel_step = st.tuples(st.just("cancel"), st.sampled_from(SYMBOLS), st.integers(0, 300))
replace_step = st.tuples(st.just("replace"), st.sampled_from(SYMBOLS), st.integers(0, 300), st.integers(95, 105),
                         st.integers(1, 8))
tx_plan = st.one_of(
    st.tuples(st.integers(0, 2), st.lists(st.one_of(new_step, new_step, cancel_step, replace_step), min_size=1,
                                          max_size=3)),
    st.tuples(st.just("again"), st.integers(0, 300)))
block_plans = st.lists(st.lists(tx_plan, max_size=8), min_size=1, max_size=8)


class Model:
    """What the state should do, worked out independently."""

    def __init__(self) -> None:
        self.books = {symbol: ReferenceMatcher() for symbol in SYMBOLS}
        self.owner: dict[str, str] = {}     # every order id that has a record -> its account

    def resting_market(self, order_id: str) -> str | None:
        return next((s for s, book in self.books.items() if book.find(order_id) is not None), None)

    def target_problem(self, order_id: str, who: str, symbol: str) -> str | None:
        if order_id not in self.owner:
            return "unknown_order"
        if self.owner[order_id] != who:
            return "not_owner"
        resting = self.resting_market(order_id)
        if resting is None:
            return "not_open"
        return "market_mismatch" if resting != symbol else None

    def new(self, who: str, order_id: str, step: tuple) -> tuple[tuple, list]:
        _, symbol, side, kind, price, qty, mode = step
        events = self.books[symbol].new(order_id, Side(side), OrderType(kind), qty,
                                        None if kind == "market" else price, who,
                                        SelfTradeMode(mode) if mode else SelfTradeMode.CANCEL_NEWEST)
        self.owner[order_id] = who
        return self.outcome(symbol, order_id, events), events

    def outcome(self, symbol: str, order_id: str, events: list) -> tuple:
        if events[0][0] == "rejected":
            return "rejected", events[0][2]
        if self.books[symbol].find(order_id) is not None:
            traded = any(e[0] == "trade" and e[1] == order_id for e in events)
            return ("partially_filled" if traded else "open"), None
        cancelled = [e for e in events if e[0] == "cancelled" and e[1] == order_id]
        return ("cancelled", cancelled[0][2]) if cancelled else ("filled", None)


def trades_of(events: list, symbol: str) -> list[tuple]:
    return [(symbol, e[1], e[2], e[3], e[4]) for e in events if e[0] == "trade"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block_plans)
def test_random_blocks_match_the_reference_model(plan):
    # the model keeps every closed order's record: without the fresh-account rule, which keeps none of an order
    # that never rested while its account holds nothing (test_state_fresh_accounts.py)
    params = ExchangeParams(MARKETS, fresh_order_ttl_ms=None)
    chain, make, model = Chain(ExchangeState(params, CHAIN)), TxMaker(), Model()
    issued: list[str] = []
    sent: list[SignedTx] = []
    filled: dict[str, int] = defaultdict(int)
    for block_plan in plan:
        txs, expected_trades = [], []
        expected: list[tuple[str, list[tuple[str, Any]]]] = []
        for tx_step in block_plan:
            if tx_step[0] == "again":
                if sent:
                    txs.append(sent[tx_step[1] % len(sent)])
                    expected.append(("duplicate", []))
                continue
            who_index, steps = tx_step
            who = ACCOUNTS[who_index]
            ops = []
            for step in steps:
                target = issued[step[2] % len(issued)] if step[0] != "new" and issued else "none"
                ops.append(new(step[1], step[2], None if step[3] == "market" else str(step[4]), str(step[5]),
                               step[3], step[6]) if step[0] == "new"
                           else cancel(step[1], target) if step[0] == "cancel"
                           else replace(step[1], target, str(step[3]), str(step[4])))
            tx = make(who_index, ops, expires=T0 + 60_000)
            outcomes = []
            for index, (step, op) in enumerate(zip(steps, ops)):
                order_id = tx.order_id(index)
                if step[0] == "new":
                    outcome, events = model.new(who, order_id, step)
                    expected_trades += trades_of(events, step[1])
                    issued.append(order_id)
                    outcomes.append(outcome)
                    continue
                assert isinstance(op, (CancelOp, ReplaceOp))        # every other step made one of these
                problem = model.target_problem(op.order_id, who, step[1])
                if step[0] == "cancel":
                    if problem is None:
                        model.books[step[1]].apply(CancelOrder(op.order_id))
                        outcomes.append(("cancelled", "requested"))
                    else:
                        outcomes.append(("rejected", problem))
                    continue
                model.owner[order_id] = who
                issued.append(order_id)
                if problem is not None:
                    outcomes.append(("rejected", problem))
                    continue
                events = model.books[step[1]].apply(ReplaceOrder(op.order_id, order_id, step[4], step[3]))
                expected_trades += trades_of(events, step[1])
                outcomes.append(("rejected", events[0][2]) if events[0][0] == "rejected"
                                else model.outcome(step[1], order_id, events))
            txs.append(tx)
            sent.append(tx)
            expected.append(("applied", outcomes))
        result = chain.block(txs)
        got = [(r.status, [(op.outcome, op.reason) for op in r.ops]) for r in result.txs]
        assert got == expected
        trades = [(t["market"], t["taker_order_id"], t["maker_order_id"], int(t["price"]), int(t["qty"]))
                  for t in result.trades]
        assert trades == expected_trades
        for trade in result.trades:
            filled[trade["taker_order_id"]] += int(trade["qty"])
            filled[trade["maker_order_id"]] += int(trade["qty"])
        for symbol, book in model.books.items():
            l3 = chain.state.venues[symbol].engine.l3()
            assert {k: [(o.id, o.price, o.remaining) for o in v] for k, v in l3.items()} == book.book()
        for order_id, amount in filled.items():
            view = chain.state.order(order_id)
            assert view is not None
            assert amount <= int(view["qty"])
        assert state_positions(chain.state, ACCOUNTS) == nonzero(trade_positions(chain.results, MARKETS))
        assert all(total == 0 for total in chain.state.positions.totals().values())


decimals = st.one_of(st.from_regex(r"[0-9]{1,24}(\.[0-9]{1,24})?", fullmatch=True),
                     st.sampled_from(["0", "0.0", "100", "99.5", "1", "1000", "1001", "000000000000000000000001"]))
symbols = st.sampled_from([*SYMBOLS, "BTC-USD", "TEST-GBP"])
any_op = st.one_of(
    st.builds(new, symbols, st.sampled_from(["buy", "sell"]), st.one_of(st.none(), decimals), decimals,
              st.sampled_from(KINDS), st.sampled_from(MODES)),
    st.builds(cancel, symbols, st.from_regex(r"[0-9a-z]{1,40}", fullmatch=True)),
    st.builds(replace, symbols, st.from_regex(r"[0-9a-z]{1,40}", fullmatch=True), st.one_of(st.none(), decimals),
              decimals),
    st.builds(lambda who, asset, limit: grant(account(who).hex(), asset, limit), st.integers(0, 9),
              st.sampled_from(["TEST", "USD", "EUR", "XRP"]), decimals),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 9), st.lists(any_op, min_size=1, max_size=5),
                          st.integers(-1_000, 200_000)), max_size=25))
def test_no_well_formed_transaction_makes_apply_raise(txs):
    params = ExchangeParams(MARKETS, credit_limits={"USD": "500"}, credit_authority=account(9).hex())
    chain, make = Chain(ExchangeState(params, CHAIN)), TxMaker()
    signed = [make(who, ops, expires=max(1, T0 + offset)) for who, ops, offset in txs]
    for start in range(0, len(signed), 5):
        chain.block(signed[start:start + 5])
    assert all(total == 0 for total in chain.state.positions.totals().values())
    snapshot = chain.state.snapshot()
    assert ExchangeState.restore(params, snapshot, CHAIN).snapshot() == snapshot
