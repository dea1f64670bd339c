"""`exchange-node demo storm`: a restart storm without and with storm protection, side by side.

A target node serves `test.echo` with a limited capacity (CAPACITY answers/s, QUEUE waiting; past
that it answers `overloaded` at once). For each protection mode a fresh node starts (a restart),
links to the target and releases PENDING requests at once (node/api/debug_backlog.py), resubmitting each
until it is delivered. Everything in the table is measured on those processes in this run.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, TypedDict, cast

from node.cli.client import JsonObject
from node.demo.process import DemoNode, Processes, wait_for, work_dir

PENDING = 2000
CAPACITY = 300.0          # the target's answers per second
QUEUE = 100.0             # requests it lets wait before it refuses
DEADLINE = 30.0           # s each run may take to deliver everything
WARMUP = {"rpc_warmup": 10.0, "rpc_warmup_rate": 2 * CAPACITY, "rpc_warmup_start": 1.0}  # 1/s up to 600/s


class StormReport(TypedDict):
    """The measurements: one run per protection mode, each POST /debug/rpc-backlog's answer (debug_backlog.py)
    with the mode, what the target served and the rate limit in force added."""

    pending: int
    capacity: float
    runs: list[JsonObject]
    seconds: float
    pids: list[int]
    load: str


def run_storm(base: Path | None = None, modes: tuple[str, ...] = ("off", "on"), pending: int = PENDING,
              capacity: float = CAPACITY, deadline: float = DEADLINE,
              say: Callable[[str], None] = print) -> StormReport:
    """Run the story once per mode; returns the measurements (and the PIDs it started, all ended)."""
    owned = base is None
    base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="exchange-node-storm-"))
    processes = Processes()
    runs: list[JsonObject] = []
    started = time.monotonic()
    with work_dir(base, owned, say), processes:
        target = DemoNode(processes, base / "target").start()
        target.post("/debug/rpc-fault", {"capacity": capacity, "queue": QUEUE})
        say(f"target {target.node_id[:12]} serves test.echo at {capacity:g}/s with {QUEUE:g} waiting at most")
        for mode in modes:
            runs.append(_run(processes, base, target, mode, pending, deadline, say))
    return {"pending": pending, "capacity": capacity, "runs": runs, "seconds": round(time.monotonic() - started, 1),
            "pids": processes.pids, "load": _load()}


def _run(processes: Processes, base: Path, target: DemoNode, mode: str, pending: int, deadline: float,
         say: Callable[[str], None]) -> JsonObject:
    node = DemoNode(processes, base / f"restarted-{mode}", protection_mode=mode, bootstrap_peers=target.p2p_address,
                    **WARMUP).start()
    wait_for(lambda: target.node_id in node.get("/routing")["services"].get("test.echo", {}).get("providers", []),
             15, "the restarted node to link to the target")
    served_before = target.get("/routing")["server"]
    say(f"protection {mode}: a restarted node releases {pending} pending requests ...")
    result = node.post("/debug/rpc-backlog", {"service": "test.echo", "count": pending, "deadline": deadline,
                                              "timeout": 5.0, "bucket": 0.1}, timeout=deadline + 30)
    served_after = target.get("/routing")["server"]
    node.stop()
    result["mode"] = mode
    result["target"] = {key: served_after.get(key, 0) - served_before.get(key, 0)
                        for key in ("answered", "errors", "overloaded")}
    result["limit_summary"] = (_limit_summary(result["limits"], target.node_id) if mode == "on"
                               else f"none applied ({mode})")
    return cast(JsonObject, result)


def _limit_summary(limits: JsonObject, target: str) -> str:
    parts = []
    if limits.get("warmup_rate") is not None:
        parts.append(f"warm-up {limits['warmup_rate']:g}/s")
    peer = limits.get("peers", {}).get(target) or {}
    if peer.get("concurrency_limit") is not None:
        parts.append(f"AIMD {peer['concurrency_limit']} in flight")
    if peer.get("breaker") not in (None, "closed"):
        parts.append(f"breaker {peer['breaker']}")
    if limits.get("throttle_reject_probability"):
        parts.append(f"shed {limits['throttle_reject_probability']:.0%}")
    return ", ".join(parts) or "-"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def render(report: StormReport) -> str:
    """The before/after table."""
    rows = [("", *(f"protection {run['mode']}" for run in report["runs"]))]

    def row(label: str, cell: Callable[[JsonObject], str]) -> None:
        rows.append((label, *(cell(run) for run in report["runs"])))

    row("peak requests/s", lambda r: f"{r['peak_rate']:,.0f}")
    row("first second requests/s", lambda r: f"{r['first_second_rate']:,.0f}")
    row("attempts sent", lambda r: f"{r['attempts']:,}")
    row("error rate (attempts)", lambda r: "-" if r["error_rate"] is None else f"{r['error_rate']:.1%}")
    row("shed locally", lambda r: f"{r['local_rejects']:,}")
    row("target answers / refusals", lambda r: f"{r['target']['answered']:,} / "
        f"{r['target']['errors'] + r['target']['overloaded']:,}")
    row("p95 latency (sent to answer)", lambda r: "-" if r["latency_p95_ms"] is None else f"{r['latency_p95_ms']:,.0f} ms")
    row("breaker state changes", lambda r: f"{r['breaker_transitions']}" + ("" if r["mode"] == "on" else " (not applied)"))
    row("rate limit at the end", lambda r: r["limit_summary"])
    row("delivered", lambda r: f"{r['delivered']:,} / {r['pending']:,} ({r['delivered'] / r['pending']:.0%})")
    row("time to deliver everything", lambda r: "not all" if r["all_delivered_s"] is None
        else f"{r['all_delivered_s']:.1f} s")
    widths = [max(len(line[i]) for line in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append("")
    lines.append(f"{report['pending']:,} pending requests, target capacity {report['capacity']:g}/s; "
                 f"whole demo {report['seconds']} s; load average {report['load']}")
    return "\n".join(lines)
