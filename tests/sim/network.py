"""Deterministic in-process simulation of N Replicas on a faulty network (no sockets, no wall clock).

One heap of timed actions (deliveries, ticks, submissions) drives the replicas directly. The
network delays every copy independently (so messages reorder), duplicates some, drops some, and can
cut the nodes into groups for a while. Everything random comes from one seeded `random.Random`.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from exchange.markets import parse_markets
from exchange.replication import Replica, ReplicaConfig


class FakeKeys:
    """Cheap stand-in for Ed25519 in the simulation (it tests convergence, not cryptography)."""

    def __init__(self, name: str) -> None:
        self.public_key = hashlib.sha256(name.encode()).digest()
        self.node_id = node_id_for(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return hashlib.sha512(self.public_key + data).digest()


def node_id_for(public_key: bytes) -> str:
    return hashlib.sha256(public_key).digest()[:20].hex()


def fake_verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    return hashlib.sha512(public_key + data).digest() == signature


SIM_CONFIG = ReplicaConfig(beacon_interval=0.1, eager_beacon_gap=0.02, member_timeout=0.4, sync_interval=0.5,
                           gap_delay=0.05, pull_timeout=0.2, startup_grace=0.2, snapshot_every=1000,
                           keep_snapshots=6, auto_durable=True)
MARKETS = "BTC-USD,ETH-USD:0.01:0.001"
ACCOUNTS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


@dataclass
class Faults:
    drop: float = 0.10
    duplicate: float = 0.05
    delay: tuple[float, float] = (0.0005, 0.03)
    partition: tuple[float, float, list[set[int]]] | None = None   # (start, end, groups)
    active: bool = True


@dataclass
class Stats:
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    cut: int = 0
    penalties: list = field(default_factory=list)
    max_rollbacks: int = 0


class TradeChecker:
    """At every step: no trade id twice and no order filled beyond its quantity, on one node."""

    def __init__(self, replica: Replica, quantities: dict[str, int]) -> None:
        self.replica = replica
        self.quantities = quantities
        self.reset()

    def reset(self) -> None:
        self.ids: set[str] = set()
        self.filled: dict[str, int] = {}
        self.lens: dict[str, int] = {m: 0 for m in self.replica.ledger.trades}
        self.rollbacks = self.replica.ledger.rollbacks

    def check(self) -> None:
        ledger = self.replica.ledger
        if ledger.rollbacks != self.rollbacks:
            self.reset()
        for market, rows in ledger.trades.items():
            start = self.lens[market]
            if len(rows) < start:
                self.reset()
                return self.check()
            for row in rows[start:]:
                trade_id, qty, maker, taker = row[0], row[3], row[4], row[5]
                assert trade_id not in self.ids, f"trade {trade_id} twice on {self.replica.node_id[:8]}"
                self.ids.add(trade_id)
                for order_id in (maker, taker):
                    total = self.filled.get(order_id, 0) + qty
                    assert total <= self.quantities[order_id], f"{order_id} filled {total} > quantity"
                    self.filled[order_id] = total
            self.lens[market] = len(rows)


class Simulation:
    def __init__(self, seed: int, nodes: int = 5, operations: int = 10_000, rate: float = 4000.0,
                 faults: Faults | None = None, config: ReplicaConfig = SIM_CONFIG, check_every_step: bool = True,
                 tick: float = 0.01) -> None:
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.config = config
        self.markets = parse_markets(MARKETS)
        self.tick_interval = tick
        self.now = 0.0
        self.keys = [FakeKeys(f"sim-{seed}-{i}") for i in range(nodes)]
        self.replicas = [Replica(k.node_id, self.markets, public_key=k.public_key, sign=k.sign, verify=fake_verify,
                                 node_id_for=node_id_for, config=config, rng=random.Random(seed * 1000 + i), now=0.0)
                         for i, k in enumerate(self.keys)]
        self.index = {r.node_id: i for i, r in enumerate(self.replicas)}
        for replica in self.replicas:
            for other in self.replicas:
                if other is not replica:
                    replica.peer_up(other.node_id, 0.0)
        self.operations = operations
        self.rate = rate
        self.submitted: list[tuple[str, str]] = []          # (order id, market) of new orders
        self.quantities: dict[str, int] = {}
        self.cancels = 0
        self.created = 0
        self.checkers = [TradeChecker(r, self.quantities) for r in self.replicas]
        self.check_every_step = check_every_step
        self.stats = Stats()
        self._queue: list = []
        self._counter = 0
        for i in range(nodes):
            self._push(self.rng.uniform(0, tick), ("tick", i))
        if operations:
            self._push(self.rng.expovariate(rate), ("submit", None))
        for replica in self.replicas:
            self._drain(replica)

    # --- scheduling ----------------------------------------------------------------------------
    def _push(self, at: float, action: tuple) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (at, self._counter, action))

    def _connected(self, a: int, b: int) -> bool:
        partition = self.faults.partition
        if partition is None or not self.faults.active:
            return True
        start, end, groups = partition
        if not start <= self.now < end:
            return True
        return any(a in g and b in g for g in groups)

    def _send(self, src: int, dst: int, message: dict) -> None:
        faults = self.faults
        rng = self.rng
        if not self._connected(src, dst):
            self.stats.cut += 1
            return
        copies = 1
        if faults.active:
            if rng.random() < faults.drop:
                self.stats.dropped += 1
                return
            if rng.random() < faults.duplicate:
                copies = 2
                self.stats.duplicated += 1
        low, high = faults.delay
        for _ in range(copies):
            self._push(self.now + rng.uniform(low, high), ("deliver", dst, message, src))

    def _drain(self, replica: Replica) -> None:
        src = self.index[replica.node_id]
        for kind, target, payload in replica.take_outbox():
            if kind == "broadcast":
                for dst in range(len(self.replicas)):
                    if dst != src:
                        self._send(src, dst, payload)
            elif kind == "send":
                self._send(src, self.index[target], payload)
            elif kind == "penalize":
                self.stats.penalties.append((replica.node_id[:8], target[:8], payload))
        replica.records.clear()

    # --- workload ------------------------------------------------------------------------------
    def _submit(self) -> int:
        rng = self.rng
        i = rng.randrange(len(self.replicas))
        replica = self.replicas[i]
        if self.submitted and rng.random() < 0.2:
            order_id, market = self.submitted[rng.randrange(len(self.submitted))]
            replica.submit_cancel(order_id, None, self.now, market=market)
            self.cancels += 1
        else:
            market = "BTC-USD" if rng.random() < 0.7 else "ETH-USD"
            side = "buy" if rng.random() < 0.5 else "sell"
            kind = rng.choices(["limit", "ioc", "market", "fok", "post_only"], [70, 10, 8, 6, 6])[0]
            mid = 10_000 if market == "BTC-USD" else 2_000
            offset = rng.randint(-8, 8)
            price = None if kind == "market" else mid + (offset if side == "buy" else -offset)
            qty = rng.randint(1, 20) * 100
            account = rng.choice(ACCOUNTS)
            stp = rng.choice([None, None, "cancel_oldest", "cancel_both", "decrement_and_cancel"])
            event = replica.submit_order(market, side, kind, price, qty, account, stp, self.now)
            self.submitted.append((event.id, market))
            self.quantities[event.id] = qty
        self.created += 1
        self._drain(replica)
        if self.created < self.operations:
            self._push(self.now + rng.expovariate(self.rate), ("submit", None))
        return i

    # --- running -------------------------------------------------------------------------------
    def run_until(self, until: float) -> None:
        queue = self._queue
        replicas = self.replicas
        while queue and queue[0][0] <= until:
            at, _, action = heapq.heappop(queue)
            self.now = at
            kind = action[0]
            if kind == "deliver":
                _, dst, message, src = action
                replica = replicas[dst]
                replica.receive(message, replicas[src].node_id, at)
                self.stats.delivered += 1
                self._drain(replica)
                if self.check_every_step:
                    self.checkers[dst].check()
            elif kind == "tick":
                replica = replicas[action[1]]
                replica.tick(at)
                self._drain(replica)
                self._push(at + self.tick_interval, action)
                if self.check_every_step:
                    self.checkers[action[1]].check()
            elif kind == "submit":
                node = self._submit()
                if self.check_every_step:
                    self.checkers[node].check()
        self.now = until

    def run_workload(self) -> float:
        """Run until every operation has been submitted; returns the time it ended."""
        while self.created < self.operations:
            self.run_until(self.now + 0.1)
        return self.now

    def converged(self) -> bool:
        first = self.replicas[0]
        return all(r.watermark == first.watermark and r.digest() == first.digest()
                   and r.trade_log_hash == first.trade_log_hash and r.final_count == first.final_count
                   for r in self.replicas[1:])

    def summary(self) -> dict[str, Any]:
        return {"watermarks": [r.watermark for r in self.replicas],
                "final": [r.final_count for r in self.replicas],
                "digests": [r.digest()[:12] for r in self.replicas],
                "trade_hashes": [r.trade_log_hash[:12] for r in self.replicas],
                "rollbacks": [r.ledger.rollbacks for r in self.replicas],
                "pending": [len(r.pending) for r in self.replicas],
                "members": [len(r.members(self.now)) for r in self.replicas]}


def run_seed(seed: int, operations: int = 10_000, check_every_step: bool = True) -> dict[str, Any]:
    """The acceptance scenario for one seed; returns what the test asserts on."""
    rng = random.Random(seed ^ 0x5EED)
    duration = operations / 4000.0
    members = list(range(5))
    rng.shuffle(members)
    groups = [set(members[:2]), set(members[2:])]
    start = duration * rng.uniform(0.2, 0.4)
    end = start + max(0.6, duration * rng.uniform(0.2, 0.35))
    sim = Simulation(seed, operations=operations, faults=Faults(partition=(start, end, groups)),
                     check_every_step=check_every_step)
    sim.run_workload()
    sim.run_until(max(sim.now, end) + 0.05)   # the partition has healed
    sim.faults.active = False                 # from here the network is healthy
    rounds = 2                                # anti-entropy rounds: each node pulls once per sync interval
    sim.run_until(sim.now + rounds * sim.config.sync_interval + 0.1)   # (+0.1 s: beacons in flight)
    for checker in sim.checkers:
        checker.check()
    return {"seed": seed, "converged": sim.converged(), "all_final": all(
        r.final_count == sim.created for r in sim.replicas), "created": sim.created, "rounds": rounds,
        "penalties": sim.stats.penalties, "summary": sim.summary(), "stats": sim.stats,
        "rollbacks": sum(r.ledger.rollbacks for r in sim.replicas),
        "trades": sim.replicas[0].ledger.trade_count, "cancels": sim.cancels}


def run_seeds(seeds: list[int], operations: int) -> list[dict[str, Any]]:
    """Several seeds in this process, results without the simulation objects (picklable)."""
    return [run_seed(seed, operations) for seed in seeds]


def run_many(seeds: list[int], operations: int, workers: int = 2) -> list[dict[str, Any]]:
    """Seeds spread over `workers` processes (the machine has two cores)."""
    import logging
    from concurrent.futures import ProcessPoolExecutor

    logging.getLogger("exchange.replication").setLevel(logging.ERROR)
    if workers <= 1:
        return run_seeds(seeds, operations)
    chunks = [seeds[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers, initializer=_quiet) as pool:
        results = [r for part in pool.map(run_seeds, chunks, [operations] * workers) for r in part]
    return sorted(results, key=lambda r: r["seed"])


def _quiet() -> None:
    import logging

    logging.getLogger("exchange.replication").setLevel(logging.ERROR)
