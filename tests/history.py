"""A history checker for real-process tests: records every control-API answer of a run (node, request,
status, body, time) and checks, as each answer arrives and again at the end, that nothing a node said
was final is ever contradicted, later or on another node.

The state of a chain is a function of its height, so every answer that names a height is a fact about
that height, true on every node forever:

- an order seen at two heights only moves forward (open -> partially_filled -> filled | cancelled,
  filled never shrinks), and at one height it looks the same everywhere; its market, side, type, price,
  qty, account and position in the chain (height, tx_index, op_index) never change (replaces are not
  modelled: a test that replaces orders must not record them here);
- an order a node answered 201 for exists on every node whose height reached it (a 404 there is a lost
  final order);
- a trade looks the same wherever it is seen; a full trade log (shorter than its `limit`) at height h
  holds every trade known to have happened at or below h, none above, and one log is a prefix of the
  other (a final trade never disappears nor moves);
- `state_hash` and each book's `digest` at one height are the same on every node (no fork);
- inside a `split(without_quorum=...)` window no listed node answers 201 to a request it received
  after the split began, and after `freeze()` none of them reports a height above the one it had then.

`settle(clients)` is the end-of-run check once the test has waited for convergence: every order
answered 201 or 202 exists (and so is final) on every node, heights, state hashes, books and trade
logs are equal, every order's `filled` equals the sum of its trades, and positions sum to zero per
asset (no fees: every trade moves value between two accounts).

Use it from any real-process test (partitions, crashes, disk faults):

    history = History()
    clients = [history.client(node) for node in nodes]   # node: .name and .api(method, path, body, timeout)
    clients[0].post_order({"market": "BTC-USD", "side": "buy", "price": "100", "qty": "1"}, wait=1.0)
    auditor = Auditor(history, clients, markets=["BTC-USD"]).start()   # re-reads every node continuously
    with history.split(without_quorum=[clients[0].name], label="1|4") as window:
        ...                                   # window.freeze(heights) once the split has settled
    auditor.stop()
    wait_until(lambda: converged(nodes), ...)
    history.settle(clients, markets=["BTC-USD"])
    history.assert_clean()                    # raises with every violation found, with node and time

Violations are collected (never raised from a recording thread) so load threads keep running;
`violations` can be asserted empty at any moment for a fail-fast check.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Iterable, Protocol, TypeVar

LATER = {"open": {"open", "partially_filled", "filled", "cancelled"},
         "partially_filled": {"partially_filled", "filled", "cancelled"},
         "filled": {"filled"}, "cancelled": {"cancelled"}, "rejected": {"rejected"}}
IMMUTABLE = ("market", "side", "type", "price", "qty", "account", "height", "tx_index", "op_index")
MAX_TRADES = 10_000


class Node(Protocol):
    name: str

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]: ...


N = TypeVar("N", bound=Node)


@dataclass
class Answer:
    node: str
    method: str
    path: str
    request: Any
    status: int              # HTTP status; 0 when no answer came (connection refused, timeout)
    body: Any
    started: float           # time.monotonic() when the request left
    ended: float             # ... and when its answer arrived
    wall: float = field(default_factory=time.time)


@dataclass
class OrderFacts:
    fixed: dict[str, Any]
    states: dict[int, tuple[str, Decimal, str]] = field(default_factory=dict)   # height -> (status, filled, node)
    answered: dict[str, int] = field(default_factory=dict)                      # node -> 201/202 it answered


class Split:
    """A window in which the listed nodes have no quorum: none of them may say final. Close it (leave the
    `with`) before lifting the fault (heal, restart), or their first final answers count against it."""

    def __init__(self, history: "History", nodes: Iterable[str], label: str) -> None:
        self.history = history
        self.nodes = frozenset(nodes)
        self.label = label
        self.started = time.monotonic()
        self.ended: float | None = None
        self.frozen: dict[str, int] = {}
        self.refused_final: Counter[str] = Counter()      # node -> answers that were not final (202) inside the window

    def freeze(self, heights: dict[str, int]) -> None:
        """From now until the heal, these nodes' heights must not move (nothing can be certified)."""
        with self.history._lock:
            self.frozen = {node: h for node, h in heights.items() if node in self.nodes}

    def __enter__(self) -> "Split":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.history.heal(self)


