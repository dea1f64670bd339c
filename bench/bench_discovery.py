"""Discovery convergence with real exchange-node processes.

1. Loopback, N nodes (default 30) that all know one bootstrap address: time until every node holds
   its target links (>= min(TARGET_OUTBOUND, N-1) = 8) and until every node knows >= 95% of the
   others (`p2p.known_nodes`). Peer exchange on, and off for comparison. Goals: <= 5 s to target
   links, <= 10 s to 95% knowledge. Anchors: BitTorrent PEX allows one message a minute per peer;
   Bitcoin Core waits 11 s before asking its DNS seeds.
   Then a late joiner (N+1th node, same bootstrap address) enters the settled network: time from
   launching it until it has target links / knows 95% / 100%, and until every node knows it
   ("start s" is its launch -> API up part).
2. mDNS only, M nodes (default 10) each in its own network namespace on a test-built bridge
   (needs root; skipped otherwise): time from launching the last node until every node has found
   every other and until they are fully linked; once with all M launched together, once with
   M-1 settled and the last launched alone. Goal: <= 2 s after the last node starts.

Loopback times are measured from the moment the last node's control API is up ("ready"); the
time from launching the first process is shown as "start s" (on 2 shared cores most of that is
Python start-up, during which discovery is already running).
Flags: --nodes=N, --mdns-nodes=M, --runs=R, --quick (1 run, pex-on only), --smoke (as --quick, with 4 loopback
and 2 mDNS nodes, each goal given at most 5 s), --no-mdns.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from bench.table import print_table
from tests.harness import Cluster, free_ports

TARGET = 8
POLL = 0.2
HEARTBEAT = 1.0  # the node's default (the test harness uses 0.5)


def _args(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"nodes": 30, "mdns_nodes": 10, "runs": 2, "quick": False, "mdns": True, "limit": 20.0}
    for arg in argv:  # `python -m bench` passes only dashed words: --nodes=30
        name, _, value = arg.partition("=")
        if name == "--quick":
            opts["quick"], opts["runs"] = True, 1
        elif name == "--smoke":
            opts.update(quick=True, runs=1, nodes=4, mdns_nodes=2, limit=5.0)
        elif name == "--no-mdns":
            opts["mdns"] = False
        elif name in ("--nodes", "--mdns-nodes", "--runs") and value:
            opts[name[2:].replace("-", "_")] = int(value)
    return opts


def _watch(nodes: list, since: float, limit: float, goals: dict[str, Callable[[list[dict]], bool]]) -> dict:
    """Poll every node's /status until each goal holds (or `limit` s pass); seconds since `since`."""
    reached: dict[str, float | None] = {name: None for name in goals}
    deadline = time.monotonic() + limit
    pool = ThreadPoolExecutor(max_workers=min(32, len(nodes)))
    while time.monotonic() < deadline and any(v is None for v in reached.values()):
        try:  # all nodes at once, so a poll takes as long as the slowest node, not the sum
            statuses = list(pool.map(lambda node: node.status(), nodes))
        except (OSError, AssertionError):
            statuses = None
        now = time.monotonic() - since  # poll end: every node had reached the goal by then
        if statuses is not None:
            for name, goal in goals.items():
                if reached[name] is None and goal(statuses):
                    reached[name] = now
        time.sleep(POLL)
    pool.shutdown()
    return reached


def _goals(n: int, links: int) -> dict[str, Callable[[list[dict]], bool]]:
    need = 0.95 * (n - 1)
    return {"links": lambda ss: all(s["p2p"]["peers_connected"] >= links for s in ss),
            "known95": lambda ss: all(s["p2p"]["known_nodes"] >= need for s in ss),
            "known100": lambda ss: all(s["p2p"]["known_nodes"] >= n - 1 for s in ss)}


def run_loopback(n: int, pex: bool, base: Path, limit: float = 20.0) -> dict:
    cluster = Cluster(base)
    try:
        port = free_ports(1)[0]
        launched = time.monotonic()
        common = {"discovery_pex": str(pex).lower(), "heartbeat_interval": HEARTBEAT}
        first = cluster.node("b0", start=False, p2p_port=port, **common)
        nodes = [first] + [cluster.node(f"b{i}", start=False, bootstrap_peers=f"127.0.0.1:{port}", **common)
                           for i in range(1, n)]
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready(120)
        ready = time.monotonic()
        reached = _watch(nodes, ready, limit, _goals(n, min(TARGET, n - 1)))
        statuses = [node.status() for node in nodes]
        links = [s["p2p"]["peers_connected"] for s in statuses]
        sent = sum(s["discovery"].get("pex", {}).get("sent", 0) for s in statuses)
        result = {"start_s": ready - launched, **reached, "links_min": min(links),
                  "links_avg": statistics.mean(links), "pex_msgs": sent, "load": os.getloadavg()[0]}
        if pex and reached["known100"] is not None:
            # a late joiner into the settled network, given the same single bootstrap address
            late = cluster.node("late", start=False, bootstrap_peers=f"127.0.0.1:{port}", heartbeat_interval=HEARTBEAT)
            joined = time.monotonic()  # from launch: its start-up counts
            late.start(wait=False)
            late.wait_ready(120)
            late_ready = time.monotonic() - joined
            need = 0.95 * n
            result["late"] = _watch([late], joined, limit, {
                "links": lambda ss: ss[0]["p2p"]["peers_connected"] >= min(TARGET, n),
                "known95": lambda ss: ss[0]["p2p"]["known_nodes"] >= need,
                "known100": lambda ss: ss[0]["p2p"]["known_nodes"] >= n})
            result["late"]["start_s"] = late_ready
            result["late"]["everyone_knows_it"] = _watch(nodes, joined, limit, {
                "all": lambda ss: all(s["p2p"]["known_nodes"] >= n for s in ss)})["all"]
        return result
    finally:
        cluster.close()


