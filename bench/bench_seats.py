"""Seat changes on real processes: how long a granted seat and a handed-back seat take, and what
they cost the orders in flight.

    python -m bench seats [--quick | --smoke]      (--quick: one run each; --smoke: one run of `leave`)

- add: a founder (the only validator) and three followers; the operator approves two of them (standbys:
  the set grows only 1 -> 4), then the third; measured from that last `exchange-node validators add` to
  the moment every node shows four validators.
- leave: four validators and one standby; SIGTERM to a validator; measured from the signal to the moment
  every remaining node shows the standby in its seat (and, separately, to the process's exit).
- finality during each: a client places one order every 100 ms at a node that keeps its seat and times
  each until its 201 (final there); p50/p99 over a baseline window before the change, and over the window
  from the change to 3 s after it. The goal: no order waits more than 1 s longer than usual.
Every table prints the machine's load average next to its figures.
"""
from __future__ import annotations

import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.table import print_table
from tests.harness import Cluster, NodeProcess, wait_until

NODE = {"log_level": "WARNING", "heartbeat_interval": 0.5}


class Pacer(threading.Thread):
    """One order every `interval` at a node, each timed until its final answer."""

    def __init__(self, node: NodeProcess, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.node, self.interval = node, interval
        self.samples: list[tuple[float, float]] = []      # (sent at, seconds to final)
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            side = "buy" if n % 2 else "sell"
            sent = time.monotonic()
            try:
                status, _ = self.node.api("POST", "/orders?wait=10", {"market": "BTC-USD", "side": side,
                                                                     "price": str(90 + n % 7), "qty": "0.01"}, 15)
            except OSError as error:        # the node is gone: the run is ending, its failure reported there
                self.errors.append(str(error))
                return
            if status == 201:
                self.samples.append((sent, time.monotonic() - sent))
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def window(self, start: float, end: float) -> list[float]:
        return [latency for sent, latency in self.samples if start <= sent < end]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000 if ordered else float("nan")


BASELINE = 5.0       # seconds of orders before the change


def bench_add(base: Path) -> dict:
    cluster = Cluster(base)
    pacer: Pacer | None = None
    try:
        founder, = cluster.chain(1, **NODE)
        followers = [cluster.node(f"f{i}", bootstrap_peers=founder.p2p_address, **NODE) for i in range(3)]
        wait_until(lambda: {f.node_id for f in followers} <= founder.connected_ids(), 20)
        for follower in followers[:2]:
            assert founder.cli("validators", "add", follower.node_id).returncode == 0
        wait_until(lambda: len(founder.get("/validators")["standby"]) == 2, 10)
        pacer = Pacer(founder)
        pacer.start()
        time.sleep(BASELINE)
        start = time.monotonic()
        assert founder.cli("validators", "add", followers[2].node_id).returncode == 0
        wait_until(lambda: all(len(n.status()["validators"]) == 4 for n in (founder, *followers)), 20, interval=0.01)
        took = time.monotonic() - start
        time.sleep(3.0)
        return {"took": took, "base": pacer.window(start - BASELINE, start), "during": pacer.window(start, start + took + 3)}
    finally:
        if pacer is not None:
            pacer.stop.set()
            pacer.join(20)
        cluster.close()


def bench_leave(base: Path) -> dict:
    cluster = Cluster(base)
    pacer: Pacer | None = None
    try:
        validators = cluster.chain(4, **NODE)
        standby = cluster.node("standby", join_token=validators[0].join_token(),
                               bootstrap_peers=validators[0].p2p_address, **NODE)
        leaver, keepers = validators[3], validators[:3]
        # The leaver hands its seat to a standby it hears live: wait until it can, or the measure would be
        # of a leave without a successor (then of the promotion that follows it).
        wait_until(lambda: standby.node_id in leaver.connected_ids()
                   and len(leaver.get("/validators")["standby"]) == 1, 30)
        pacer = Pacer(keepers[0])
        pacer.start()
        time.sleep(BASELINE)
        start = time.monotonic()
        assert leaver.proc is not None
        leaver.proc.send_signal(signal.SIGTERM)
        members = {*(k.node_id for k in keepers), standby.node_id}
        try:
            wait_until(lambda: all(set(n.status()["validators"]) == members for n in (*keepers, standby)), 30,
                       interval=0.01)
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}\nthe leaver's log:\n{leaver.log_tail(30)}\n"
                                 f"a keeper's log:\n{keepers[0].log_tail(30)}") from None
        took = time.monotonic() - start
        leaver.proc.wait(20)
        exited = time.monotonic() - start
        time.sleep(3.0)
        return {"took": took, "exited": exited, "base": pacer.window(start - BASELINE, start),
                "during": pacer.window(start, start + took + 3)}
    finally:
        if pacer is not None:
            pacer.stop.set()
            pacer.join(20)
        cluster.close()


def main(flags: list[str]) -> None:
    smoke = "--smoke" in flags
    runs = 1 if "--quick" in flags or smoke else 3
    rows = []
    parts = [("validators add -> 4 seats", bench_add), ("SIGTERM -> seat handed back", bench_leave)]
    for name, run in parts[1:] if smoke else parts:
        results = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix=f"bench-seats-{name[:3]}-") as tmp:
                results.append(run(Path(tmp)))
        base = [v for r in results for v in r["base"]]
        during = [v for r in results for v in r["during"]]
        took = [r["took"] * 1000 for r in results]
        extra = _p(during, 0.99) - _p(base, 0.99)
        rows.append([name, statistics.median(took), max(took), len(base), _p(base, 0.5), _p(base, 0.99),
                     len(during), _p(during, 0.5), _p(during, 0.99), _p(during, 0.99) / _p(base, 0.99),
                     "yes" if extra < 1000 else "NO"])
        if "exited" in results[0]:
            print(f"  {name}: the process exited {statistics.median(r['exited'] for r in results) * 1000:.0f} ms "
                  f"after SIGTERM (median of {runs})")
    print_table(f"seat changes, {runs} run(s) each; orders every 100 ms at a validator that keeps its seat, ms to "
                f"final there (baseline: the 5 s before the change)",
                ["change", "took ms (median)", "max", "base n", "base p50", "base p99", "during n", "during p50",
                 "during p99", "p99 ratio", "< +1 s"], rows)
