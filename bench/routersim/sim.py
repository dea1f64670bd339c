"""Seeded discrete-event simulation of one RPC client routing over backends with injected faults.

Compact by design: each backend is a FIFO queue with `workers` servers, so an attempt's finish time
is known when it arrives (a small heap of worker free times); each attempt is then a single event
(its answer, or its client-side timeout). Retries go through the real `RetryPolicy`.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Callable

from bench.routersim.scenarios import FAULT_END, FAULT_START, Fault, Scenario
from bench.routersim.strategies import Strategy
from p2p.resilience.retry_budget import RetryBudget
from p2p.rpc.hints import HintEmitter
from p2p.rpc.router import RetryPolicy


@dataclass(frozen=True)
class SimConfig:
    duration: float = 60.0
    rate: float = 2000.0            # requests/s, Poisson arrivals
    backends: int = 10
    workers: int = 4
    median_service: float = 0.010   # lognormal service time: median 10 ms ...
    sigma: float = 0.5              # ... and shape (mean 11.3 ms, p99 32 ms)
    fast_fail: float = 0.001        # a failing backend answers its errors after 1 ms
    timeout: float = 1.0            # client-side attempt timeout
    max_attempts: int = 3
    retry_base: float = 0.005
    retry_cap: float = 0.1
    budget_ratio: float = 0.19      # + the floor: 19.5% of 2,000 req/s, inside the 1.2 amplification goal
    budget_floor: float = 10.0      # retries/s always allowed
    window: float = 0.1             # traffic-share window
    hint_sources: int = 3           # honest nodes gossiping about what they see
    hint_period: float = 0.5
    hint_lag: float = 0.5           # how late those nodes notice a change
    slow_mark: float = 0.06         # requests slower than this are listed in Result.slow (diagnostics)
    seed: int = 1


@dataclass
class Result:
    strategy: str
    scenario: str
    latencies: list[float]
    failed: int
    requests: int
    attempts: int
    shares: list[list[int]]         # per window: attempts sent to each backend
    window: float
    fault_latencies: list[float]    # the same, for requests that arrived during the fault window
    fault_failed: int
    fault_requests: int
    fault_attempts: int
    slow: list[tuple[float, float, tuple[str, ...]]]  # fault-window requests over `slow_mark`: arrival, latency, peers
    extra: dict = field(default_factory=dict)


class _Backend:
    __slots__ = ("free", "fault")

    def __init__(self, workers: int, fault: Fault | None) -> None:
        self.free = [0.0] * workers
        self.fault = fault

    def start_time(self, now: float) -> float:
        return max(now, self.free[0])

    def healthy(self, now: float) -> bool:
        f = self.fault
        return f is None or not f.active(now) or f.kind == "brownout"


class Simulation:
    ARRIVAL, ANSWER, TIMEOUT, RETRY, HINTS = range(5)

    def __init__(self, cfg: SimConfig, scenario: Scenario,
                 make_strategy: Callable[[random.Random, Callable[[], float], Callable], Strategy]) -> None:
        self.cfg = cfg
        self.scenario = scenario
        self.now = 0.0
        self.names = [f"b{i}" for i in range(cfg.backends)]
        self.backends = {n: _Backend(cfg.workers, scenario.faults.get(i)) for i, n in enumerate(self.names)}
        self.rng = random.Random(cfg.seed)                       # workload and faults
        strategy_rng = random.Random(cfg.seed * 7919 + 1)       # the strategy's own randomness
        self.strategy = make_strategy(strategy_rng, self.clock, self.truth)
        self.policy = RetryPolicy(max_attempts=cfg.max_attempts, base=cfg.retry_base, cap=cfg.retry_cap,
                                  rng=random.Random(cfg.seed + 2),
                                  budget=RetryBudget(cfg.budget_ratio, cfg.budget_floor,
                                                     max_balance=max(1.0, cfg.budget_floor), clock=self.clock))

    def clock(self) -> float:
        return self.now

    def truth(self, peer: str, now: float) -> tuple[bool, float]:
        b = self.backends[peer]
        return b.healthy(now), b.start_time(now)

    # -- backend model -------------------------------------------------------------------------
    def _submit(self, b: _Backend, now: float) -> tuple[float, bool] | None:
        """(answer time, ok) for an attempt arriving at `now`, or None if no answer ever comes."""
        f = b.fault
        active = f is not None and f.active(now)
        if active and f.dead(now):
            return None
        if active and f.error_rate and f.kind in ("failing", "brownout") and self.rng.random() < f.error_rate:
            return now + self.cfg.fast_fail, False
        service = self.rng.lognormvariate(self._mu, self.cfg.sigma)
        start = max(now, b.free[0])
        if f is not None and f.kind in ("slow", "brownout") and f.active(start):
            service *= f.slow_factor
        finish = start + service
        heapq.heapreplace(b.free, finish)
        if f is not None and f.dead(finish):
            return None
        return finish, True

    # -- run -----------------------------------------------------------------------------------
    def run(self) -> Result:
        cfg = self.cfg
        self._mu = math.log(cfg.median_service)
        rng = self.rng
        strategy = self.strategy
        policy = self.policy
        names = self.names
        index = {n: i for i, n in enumerate(names)}
        windows = int(math.ceil((cfg.duration + cfg.max_attempts * (cfg.timeout + cfg.retry_cap) + 1) / cfg.window))
        shares = [[0] * cfg.backends for _ in range(windows)]
        latencies: list[float] = []
        failed = attempts = requests = 0
        fault_lat: list[float] = []
        fault_failed = fault_requests = fault_attempts = 0
        slow: list[tuple[float, float, tuple[str, ...]]] = []
        f0, f1 = FAULT_START * cfg.duration, FAULT_END * cfg.duration
        mark = cfg.slow_mark
        heap: list[tuple] = []
        seq = 0
        push = heapq.heappush
        pop = heapq.heappop
        push(heap, (rng.expovariate(cfg.rate), 0, self.ARRIVAL, None))
        hints = getattr(strategy, "hints", False)
        if hints:
            emitters = [HintEmitter() for _ in range(cfg.hint_sources)]
            push(heap, (cfg.hint_period, -1, self.HINTS, None))
        empty: frozenset[str] = frozenset()
        timeout = cfg.timeout
        duration = cfg.duration
        while heap:
            now, _, kind, data = pop(heap)
            self.now = now
            if kind == self.ARRIVAL:
                if now >= duration:
                    continue
                requests += 1
                policy.on_request()
                push(heap, (now + rng.expovariate(cfg.rate), 0, self.ARRIVAL, None))
                data = [now, 0, empty, ()]      # request: arrival, attempts, peers tried (set, in order)
                kind = self.RETRY                # dispatch its first attempt below
            if kind == self.RETRY:
                req = data
                peer = strategy.choose(names, now, req[2])
                strategy.on_start(peer, now)
                req[1] += 1
                req[2] = req[2] | {peer}
                req[3] += (peer,)
                attempts += 1
                shares[int(now / cfg.window)][index[peer]] += 1
                answer = self._submit(self.backends[peer], now)
                seq += 1
                if answer is None or answer[0] - now >= timeout:
                    push(heap, (now + timeout, seq, self.TIMEOUT, (req, peer, now)))
                else:
                    push(heap, (answer[0], seq, self.ANSWER, (req, peer, now, answer[1])))
                continue
            if kind == self.HINTS:
                self._hints(now, emitters)
                if now + cfg.hint_period < duration:
                    push(heap, (now + cfg.hint_period, -1, self.HINTS, None))
                continue
            req, peer, sent = data[0], data[1], data[2]
            ok = kind == self.ANSWER and data[3]
            if ok:
                strategy.on_success(peer, now - sent, now)
            else:
                fail_kind = "error" if kind == self.ANSWER else "timeout"
                strategy.on_failure(peer, fail_kind, now - sent, now)
                delay = policy.next_retry_delay(req[1], fail_kind)
                if delay is not None:
                    seq += 1
                    push(heap, (now + delay, seq, self.RETRY, req))
                    continue
                failed += 1
            latency = now - req[0]
            latencies.append(latency)
            if f0 <= req[0] < f1:
                fault_lat.append(latency)
                fault_requests += 1
                fault_attempts += req[1]
                fault_failed += not ok
                if latency > mark:
                    slow.append((req[0], latency, req[3]))
        return Result(strategy.name, self.scenario.name, latencies, failed, requests, attempts, shares, cfg.window,
                      fault_lat, fault_failed, fault_requests, fault_attempts, slow,
                      {"retries_denied": policy.budget.denied})

    # -- gossip --------------------------------------------------------------------------------
    def _true_view(self, peer: str, t: float) -> tuple[float, float]:
        """What an honest node that measures perfectly would see of `peer` at time t: (latency ms, error rate)."""
        f = self.backends[peer].fault
        base = self.cfg.median_service * 1000.0
        if f is None or not f.active(t):
            return base, 0.0
        if f.dead(t):
            return self.cfg.timeout * 1000.0, 1.0
        latency = base * (f.slow_factor if f.kind in ("slow", "brownout") else 1.0)
        return latency, f.error_rate if f.kind in ("failing", "brownout") else 0.0

    def _hints(self, now: float, emitters: list[HintEmitter]) -> None:
        cfg = self.cfg
        strategy = self.strategy
        for k, emitter in enumerate(emitters):
            t = now - cfg.hint_lag - k * cfg.hint_period / len(emitters)
            views = {p: self._true_view(p, t) for p in self.names}
            baseline = sorted(v[0] for v in views.values())[len(views) // 2]
            for p, (lat, err) in views.items():
                payload = emitter.observe(p, lat, err, now, baseline)
                if payload is not None:
                    strategy.on_hint(payload, f"node{k}", now)
        target = self.scenario.false_hint_target
        s, e = FAULT_START * cfg.duration, FAULT_END * cfg.duration
        if target is not None and s <= now < e:
            strategy.on_hint({"subject": self.names[target], "status": "DEGRADED", "latency_ms": 500.0,
                              "error_rate": 0.5}, "liar", now)