class History:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.answers: list[Answer] = []
        self.orders: dict[str, OrderFacts] = {}
        self.trades: dict[str | None, dict[str, Any]] = {}     # trade id (as the node sent it) -> view
        self.trade_logs: dict[str, list[str]] = {}                # market -> the longest full log seen
        self.state_hashes: dict[int, tuple[str, str]] = {}        # height -> (state hash, first node)
        self.digests: dict[tuple[str, int], tuple[str, str]] = {}
        self.node_heights: dict[str, int] = defaultdict(int)      # newest height each node reported
        self.splits: list[Split] = []
        self.violations: list[str] = []
        self.counts: Counter = Counter()
        self.t0 = time.monotonic()

    def client(self, node: N) -> "RecordingClient[N]":
        return RecordingClient(self, node)

    # ------------------------------------------------------------------ windows
    def split(self, without_quorum: Iterable[str], label: str = "") -> Split:
        window = Split(self, without_quorum, label or "/".join(sorted(without_quorum)))
        with self._lock:
            self.splits.append(window)
        return window

    def heal(self, window: Split) -> None:
        with self._lock:
            if window.ended is None:
                window.ended = time.monotonic()

    # ------------------------------------------------------------------ recording
    def record(self, answer: Answer) -> Answer:
        with self._lock:
            self.answers.append(answer)
            self.counts[f"{answer.method} {_route(answer.path)} {answer.status}"] += 1
            try:
                self._learn(answer)
            except Exception as exc:  # noqa: BLE001 - a shape we did not expect is itself worth a look
                self._violation(answer, f"answer could not be checked: {type(exc).__name__}: {exc}")
        return answer

    def _violation(self, answer: Answer | None, text: str) -> None:
        where = "" if answer is None else (f"[{answer.node} {answer.method} {answer.path} -> {answer.status} "
                                           f"at t+{answer.ended - self.t0:.2f}s] ")
        self.violations.append(where + text)

    def _learn(self, a: Answer) -> None:
        body = a.body if isinstance(a.body, dict) else {}
        height = body.get("height") if type(body.get("height")) is int else None
        if height is not None:
            self._height_seen(a, height)
        if a.method == "POST" and _route(a.path) == "/orders" and a.status in (201, 202):
            self._order_answer(a, body, height)
        elif a.method == "POST" and _route(a.path) == "/orders/batch" and a.status == 200:
            for item in body.get("results", []):
                if isinstance(item, dict) and "order" in item:
                    self._order_answer(a, item, item.get("height"), status=201 if item.get("final") else 202)
        elif a.status == 200 and isinstance(body.get("order"), dict) and height is not None:
            if _final_view(body["order"]):      # a pending order (ours, answered 202) is in no block yet
                self._observe_order(a, body["order"], height)
        elif a.method == "GET" and _route(a.path) == "/orders/{id}" and a.status == 404:
            self._missing_order(a, a.path.rsplit("/", 1)[1].split("?")[0])
        if a.status == 200 and isinstance(body.get("orders"), list) and height is not None:
            for order in body["orders"]:
                if _final_view(order):
                    self._observe_order(a, order, height)
        if a.status == 200 and isinstance(body.get("trades"), list) and height is not None:
            self._observe_trades(a, body["trades"], height, _route(a.path) == "/trades/{m}", _limit(a.path))
        if a.status == 200 and "state_hash" in body and height is not None:
            self._same_at_height(a, self.state_hashes, height, body["state_hash"], "state_hash")
            if body.get("digest") is not None and "market" in body:     # null: the reader skipped it, or was deferred
                self._same_at_height(a, self.digests, (body["market"], height), body["digest"], "book digest")

    def _height_seen(self, a: Answer, height: int) -> None:
        for window in self.splits:
            frozen = window.frozen.get(a.node)
            if window.ended is None and frozen is not None and height > frozen:
                self._violation(a, f"{a.node} has no quorum ({window.label}) yet moved from height {frozen} "
                                   f"to {height}")
        self.node_heights[a.node] = height

    def _order_answer(self, a: Answer, body: dict, height: Any, status: int | None = None) -> None:
        status = status or a.status
        order = body.get("order") or {}
        order_id = order.get("id")
        if not isinstance(order_id, str):
            self._violation(a, f"an order answer without an order id: {body}")
            return
        final = body.get("final")
        if (status == 201) != (final is True):
            self._violation(a, f"status {status} but final={final!r} for order {order_id}")
        facts = self.orders.setdefault(order_id, OrderFacts(fixed={}))
        facts.answered.setdefault(a.node, status)
        if status == 201:
            self.counts["final_answers"] += 1
            for window in self.splits:
                if a.node in window.nodes and a.started >= window.started and window.ended is None:
                    self._violation(a, f"{a.node} answered 201 (final) for order {order_id} during split "
                                       f"{window.label}, where it has no quorum")
            if "height" in order and type(height) is int:
                self._observe_order(a, order, height)
            for trade in body.get("trades") or []:
                self._trade(a, trade)
        else:
            self.counts[f"pending:{body.get('reason')}"] += 1
            for window in self.splits:
                if a.node in window.nodes and window.ended is None:
                    window.refused_final[a.node] += 1

    def _observe_order(self, a: Answer, order: dict, height: int) -> None:
        order_id = order.get("id")
        if not isinstance(order_id, str):
            self._violation(a, f"an order view without an id: {order}")
            return
        status, filled = order.get("status"), _decimal(order.get("filled"))
        if status not in LATER:
            self._violation(a, f"order {order_id} has unknown status {status!r}")
            return
        if filled is None or filled > (_decimal(order.get("qty")) or Decimal(0)):
            self._violation(a, f"order {order_id} filled {order.get('filled')} of {order.get('qty')}")
        facts = self.orders.setdefault(order_id, OrderFacts(fixed={}))
        fixed = {k: order.get(k) for k in IMMUTABLE}
        if not facts.fixed:
            facts.fixed = fixed
        elif fixed != facts.fixed:
            changed = {k: (facts.fixed[k], fixed[k]) for k in IMMUTABLE if facts.fixed[k] != fixed[k]}
            self._violation(a, f"order {order_id} changed fields that never change: {changed}")
        if type(order.get("height")) is int and height < order["height"]:
            self._violation(a, f"order {order_id} created at height {order['height']} seen at height {height}")
        if filled is None:      # unreadable (a violation above): nothing to compare with other sights
            return
        seen = facts.states.get(height)
        if seen is not None and seen[:2] != (status, filled):
            self._violation(a, f"order {order_id} at height {height}: {status}/{filled} here, {seen[0]}/{seen[1]} "
                               f"on {seen[2]} (fork)")
        for other, (other_status, other_filled, where) in facts.states.items():
            if other < height and (status not in LATER[other_status] or filled < other_filled):
                self._violation(a, f"order {order_id} went back: {other_status}/{other_filled} at height {other} "
                                   f"({where}), {status}/{filled} at height {height}")
            elif other > height and (other_status not in LATER[status] or other_filled < filled):
                self._violation(a, f"order {order_id} went back: {status}/{filled} at height {height}, "
                                   f"{other_status}/{other_filled} at height {other} ({where})")
        if seen is None:
            facts.states[height] = (status, filled, a.node)

    def _missing_order(self, a: Answer, order_id: str) -> None:
        """A 404: a contradiction if the order is final at a height this node had already reached."""
        facts = self.orders.get(order_id)
        created = facts.fixed.get("height") if facts is not None else None
        reached = a.request.get("reached") if isinstance(a.request, dict) else None
        if type(created) is int and type(reached) is int and reached >= created:
            self._violation(a, f"order {order_id}, final since height {created}, is unknown to {a.node} at height "
                               f"{reached} or later")

    def _trade(self, a: Answer, trade: dict) -> None:
        trade_id = trade.get("id")
        known = self.trades.get(trade_id)
        view = {k: v for k, v in trade.items() if k != "ts"}
        if known is None:
            self.trades[trade_id] = view
        elif known != view:
            diff = {k: (known.get(k), view.get(k)) for k in set(known) | set(view) if known.get(k) != view.get(k)}
            self._violation(a, f"trade {trade_id} differs from an earlier sight: {diff}")

    def _observe_trades(self, a: Answer, trades: list, height: int, is_log: bool, limit: int | None) -> None:
        for trade in trades:
            self._trade(a, trade)
            if type(trade.get("height")) is int and trade["height"] > height:
                self._violation(a, f"trade {trade.get('id')} of height {trade['height']} in a view at height {height}")
        if not is_log or limit is None or len(trades) >= limit:
            return
        market = _route_market(a.path)
        ids = [t.get("id") for t in trades]
        present = set(ids)
        missing = [tid for tid, t in self.trades.items()
                   if t.get("market") == market and type(t.get("height")) is int and t["height"] <= height
                   and tid not in present]
        if missing:
            self._violation(a, f"{len(missing)} final trade(s) missing from {a.node}'s log at height {height}, "
                               f"e.g. {missing[:3]}")
        longest = self.trade_logs.get(market, [])
        shorter, longer = (ids, longest) if len(ids) <= len(longest) else (longest, ids)
        if longer[:len(shorter)] != shorter:
            cut = next(i for i, (x, y) in enumerate(zip(shorter, longer)) if x != y)
            self._violation(a, f"trade logs of {market} diverge at position {cut}: {shorter[cut]} vs {longer[cut]}")
        elif len(ids) > len(longest):
            self.trade_logs[market] = ids

    def _same_at_height(self, a: Answer, table: dict, key: Any, value: Any, what: str) -> None:
        known = table.get(key)
        if known is None:
            table[key] = (value, a.node)
        elif known[0] != value:
            self._violation(a, f"{what} at {key}: {value} here, {known[0]} on {known[1]} (fork)")

    # ------------------------------------------------------------------ the end
    def accepted(self) -> dict[str, OrderFacts]:
        """Orders some node answered 201 or 202 for."""
        with self._lock:
            return {oid: f for oid, f in self.orders.items() if f.answered}

    def settle(self, clients: list["RecordingClient"], markets: Iterable[str]) -> None:
        """End of run (after the test waited for convergence): everything accepted is final everywhere and
        every node holds the same state."""
        accepted = self.accepted()

        def every_accepted_order_on(client: RecordingClient) -> None:
            # the height read once: the run is over, so it is below every read here, and any 404 is a violation
            reached = client.height()
            for order_id in accepted:
                status, body = client.call("GET", f"/orders/{order_id}", note={"reached": reached})
                if status != 200:
                    with self._lock:
                        self._violation(None, f"order {order_id} (answered {accepted[order_id].answered}) is "
                                              f"{status} on {client.name} at the end: {body}")

        # one reader per node, the nodes answering side by side (thousands of reads: a minute one at a time)
        with ThreadPoolExecutor(max_workers=max(1, len(clients)), thread_name_prefix="settle") as pool:
            for done in [pool.submit(every_accepted_order_on, client) for client in clients]:
                done.result()
        traders: set[str] = set()
        for market in markets:
            books, logs = self._read_at_one_height(clients, market)
            with self._lock:
                views = {(b[1].get("height"), b[1].get("state_hash"), b[1].get("digest")) for b in books}
                if len(views) != 1 or any(b[0] != 200 for b in books):
                    self._violation(None, f"{market}: nodes end on different states: "
                                          f"{[(c.name, b[0], b[1]) for c, b in zip(clients, books)][:8]}")
                ids = [[t["id"] for t in body["trades"]] for _, body in logs]
                if any(x != ids[0] for x in ids):
                    self._violation(None, f"{market}: trade logs differ at the end "
                                          f"({[len(x) for x in ids]} trades)")
                if len(ids[0]) >= MAX_TRADES:
                    self._violation(None, f"{market}: more than {MAX_TRADES} trades; the fill check needs them all")
                self._fills_match_trades(market, logs[0][1]["trades"])
                traders.update(a for t in logs[0][1]["trades"] for a in (t.get("buyer"), t.get("seller")) if a)
        self._positions_balance(clients[0], traders)

    @staticmethod
    def _read_at_one_height(clients: list["RecordingClient"], market: str,
                            timeout: float = 10.0) -> tuple[list, list]:
        """Every node's book and trade log, read while no block landed between the first and the last
        read: a live chain keeps committing (empty blocks included), so one pass over the nodes can
        straddle a block. After `timeout` the last pass is returned as it is and judged as it is."""
        deadline = time.monotonic() + timeout
        while True:
            books = [c.get(f"/book/{market}?depth=100000") for c in clients]
            logs = [c.get(f"/trades/{market}?limit={MAX_TRADES}") for c in clients]
            heights = {b[1].get("height") for b in books} | {b[1].get("height") for b in logs}
            if len(heights) == 1 or time.monotonic() >= deadline:
                return books, logs
            time.sleep(0.05)

    def _fills_match_trades(self, market: str, trades: list[dict]) -> None:
        filled: dict[str, Decimal] = defaultdict(Decimal)
        for trade in trades:
            for side in ("buy_order_id", "sell_order_id"):
                filled[trade[side]] += Decimal(trade["qty"])
        for order_id, facts in self.orders.items():
            if facts.fixed.get("market") != market or not facts.states:
                continue
            top = max(facts.states)
            status, amount, node = facts.states[top]
            if filled.get(order_id, Decimal(0)) < amount:
                self._violation(None, f"order {order_id} filled {amount} at height {top} ({node}) but its trades "
                                      f"add up to {filled.get(order_id, Decimal(0))}")
        for order_id, amount in filled.items():
            seen = self.orders.get(order_id)
            if seen is not None and seen.fixed.get("qty") is not None and amount > Decimal(seen.fixed["qty"]):
                self._violation(None, f"order {order_id} traded {amount}, more than its qty {seen.fixed['qty']}")

    def _positions_balance(self, client: "RecordingClient", traders: set[str]) -> None:
        """Every account that traded (from the full trade logs) or placed an order we saw."""
        accounts = traders | {f.fixed["account"] for f in self.orders.values() if f.fixed.get("account")}
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for account in sorted(accounts):
            status, body = client.get(f"/accounts/{account}")
            if status != 200:
                with self._lock:
                    self._violation(None, f"account {account} unreadable on {client.name}: {status} {body}")
                return
            for asset, amount in body.get("positions", {}).items():
                totals[asset] += Decimal(amount)
        unbalanced = {asset: total for asset, total in totals.items() if total != 0}
        if unbalanced:
            with self._lock:
                self._violation(None, f"positions do not sum to zero over {len(accounts)} accounts: {unbalanced}")

    def assert_clean(self) -> None:
        with self._lock:
            if self.violations:
                shown = "\n  ".join(self.violations[:25])
                raise AssertionError(f"{len(self.violations)} contradiction(s) of final answers:\n  {shown}")

    def summary(self) -> str:
        with self._lock:
            finals = sum(1 for f in self.orders.values() if 201 in f.answered.values())
            pending = sum(1 for f in self.orders.values() if f.answered and 201 not in f.answered.values())
            return (f"{len(self.answers)} answers, {finals} orders answered final, {pending} answered pending, "
                    f"{len(self.trades)} trades, {len(self.state_hashes)} heights checked, "
                    f"{len(self.violations)} violations")


