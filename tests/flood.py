"""Floods on real processes, shared by the attack tests and `python -m bench flood`: an honest client
that times its orders, and attackers speaking the real protocol with fresh keys (orders from fresh accounts,
RPC hints and diagnostic notes each signed by a fresh key, re-requests of cached broadcasts)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

from exchange.crypto import SigningKey
from exchange.app.txs import NewOrderOp, Op, SignedTx, sign_tx
from node.identity import NodeIdentity
from p2p.framing import encode_body
from p2p.origin_auth import OriginAuth
from p2p.rpc.gossip import hint_proof
from tests.harness import NodeProcess, rss_kib, wait_until
from tests.redteam.attacker import closed_reason, envelope, honest_nodes_intact, linked
from tests.wire import RawPeer


class HonestClient:
    """One order every `interval` at a node, each timed until its final answer (201), from a process of its own
    (tests/honest_orders.py): a trader is not the attacker, and timed inside the process that signs, encrypts
    and sends the flood it would also be timing the attacker's hold on that process's interpreter lock."""

    def __init__(self, node: NodeProcess, interval: float = 0.2, open_loop: bool = False) -> None:
        self.node, self.interval = node, interval
        self.open_loop = open_loop      # an order every `interval` whatever is in flight (else one at a time)
        self.samples: list[tuple[float, float | None]] = []     # (sent at, seconds to final | None: not final)
        self.stop = _StopSignal(self)
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        auth = self.node.auth_headers().get("Authorization", "")
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.honest_orders", self.node.api_url, str(self.interval),
                                       auth, *(["open"] if self.open_loop else [])], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sent, latency = line.split()
            self.samples.append((float(sent), None if latency == "null" else float(latency)))

    def join(self, timeout: float | None = None) -> None:
        """Wait for the order in flight when `stop` was set, and its sample."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)

    def window(self, start: float, end: float) -> list[float | None]:
        return [latency for _, latency in self.timed(start, end)]

    def timed(self, start: float, end: float) -> list[tuple[float, float | None]]:
        """(sent at, latency) of the orders sent in [start, end)."""
        return [(sent, latency) for sent, latency in self.samples if start <= sent < end]


class _StopSignal:
    """`client.stop.set()`: the client finishes the order in flight and exits (its stdin closes)."""

    def __init__(self, client: HonestClient) -> None:
        self._client = client
        self._set = False

    def set(self) -> None:
        self._set = True
        proc = self._client._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()

    def is_set(self) -> bool:
        return self._set


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def p99(values: list[float]) -> float:
    return quantile(values, 0.99)


def spam_orders(chain_id: str, count: int, ttl_ms: int = 110_000, immediate: int = 0) -> list[SignedTx]:
    """`count` signed transactions, each from a fresh account: `immediate` IOC buys at 1 (nothing sells there: each
    closes at once, never resting), then one limit buy at 1 that rests."""
    expires = int(time.time() * 1000) + ttl_ms
    ops: list[Op] = [*[NewOrderOp.parse("BTC-USD", "buy", "ioc", "1", "0.01", None)] * immediate,
                     NewOrderOp.parse("BTC-USD", "buy", "limit", "1", "0.01", None)]
    return [sign_tx((key := SigningKey(os.urandom(32))).sign, key.public_key, chain_id, "spam", expires, ops)
            for _ in range(count)]


def fresh_note(network: str, payload: str) -> dict:
    """A diagnostic note signed by a fresh key, as a relay would pass it on."""
    author = NodeIdentity.generate()
    auth = OriginAuth(node_id=author.node_id, public_key=author.public_key_bytes, sign=author.sign,
                      verify=NodeIdentity.verify, node_id_for=NodeIdentity.node_id_for, network=network)
    note = {"type": "note", "origin": author.node_id, "ts": time.time(), "hops": 1, "payload": payload}
    auth.sign_broadcast(note)
    return note


