"""What the control API told its users during a storage test, and the checks nothing may contradict:

- an order answered 201 (final) or 202 (pending: durable in the node's outbox) exists afterwards on every
  node; a 201 keeps its height, price and quantity everywhere, and its status only moves forward;
- while the run goes on, a node whose height (read before and after, same process) is at or above a final
  order's height never answers 404 for it, nor a status the order cannot have come back to;
- an order whose answer said nothing was accepted (507, 503 `storage_*`, refused before the outbox) never
  exists anywhere, later or on another node (its id is known when the client signed it);
- no answer is ever a 500.

Connection errors (a node killed mid-request) are outcomes nobody was told, and are not recorded.

    answers = Answers()
    code, body = answers.post(node, order)          # or answers.post_signed(node, tx)
    answers.probe(node, order_id)                   # a read during the run
    answers.settle(nodes)                           # once converged: every recorded fact on every node
    assert not answers.problems, answers.problems
"""
from __future__ import annotations

import random
import threading
import urllib.error
from collections import Counter
from typing import Any

from exchange.app.txs import SignedTx

LATER = {"open": {"open", "partially_filled", "filled", "cancelled"},
         "partially_filled": {"partially_filled", "filled", "cancelled"},
         "filled": {"filled"}, "cancelled": {"cancelled"}, "rejected": {"rejected"}, "expired": {"expired"}}
UNREACHABLE = (urllib.error.URLError, ConnectionError, OSError, TimeoutError)


def random_order(rng: random.Random) -> dict[str, str]:
    side = rng.choice(["buy", "sell"])
    price = 100 + rng.randint(-5, 5) * (1 if side == "buy" else -1)
    return {"market": "BTC-USD", "side": side, "type": rng.choice(["limit"] * 6 + ["ioc"]),
            "price": f"{price}.{rng.randint(0, 99):02d}", "qty": f"{rng.randint(1, 30) / 10:.1f}"}


class Answers:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted: dict[str, tuple[str, int, dict[str, Any]]] = {}   # order id -> (node, 201|202, order)
        self.refused: dict[str, tuple[str, int, Any]] = {}               # order id -> (node, status, body)
        self.codes: Counter[int] = Counter()
        self.problems: list[str] = []

    # ------------------------------------------------------------------ recording
    def post(self, node: Any, order: dict[str, Any], wait: float = 1.0, timeout: float = 10.0) -> tuple[int, Any]:
        """POST /orders as a user; raises the connection error when the node is unreachable."""
        code, body = node.api("POST", f"/orders?wait={wait}", order, timeout=timeout)
        self._answered(node, code, body, None)
        return code, body

    def post_signed(self, node: Any, tx: SignedTx, wait: float = 1.0, timeout: float = 10.0) -> tuple[int, Any]:
        """POST /orders with a transaction the client signed, so even a refused order's id is known."""
        code, body = node.api("POST", f"/orders?wait={wait}", {"signed": tx.as_json()}, timeout=timeout)
        self._answered(node, code, body, tx.order_id(0))
        return code, body

    def _answered(self, node: Any, code: int, body: Any, order_id: str | None) -> None:
        with self._lock:
            self.codes[code] += 1
            if code >= 500 and code not in (503, 507):
                self.problems.append(f"{node.name} answered {code}: {body}")
            if code in (201, 202):
                order = body["order"]
                if order_id is not None and order["id"] != order_id:
                    self.problems.append(f"{node.name} answered for {order['id']}, the client sent {order_id}")
                self.accepted[order["id"]] = (node.name, code, order)
            elif order_id is not None and code in (503, 507) and _nothing_accepted(body):
                self.refused[order_id] = (node.name, code, body)
            if code in (503, 507) and not (isinstance(body, dict) and "error" in body):
                self.problems.append(f"{node.name} answered {code} without an error body: {body}")

    @property
    def finals(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {oid: order for oid, (_, code, order) in self.accepted.items() if code == 201}

    # ------------------------------------------------------------------ checks
    def probe(self, node: Any, order_id: str) -> None:
        """Read one recorded order during the run and note any contradiction."""
        with self._lock:
            entry = self.accepted.get(order_id) or (None, None, None)
            refused = order_id in self.refused
        try:
            before = node.status()
            code, body = node.api("GET", f"/orders/{order_id}", timeout=5)
            after = node.status()
        except (*UNREACHABLE, AssertionError):
            return
        _, status, shown = entry
        if refused and code == 200:
            self._problem(f"{node.name} shows order {order_id} that was answered as not accepted")
        if status != 201:
            return
        assert shown is not None                # recorded with its 201 answer
        same_process = before["pid"] == after["pid"]
        if code == 404 and same_process and min(before["height"], after["height"]) >= shown["height"]:
            self._problem(f"{node.name} at height {before['height']} answered 404 for order {order_id}, final at "
                          f"height {shown['height']}")
        elif code == 200:
            self._compare(node.name, order_id, shown, body["order"])

    def settle(self, nodes: list[Any]) -> None:
        """Every recorded fact, on every node (call once they have converged)."""
        for order_id, (_, status, shown) in list(self.accepted.items()):
            for node in nodes:
                code, body = node.api("GET", f"/orders/{order_id}", timeout=10)
                if code != 200:
                    self._problem(f"{node.name} answered {code} for order {order_id}, answered {status} before")
                elif status == 201:
                    self._compare(node.name, order_id, shown, body["order"])
        for order_id, (name, status, _) in list(self.refused.items()):
            for node in nodes:
                code, _ = node.api("GET", f"/orders/{order_id}", timeout=10)
                if code != 404:
                    self._problem(f"order {order_id} exists on {node.name}, but {name} answered {status} "
                                  "(nothing accepted)")

    def _compare(self, name: str, order_id: str, shown: dict[str, Any], now: dict[str, Any]) -> None:
        if now["status"] not in LATER.get(shown["status"], {shown["status"]}):
            self._problem(f"{name}: order {order_id} was {shown['status']} (final), now {now['status']}")
        for key in ("height", "price", "qty", "side", "market"):
            if now.get(key) != shown.get(key):
                self._problem(f"{name}: order {order_id} {key} was {shown.get(key)} (final), now {now.get(key)}")

    def _problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)


def _nothing_accepted(body: Any) -> bool:
    """A 503/507 that says the order did not get in (a storage failure or a refusal before the outbox)."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return False
    code = body["error"].get("code", "")
    return code == "insufficient_storage" or (code.startswith("storage_") and code != "storage_outcome_unknown") \
        or code in ("recovering", "halted", "no_chain_yet", "unrecoverable")