class RecordingClient(Generic[N]):
    """A node's control API, every answer recorded in the history."""

    def __init__(self, history: History, node: N) -> None:
        self.history = history
        self.node = node
        self.name = node.name

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10.0,
             note: dict | None = None) -> tuple[int, Any]:
        started = time.monotonic()
        try:
            status, answer = self.node.api(method, path, body, timeout=timeout)
        except (OSError, ValueError) as exc:     # no answer: refused, reset, timed out, or a non-JSON reply
            status, answer = 0, {"error": f"{type(exc).__name__}: {exc}"}
        request = body if note is None else {**(body or {}), **note}
        self.history.record(Answer(self.name, method, path, request, status, answer, started, time.monotonic()))
        return status, answer

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post_order(self, order: dict, wait: float = 1.0, timeout: float = 15.0) -> tuple[int, Any]:
        return self.call("POST", f"/orders?wait={wait:g}", order, timeout=timeout)

    def cancel(self, order_id: str, wait: float = 1.0) -> tuple[int, Any]:
        return self.call("DELETE", f"/orders/{order_id}?wait={wait:g}", timeout=15.0)

    def height(self) -> int | None:
        status, body = self.get("/status")
        return body.get("height") if status == 200 else None

    def get_order(self, order_id: str) -> tuple[int, Any]:
        """GET /orders/{id}; a 404 is judged against the height this node had reached just before."""
        reached = self.height()
        return self.call("GET", f"/orders/{order_id}", note={"reached": reached})