def fresh_hint(network: str, subject: str) -> dict:
    """An RPC health hint about `subject`, signed by a fresh key (valid: any key may author one)."""
    author = NodeIdentity.generate()
    hint = {"type": "hint", "id": os.urandom(12).hex(), "origin": author.node_id, "ts": time.time(),
            "subject": subject, "status": "degraded", "service": "exchange.submit", "latency_ms": 900.0,
            "error_rate": 0.5, "pk": author.public_key_bytes, "hops": 1}
    hint["sig"] = author.sign(hint_proof(hint, network))
    return hint


async def send_paced(peers: list[RawPeer], messages: list[list[dict]], rate: float,
                     unsent: list[int] | None = None) -> float:
    """Send `messages[i]` over `peers[i]` at `rate` messages a second per peer (as fast as the links take them
    when the machine cannot keep up); returns the seconds it took. `unsent`, if given, gets how many messages each
    peer could not send because its link was closed (by the node, or by a reset)."""
    started = time.monotonic()
    skipped = [0] * len(peers)
    longest = max((len(batch) for batch in messages), default=0)
    for index in range(longest):
        for number, (peer, batch) in enumerate(zip(peers, messages)):
            if index < len(batch):
                if peer.writer.is_closing():
                    skipped[number] += 1
                else:
                    peer.send(batch[index])
        if index % 50 == 49:
            for peer in peers:
                try:
                    await asyncio.wait_for(peer.writer.drain(), 5)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            ahead = (index + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    if unsent is not None:
        unsent.extend(skipped)
    return time.monotonic() - started


async def order_flood(validators: list[NodeProcess], chain_id: str, spam: list[SignedTx], rate: float,
                      source: str | None = None, closed: list[str] | None = None) -> float:
    """Every spam transaction to every validator at `rate` a second, from one fresh peer identity (linked from the
    loopback address `source`, if given) that keeps its links alive and reads what the nodes send it, as an
    attacker who wants to stay linked does (`attacker_links`); every frame is built before the first link opens.
    Called side by side (`asyncio.gather`), each builds in its first step, before any of their links opens.
    `closed`, if given, gets a line for each link the node closed before all was sent: how much was left unsent
    and why, as the node's /peers says (`closed_reason`)."""
    flooder = NodeIdentity.generate()
    # framed before any link opens: seconds of it with links open and no heartbeat would get them dropped as silent
    batches = [[envelope("chain_tx", flooder.node_id, node.node_id, tx.wire()) for tx in spam] for node in validators]
    async with attacker_links([(flooder, node) for node in validators], chain_id,
                              [source] * len(validators)) as peers:
        unsent: list[int] = []
        took = await send_paced(peers, batches, rate, unsent)
        if closed is not None:
            for node, left in zip(validators, unsent):
                if left:
                    why = await asyncio.to_thread(closed_reason, node, flooder.node_id)
                    closed.append(f"{node.name}: {left:,} unsent, {why}")
        return took


async def hint_flood(entries: list[NodeProcess], network: str, chain_id: str, subject: str, count: int,
                     rate: float, source: str | None = None) -> float:
    """`count` fresh-key hints to each entry node at `rate` a second."""
    return await broadcast_flood(entries, chain_id, lambda: fresh_hint(network, subject), count, rate, source)


async def broadcast_flood(entries: list[NodeProcess], chain_id: str, make: Callable[[], dict], count: int,
                          rate: float, source: str | None = None) -> float:
    """`count` broadcasts (`make()`, each its own) to each entry node at `rate` a second, from one attacker linked
    to all of them (from the loopback address `source`, if given) and staying linked (`attacker_links`); returns
    the seconds it took."""
    attacker = NodeIdentity.generate()
    messages = [[make() for _ in range(count)] for _ in entries]     # signed before any link opens (order_flood)
    async with attacker_links([(attacker, node) for node in entries], chain_id, [source] * len(entries)) as peers:
        return await send_paced(peers, messages, rate)


async def graft_flood(node: NodeProcess, chain_id: str, seconds: float, rate: float) -> tuple[int, int, int]:
    """Link to `node`, collect the ids of the broadcasts it pushes for `seconds`, then ask for the newest 64 of
    them again `rate` times a second for `seconds`. Returns (bytes of graft requests sent, bytes of copies of
    already-received broadcasts that came back: the answers, ids collected)."""
    return await _grafts(node, chain_id, seconds, rate, heartbeat=None)


async def graft_flood_linked(node: NodeProcess, chain_id: str, seconds: float, rate: float,
                             source: str | None = None) -> tuple[int, int, int]:
    """`graft_flood` from a peer that keeps its link alive meanwhile (a heartbeat every tenth of a second): silent
    while it collects, a node with fast heartbeats drops the link before the re-requests begin."""
    return await _grafts(node, chain_id, seconds, rate, heartbeat=0.1, source=source)


async def _grafts(node: NodeProcess, chain_id: str, seconds: float, rate: float,
                  heartbeat: float | None, source: str | None = None) -> tuple[int, int, int]:
    attacker = NodeIdentity.generate()
    peer = await linked(node, attacker, chain_id, source)
    ids: dict[str, str] = {}
    asked = answered = 0

    async def read() -> None:
        nonlocal answered
        while True:
            message = await peer.next_message(60)
            if message is None:
                return
            if "id" in message and "dst" not in message and "origin" in message:
                if message["id"] in ids:
                    answered += len(encode_body(message))
                else:
                    ids[message["id"]] = message["origin"]

    async def beat() -> None:
        while heartbeat is not None and not peer.writer.is_closing():
            peer.send({"type": "heartbeat", "ts": time.time()})
            await asyncio.sleep(heartbeat)

    reader, beating = asyncio.create_task(read()), asyncio.create_task(beat())
    try:
        await asyncio.sleep(seconds)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not peer.writer.is_closing():
            chosen = list(ids.items())[-64:]
            if chosen:
                request = {"type": "graft", "ids": [mid for mid, _ in chosen], "origins": [o for _, o in chosen]}
                peer.send(request)
                asked += len(encode_body(request))
            await asyncio.sleep(1.0 / rate)
        await asyncio.sleep(0.5)
        return asked, answered, len(ids)
    finally:
        reader.cancel()
        beating.cancel()
        peer.close()


def rss_mb(node: NodeProcess) -> float:
    """The node process's resident memory now (Linux /proc)."""
    assert node.proc is not None
    kib = rss_kib(node.proc.pid)
    return kib / 1024 if kib else float("nan")


# --- the common pass criteria ----------------------------------------------------------------------------------

class ChainWatch:
    """Every node's chain, readiness, memory and the budgets it holds back, sampled from a thread every `interval`
    seconds while a flood runs (its /status, /ready and RSS): what the common criteria (`assert_fair`) judge.
    Use as a context manager around the honest baseline, the flood and the time after it."""

    def __init__(self, nodes: list[NodeProcess], interval: float = 0.5) -> None:
        self.nodes, self.interval = nodes, interval
        self.first: dict[str, dict[str, Any]] = {}          # node name -> its /status when the watch started
        self.last: dict[str, dict[str, Any]] = {}
        self.heights: dict[str, list[tuple[float, int]]] = {n.name: [] for n in nodes}      # (when, height)
        self.commits: dict[str, list[float]] = {}   # node name -> when each block became final there (DEBUG_API)
        self.late: dict[str, list[tuple[float, int]]] = {n.name: [] for n in nodes}   # (when, blocks past round 0)
        self.unready: dict[str, list[tuple[float, str]]] = {n.name: [] for n in nodes}     # (when, failing checks)
        self.rss_start = {n.name: rss_mb(n) for n in nodes}
        self.rss_peak = dict(self.rss_start)
        self.held_back: dict[str, set[str]] = {n.name: set() for n in nodes}     # ids a budget held back, ever seen
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ChainWatch":
        for node in self.nodes:
            self.first[node.name] = self.last[node.name] = node.status()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        # a busy node answers /status late, so the samples can be seconds apart: where a node keeps a commit log,
        # its stalls are read from when each block became final there (its wall clock, this machine's)
        wall_ahead = time.time() - time.monotonic()
        for node in self.nodes:
            since = self.first[node.name]["exchange"]["height"] + 1
            try:
                code, body = node.api("GET", f"/debug/chain/commits?from={since}")
            except OSError:             # a node the test stopped: its stalls are the samples'
                continue
            if code == 200:
                self.commits[node.name] = [when - wall_ahead for _, when, _ in body["commits"]]

    def _run(self) -> None:
        while not self._stop.is_set():
            for node in self.nodes:
                try:
                    self._sample(node)
                except (OSError, ValueError, KeyError, AssertionError) as exc:
                    self.errors.append(f"{node.name}: {exc!r}")
            self._stop.wait(self.interval)

    def _sample(self, node: NodeProcess) -> None:
        status = node.status()
        now = time.monotonic()
        self.last[node.name] = status
        self.heights[node.name].append((now, status["exchange"]["height"]))
        self.late[node.name].append((now, status["exchange"].get("blocks_past_round_0", 0)))
        code, ready = node.api("GET", "/ready")
        if code != 200:
            failing = [f"{check['name']}: {check.get('detail')}" for check in ready.get("checks", []) if not check["ok"]]
            self.unready[node.name].append((now, "; ".join(failing) or str(code)))
        self.rss_peak[node.name] = max(self.rss_peak[node.name], rss_mb(node))
        self.held_back[node.name] |= held_back(status)

    def longest_stall(self, name: str, start: float, end: float) -> float:
        """The longest time between `start` and `end` that `name`'s height did not move: between the blocks of its
        commit log, or at the sampling's grain without one."""
        if name in self.commits:
            changes = [start, *(when for when in self.commits[name] if start <= when <= end), end]
            return max(b - a for a, b in zip(changes, changes[1:]))
        changes = [start]
        previous = None
        for when, height in self.heights[name]:
            if previous is not None and height != previous and start <= when <= end:
                changes.append(when)
            previous = height
        changes.append(end)
        return max(b - a for a, b in zip(changes, changes[1:]))

    def late_since(self, name: str, since: float) -> int:
        """Blocks `name` saw decided after round 0 from `since` on (at the sampling's grain)."""
        before = [count for when, count in self.late[name] if when <= since]
        return self.late[name][-1][1] - (before[-1] if before else self.first[name]["exchange"]["blocks_past_round_0"])

    def delta(self, name: str, key: str) -> Any:
        """How much the chain counter `key` (a number, or a dict of numbers by reason) grew on `name`."""
        first, last = self.first[name]["exchange"].get(key), self.last[name]["exchange"].get(key)
        if isinstance(last, dict):
            before = first or {}
            return {k: v - before.get(k, 0) for k, v in last.items() if v != before.get(k, 0)}
        return (last or 0) - (first or 0)


def held_back(status: dict[str, Any]) -> set[str]:
    """Who a node's /status says it holds back: neighbours past their transaction budget, and neighbours and
    origins over a broadcast budget (now, or dropped over it since the start)."""
    ids = {entry["peer"] for entry in status["exchange"].get("tx_budget", {}).get("throttled", [])
           if entry.get("held") or entry.get("dropped")}
    router = status.get("router") or {}
    for view in ("budget_throttled", "budget_refused"):
        for over in router.get(view, {}).values():
            ids.update(over.get("neighbours", []))
            ids.update(over.get("origins", []))
    return ids


@dataclass
class FairReport:
    """What `assert_fair` measured, for the test's printout and the docs."""

    baseline: tuple[int, float, float, float]       # (orders, final/s, p50 s, p99 s) before the flood
    during: tuple[int, float, float, float]
    after: tuple[int, float, float, float]          # from `recover` seconds after the flood's end
    stalls: dict[str, float]                        # node -> longest time its height stood still
    late_blocks: dict[str, int]                     # node -> blocks decided after round 0
    rss_growth: dict[str, float]                    # node -> MB above its start, at its peak
    paced_by_cpu: dict[str, int] = field(default_factory=dict)   # node -> attackers of a crowd it left unheld

    def line(self) -> str:
        def show(window: tuple[int, float, float, float]) -> str:
            return f"{window[0]} orders, {window[1]:.2f}/s, p50 {window[2] * 1000:.0f} ms, p99 {window[3] * 1000:.0f} ms"
        return (f"honest before: {show(self.baseline)}; during: {show(self.during)}; after: {show(self.after)}; "
                f"longest stall {max(self.stalls.values()):.1f} s; blocks past round 0 {self.late_blocks}; "
                f"RSS growth {[round(g) for g in self.rss_growth.values()]} MB"
                + (f"; attackers read no faster than their budgets, so not held: {self.paced_by_cpu}"
                   if self.paced_by_cpu else ""))


def honest_window(client: HonestClient, start: float, end: float,
                  settle: float = 0.0) -> tuple[int, float, float, float]:
    """(orders placed, orders final per second, p50, p99) of the honest client's orders sent in [start, end).
    One order at a time, the rate is final orders over the time from the first one's sending to the last one's
    slot (its answer, or the client's interval if that came sooner), so where the window cuts the client's pace
    does not count; that rate is 1 / latency once latency passes the interval. In an open loop it is the rate
    offered times the share of the window's orders final by `settle` seconds after its end: what the system
    finalised of a fixed rate, lower only when honest orders were lost or still backed up then."""
    samples = sorted((sent, latency) for sent, latency in client.samples if start <= sent < end)
    if not samples:
        return 0, 0.0, float("nan"), float("nan")
    final = [latency for _, latency in samples if latency is not None]
    if not final:
        return len(samples), 0.0, float("nan"), float("nan")
    if client.open_loop:
        in_time = sum(1 for sent, latency in samples if latency is not None and sent + latency <= end + settle)
        rate = in_time / len(samples) / client.interval
    else:
        last_sent, last_latency = samples[-1]
        rate = len(final) / (last_sent + max(client.interval, last_latency or client.interval) - samples[0][0])
    return len(samples), rate, quantile(final, 0.5), p99(final)


def assert_fair(client: HonestClient, watch: ChainWatch, flood: tuple[float, float], *, honest: list[NodeProcess],
                attackers: dict[str, list[NodeProcess]], p99_floor: float, rss_growth_mb: float,
                recover: float = 5.0, max_stall: float = 3.0, late_blocks: int | None = 0,
                throughput_share: float = 0.95, p99_factor: float = 2.0, crowd: bool = False) -> FairReport:
    """The issue's pass criteria for a flood from `flood[0]` to `flood[1]` (monotonic clock), checked alike in every
    flood test; the honest client must have run before the flood and for a while from `recover` s after it:
    - no honest order lost: every order the client placed became final (201);
    - honest throughput during the flood (in an open loop: until `recover` s after it) and after it at least
      `throughput_share` (95 %) of the baseline (`honest_window`);
    - honest p99 during the flood at most `p99_factor` (2) times the baseline's, or `p99_floor` (the test states it:
      p99 of a few dozen orders is their maximum, and on two shared cores the baseline is tens of milliseconds);
      a test that cannot meet the issue's 95 % and 2x on this machine passes its own bounds and says why;
    - back to baseline `recover` s after it: p99 at most twice the baseline's (or the floor) and p50 at most twice
      the baseline's plus 20 ms (or half the floor: the machine is shared, and what runs beside the test changes
      between the windows);
    - the chain committed every round: at most `late_blocks` blocks decided after round 0 on any node while the
      flood lasts (None: any number, a test that says why) and none from `recover` s after it, no proposal refused
      anywhere, no node's height still for more than `max_stall` s, and /ready 200 throughout;
    - every node's RSS at most `rss_growth_mb` above its start;
    - each attacker held back (a budget's throttle), penalised or banned by every node in `attackers[id]`: the
      attack outran its budget and was stopped there. For a `crowd` of attackers sending alike, a node may leave
      some unheld: it read them no faster than their budgets (a budget takes nothing past itself, so an attacker
      never held never had more than its budget), so its CPU paced them, in turns shared by network
      (p2p/link_reading.py ReadTurns); the report counts them per node;
    - no honest node penalised or banned another, every honest link up, one state (`honest_nodes_intact`)."""
    start, end = flood
    first_sent = min((sent for sent, _ in client.samples), default=start)
    baseline = honest_window(client, first_sent, start)
    during = honest_window(client, start, end, settle=recover)
    after = honest_window(client, end + recover, float("inf"))
    assert not watch.errors, watch.errors[:10]
    watched_until = max(when for heights in watch.heights.values() for when, _ in heights)
    report = FairReport(baseline, during, after,
                        stalls={name: watch.longest_stall(name, first_sent, watched_until) for name in watch.heights},
                        late_blocks={name: watch.delta(name, "blocks_past_round_0") for name in watch.heights},
                        rss_growth={name: watch.rss_peak[name] - watch.rss_start[name] for name in watch.rss_peak})
    measured = f" (measured: {report.line()})"
    assert baseline[0] >= 5 and during[0] >= 1 and after[0] >= 3, "too few honest orders to judge" + measured
    lost = [(round(sent - start, 2), latency) for sent, latency in client.samples if latency is None]
    assert not lost, f"honest orders not final (sent at s from the flood's start): {lost}"
    assert during[1] >= throughput_share * baseline[1], \
        f"honest throughput during the flood under {throughput_share:.0%} of the baseline" + measured
    assert after[1] >= 0.95 * baseline[1], "honest throughput after the flood under 95 % of the baseline" + measured
    assert during[3] <= max(p99_factor * baseline[3], p99_floor), \
        f"honest p99 during the flood over {p99_factor:g}x the baseline's and {p99_floor:g} s" + measured
    assert after[3] <= max(2 * baseline[3], p99_floor) and after[2] <= max(2 * baseline[2] + 0.02, p99_floor / 2), \
        f"not back to baseline {recover:g} s after the flood" + measured

    refused = {name: watch.delta(name, "refused_proposals") for name in watch.heights}
    assert late_blocks is None or all(count <= late_blocks for count in report.late_blocks.values()), \
        f"more than {late_blocks} blocks decided after round 0" + measured
    after_flood = {name: watch.late_since(name, end + recover) for name in watch.late}
    assert not any(after_flood.values()), \
        f"blocks decided after round 0 from {recover:g} s after the flood: {after_flood}" + measured
    assert not any(refused.values()), f"proposals refused: {refused}"
    assert max(report.stalls.values()) <= max_stall, \
        f"a node's height stood still for {report.stalls} s (bound {max_stall} s)"
    unready = {name: spans[:5] for name, spans in watch.unready.items() if spans}
    assert not unready, f"/ready not 200: {unready}"
    assert max(report.rss_growth.values()) <= rss_growth_mb, f"RSS grew over {rss_growth_mb:g} MB" + measured

    free: dict[str, list[str]] = {}
    for attacker, targets in attackers.items():
        for node in targets:
            row = next((p for p in node.peers() if p["node_id"] == attacker), None)
            punished = row is not None and (row["status"] == "banned" or row.get("penalty", 0) > 0)
            if not (attacker in watch.held_back[node.name] or attacker in held_back(node.status()) or punished):
                free.setdefault(node.name, []).append(f"{attacker[:12]} (read {row and row['msgs_in']} messages)")
    assert crowd or not free, f"neither held back nor penalised: {free}" + measured
    report.paced_by_cpu = {name: len(ids) for name, ids in free.items()}
    honest_nodes_intact(honest)
    return report


async def stay_linked(peer: RawPeer, interval: float = 0.1, **heartbeat: Any) -> None:
    """Keep an attacker's link open while it waits or floods: a heartbeat every `interval` (with `heartbeat`'s
    fields: what it claims; a node drops a link silent for a few heartbeats) and whatever the node sends read and
    thrown away undecrypted (a full block pushed to a reader that never reads would overflow the node's send
    buffer and close the link). Cancel to stop."""
    async def read() -> None:
        while await peer.reader.read(1 << 16):
            pass
    reader = asyncio.create_task(read())
    try:
        while not peer.writer.is_closing():
            peer.send({"type": "heartbeat", "ts": time.time(), **heartbeat})
            await asyncio.sleep(interval)
    finally:
        reader.cancel()


@contextlib.asynccontextmanager
async def attacker_links(pairs: list[tuple[NodeIdentity, NodeProcess]], chain_id: str,
                         sources: Sequence[str | None] = ()) -> AsyncIterator[list[RawPeer]]:
    """An open link from each (identity, node) pair (from the loopback address `sources[i]`, if given), each kept
    alive (`stay_linked`) from the moment it opens (a link opened first would fall silent while the others are set
    up); all closed at the end."""
    peers: list[RawPeer] = []
    alive: list[asyncio.Task[None]] = []
    try:
        for index, (identity, node) in enumerate(pairs):
            source = sources[index] if index < len(sources) else None
            peers.append(await linked(node, identity, chain_id, source))
            alive.append(asyncio.create_task(stay_linked(peers[-1])))
        yield peers
    finally:
        for task in alive:
            task.cancel()
        for peer in peers:
            peer.close()


async def honest_baseline(client: HonestClient, orders: int = 20) -> float:
    """Start the honest client and wait until `orders` of its orders are answered: the baseline window. Returns
    when it ended (the flood's start)."""
    client.start()
    await asyncio.to_thread(wait_until, lambda: len(client.samples) >= orders, 30, 0.1, "the honest baseline")
    return time.monotonic()


async def honest_after(client: HonestClient, flood_end: float, recover: float = 5.0, orders: int = 20) -> None:
    """Wait until `orders` honest orders were sent from `recover` seconds after the flood's end (the after window)."""
    await asyncio.to_thread(wait_until, lambda: len(client.window(flood_end + recover, float("inf"))) >= orders, 30,
                            0.1, "the honest orders after the flood")


def settled(read: Callable[[], object], quiet: float = 1.0, limit: float = 30.0) -> float:
    """When `read()` (counters a node keeps as it reads a flood it was sent: its last send only put bytes in the
    kernel's buffers) last changed, once it has not for `quiet` seconds (at most `limit` after the call)."""
    seen, deadline = read(), time.monotonic() + limit
    changed_at = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - changed_at < quiet:
        time.sleep(0.2)
        now = read()
        if now != seen:
            seen, changed_at = now, time.monotonic()
    return changed_at


async def order_flood_for(validators: list[NodeProcess], flooder: NodeIdentity, chain_id: str, rate: float,
                          seconds: float) -> int:
    """One peer (`flooder`) offering every validator one-order transactions from fresh accounts at `rate` a second
    for `seconds`: each signed as it is sent (a validator past its budget stops reading the peer, so what is sent
    is what TCP takes, the budget's pace, and signing ahead would only fill the attacker's memory). Returns how many
    were sent."""
    async with attacker_links([(flooder, node) for node in validators], chain_id) as peers:
        started = time.monotonic()
        end = started + seconds
        sent = 0
        while time.monotonic() < end:
            for tx in spam_orders(chain_id, 50):
                for peer, node in zip(peers, validators):
                    peer.send(envelope("chain_tx", flooder.node_id, node.node_id, tx.wire()))
            sent += 50
            for peer in peers:
                try:
                    await asyncio.wait_for(peer.writer.drain(), max(0.01, end - time.monotonic()))
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(min(ahead, max(0.0, end - time.monotonic())))
        return sent
