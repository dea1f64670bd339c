"""Credit limits: an order that could take an account short beyond its limit is refused, counting what
its open orders could already take; grants by the credit authority move one account's limit."""
from __future__ import annotations


from exchange.app import ExchangeParams, ExchangeState
from exchange.app.credit import worst_case
from tests.unit.chain.state_helpers import CHAIN, MARKETS, Chain, Workload, account, cancel, grant, new, \
    replace

A, B, AUTHORITY = account(1).hex(), account(2).hex(), account(9).hex()


def credit_chain(limits: dict[str, str] | None = None) -> Chain:
    params = ExchangeParams(MARKETS, credit_limits={"USD": "1000", "BTC": "1"} if limits is None else limits,
                            credit_authority=AUTHORITY)
    return Chain(ExchangeState(params, CHAIN))


def outcomes(result) -> list[tuple[str, str | None]]:
    return [(op.outcome, op.reason) for tx in result.txs for op in tx.ops]


def test_resting_orders_reserve_their_worst_case_and_release_it_when_they_go(make):
    chain = credit_chain()
    big = make(1, [new("BTC-USD", "buy", "100", "10")])
    assert outcomes(chain.block([big])) == [("open", None)]
    assert chain.state.position(A)["reserved"]["USD"] == "1000.000000"
    assert outcomes(chain.block([make(1, [new("BTC-USD", "buy", "100", "0.01")])])) == [("rejected", "credit_limit")]
    chain.block([make(1, [cancel("BTC-USD", big.order_id(0))])])
    assert chain.state.position(A)["reserved"]["USD"] == "0.000000"
    assert outcomes(chain.block([make(1, [new("BTC-USD", "buy", "100", "0.01")])])) == [("open", None)]


def test_sells_are_limited_in_the_base_asset_and_unlisted_assets_are_unlimited(make):
    chain = credit_chain()
    result = chain.block([make(1, [new("BTC-USD", "sell", "100", "1"), new("BTC-USD", "sell", "100", "0.0001"),
                                   new("ETH-USD", "sell", "20", "5000")])])
    assert outcomes(result) == [("open", None), ("rejected", "credit_limit"), ("open", None)]
    assert chain.state.position(A)["limits"] == {"BTC": "1.00000000", "ETH": None, "USD": "1000.000000"}


def test_fills_count_against_the_limit_and_proceeds_extend_it(make):
    chain = credit_chain()
    chain.block([make(1, [new("BTC-USD", "sell", "100", "1")]), make(2, [new("BTC-USD", "buy", "100", "1")])])
    assert chain.state.position(A)["positions"]["USD"] == "100.000000"
    assert chain.state.position(B)["reserved"]["USD"] == "0.000000"
    result = chain.block([make(1, [new("BTC-USD", "buy", "50", "22"), new("BTC-USD", "buy", "50", "0.01")]),
                          make(2, [new("BTC-USD", "buy", "90", "10"), new("BTC-USD", "buy", "1", "0.01")])])
    assert outcomes(result) == [("open", None), ("rejected", "credit_limit"), ("open", None),
                                ("rejected", "credit_limit")]


def test_a_market_buy_is_bounded_by_the_cheapest_lots_of_other_accounts(make):
    chain = credit_chain({"USD": "1000"})
    chain.block([make(1, [new("BTC-USD", "sell", "50", "1")]),
                 make(2, [new("BTC-USD", "sell", "100", "5"), new("BTC-USD", "sell", "300", "5")])])
    too_much = make(1, [new("BTC-USD", "buy", None, "7", kind="market")])   # 5 x 100 + 2 x 300 = 1100
    enough = make(1, [new("BTC-USD", "buy", None, "6", kind="market", stp="cancel_oldest")])  # 800
    assert outcomes(chain.block([too_much])) == [("rejected", "credit_limit")]
    assert outcomes(chain.block([enough])) == [("filled", None)]
    assert chain.state.position(A)["positions"]["USD"] == "-800.000000"


def test_replace_counts_the_new_size_less_the_old_one(make):
    chain = credit_chain()
    order = make(1, [new("BTC-USD", "buy", "100", "6")])
    chain.block([order])
    grow = make(1, [replace("BTC-USD", order.order_id(0), "100", "11")])
    assert outcomes(chain.block([grow])) == [("rejected", "credit_limit")]
    kept = chain.state.order(order.order_id(0))
    assert kept is not None and kept["status"] == "open"
    shift = make(1, [replace("BTC-USD", order.order_id(0), "99", "10")])
    assert outcomes(chain.block([shift])) == [("open", None)]
    assert chain.state.position(A)["reserved"]["USD"] == "990.000000"


def test_only_the_authority_grants_and_a_grant_moves_one_accounts_limit(make):
    chain = credit_chain()
    result = chain.block([make(2, [grant(B, "USD", "1000000")]), make(9, [grant(A, "USD", "5000")]),
                          make(9, [grant(A, "XRP", "1"), grant(A, "USD", "0.0000001")])])
    assert outcomes(result) == [("rejected", "not_authority"), ("granted", None), ("rejected", "unknown_asset"),
                                ("rejected", "limit_too_precise")]
    assert chain.state.position(A)["limits"]["USD"] == "5000.000000"
    assert chain.state.position(B)["limits"]["USD"] == "1000.000000"
    assert outcomes(chain.block([make(1, [new("BTC-USD", "buy", "100", "50")])])) == [("open", None)]


def test_lowering_a_limit_cancels_nothing_but_refuses_more_risk(make):
    chain = credit_chain()
    resting = make(1, [new("BTC-USD", "buy", "100", "9")])
    chain.block([resting, make(9, [grant(A, "USD", "10")])])
    kept = chain.state.order(resting.order_id(0))
    assert kept is not None and kept["status"] == "open"
    result = chain.block([make(1, [new("BTC-USD", "buy", "1", "0.01"), new("BTC-USD", "sell", "200", "0.5")])])
    assert outcomes(result) == [("rejected", "credit_limit"), ("open", None)]


def test_grants_are_refused_when_credit_is_off(make):
    chain = Chain()
    assert outcomes(chain.block([make(9, [grant(A, "USD", "1")])])) == [("rejected", "credit_disabled")]
    assert chain.state.position(A)["limits"] == {}


def test_a_random_run_never_breaks_a_limit_and_reservations_match_the_open_orders():
    chain = credit_chain({"USD": "3", "BTC": "0.02", "ETH": "0.1"})
    state, workload = chain.state, Workload(seed=16, accounts=5)
    accounts = [account(n).hex() for n in range(5)]
    refused = 0
    for block in workload.blocks(600, per_block=20):
        result = chain.block(block)
        refused += sum(op.reason == "credit_limit" for tx in result.txs for op in tx.ops)
        expected: dict[str, dict[str, int]] = {}
        for order in state.open_orders.values():
            asset, amount = worst_case(order.side, order.price, order.remaining,
                                       state.params.assets.markets[order.market])
            held = expected.setdefault(order.owner, {})
            held[asset] = held.get(asset, 0) + amount
        assert state.credit is not None and state.params.default_limits is not None
        assert state.credit.exposure == expected
        for who in accounts:
            for asset, limit in state.params.default_limits.items():
                balance = state.positions.get(who, asset) - state.credit.exposure.get(who, {}).get(asset, 0)
                assert balance >= -limit, (who, asset)
    assert refused > 20   # the limits really were in play