class Auditor:
    """Re-reads every node continuously (status, books, full trade logs, a rotating sample of the orders
    answered so far), so a contradiction is caught while the run goes on, not only at the end."""

    def __init__(self, history: History, clients: list[RecordingClient], markets: Iterable[str],
                 orders_per_pass: int = 20, interval: float = 0.2) -> None:
        self.history = history
        self.clients = clients
        self.markets = list(markets)
        self.orders_per_pass = orders_per_pass
        self.interval = interval
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history-auditor", daemon=True)
        self._cursor = itertools.count()

    def start(self) -> "Auditor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.audit_pass()
            self._stop.wait(self.interval)

    def audit_pass(self) -> None:
        ids = list(self.history.accepted())
        for client in self.clients:
            if self._stop.is_set():
                return
            for market in self.markets:
                client.get(f"/book/{market}?depth=50")
                client.get(f"/trades/{market}?limit={MAX_TRADES}")
            if ids:
                start = next(self._cursor) * self.orders_per_pass
                for k in range(min(self.orders_per_pass, len(ids))):
                    client.get_order(ids[(start + k) % len(ids)])
        self.passes += 1


def _final_view(order: dict) -> bool:
    """An order view of a block's order, not this node's pending one (status `pending`, `final`: false) nor
    the last view of a pending order that never landed (a cancel answered `not_needed`)."""
    return order.get("final") is not False and order.get("status") not in ("pending", "never_landed")


def _route(path: str) -> str:
    path = path.split("?", 1)[0]
    parts = path.strip("/").split("/")
    if parts[0] == "orders" and len(parts) == 2 and parts[1] != "batch":
        return "/orders/{id}"
    if parts[0] in ("book", "trades", "accounts") and len(parts) == 2:
        return f"/{parts[0]}/{{m}}"
    return path


def _route_market(path: str) -> str:
    return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[1]


def _limit(path: str) -> int | None:
    query = path.split("?", 1)[1] if "?" in path else ""
    for item in query.split("&"):
        if item.startswith("limit="):
            return int(item[6:])
    return 100 if _route(path) == "/trades/{m}" else None


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(value)
    except (TypeError, ArithmeticError, ValueError):
        return None
