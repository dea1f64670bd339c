"""The console's "held back" table (issue 25): who this node is holding back and why, from /status's own parts."""
from __future__ import annotations

from node.throttled import MAX_ROWS, throttled_rows


def test_each_kind_of_holding_back_is_a_row_that_says_why():
    tx_budget = {"throttled": [{"peer": "flooder", "held": 12, "dropped": 0},
                               {"peer": "sybil", "network": "203.0.113.0/24", "held": 3, "dropped": 1}]}
    broadcasts = {"hint": {"neighbours": ["spammy-neighbour"], "origins": ["fresh-key"]}}
    peers = [{"node_id": "honest", "status": "connected", "penalty": 0.0, "penalty_reason": None},
             {"node_id": "liar", "status": "connected", "penalty": 20.0, "penalty_reason": "bad_tx_signature"},
             {"node_id": "banned-one", "status": "banned", "penalty": 120.0, "penalty_reason": "malformed_vote"}]
    sync_budget = {"throttled": [{"peer": "greedy", "refused": 170}]}
    rows = throttled_rows(tx_budget, broadcasts, peers, sync_budget=sync_budget)
    assert rows == [
        {"peer": "flooder", "what": "transactions",
         "why": "past PEER_TX_RATE or its share of PEER_TX_TOTAL_RATE: held 12 times, 0 dropped unread"},
        {"peer": "sybil", "what": "transactions", "why": "past PEER_TX_RATE or its share of PEER_TX_TOTAL_RATE "
                                                          "(shared by 203.0.113.0/24): held 3 times, 1 dropped unread"},
        {"peer": "spammy-neighbour", "what": "hint broadcasts", "why": "over its budget as a neighbour now"},
        {"peer": "fresh-key", "what": "hint broadcasts", "why": "over its budget as an origin now"},
        {"peer": "greedy", "what": "sync requests",
         "why": "past SYNC_PEER_RATE, SYNC_PEER_BYTES or SYNC_TOTAL_BYTES: 170 ignored"},
        {"peer": "liar", "what": "penalised", "why": "20.0 points, last for bad_tx_signature"},
        {"peer": "banned-one", "what": "banned", "why": "120.0 points, last for malformed_vote"},
    ], "nobody honest is listed"


def test_the_table_is_bounded_and_takes_a_node_that_is_no_validator():
    peers = [{"node_id": f"p{i}", "status": "connected", "penalty": 1.0, "penalty_reason": "x"} for i in range(500)]
    assert len(throttled_rows(None, None, peers)) == MAX_ROWS
    assert throttled_rows(None, {"hint": "not a mapping"}, []) == []


def test_who_had_broadcasts_dropped_before_is_named_with_how_many_once():
    """/status names who is over a broadcast budget now and who had copies dropped over one before (a flood a
    minute ago): the table lists the second kind too, without naming anyone twice."""
    now = {"hint": {"neighbours": ["spammy-neighbour"], "origins": []}}
    before = {"hint": {"neighbours": {"spammy-neighbour": 900, "old-flooder": 4000}, "origins": {"fresh-key": 3}}}
    rows = throttled_rows(None, now, [], before)
    assert rows == [
        {"peer": "spammy-neighbour", "what": "hint broadcasts", "why": "over its budget as a neighbour now"},
        {"peer": "old-flooder", "what": "hint broadcasts", "why": "4000 dropped over its budget as a neighbour"},
        {"peer": "fresh-key", "what": "hint broadcasts", "why": "3 dropped over its budget as an origin"},
    ]