def run_mdns(m: int, base: Path, limit: float = 15.0) -> dict | str:
    from tests.integration.netns import NetnsLan, netns_unavailable

    reason = netns_unavailable()
    if reason:
        return reason
    goals = {"found_all": lambda ss: all(s["p2p"]["known_nodes"] >= m - 1 for s in ss),
             "links8": lambda ss: all(s["p2p"]["peers_connected"] >= min(TARGET, m - 1) for s in ss),
             "full_mesh": lambda ss: all(s["p2p"]["peers_connected"] >= m - 1 for s in ss)}
    rows = []
    for late_start in (False, True):
        # all m together; then m-1 settled first and the last one started alone
        with NetnsLan(m) as lan:
            nodes = [lan.node(base / f"late{late_start}", i, heartbeat_interval=HEARTBEAT, discovery_pex="false")
                     for i in range(m)]
            first_batch = nodes[:-1] if late_start else nodes
            for node in first_batch:
                node.start(wait=False)
            last_spawn = time.monotonic()
            for node in first_batch:
                node.wait_ready(120)
            if late_start:
                _watch(first_batch, time.monotonic(), limit, {"settled": lambda ss: all(
                    s["p2p"]["known_nodes"] >= m - 2 for s in ss)})
                nodes[-1].start(wait=False)
                last_spawn = time.monotonic()
            for node in nodes:
                node.wait_ready(120)
            ready = time.monotonic()
            reached = _watch(nodes, last_spawn, limit, goals)
            mdns_found = min(n.status()["discovery"]["mdns"]["found"] for n in nodes)
            rows.append({"case": "last node alone" if late_start else "all together",
                         "spawn_to_ready_s": ready - last_spawn, **reached,
                         "mdns_found_min": mdns_found, "load": os.getloadavg()[0]})
    return rows


def _fmt(value: Any) -> Any:
    return "not reached" if value is None else value


def main(argv: list[str]) -> None:
    opts = _args(argv)
    n = opts["nodes"]
    print(f"discovery: {n} loopback nodes from one bootstrap address, {opts['runs']} run(s); "
          f"{os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f} at start", flush=True)
    rows = []
    variants = [True] if opts["quick"] else [True, False]
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        for pex in variants:
            for run in range(opts["runs"] if pex else 1):
                r = run_loopback(n, pex, Path(tmp) / f"loop-{pex}-{run}", limit=opts["limit"] if pex else 8.0)
                rows.append([f"pex {'on' if pex else 'off'}", run + 1, r["start_s"], _fmt(r["links"]),
                             _fmt(r["known95"]), _fmt(r["known100"]), r["links_min"], r["links_avg"],
                             r["pex_msgs"], r["load"]])
                print(f"  pex={pex} run {run + 1}: {rows[-1][3:6]}", flush=True)
                if "late" in r:
                    late = r["late"]
                    rows.append([f"late joiner ({n + 1}th)", run + 1, late["start_s"], _fmt(late["links"]),
                                 _fmt(late["known95"]), _fmt(late["known100"]), "-", "-", "-", r["load"]])
                    rows[-1].append(_fmt(late["everyone_knows_it"]))
                    rows[-2].append("-")
        print_table(f"Discovery convergence, {n} nodes on loopback, one bootstrap address "
                    f"(seconds after the last node is ready; goals: links <= 5 s, 95% known <= 10 s)",
                    ["mode", "run", "start s", "target links s", "95% known s", "100% known s", "min links",
                     "avg links", "pex msgs", "load", "all know it s"], [r + ["-"] * (11 - len(r)) for r in rows])
        if opts["mdns"]:
            m = opts["mdns_nodes"]
            result = run_mdns(m, Path(tmp) / "mdns", min(15.0, opts["limit"]))
            if isinstance(result, str):
                print(f"\nmDNS namespace benchmark skipped: {result}")
            else:
                print_table(f"mDNS-only convergence, {m} nodes in {m} network namespaces on one bridge "
                            f"(seconds after the last node was launched; goal <= 2 s after the last node starts)",
                            ["case", "launch->API up s", "all found all s", "8 links s", "full mesh s",
                             "min mdns found", "load"],
                            [[r["case"], r["spawn_to_ready_s"], _fmt(r["found_all"]), _fmt(r["links8"]),
                              _fmt(r["full_mesh"]), r["mdns_found_min"], r["load"]] for r in result])
