"""Matching scenarios as tables: orders in -> trades, other events and the book out (see exchange_scenario)."""
from __future__ import annotations

import pytest

from tests.unit.exchange.scenario import Scenario, check

SCENARIOS = [
    # ------------------------------------------------------------ limit orders
    Scenario("limit orders that do not cross rest, best level first",
             orders="""
                 buy  b1 bob limit 99  2
                 buy  b2 bob limit 100 3
                 sell s1 ann limit 102 4
                 sell s2 ann limit 101 1
             """,
             book="""
                 bid 100 b2:3
                 bid 99  b1:2
                 ask 101 s2:1
                 ask 102 s1:4
             """),
    Scenario("limit buy sweeps several levels at the makers' prices and rests its remainder",
             orders="""
                 sell s1 ann limit 101 2
                 sell s2 ann limit 102 3
                 sell s3 ann limit 104 5
                 buy  b1 bob limit 103 9
             """,
             trades="""
                 b1 s1 101 2
                 b1 s2 102 3
             """,
             book="""
                 bid 103 b1:4
                 ask 104 s3:5
             """),
    Scenario("limit sell takes the highest bids first and leaves a partially filled maker",
             orders="""
                 buy  b1 bob limit 100 5
                 buy  b2 bob limit 98  5
                 buy  b3 bob limit 99  5
                 sell s1 ann limit 98  8
             """,
             trades="""
                 s1 b1 100 5
                 s1 b3 99  3
             """,
             book="""
                 bid 99 b3:2
                 bid 98 b2:5
             """),
    Scenario("FIFO within a level: the older maker fills first",
             orders="""
                 sell s1 ann limit 101 3
                 sell s2 cat limit 101 3
                 sell s3 dan limit 101 3
                 buy  b1 bob limit 101 4
             """,
             trades="""
                 b1 s1 101 3
                 b1 s2 101 1
             """,
             book="""
                 ask 101 s2:2 s3:3
             """),
    # ------------------------------------------------------------ market / IOC
    Scenario("market buy sweeps the book and its remainder is cancelled",
             orders="""
                 sell s1 ann limit 101 2
                 sell s2 ann limit 150 3
                 buy  b1 bob market - 9
             """,
             trades="""
                 b1 s1 101 2
                 b1 s2 150 3
             """,
             events="cancelled b1 market_remainder 4"),
    Scenario("market sell on an empty book is cancelled whole",
             orders="sell s1 ann market - 5",
             events="cancelled s1 market_remainder 5"),
    Scenario("IOC fills what crosses and cancels the rest instead of resting",
             orders="""
                 sell s1 ann limit 101 2
                 sell s2 ann limit 103 2
                 buy  b1 bob ioc 102 5
             """,
             trades="b1 s1 101 2",
             events="cancelled b1 ioc_remainder 3",
             book="ask 103 s2:2"),
    Scenario("IOC that crosses nothing is cancelled and the book is untouched",
             orders="""
                 buy  b1 bob limit 100 2
                 sell s1 ann ioc 101 2
             """,
             events="cancelled s1 ioc_remainder 2",
             book="bid 100 b1:2"),
    # ------------------------------------------------------------ fill or kill
    Scenario("FOK fills completely across two levels",
             orders="""
                 sell s1 ann limit 101 2
                 sell s2 ann limit 102 3
                 buy  b1 bob fok 102 5
             """,
             trades="""
                 b1 s1 101 2
                 b1 s2 102 3
             """),
    Scenario("FOK that cannot fill within its price is rejected and touches nothing",
             orders="""
                 sell s1 ann limit 101 2
                 sell s2 ann limit 103 3
                 buy  b1 bob fok 102 3
             """,
             events="rejected b1 fok_not_fillable",
             book="""
                 ask 101 s1:2
                 ask 103 s2:3
             """),
    Scenario("FOK counts only other owners' liquidity unless its mode cancels its own resting orders",
             orders="""
                 sell s1 bob limit 101 2
                 sell s2 ann limit 101 2
                 buy  b1 bob fok 101 2
                 buy  b2 bob fok 101 2 cancel_oldest
             """,
             trades="b2 s2 101 2",
             events="""
                 rejected b1 fok_not_fillable
                 cancelled s1 self_trade 2
             """),
    # ------------------------------------------------------------ post-only
    Scenario("post-only that does not cross rests",
             orders="""
                 sell s1 ann limit 101 2
                 buy  b1 bob post_only 100 3
             """,
             book="""
                 bid 100 b1:3
                 ask 101 s1:2
             """),
    Scenario("post-only that would take is rejected",
             orders="""
                 sell s1 ann limit 101 2
                 buy  b1 bob post_only 101 3
             """,
             events="rejected b1 post_only_would_take",
             book="ask 101 s1:2"),
    # ------------------------------------------------------------ self-trade prevention
    Scenario("cancel newest (the default): the taker keeps its fills, its remainder is cancelled",
             orders="""
                 sell s1 ann limit 101 2
                 sell s2 bob limit 101 2
                 sell s3 ann limit 101 2
                 buy  b1 bob limit 101 6
             """,
             trades="b1 s1 101 2",
             events="cancelled b1 self_trade 4",
             book="ask 101 s2:2 s3:2"),
    Scenario("cancel oldest: the resting order of the same owner is cancelled and matching goes on",
             orders="""
                 sell s1 bob limit 101 2
                 sell s2 ann limit 102 2
                 buy  b1 bob limit 102 3 cancel_oldest
             """,
             trades="b1 s2 102 2",
             events="cancelled s1 self_trade 2",
             book="bid 102 b1:1"),
    Scenario("cancel both: the resting order and the taker's remainder are cancelled",
             orders="""
                 sell s1 ann limit 100 1
                 sell s2 bob limit 101 2
                 sell s3 ann limit 102 2
                 buy  b1 bob limit 102 5 cancel_both
             """,
             trades="b1 s1 100 1",
             events="""
                 cancelled s2 self_trade 2
                 cancelled b1 self_trade 4
             """,
             book="ask 102 s3:2"),
    Scenario("decrement and cancel, resting order larger: it shrinks in place, the taker is cancelled",
             orders="""
                 sell s1 bob limit 101 5
                 sell s2 ann limit 101 5
                 buy  b1 bob limit 101 3 decrement_and_cancel
             """,
             events="""
                 reduced s1 3 2 self_trade
                 cancelled b1 self_trade 3
             """,
             book="ask 101 s1:2 s2:5"),
    Scenario("decrement and cancel, taker larger: the resting order is cancelled, the taker shrinks and goes on",
             orders="""
                 sell s1 bob limit 101 2
                 sell s2 ann limit 101 3
                 buy  b1 bob limit 102 7 decrement_and_cancel
             """,
             trades="b1 s2 101 3",
             events="""
                 cancelled s1 self_trade 2
                 reduced b1 2 5 self_trade
             """,
             book="bid 102 b1:2"),
    Scenario("decrement and cancel, equal sizes: both are cancelled",
             orders="""
                 sell s1 bob limit 101 4
                 buy  b1 bob limit 101 4 decrement_and_cancel
             """,
             events="""
                 cancelled s1 self_trade 4
                 cancelled b1 self_trade 4
             """),
    Scenario("an order without a mode follows the market's default mode",
             market="TEST-USD:1:1:1:1000:1:1000:cancel_oldest",
             orders="""
                 sell s1 bob limit 101 2
                 buy  b1 bob limit 101 2
             """,
             events="cancelled s1 self_trade 2",
             book="bid 101 b1:2"),
    # ------------------------------------------------------------ cancel / reduce / replace
    Scenario("cancel removes a resting order; unknown ids and other owners are rejected",
             orders="""
                 buy    b1 bob limit 100 2
                 buy    b2 bob limit 100 3
                 cancel b1
                 cancel b1
                 cancel b2 eve
             """,
             events="""
                 cancelled b1 requested 2
                 rejected b1 unknown_order
                 rejected b2 not_owner
             """,
             book="bid 100 b2:3"),
    Scenario("a cancelled order never trades",
             orders="""
                 sell   s1 ann limit 101 2
                 sell   s2 cat limit 101 2
                 cancel s1
                 buy    b1 bob limit 101 3
             """,
             trades="b1 s2 101 2",
             events="cancelled s1 requested 2",
             book="bid 101 b1:1"),
    Scenario("cancel after a partial fill cancels only what is left",
             orders="""
                 sell   s1 ann limit 101 5
                 buy    b1 bob limit 101 2
                 cancel s1
             """,
             trades="b1 s1 101 2",
             events="cancelled s1 requested 3"),
    Scenario("reduce keeps time priority",
             orders="""
                 sell   s1 ann limit 101 5
                 sell   s2 cat limit 101 5
                 reduce s1 3
                 buy    b1 bob limit 101 3
             """,
             trades="""
                 b1 s1 101 2
                 b1 s2 101 1
             """,
             events="reduced s1 3 2 requested",
             book="ask 101 s2:4"),
    Scenario("reducing by the whole remainder cancels; reducing by nothing is rejected",
             orders="""
                 sell   s1 ann limit 101 5
                 reduce s1 0
                 reduce s1 7
             """,
             events="""
                 rejected s1 invalid_reduce_by
                 cancelled s1 reduced_to_zero 5
             """),
    Scenario("replace loses time priority and takes a new id",
             orders="""
                 sell    s1 ann limit 101 5
                 sell    s2 cat limit 101 5
                 replace s1 s1b 101 5
                 buy     b1 bob limit 101 6
             """,
             trades="""
                 b1 s2  101 5
                 b1 s1b 101 1
             """,
             events="cancelled s1 replaced 5",
             book="ask 101 s1b:4"),
    Scenario("replace to a crossing price trades at once; replacing an unknown order is rejected",
             orders="""
                 buy     b1 bob limit 100 2
                 sell    s1 ann limit 103 3
                 replace s1 s1b 100 3
                 replace s1 s1c 100 3
             """,
             trades="s1b b1 100 2",
             events="""
                 cancelled s1 replaced 3
                 rejected s1 unknown_order
             """,
             book="ask 100 s1b:1"),
    Scenario("replace of a post-only order that would take is rejected and the old order stays",
             orders="""
                 buy     b1 bob limit 100 2
                 sell    s1 ann post_only 103 3
                 replace s1 s1b 100 3
             """,
             events="rejected s1 post_only_would_take",
             book="""
                 bid 100 b1:2
                 ask 103 s1:3
             """),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_scenario(scenario: Scenario) -> None:
    check(scenario)
