"""Matching engine throughput and latency against a bare price-time matcher and akhil4n-orderbook.

Two fixed-seed workloads of 200,000 operations on one market: 70% new limit orders
priced around a slowly random-walking mid (+-20 ticks), 30% cancels. Variant A
cancels orders that are resting (small book); variant B cancels ids the generator
placed whether or not they filled (the book grows). Every implementation runs
the same operations in interleaved blocks, so machine drift hits all equally:
even blocks are timed whole (ops/s), odd blocks per operation (p50/p99). The
garbage collector stays on, but survivors are frozen between blocks so one
implementation's heap (akhil4n keeps every trade) does not slow another's
collections.
Run: `python -m bench matching [--ops=N] [--block=N] [--smoke]`.
"""
from __future__ import annotations

import gc
import random
import time
from collections import deque

from sortedcontainers import SortedDict

from bench.options import parse_options
from bench.table import print_table
from exchange.events import Trade
from exchange.markets import parse_market_entry
from exchange.matching import MatchingEngine
from exchange.orders import OrderType, Side

SEED = 20240611
OPS = 200_000
BLOCK = 5_000
NEW, CANCEL = 0, 1
Op = tuple  # (NEW, id, is_buy, price, qty) | (CANCEL, id)


# --------------------------------------------------------------------------- the bare matcher (the physical limit)

class BareOrder:
    __slots__ = ("id", "qty")

    def __init__(self, order_id: str, qty: int) -> None:
        self.id = order_id
        self.qty = qty


class BareMatcher:
    """Price-time matching and nothing else: SortedDict of price -> FIFO, dict id -> order, lazy cancel."""

    def __init__(self) -> None:
        self.bids = SortedDict()   # -price -> deque
        self.asks = SortedDict()   # price -> deque
        self.orders: dict[str, BareOrder] = {}
        self.volume = 0

    def limit(self, order_id: str, is_buy: bool, price: int, qty: int) -> None:
        book, key, limit = (self.asks, price, price) if is_buy else (self.bids, -price, -price)
        orders = self.orders
        while qty and book:
            best = book.keys()[0]
            if best > limit:
                break
            queue = book[best]
            while qty and queue:
                maker = queue[0]
                if maker.qty == 0:           # cancelled
                    queue.popleft()
                    continue
                fill = maker.qty if maker.qty < qty else qty
                maker.qty -= fill
                qty -= fill
                self.volume += fill
                if maker.qty == 0:
                    queue.popleft()
                    del orders[maker.id]
            if not queue:
                del book[best]
        if qty:
            own = self.bids if is_buy else self.asks
            own_key = -price if is_buy else price
            queue = own.get(own_key)
            if queue is None:
                queue = own[own_key] = deque()
            order = BareOrder(order_id, qty)
            queue.append(order)
            orders[order_id] = order

    def cancel(self, order_id: str) -> None:
        order = self.orders.pop(order_id, None)
        if order is not None:
            order.qty = 0

    def resting(self) -> tuple[int, int]:
        levels = [q for book in (self.bids, self.asks) for q in book.values() if any(o.qty for o in q)]
        return len(self.orders), len(levels)


# --------------------------------------------------------------------------- workloads

def generate(variant: str, count: int, seed: int = SEED) -> tuple[list[Op], float]:
    """Fixed-seed operations; variant A picks cancel targets among resting orders (simulated with the bare matcher)."""
    rng = random.Random(seed)
    sim = BareMatcher()
    ops: list[Op] = []
    placed: list[str] = []
    mid = 100_000
    next_id = 1  # ids are strings for every implementation (the engine requires them)
    crossing = 0
    for _ in range(count):
        if rng.random() < 0.1:
            mid += 1 if rng.random() < 0.5 else -1
        if rng.random() < 0.7 or not placed:
            is_buy = rng.random() < 0.5
            price = mid + rng.randint(-20, 20)
            qty = rng.randint(1, 10)
            order_id = str(next_id)
            ops.append((NEW, order_id, is_buy, price, qty))
            before = sim.volume
            sim.limit(order_id, is_buy, price, qty)
            crossing += sim.volume != before
            if order_id in sim.orders or variant == "B":
                placed.append(order_id)
            next_id += 1
        else:
            ops.append((CANCEL, _cancel_target(rng, placed, sim, variant)))
            sim.cancel(ops[-1][1])
    news = sum(1 for op in ops if op[0] == NEW)
    return ops, crossing / max(news, 1)


