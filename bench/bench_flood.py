"""Floods on real processes (issue 25): what one attacker gets at 1x, 3x and 10x of what it may send, and what
it costs an honest client.

    python -m bench flood [--quick | --smoke] [--traders=N] [--capacity]
        (--quick: 4 s windows; --smoke: 1 s, order spam at 1x only; --traders: honest traders, TRADERS by default;
         --capacity: the rows of what every client shares instead, bench/flood_capacity.py)

Four validators and a follower on loopback; honest traders (each a process of its own: the attacker is not a
trader) each place one order every 200 ms at the follower and time each until it is final there. Each attack
runs for one window while the traders keep going:
The attacker links from a /24 of its own (ATTACKER_SOURCE), as a stranger does; the honest follower links from
127.0.0.1.
- orders: signed one-order transactions from fresh accounts (signed before the window), each sent to every
  validator by one peer; 1x is `PEER_TX_RATE` (what a validator takes from one neighbour a second, checked
  before any signature). "admitted": spam orders final on the book once it stops growing (at most 60 s after).
  Past the budget a validator stops reading the flooder for a while, so its sends wait on TCP: "sent/s"
  is what the validators let through, and the window lasts until all `rate x window` are sent.
- orders, shared /24: orders at 10x from the follower's /24 (127.0.0.1): an attacker behind the honest node's
  NAT, sharing its network's part of each validator's transaction total and its read turns.
- orders, 4 /24s: the 10x row's load from four peers on four /24s (SPREAD_SOURCES), each at a quarter of it: what
  binds them together is the validators' total (`PEER_TX_TOTAL_RATE`), shared by network with the honest follower.
  Each link's window's worth fits in the kernel's socket buffers, so "sent/s" here is what was offered.
- burst: the issue's first attack as filed, BURST_TXS such transactions from one peer to every validator at once
  ("x" is how many); the validators read them at the budget's pace, so the row lasts until all are read.
- notes: diagnostic notes of NOTE_BYTES, each signed by a fresh key, to two validators; 1x is
  `ROUTER_OPEN_TYPE_RATE`. A production node carries no notes (DEBUG_API off): "got" is the notes that reached
  a validator the attacker is not linked to, over those sent.
- hints: RPC health hints, each signed by a fresh key, to two validators; 1x is `ROUTER_OPEN_TYPE_RATE`.
  "admitted": distinct hints that reached a validator the attacker is not linked to, over those sent.
- hints, 8 /24s: one peer on each of eight /24s (CROWD_SOURCES), each linked to the same two validators and
  sending hints at 1x on each link, within its own neighbour budget: the validators' per-type total
  (`ROUTER_OPEN_TYPE_TOTAL_RATE`), shared by network, is what binds them; "admitted" is what an entry validator
  checked a second of the crowd's offer (run last: its links are many).
- grafts: a linked peer asks again for the newest 64 broadcasts the node pushed it (fresh-key hints at
  another validator, within budget, give it some); 1x is 10 requests a second. "admitted": bytes of copies sent
  back per byte asked, and how many ids it had collected (each id is answered once per neighbour).
The honest columns cover the window and until the attack's figure settles (1 s at least); "thru %" is
honest orders final per second against the baseline measured first in the same run (BASELINE_WINDOWS windows), as
is "p99 ratio". The run closes with another quiet row, "none (closing)": what the attacks left behind (a quiet row's
p99 alone moves by up to a half between rows of the same rig: docs/tradeoffs.md). "after" is the p99 ratio of the
honest orders sent in the AFTER_SECONDS after the row's end (its attack over and settled; the next row waits them
out), how many of them were final in brackets: the issue asks finality back at the baseline within 5 s.
A window is 18 s (~90 honest orders per trader), so with four traders a row's p99 is the tail of ~400 orders, not
its slowest one: a snapshot (every node takes it at the same height, at most once a minute of block time) slows the
honest orders in flight wherever it falls (docs/tradeoffs.md has the figures).
Production settings throughout: diagnostic notes are not carried at all (DEBUG_API off), so the open broadcast type
an outsider can spam is the RPC hint. RSS is each node's resident memory after the window (the four validators, then
the follower). "snapshot at" is the height of a snapshot taken during the row, if any, and how long it held each
node's event loop (the same order) and how ("j": gathered from the rows the state keeps packed, "f": forked).
"ratio clear of snapshots" is the p99 ratio of the honest orders not sent within SNAPSHOT_SHADOW of a snapshot
(how many were, in brackets), against the baseline's taken the same way: every node takes it at the same height
and the half second after it is slower everywhere, so this is what the attack costs apart
from the snapshot (docs/tradeoffs.md). "loop late / full GC" is the longest any node's event loop ran a timer late
during the row, and its longest full garbage collection (each node's /health). "cores" is the CPU used over the
row, in cores, by the five nodes together, by the honest traders, and by this process (the attacker, and the
bench's polling of the nodes): all on the same two cores here.
Every attacker signs and frames what it will send before its first link opens, then keeps its links alive and
reads what the nodes send it (tests/flood.py): a link silent for a few heartbeats is dropped.
"""
from __future__ import annotations

