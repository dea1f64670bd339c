"""The console's "held back" table: who this node is holding back and why, from /status's own parts."""
from __future__ import annotations

from node.throttled import MAX_ROWS, READ_BEHIND_S, read_turn_rows, throttled_rows


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
    now = {"hint": {"neighbours": ["spammy-neighbour"], "networks": ["203.0.113.0/24"], "origins": []}}
    before = {"hint": {"neighbours": {"spammy-neighbour": 900, "old-flooder": 4000},
                       "networks": {"203.0.113.0/24": 700, "198.51.100.0/24": 50}, "origins": {"fresh-key": 3}}}
    rows = throttled_rows(None, now, [], before)
    assert rows == [
        {"peer": "spammy-neighbour", "what": "hint broadcasts", "why": "over its budget as a neighbour now"},
        {"peer": "203.0.113.0/24", "what": "hint broadcasts",
         "why": "over its budget as a network (its part of ROUTER_OPEN_TYPE_TOTAL_RATE) now"},
        {"peer": "old-flooder", "what": "hint broadcasts", "why": "4000 dropped over its budget as a neighbour"},
        {"peer": "198.51.100.0/24", "what": "hint broadcasts",
         "why": "50 dropped over its budget as a network (its part of ROUTER_OPEN_TYPE_TOTAL_RATE)"},
        {"peer": "fresh-key", "what": "hint broadcasts", "why": "3 dropped over its budget as an origin"},
    ]


def test_networks_whose_links_wait_for_read_turns_are_rows_the_most_waiting_first():
    """A node behind what its links send says which networks wait for a read turn (/status p2p.read_turns),
    so an operator sees a crowd on one /24 being read at one network's pace; a wait shorter than READ_BEHIND_S
    (one busy event-loop turn) is no row, nor is none."""
    view = {"given": 120, "waiting": {"198.51.100.0/24": 1, "203.0.113.0/24": 8, "192.0.2.0/24": 3, "kept:v1": 0},
            "behind_s": {"198.51.100.0/24": 4.2, "203.0.113.0/24": 12.0, "192.0.2.0/24": READ_BEHIND_S / 10}}
    assert read_turn_rows(view) == [
        {"peer": "203.0.113.0/24", "what": "reads",
         "why": "8 links waiting for this network's read turn for 12 s: this node is behind what they send"},
        {"peer": "198.51.100.0/24", "what": "reads",
         "why": "1 link waiting for this network's read turn for 4 s: this node is behind what they send"},
    ]
    assert read_turn_rows({"given": 5, "waiting": {}, "behind_s": {}}) == read_turn_rows(None) == []
    many = {f"10.{i}.0.0/24": 1 for i in range(100)}
    assert len(read_turn_rows({"waiting": many, "behind_s": {network: 2.0 for network in many}})) == MAX_ROWS