def _cancel_target(rng: random.Random, placed: list[str], sim: BareMatcher, variant: str) -> str:
    while True:
        index = rng.randrange(len(placed))
        order_id = placed[index]
        if variant == "B":
            return order_id
        placed[index] = placed[-1]
        placed.pop()
        if order_id in sim.orders or not placed:
            return order_id


# --------------------------------------------------------------------------- adapters: op -> one implementation

class Runner:
    """One implementation's state and its `run(op)`; `volume()` is checked after an untimed pass."""

    name = ""

    def run(self, op: Op) -> None:
        raise NotImplementedError

    def volume(self) -> int:
        raise NotImplementedError

    def book_size(self) -> tuple[int, int]:
        raise NotImplementedError


class BareRunner(Runner):
    name = "bare matcher (~70 lines)"

    def __init__(self, counting: bool = False) -> None:
        self.matcher = BareMatcher()
        limit, cancel = self.matcher.limit, self.matcher.cancel

        def run(op: Op) -> None:
            if op[0] == NEW:
                limit(op[1], op[2], op[3], op[4])
            else:
                cancel(op[1])
        self.run = run  # type: ignore[method-assign]

    def volume(self) -> int:
        return self.matcher.volume

    def book_size(self) -> tuple[int, int]:
        return self.matcher.resting()


class EngineRunner(Runner):
    name = "exchange engine"

    def __init__(self, counting: bool = False) -> None:
        self.engine = MatchingEngine(parse_market_entry("BTC-USD:0.01:0.0001"))
        self.traded = 0
        place, cancel = self.engine.place_order, self.engine.cancel_order  # the plain-argument entry points
        buy, sell, limit_type = Side.BUY, Side.SELL, OrderType.LIMIT

        def run(op: Op) -> None:
            if op[0] == NEW:
                is_buy = op[2]
                place(op[1], buy if is_buy else sell, limit_type, op[4], op[3], "alice" if is_buy else "bob", op[1])
            else:
                cancel(op[1])

        def run_counting(op: Op) -> None:
            if op[0] == NEW:
                is_buy = op[2]
                events = place(op[1], buy if is_buy else sell, limit_type, op[4], op[3],
                               "alice" if is_buy else "bob", op[1])
                self.traded += sum(e.quantity for e in events if type(e) is Trade)
            else:
                cancel(op[1])
        self.run = run_counting if counting else run  # type: ignore[method-assign]

    def volume(self) -> int:
        return self.traded

    def book_size(self) -> tuple[int, int]:
        book = self.engine.book
        return len(book.orders), len(book.bids) + len(book.asks)


def akhil_runner_class() -> tuple[type[Runner] | None, str]:
    """The akhil4n-orderbook adapter, or None and why it cannot run."""
    try:
        import orderbook as akhil  # akhil4n-orderbook installs a top-level `orderbook` module
        if not hasattr(akhil, "OrderBook") or not hasattr(akhil, "OrderSide"):
            return None, "the importable `orderbook` module is not akhil4n-orderbook"
    except ImportError as error:
        return None, f"akhil4n-orderbook is not installed ({error}); `pip install akhil4n-orderbook==0.1.1`"

    class AkhilRunner(Runner):
        name = "akhil4n-orderbook 0.1.1"

        def __init__(self, counting: bool = False) -> None:
            self.book = akhil.OrderBook()
            placed: dict[str, object] = {}
            add, cancel, make = self.book.add_limit_order, self.book.cancel_order, akhil.Order
            bid, ask = akhil.OrderSide.BID, akhil.OrderSide.ASK

            def run(op: Op) -> None:
                if op[0] == NEW:
                    order = make(bid if op[2] else ask, op[3], op[4])
                    placed[op[1]] = order
                    add(order)
                else:
                    order = placed.pop(op[1], None)
                    if order is not None:
                        cancel(order.order_id)
            self.run = run  # type: ignore[method-assign]

        def volume(self) -> int:
            return sum(trade.quantity_filled for trade in self.book.trade_log)

        def book_size(self) -> tuple[int, int]:
            return len(self.book.orders), len(self.book.bids) + len(self.book.asks)

    return AkhilRunner, ""