import asyncio
import functools
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from bench import flood_capacity
from bench.table import print_table
from config import Settings
from exchange.chain.store.snapshot_live import SPREAD_SECONDS
from exchange.app.txs import SignedTx
from node.identity import NodeIdentity
from tests.flood import (HonestClient, attacker_links, broadcast_flood, fresh_note, graft_flood_linked, hint_flood,
                         order_flood, quantile, rss_mb, send_paced, spam_orders)
from tests.redteam.attacker import envelope
from tests.harness import Cluster, NodeProcess, converged, cpu_seconds, wait_until

NODE = {"log_level": "WARNING", "heartbeat_interval": 0.5}
LEVELS = (1, 3, 10)
SPAM_QTY = Decimal("0.01")
GRAFT_RATE = 10.0       # graft requests a second at 1x
NOTE_BYTES = 16 * 1024  # each spam note's payload
BURST_TXS = 3_400        # the burst as filed: one peer's signed one-order transactions, all sent at once
BASELINE_WINDOWS = 2    # each quiet row lasts this many windows (the run opens and closes with one); the opening
                        # row's p99 is what every row is divided by
AFTER_SECONDS = 5.0     # after each attack, the honest orders sent this long: back to the baseline within it?
# honest traders at the follower, each a process of its own placing one order every 200 ms: four make a row's p99
# the 1 % tail of ~400 orders rather than the slowest one or two of ~90 (`--traders=N` changes it)
TRADERS = 4
# the attacker links from a /24 of its own, as a stranger on the internet does; the "shared /24" row links from the
# follower's (127.0.0.1, every node's here): an attacker behind the honest node's NAT, which shares its network's
# transaction part and read turns by design (docs/tradeoffs.md)
ATTACKER_SOURCE = "127.0.20.1"
SHARED_SOURCE = "127.0.0.1"
# the "4 /24s" row: the 10x row's load split over peers on four networks, each within the validators' reading turns
# and its own network's share of the total (PEER_TX_TOTAL_RATE binds, not four per-peer budgets)
SPREAD_SOURCES = tuple(f"127.0.{20 + index}.1" for index in range(4))
# the "hints, 8 /24s" row: one hint flooder per network, each at 1x on each of its links (a crowd of links, each
# within its own neighbour budget; the type's total binds them, ROUTER_OPEN_TYPE_TOTAL_RATE shared by network)
CROWD_SOURCES = tuple(f"127.0.{40 + index}.1" for index in range(8))
LOOP_POLL = 4.0         # s between reads of each node's /health (which covers its last 10 s)
# s around a snapshot within which an honest order is sent in its shadow: the half second after it, and the
# spread within which each node's worker joins, digests and stores it (exchange/chain/store/snapshot_live.py)
SNAPSHOT_SHADOW = (-0.05, 0.4 + SPREAD_SECONDS)


