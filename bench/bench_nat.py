"""NAT traversal on the WAN test network (issue 27; tests/integration/wan.py), real processes.

    python -m bench nat [--quick | --smoke]

- hole punching: for each pair of NATs (cone/cone, cone/symmetric, symmetric/symmetric), a public relay and
  one node behind each NAT; each try drops the pair's link, links again through the relay and times the
  punch to a direct link (`POST /debug/nat/punch`): success %, time to the relayed link and to the direct
  one (20 tries per pair; --quick 8, --smoke 1 of cone/cone and symmetric/symmetric).
- relayed vs direct: `POST /rpc/test.echo` from one NATed node to the other, first over a relayed link
  (HOLE_PUNCH=false), then over the punched direct link (the baseline): latency p50/p99 of small calls and
  throughput of 32 KiB calls, with the ratio.
- finality across sites: 4 validators on 4 public sites, 2 followers behind cone NATs; an order every
  200 ms at a follower, time until `POST /orders?wait` says final: p50/p99 with 0 ms between sites (the
  baseline) and with 50 ms one way (25 ms held at every site's edge).
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.table import print_table
from tests.harness import wait_until
from tests.integration.chain_nodes import node_ids
from tests.integration.netns import netns_unavailable, nft_unavailable
from tests.integration.wan import WanNet, WanNode, punch_pair, punch_trials

P2P_PORT = 7946
BIG = 32 * 1024      # bytes of an echo payload for throughput (under the control API's body limit)
BASE = {"heartbeat_interval": 0.5, "peer_reconnect_interval": 2.0, "p2p_port": P2P_PORT, "debug_api": "true",
        "hole_punch_cooldown": 0.001}   # each try is a new punch, often ms after the last


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _start(nodes: list[WanNode]) -> None:
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(30.0)


PAIRS = (["cone", "cone"], ["cone", "symmetric"], ["symmetric", "symmetric"])


def punching(tries: int, pairs: tuple[list[str], ...] = PAIRS) -> None:
    rows = []
    for kinds in pairs:
        base = Path(tempfile.mkdtemp(prefix="bench-nat-"))
        net, relay, a, b = punch_pair(base, kinds, "p", **BASE)
        try:
            results = punch_trials(relay, a, b, tries)
        finally:
            net.close()
        direct = [r["ms"] for r in results if r["direct"]]
        relayed = [r["relayed_ms"] for r in results if r["relayed_ms"] is not None]
        rows.append([f"{kinds[0]} / {kinds[1]}", tries, f"{100 * len(direct) / tries:.0f}",
                     _pct(relayed, 0.5) if relayed else "-", _pct(direct, 0.5) if direct else "-",
                     _pct(direct, 0.9) if direct else "-", "relay" if len(direct) < tries else "direct"])
    print_table("hole punching over NAT pairs: each try drops the link, links through the relay, times the punch "
                "(TCP simultaneous open, 3 attempts of 4 s)",
                ["NATs", "tries", "direct %", "relayed ms p50", "direct ms p50", "direct ms p90", "carried by"], rows)


def _echo(node: WanNode, peer: str, payload: str, n: int) -> tuple[list[float], float]:
    latencies = []
    started = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        status, body = node.api("POST", "/rpc/test.echo", {"peer": peer, "payload": payload, "timeout": 10})
        assert status == 200, body
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies, time.perf_counter() - started


def _wait_link(a: WanNode, peer: str, direct: bool) -> None:
    def linked() -> bool:
        return any(p["node_id"] == peer and (p["via"] is None) == direct
                   for p in a.peers() if p["status"] == "connected")
    wait_until(linked, 30, interval=0.3, message=f"a {'direct' if direct else 'relayed'} link")


LINKS = (("direct (punched)", "true"), ("relayed", "false"))


def relayed_vs_direct(calls: int, links: tuple[tuple[str, str], ...] = LINKS) -> None:
    """Each of `links` (its label, HOLE_PUNCH): the ratios are against the first."""
    rows: list[list[Any]] = []
    baseline: dict[str, float] = {}
    for label, punch in links:
        base = Path(tempfile.mkdtemp(prefix="bench-nat-"))
        net, _, a, b = punch_pair(base, ["cone", "cone"], "r", **(BASE | {"hole_punch": punch}))
        try:
            _wait_link(a, b.node_id, direct=punch == "true")
            small, _ = _echo(a, b.node_id, "x" * 100, calls)
            big, elapsed = _echo(a, b.node_id, "y" * BIG, max(5, calls // 4))
        finally:
            net.close()
        throughput = len(big) * BIG * 2 / elapsed / 1e6        # the payload goes there and back
        p50, p99 = _pct(small, 0.5), _pct(small, 0.99)
        baseline = baseline or {"p50": p50, "p99": p99, "tp": throughput}
        rows.append([label, calls, p50, p99, f"{p99 / baseline['p99']:.2f}", f"{throughput:.1f}",
                     f"{throughput / baseline['tp']:.2f}"])
    print_table("RPC over a relayed link vs the direct one (POST /rpc/test.echo between two NATed nodes; ms include "
                "the control API's round trip)",
                ["link", "calls", "p50 ms", "p99 ms", "p99 ratio", "32 KiB MB/s", "throughput ratio"], rows)


def _wait_chain(nodes: list[WanNode]) -> None:
    def formed() -> bool:
        return all(n.status()["quorum"] and n.status()["chain_id"] for n in nodes)
    wait_until(formed, 90, interval=0.5, message="validators and followers on one chain")


def _orders_every_200ms(followers: list[WanNode], seconds: float) -> tuple[int, list[float]]:
    """Resting orders at the followers in turn, one every 200 ms: how many, and ms until each was final."""
    latencies: list[float] = []
    lock = threading.Lock()

    def place(node: WanNode, i: int) -> None:
        t0 = time.perf_counter()
        status, body = node.api("POST", "/orders?wait=10", {"market": "BTC-USD", "side": "buy", "type": "post_only",
                                                            "price": f"{40 + i % 10}.00", "qty": "0.1"}, timeout=20)
        if status in (200, 201) and body.get("final") is not False:
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)

    threads = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        thread = threading.Thread(target=place, args=(followers[len(threads) % len(followers)], len(threads)),
                                  daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(0.2)
    for thread in threads:
        thread.join(30)
    return len(threads), latencies


def _follower_heights(node: WanNode) -> tuple[int, int]:
    """(heights made final from precommits, height) of a follower now."""
    status = node.status()
    return status["exchange"].get("decided_from_precommits", 0), status["height"]


def finality(seconds: float, edges: tuple[float, ...] = (0.0, 25.0)) -> None:
    """Each one-way delay of `edges` (ms, at each public site's edge): the p99 ratio is against the first."""
    rows: list[list[Any]] = []
    baseline = None
    for edge in edges:
        base = Path(tempfile.mkdtemp(prefix="bench-nat-"))
        net = WanNet(4, ["cone", "cone"], edge_delay_ms=edge)
        net.build()
        try:
            ids = node_ids(base, [f"v{i}" for i in range(4)])
            common = BASE | {"validators": ",".join(ids), "network_id": "bench-nat-finality",
                             "bootstrap_peers": ",".join(f"{h.address}:{P2P_PORT}" for h in net.public)}
            nodes = [net.node(base, host, f"v{i}", **common) for i, host in enumerate(net.public)]
            nodes += [net.node(base, site.hosts[0], f"f{i}", **common) for i, site in enumerate(net.sites)]
            _start(nodes)
            _wait_chain(nodes)
            # heights the followers make final from the precommits they are sent (precommit_quorum.py), of all
            before = [_follower_heights(n) for n in nodes[4:]]
            count, latencies = _orders_every_200ms(nodes[4:], seconds)
            after = [_follower_heights(n) for n in nodes[4:]]
            fast = sum(a[0] - b[0] for a, b in zip(after, before))
            decided = sum(a[1] - b[1] for a, b in zip(after, before))
        finally:
            net.close()
        p50, p99 = _pct(latencies, 0.5), _pct(latencies, 0.99)
        baseline = baseline or p99
        rows.append([f"{2 * edge:.0f} ms", count, len(latencies), p50, p99, f"{p99 / baseline:.2f}",
                     "yes" if p99 <= 300 else "no", f"{statistics.mean(latencies):.1f}" if latencies else "-",
                     f"{fast}/{decided}"])
    print_table("finality across sites: 4 validators on 4 public sites, followers behind cone NATs, an order every "
                "200 ms at a follower, ms until POST /orders?wait says final; 'from precommits': heights the "
                "followers made final from the precommits they were sent, of those they made final in the run "
                "(the rest by a decision message); goal at 50 ms one way: p50 <= 210, p99 <= 250",
                ["one-way delay", "orders", "final", "p50 ms", "p99 ms", "p99 ratio", "p99 <= 300 ms", "mean ms",
                 "from precommits"], rows)


def main(flags: list[str]) -> None:
    reason = netns_unavailable() or nft_unavailable()
    if reason:
        print(f"skipped: the WAN test network cannot be built here ({reason})")
        return
    if "--smoke" in flags:
        # one try of a pair that punches and one that cannot (which waits out its 8 s) show the table's two kinds of
        # row; the relayed link (the punched one is the first table's) and one delayed network show the other tables
        punching(1, (PAIRS[0], PAIRS[2]))
        relayed_vs_direct(10, LINKS[1:])
        finality(3.0, (25.0,))
    elif "--quick" in flags:
        punching(8)
        relayed_vs_direct(100)
        finality(15.0)
    else:
        punching(20)
        relayed_vs_direct(300)
        finality(30.0)
