"""The history checker (tests/history.py) catches each kind of contradiction it claims to, and stays
quiet on a consistent history: answers are fed to it by hand, as nodes would give them."""
from __future__ import annotations

import time
from typing import Any

from tests.history import Answer, History


def order(order_id: str = "o1", status: str = "open", filled: str = "0", **fields: Any) -> dict:
    return {"id": order_id, "status": status, "market": "BTC-USD", "side": "buy", "type": "limit", "price": "100.00",
            "qty": "1.0000", "remaining": "1.0000", "filled": filled, "account": "a" * 64, "height": 5,
            "tx_index": 0, "op_index": 0, **fields}


def trade(trade_id: str, height: int, maker: str = "m1", taker: str = "o1", qty: str = "1.0000") -> dict:
    return {"id": trade_id, "market": "BTC-USD", "price": "100.00", "qty": qty, "maker_order_id": maker,
            "taker_order_id": taker, "buy_order_id": taker, "sell_order_id": maker, "height": height,
            "buyer": "a" * 64, "seller": "b" * 64}


def feed(history: History, node: str, method: str, path: str, status: int, body: Any, request: Any = None) -> None:
    now = time.monotonic()
    history.record(Answer(node, method, path, request, status, body, now, now))


def final_fill(history: History, node: str = "a", height: int = 6) -> None:
    feed(history, node, "POST", "/orders?wait=1", 201,
         {"order": order(status="filled", filled="1.0000"), "trades": [trade("t1", height)], "final": True,
          "height": height})


def test_a_consistent_history_has_no_violations():
    h = History()
    final_fill(h)
    feed(h, "b", "GET", "/orders/o1", 200, {"order": order(status="filled", filled="1.0000"), "height": 9})
    feed(h, "c", "GET", "/orders/o1", 200, {"order": order(status="open"), "height": 5})      # behind: older view
    feed(h, "b", "GET", "/trades/BTC-USD?limit=10000", 200, {"trades": [trade("t1", 6)], "height": 9})
    feed(h, "c", "GET", "/trades/BTC-USD?limit=10000", 200, {"trades": [], "height": 5})
    feed(h, "b", "GET", "/book/BTC-USD", 200, {"market": "BTC-USD", "digest": "d", "state_hash": "s9", "height": 9})
    feed(h, "a", "GET", "/book/BTC-USD", 200, {"market": "BTC-USD", "digest": "d", "state_hash": "s9", "height": 9})
    assert h.violations == []


def test_a_final_fill_seen_undone_later_is_caught():
    h = History()
    final_fill(h)
    feed(h, "b", "GET", "/orders/o1", 200, {"order": order(status="open"), "height": 12})
    assert any("went back" in v for v in h.violations), h.violations


def test_two_nodes_differing_at_one_height_is_a_fork():
    h = History()
    feed(h, "a", "GET", "/book/BTC-USD", 200, {"market": "BTC-USD", "digest": "d", "state_hash": "x", "height": 7})
    feed(h, "b", "GET", "/book/BTC-USD", 200, {"market": "BTC-USD", "digest": "d", "state_hash": "y", "height": 7})
    feed(h, "a", "GET", "/orders/o1", 200, {"order": order(), "height": 7})
    feed(h, "b", "GET", "/orders/o1", 200, {"order": order(status="cancelled"), "height": 7})
    assert sum("fork" in v for v in h.violations) == 2, h.violations


def test_fields_that_never_change_are_watched():
    h = History()
    feed(h, "a", "GET", "/orders/o1", 200, {"order": order(), "height": 7})
    feed(h, "b", "GET", "/orders/o1", 200, {"order": order(price="101.00"), "height": 8})
    assert any("never change" in v for v in h.violations), h.violations


def test_a_final_trade_missing_from_a_later_log_is_caught():
    h = History()
    final_fill(h, height=6)
    feed(h, "b", "GET", "/trades/BTC-USD?limit=10000", 200, {"trades": [trade("t2", 7, taker="o2")], "height": 8})
    assert any("missing" in v for v in h.violations), h.violations


def test_trade_logs_that_are_not_prefixes_of_each_other_diverge():
    h = History()
    feed(h, "a", "GET", "/trades/BTC-USD?limit=10000", 200, {"trades": [trade("t1", 6), trade("t2", 7)], "height": 8})
    feed(h, "b", "GET", "/trades/BTC-USD?limit=10000", 200, {"trades": [trade("t2", 7), trade("t1", 6)], "height": 8})
    assert any("diverge" in v for v in h.violations), h.violations