@dataclass
class Row:
    """One row's raw figures, its ratios taken against the opening quiet row's."""

    attack: str
    level: int | str
    sent_rate: float
    got: str
    timed: list[tuple[float, float | None]]     # (sent at, seconds to final | None) of the honest orders in the row
    clear: list[float]          # latencies of those final and not sent in a snapshot's shadow
    seconds: float
    after: list[float | None]   # latencies of the honest orders sent in the AFTER_SECONDS after the row
    snapshot: str
    loop: str
    rss: str
    cores: str

    @property
    def final(self) -> list[float]:
        return [latency for _, latency in self.timed if latency is not None]

    def cells(self, base: "Row") -> list[Any]:
        final, samples = self.final, len(self.timed)
        p99 = _p99_ms(final)
        after = [latency for latency in self.after if latency is not None]
        after_cell = f"{_p99_ms(after) / _p99_ms(base.final):.2f} ({len(after)}/{len(self.after)})" if self.after else "-"
        return [self.attack, self.level, self.sent_rate, self.got, samples, 100.0 * len(final) / max(1, samples),
                100.0 * (len(final) / self.seconds) / (len(base.final) / base.seconds),
                _quantile_ms(final, 0.5), p99, p99 / _p99_ms(base.final),
                f"{_p99_ms(self.clear) / _p99_ms(base.clear):.2f} ({len(final) - len(self.clear)})",
                after_cell, self.snapshot, self.loop, self.rss, self.cores]


def _quantile_ms(latencies: list[float], q: float) -> float:
    return quantile(latencies, q) * 1000 if latencies else float("nan")


def _p99_ms(latencies: list[float]) -> float:
    return _quantile_ms(latencies, 0.99)


class Rig:
    """The cluster, the honest traders and the figures each attack window leaves."""

    def __init__(self, base: Path, window: float, traders: int = TRADERS, **validator: Any) -> None:
        self.cluster = Cluster(base)
        self.window = window
        self.validators = self.cluster.chain(4, seat_rule="any", debug_api="false", **NODE, **validator)
        self.follower = self.cluster.node("honest", bootstrap_peers=self.validators[0].p2p_address, **NODE)
        wait_until(lambda: converged([*self.validators, self.follower]), 30)
        status = self.validators[0].status()
        self.chain_id, self.network = status["chain_id"], status["network_id"]
        self.clients = [HonestClient(self.follower) for _ in range(traders)]
        for client in self.clients:
            client.start()
        self.hint_rate = Settings().router_open_type_rate

    def measure(self, attack: str, level: int | str, run: Callable[[], tuple[float, str]],
                seconds: float | None = None, after: float = 0.0) -> Row:
        """One row: `run` while the traders go on, then `after` seconds more whose orders show the recovery."""
        start = time.monotonic()
        cpu_before = self.cpu()
        snapshot_before = self.last_snapshot()
        watch = LoopWatch([*self.validators, self.follower])
        watch.start()
        sent_rate, got = run()
        time.sleep(max(0.0, start + (seconds or self.window) - time.monotonic()) + 1.0)
        watch.finish()
        taken = watch.snapshots | {at for at in [snapshot_at(self.validators[0])] if at is not None}
        end = time.monotonic()
        cores = "/".join(f"{(after - before) / (end - start):.2f}" for before, after in zip(cpu_before, self.cpu()))
        timed = [sample for client in self.clients for sample in client.timed(start, end)]
        clear = [latency for sent, latency in timed if latency is not None and not in_shadow(sent, taken)]
        rss = "/".join(f"{rss_mb(node):.0f}" for node in (*self.validators, self.follower))
        snapshot = self.last_snapshot()
        recovery: list[float | None] = []
        if after:
            # each trader orders one at a time: once each has sent one past the window, every order in it is answered
            wait_until(lambda: all(any(sent >= end + after for sent, _ in client.samples) for client in self.clients),
                       after + 60.0, 0.1, "the traders' orders after the row")
            recovery = [latency for client in self.clients for latency in client.window(end, end + after)]
        return Row(attack, level, sent_rate, got, timed, clear, end - start, recovery,
                   f"{snapshot:,} ({self.loop_held()})" if snapshot != snapshot_before else "-",
                   f"{watch.lag_ms:.0f} / {watch.gc_ms:.0f}", rss, cores)

    def cpu(self) -> tuple[float, float, float]:
        """CPU seconds used so far by the five nodes together, by the honest traders, and by this process: the
        attacker (and the bench's polling of each node), on the same two cores as the nodes here."""
        return (sum(cpu_seconds(node.proc.pid) for node in (*self.validators, self.follower) if node.proc is not None),
                sum(cpu_seconds(client.pid) for client in self.clients), sum(os.times()[:2]))

    def quiet(self, name: str = "none") -> Row:
        """A window of BASELINE_WINDOWS without attack: the run opens and closes with one."""
        return self.measure(name, "-", lambda: (0.0, "-"), BASELINE_WINDOWS * self.window)

    def last_snapshot(self) -> int:
        """The height of the newest snapshot (every node takes it), to read each row's slowest orders against."""
        return int(self.validators[0].status()["exchange"]["snapshots"]["last_height"])

    def loop_held(self) -> str:
        """How long the last snapshot held each node's event loop, ms, and how (j: gathered, f: forked, w: a wait
        for a late child, e: encoded whole)."""
        views = [node.status()["exchange"]["snapshots"] for node in (*self.validators, self.follower)]
        return "/".join(f"{view['loop_held_last_ms']:.0f}{(view['loop_held_last_by'] or '?')[0]}" for view in views) + " ms"

    def close(self) -> None:
        for client in self.clients:
            client.stop.set()
        for client in self.clients:
            client.join(40)
        self.cluster.close()