# --------------------------------------------------------------------------- measurement

def measure(factories: list[type[Runner]], ops: list[Op], block: int) -> dict[str, dict[str, float]]:
    """Interleaved blocks: every implementation runs block k before any runs block k+1."""
    runners = [factory() for factory in factories]
    elapsed = {r.name: 0.0 for r in runners}
    counted = {r.name: 0 for r in runners}
    samples: dict[str, list[int]] = {r.name: [] for r in runners}
    clock, clock_ns = time.perf_counter, time.perf_counter_ns
    gc.collect()
    for index, start in enumerate(range(0, len(ops), block)):
        gc.collect()
        gc.freeze()  # survivors never get rescanned: each block pays for its own garbage, not the others' heaps
        chunk = ops[start:start + block]
        shift = index % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            run = runner.run
            if index % 2 == 0:
                began = clock()
                for op in chunk:
                    run(op)
                elapsed[runner.name] += clock() - began
                counted[runner.name] += len(chunk)
            else:
                latencies = samples[runner.name]
                for op in chunk:
                    began_ns = clock_ns()
                    run(op)
                    latencies.append(clock_ns() - began_ns)
    gc.unfreeze()
    results = {}
    for runner in runners:
        latencies = sorted(samples[runner.name])
        results[runner.name] = {
            "ops": counted[runner.name] / elapsed[runner.name],
            "p50": latencies[len(latencies) // 2] / 1000,
            "p99": latencies[int(len(latencies) * 0.99)] / 1000,
        }
    return results


def verify(factories: list[type[Runner]], ops: list[Op]) -> dict[str, tuple[int, tuple[int, int]]]:
    """Untimed pass counting traded volume and the final book size of each implementation."""
    outcome = {}
    for factory in factories:
        runner = factory(counting=True)
        for op in ops:
            runner.run(op)
        outcome[runner.name] = (runner.volume(), runner.book_size())
    return outcome


def main(argv: list[str]) -> None:
    opts = parse_options(argv, {"ops": OPS, "block": BLOCK}, smoke={"ops": 5_000, "block": 1_000})
    ops_count, block = opts["ops"], opts["block"]
    akhil, why_not = akhil_runner_class()
    factories: list[type[Runner]] = [BareRunner, EngineRunner] + ([akhil] if akhil else [])
    if akhil is None:
        print(f"akhil4n-orderbook comparison skipped: {why_not}")
    rows = []
    verdicts = []
    for variant in ("A", "B"):
        ops, crossing = generate(variant, ops_count)
        checked = verify(factories, ops)
        results = measure(factories, ops, block)
        bare = results[BareRunner.name]
        for name, result in results.items():
            volume, (orders, levels) = checked[name]
            rows.append([variant, name, result["ops"], f"{result['ops'] / bare['ops']:.2f}x",
                         result["p50"], result["p99"], volume, f"{orders}/{levels}"])
        ours = results[EngineRunner.name]
        same_volume = len({volume for volume, _ in checked.values()}) == 1
        verdict = (f"{variant}: {crossing:.0%} of new orders cross; traded volume "
                   f"{'identical' if same_volume else 'DIFFERS'} across implementations; "
                   f"engine {ours['ops'] / bare['ops']:.2f}x bare (goal >= 0.6x), p99 {ours['p99']:.1f} us (goal < 20)")
        if akhil is not None:
            verdict += f", {ours['ops'] / results[akhil.name]['ops']:.2f}x akhil4n (goal >= 2.5x)"
        verdicts.append(verdict)
    print_table(f"matching: {ops_count:,} ops per variant, blocks of {block:,} interleaved",
                ["variant", "implementation", "ops/s", "vs bare", "p50 us", "p99 us", "traded lots",
                 "book orders/levels"], rows)
    for verdict in verdicts:
        print("  " + verdict)