def test_a_final_answer_from_a_side_without_quorum_is_caught():
    h = History()
    with h.split(["a"], "1|4"):
        final_fill(h, node="b")          # the other side may finalise
        assert h.violations == []
        final_fill(h, node="a")
    assert any("during split 1|4" in v for v in h.violations), h.violations
    final_fill(h, node="a")              # after the heal it may again
    assert len(h.violations) == 1


def test_a_frozen_side_that_moves_is_caught():
    h = History()
    with h.split(["a"], "2|3") as window:
        window.freeze({"a": 10})
        feed(h, "a", "GET", "/status", 200, {"height": 10})
        assert h.violations == []
        feed(h, "a", "GET", "/status", 200, {"height": 11})
    assert any("no quorum" in v for v in h.violations), h.violations


def test_a_final_order_unknown_to_a_node_that_reached_its_height_is_lost():
    h = History()
    final_fill(h)
    feed(h, "b", "GET", "/orders/o1", 404, {"error": {}}, request={"reached": 4})     # behind: not yet there
    assert h.violations == []
    feed(h, "b", "GET", "/orders/o1", 404, {"error": {}}, request={"reached": 6})
    assert any("unknown to b" in v for v in h.violations), h.violations


def test_a_201_that_says_not_final_is_caught():
    h = History()
    feed(h, "a", "POST", "/orders", 201, {"order": order(), "trades": [], "final": False, "height": 6})
    assert any("final=False" in v for v in h.violations), h.violations


def test_overfill_is_caught():
    h = History()
    feed(h, "a", "GET", "/orders/o1", 200, {"order": order(status="filled", filled="2.0000"), "height": 7})
    assert any("filled 2.0000 of 1.0000" in v for v in h.violations), h.violations


class FakeNode:
    """A node answering from a fixed state: orders by id, one book, one trade log, account positions."""

    def __init__(self, name: str, orders: dict, trades: list, height: int = 9, state_hash: str = "s",
                 positions: dict | None = None) -> None:
        self.name, self.orders, self.trades, self.height, self.state_hash = name, orders, trades, height, state_hash
        self.positions = positions or {}

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        path = path.split("?")[0]
        if path == "/status":
            return 200, {"height": self.height}
        if path.startswith("/orders/"):
            found = self.orders.get(path.rsplit("/", 1)[1])
            return (200, {"order": found, "height": self.height}) if found else (404, {"error": {}})
        if path.startswith("/book/"):
            return 200, {"market": "BTC-USD", "digest": "d", "state_hash": self.state_hash, "height": self.height}
        if path.startswith("/trades/"):
            return 200, {"trades": self.trades, "height": self.height}
        if path.startswith("/accounts/"):
            return 200, {"positions": self.positions.get(path.rsplit("/", 1)[1], {})}
        raise AssertionError(path)


def test_settle_passes_when_every_node_holds_everything_accepted():
    h = History()
    final_fill(h)
    maker = order("m1", status="filled", filled="1.0000", side="sell", account="b" * 64)
    state = {"o1": order(status="filled", filled="1.0000"), "m1": maker}
    positions = {"a" * 64: {"BTC": "1", "USD": "-100"}, "b" * 64: {"BTC": "-1", "USD": "100"}}
    nodes = [FakeNode(n, state, [trade("t1", 6)], positions=positions) for n in "ab"]
    h.settle([h.client(n) for n in nodes], ["BTC-USD"])
    assert h.violations == []


def test_settle_finds_an_accepted_order_missing_a_fork_a_fill_without_trades_and_unbalanced_positions():
    h = History()
    feed(h, "a", "POST", "/orders?wait=1", 202, {"order": {**order("o2"), "status": "pending"}, "final": False,
                                                  "reason": "no_quorum"})
    final_fill(h)
    positions = {"a" * 64: {"BTC": "1", "USD": "-100"}}
    a = FakeNode("a", {"o1": order(status="filled", filled="1.0000"), "o2": order("o2")}, [], positions=positions)
    b = FakeNode("b", {"o1": order(status="filled", filled="1.0000")}, [], state_hash="other", positions=positions)
    h.settle([h.client(a), h.client(b)], ["BTC-USD"])
    text = "\n".join(h.violations)
    assert "order o2" in text and "on b at the end" in text
    assert "fork" in text
    assert "trades add up to 0" in text
    assert "do not sum to zero" in text