class LoopWatch(threading.Thread):
    """The longest each node's event loop ran a timer late, and the longest full garbage collection, over a row
    (each node's /health reports the last 10 s; read every LOOP_POLL s), the most of any node."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.lag_ms = 0.0
        self.gc_ms = 0.0
        self.snapshots: set[float] = set()  # when the first node took its snapshots (this process's monotonic clock)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            for node in self.nodes:
                lag = node.get("/health")["loop_lag"]
                self.lag_ms = max(self.lag_ms, 1000 * (lag["max_10s_seconds"] or 0.0))
                self.gc_ms = max(self.gc_ms, 1000 * (lag["full_gc_max_10s_seconds"] or 0.0))
            at = snapshot_at(self.nodes[0])
            if at is not None and all(abs(at - seen) > 1.0 for seen in self.snapshots):
                self.snapshots.add(at)
            if self._stop_event.wait(LOOP_POLL):
                return

    def finish(self) -> None:
        self._stop_event.set()
        self.join(30)


def snapshot_at(node: NodeProcess) -> float | None:
    """When `node`'s last snapshot held its loop, on the machine's monotonic clock (every process's)."""
    ago = node.status()["exchange"]["snapshots"]["loop_held_ago_s"]
    return None if ago is None else time.monotonic() - ago


def in_shadow(sent: float, taken: set[float]) -> bool:
    return any(SNAPSHOT_SHADOW[0] <= sent - at <= SNAPSHOT_SHADOW[1] for at in taken)


def _orders(rig: Rig, rate: float, spam: list[SignedTx], sources: tuple[str, ...] = (ATTACKER_SOURCE,)) -> tuple[float, str]:
    """`spam` at `rate` a second in all, split evenly over one peer per source address (each its own identity)."""
    final_before = _spam_final(rig.follower)

    closed: list[str] = []

    async def run() -> float:
        shares = [spam[index::len(sources)] for index in range(len(sources))]
        took = await asyncio.gather(*(order_flood(rig.validators, rig.chain_id, share, rate / len(sources), source,
                                                  closed) for share, source in zip(shares, sources)))
        return max(took)
    took = asyncio.run(run())
    final = _settled(lambda: _spam_final(rig.follower)) - final_before
    # a link the node closed takes nothing more: what was left unsent is not an offer the node refused
    cut = f"; links closed: {'; '.join(closed)}" if closed else ""
    return len(spam) / took, f"{final:,} final ({100.0 * final / len(spam):.0f} %){cut}"


def _burst(rig: Rig, spam: list[SignedTx]) -> tuple[float, str]:
    """`spam` to every validator at once from one peer, whose links stay open until all of it is final at the
    follower (a link closed with a backlog the node has not read yet is reset, and the backlog lost)."""
    final_before = _spam_final(rig.follower)

    async def run() -> float:
        flooder = NodeIdentity.generate()
        async with attacker_links([(flooder, node) for node in rig.validators], rig.chain_id,
                                  [ATTACKER_SOURCE] * len(rig.validators)) as peers:
            started = time.monotonic()
            await send_paced(peers, [[envelope("chain_tx", flooder.node_id, node.node_id, tx.wire()) for tx in spam]
                                     for node in rig.validators], float("inf"))
            await asyncio.to_thread(wait_until, lambda: _spam_final(rig.follower) - final_before >= len(spam), 120,
                                    0.2, "the burst final")
            return time.monotonic() - started

    took = asyncio.run(run())
    final = _spam_final(rig.follower) - final_before
    return len(spam) / took, f"{final:,} final in {took:.1f} s"


def _spam_final(node: NodeProcess) -> int:
    """How many spam orders rest on the final book: each buys 0.01 at 1, a price no honest order uses."""
    book = node.get("/book/BTC-USD?depth=1000&digest=0")      # the digest would encode every resting order
    level = next((qty for price, qty in book["bids"] if Decimal(price) == 1), "0")
    return int(Decimal(level) / SPAM_QTY)


def _settled(read: Callable[[], int], quiet: float = 1.0, limit: float = 60.0) -> int:
    """`read()` once it has stopped changing for `quiet` seconds: a validator reads a flood at its own pace,
    long after the kernel took the attacker's bytes, and drops the excess as it reads."""
    value, deadline = read(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = read()
        if now == value:
            break
        value = now
    return value


def _hints(rig: Rig, rate: float) -> tuple[float, str]:
    entries, far = rig.validators[:2], rig.validators[3]

    def distinct() -> int:
        router = far.status()["router"]
        return router["received"].get("hint", 0) - router["duplicates"].get("hint", 0)
    before = distinct()
    count = int(rate * rig.window)
    took = asyncio.run(hint_flood(entries, rig.network, rig.chain_id, rig.validators[2].node_id, count, rate,
                                  ATTACKER_SOURCE))
    arrived = _settled(distinct, quiet=0.5, limit=10.0) - before      # what the far validator got, once it stops
    return len(entries) * count / took, f"{100.0 * arrived / (len(entries) * count):.1f} % of hints"


def _hint_crowd(rig: Rig, rate: float) -> tuple[float, str]:
    """Hints from one peer per CROWD_SOURCES network, each linked to the two entry validators at `rate` a second per
    link (each within its own neighbour budget): what binds them is each entry's total for the type
    (`ROUTER_OPEN_TYPE_TOTAL_RATE`), shared by network. "admitted": copies an entry validator checked a second
    (those it received less duplicates and copies dropped over a budget, the two entries' mean)."""
    entries = rig.validators[:2]
    budgets = ("neighbour_budget", "network_budget", "origin_budget", "throttled_relay")

    def checked() -> list[int]:
        routers = [node.status()["router"] for node in entries]
        return [router["received"].get("hint", 0) - router["duplicates"].get("hint", 0)
                - sum(router["dropped"].get(reason, 0) for reason in budgets) for router in routers]
    before = checked()
    count = int(rate * rig.window)

    async def crowd() -> float:
        took = await asyncio.gather(*(hint_flood(entries, rig.network, rig.chain_id, rig.validators[2].node_id, count,
                                                 rate, source) for source in CROWD_SOURCES))
        return max(took)
    took = asyncio.run(crowd())
    after = _settled(lambda: sum(checked()), quiet=0.5, limit=10.0)
    per_entry = (after - sum(before)) / len(entries) / took    # each copy is read (and checked) as it is sent
    offered = len(CROWD_SOURCES) * rate
    return len(entries) * len(CROWD_SOURCES) * count / took, \
        f"{per_entry:.0f}/s checked of {offered:.0f} ({100.0 * per_entry / offered:.0f} %)"


def _notes(rig: Rig, rate: float) -> tuple[float, str]:
    entries, far = rig.validators[:2], rig.validators[3]

    def received() -> int:
        return int(far.status()["router"]["received"].get("note", 0))

    before = received()
    count = int(rate * rig.window)
    payload = "n" * NOTE_BYTES
    took = asyncio.run(broadcast_flood(entries, rig.chain_id, lambda: fresh_note(rig.network, payload), count, rate,
                                       ATTACKER_SOURCE))
    arrived = _settled(received, quiet=0.5, limit=10.0) - before
    return len(entries) * count / took, f"{100.0 * arrived / (len(entries) * count):.1f} % of notes"


def _grafts(rig: Rig, rate: float) -> tuple[float, str]:
    async def both() -> tuple[int, int, int]:
        # fresh-key hints at another validator (within its budget) give the target broadcasts to push
        count = int(rig.window / 2 * rig.hint_rate)
        feed = hint_flood(rig.validators[1:2], rig.network, rig.chain_id, rig.validators[2].node_id, count,
                          rig.hint_rate, ATTACKER_SOURCE)
        result, _ = await asyncio.gather(
            graft_flood_linked(rig.validators[0], rig.chain_id, rig.window / 2, rate, ATTACKER_SOURCE), feed)
        return result
    asked, answered, ids = asyncio.run(both())
    if ids == 0:
        raise RuntimeError("the graft attacker was pushed no broadcast: nothing to re-request, no figure")
    return rate, f"x{answered / max(1, asked):.2f} bytes ({ids} ids)"


def main(flags: list[str]) -> None:
    smoke = "--smoke" in flags
    window = 1.0 if smoke else 4.0 if "--quick" in flags else 18.0
    traders = next((int(flag.split("=", 1)[1]) for flag in flags if flag.startswith("--traders=")), TRADERS)
    if traders < 1:
        raise SystemExit("--traders=N needs N >= 1: every row is timed by the honest traders' orders")
    settings = Settings()
    capacity = {"orders": settings.peer_tx_rate, "notes": settings.router_open_type_rate,
                "hints": settings.router_open_type_rate, "grafts": GRAFT_RATE}
    attacks: dict[str, Callable[[Rig, float], tuple[float, str]]] = {"notes": _notes, "hints": _hints,
                                                                     "grafts": _grafts}
    plan: list[tuple[str, int | str]] = [("orders", 1)] if smoke else [
        *(("orders", level) for level in LEVELS), ("orders, shared /24", LEVELS[-1]),
        (f"orders, {len(SPREAD_SOURCES)} /24s", LEVELS[-1]), ("burst", f"{BURST_TXS:,}"),
        *((name, level) for name in attacks for level in LEVELS),
        (f"hints, {len(CROWD_SOURCES)} /24s", len(CROWD_SOURCES))]
    capacity_rows = "--capacity" in flags
    if capacity_rows:
        plan = list(flood_capacity.plan())
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        rig = Rig(Path(tmp), window, traders, **(flood_capacity.CAPACITY_SETTINGS if capacity_rows else {}))
        try:
            quiet = [rig.quiet()]
            rows: list[Row] = []
            for name, level in plan:
                # spam is signed before the window: the attacker's own machine does that
                if capacity_rows:
                    extra = (rig.chain_id,) if name == "expansion frames" else ()
                    run = functools.partial(flood_capacity.ROWS[name], rig.validators[0], rig.window, int(level), *extra)
                elif name == "burst":
                    run = functools.partial(_burst, rig, spam_orders(rig.chain_id, BURST_TXS))
                elif name.startswith("hints, "):
                    run = functools.partial(_hint_crowd, rig, capacity["hints"])
                elif name.startswith("orders"):
                    rate = capacity["orders"] * int(level)
                    sources = {"orders": (ATTACKER_SOURCE,), "orders, shared /24": (SHARED_SOURCE,)}.get(name, SPREAD_SOURCES)
                    run = functools.partial(_orders, rig, rate, spam_orders(rig.chain_id, int(rate * rig.window)), sources)
                else:
                    run = functools.partial(attacks[name], rig, capacity[name] * int(level))
                rows.append(rig.measure(name, level, run, after=AFTER_SECONDS))
            if not smoke:
                quiet.append(rig.quiet("none (closing)"))
        finally:
            rig.close()
    base = quiet[0]
    print_table(f"floods, {window:g} s windows: 4 validators + a follower; {traders} honest trader(s) at the follower, "
                f"each an order every 200 ms, ms to final there; x = multiple of what one peer may send; ratios against "
                f"the opening quiet row" + ("; capacity rows: validators with the loopback exemptions off "
                                            "(bench/flood_capacity.py)" if capacity_rows else ""),
                ["attack", "x", "sent/s", "attacker admitted", "honest n", "final %", "thru %", "p50 ms", "p99 ms",
                 "p99 ratio", "ratio clear of snapshots (n in shadow)", f"after: {AFTER_SECONDS:g} s p99 ratio (n final)",
                 "snapshot at", "loop late / full GC ms", "RSS MB v0/v1/v2/v3/f", "cores: nodes/traders/attacker"],
                [base.cells(base), *(row.cells(base) for row in rows), *(row.cells(base) for row in quiet[1:])])
