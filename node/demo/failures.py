"""`exchange-node demo failures`: the design's failure scenarios against live workers.

Three worker nodes serve `test.echo`; a client sends it a steady load through the adaptive router
while an observer sends a lighter one (so it knows the workers and takes hints about them). Each
scenario hurts one worker (or the Grape) and measures, from the processes themselves:

- time to detect: from the fault until the client's router marks the worker (breaker not closed,
  error rate >= 20%, latency >= 3x the others', or the link gone);
- time to route away: until the worker gets under 5% of the client's attempts from then until
  the repair;
- hint propagation: until a hint about the worker (DEGRADED) is live at the node that did not see
  the fault itself (the observer; for false gossip, the client);
- recovery: from the repair until the worker is served again (a bucket with attempts to it that
  starts a second in which it gets a third of its fair share; for false gossip and the Grape,
  until the hint is gone / the Grape is seen again).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TypedDict, cast

from node.cli.client import JsonObject
from node.demo.process import DemoNode, Processes, wait_for, work_dir

SERVICE = "test.echo"
CLIENT_RATE = 150.0
OBSERVER_RATE = 20.0
BUCKET = 0.1
NODE_SETTINGS: dict[str, object] = {"hint_ttl": 5.0, "rpc_warmup": 0.0}
REPO_JS = Path(__file__).resolve().parents[2] / "tests" / "interop" / "js"

# A measured time in seconds, None when it was not seen in time, or a word where it does not apply ("-", "never")
Mark = float | str | None


class ScenarioRow(TypedDict):
    """One scenario's line of the table (`attempts`: the client's load per bucket, as _shares gives it)."""

    scenario: str
    detect_s: Mark
    route_away_s: Mark
    hint_s: Mark
    recovery_s: Mark
    client_errors: str
    note: str
    attempts: list[tuple[float, int, int]]


class FailuresReport(TypedDict):
    rows: list[ScenarioRow]
    seconds: float
    pids: list[int]
    load: str


class Grape:
    """One real grape (Node.js) on loopback, for the Grape crash; `start()` again reuses its ports."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.dht_port, self.api_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        if shutil.which("node") is None:
            return "node (Node.js) is not installed"
        if not (REPO_JS / "node_modules" / "grenache-grape").exists():
            return f"grenache-grape is not installed in {REPO_JS} (make npm-deps)"
        return None

    def start(self) -> None:
        args = ["node", "grape.js", "--dp", str(self.dht_port), "--aph", str(self.api_port), "--b", "127.0.0.1",
                "--bn", f"127.0.0.1:{self.dht_port}", "--dpa", "120000", "--check_maxPayloadSize", "8192"]
        self.proc = self.processes.add(subprocess.Popen(args, cwd=REPO_JS, stdout=subprocess.DEVNULL,
                                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _free_port() -> int:
    import socket

    with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        return cast("int", port)


class Lab:
    """The live nodes: workers, client, observer (and a grape, when Node.js is here)."""

    def __init__(self, base: Path, processes: Processes, grape: Grape | None) -> None:
        extra = dict(NODE_SETTINGS)
        if grape is not None:
            extra |= {"discovery_grenache": "true", "grape_urls": grape.url}
        self.workers = [DemoNode(processes, base / f"worker{i}", **extra) for i in range(3)]
        self.workers[0].start()
        for worker in self.workers[1:]:
            worker.settings["bootstrap_peers"] = self.workers[0].p2p_address
            worker.start(wait=False)
        self.client = DemoNode(processes, base / "client", bootstrap_peers=self.workers[0].p2p_address, **extra)
        self.observer = DemoNode(processes, base / "observer", bootstrap_peers=self.workers[0].p2p_address, **extra)
        for node in (self.client, self.observer):
            node.start(wait=False)
        for node in (*self.workers[1:], self.client, self.observer):
            node.wait_ready()
        ids = {w.node_id for w in self.workers}
        for node in (self.client, self.observer):
            wait_for(lambda: ids <= set(self.providers(node)), 20,  # noqa: B023 - polled in this iteration
                     f"{node.data_dir.name} to see every worker")
        self.fair = 1.0 / len(self.providers(self.client))   # the observer serves test.echo too

    @staticmethod
    def providers(node: DemoNode) -> list[str]:
        return cast("list[str]", node.get("/routing")["services"].get(SERVICE, {}).get("providers", []))

    @staticmethod
    def row(node: DemoNode, subject: str) -> JsonObject | None:
        return cast("JsonObject | None", node.get("/routing")["services"].get(SERVICE, {}).get("peers", {}).get(subject))


class Run:
    """One scenario's timeline: loads in the background, the fault and the repair, polled marks."""

    def __init__(self, lab: Lab, subject: str, seconds: float) -> None:
        self.lab = lab
        self.subject = subject
        self.seconds = seconds
        self.loads: dict[str, JsonObject] = {}
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._load, args=(name, node, rate), daemon=True)
                        for name, node, rate in (("client", lab.client, CLIENT_RATE),
                                                 ("observer", lab.observer, OBSERVER_RATE))]
        for thread in self.threads:
            thread.start()

    def _load(self, name: str, node: DemoNode, rate: float) -> None:
        try:
            self.loads[name] = node.post("/debug/rpc-load", {"service": SERVICE, "rate": rate, "seconds": self.seconds,
                                                             "bucket": BUCKET, "timeout": 1.0},
                                         timeout=self.seconds + 30)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the demo goes on
            self.loads[name] = {"error": str(exc)}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def at(self, t: float) -> None:
        time.sleep(max(0.0, t - self.now()))

    def watch(self, until: float, marks: dict[str, Callable[[], bool]], since: float) -> dict[str, float | None]:
        """Poll each mark (every 50 ms) until `until`; when each first held, in s after `since`."""
        found: dict[str, float | None] = dict.fromkeys(marks)
        while self.now() < until and any(v is None for v in found.values()):
            for name, mark in marks.items():
                if found[name] is None:
                    try:
                        hit = mark()
                    except Exception:  # noqa: BLE001 - a node being restarted does not answer for a moment
                        hit = False
                    if hit:
                        found[name] = round(self.now() - since, 2)
            time.sleep(0.05)
        return found

    def finish(self) -> JsonObject:
        for thread in self.threads:
            thread.join(self.seconds + 40)
        return self.loads.get("client", {})


def _bad(lab: Lab, subject: str) -> bool:
    services = lab.client.get("/routing")["services"].get(SERVICE, {})
    rows = services.get("peers", {})
    row = rows.get(subject)
    if row is None or not row.get("connected", True) or subject not in services.get("providers", []):
        return True
    others = [r["latency_ms"] for p, r in rows.items() if p != subject and r.get("latency_ms")]
    slow = others and row.get("latency_ms") and row["latency_ms"] >= 3 * statistics.median(others)
    return row.get("breaker") != "closed" or (row.get("error_rate") or 0) >= 0.2 or bool(slow)


def _hint_at(node: DemoNode, subject: str, status: str = "DEGRADED") -> bool:
    row = Lab.row(node, subject)
    return bool(row and row.get("hint") and row["hint"].get("status") == status)


def _shares(load: JsonObject, subject: str) -> list[tuple[float, int, int]]:
    """(bucket end, attempts to the subject, all attempts) per bucket of the client's load."""
    return [(b["t"], b["attempts"].get(subject, 0), sum(b["attempts"].values())) for b in load.get("buckets", [])]


def _window_share(shares: list[tuple[float, int, int]], start: float, end: float) -> float | None:
    attempts = [(n, total) for t, n, total in shares if start < t <= end + 1e-9]
    total = sum(total for _, total in attempts)
    return sum(n for n, _ in attempts) / total if total else None


def _routed_away(shares: list[tuple[float, int, int]], fault: float, repair: float) -> float | None:
    """From the fault until the worker got under 5% of the client's attempts for good (up to the
    repair, at least a second of them). Single buckets say little: the router sends a healthy peer
    nothing for up to a second now and then, when others answer a hair faster."""
    for t, _, _ in shares:
        start = t - BUCKET
        if start < fault - 1e-9:
            continue
        if repair - start < 1.0:
            return None
        share = _window_share(shares, start, repair)
        if share is not None and share < 0.05:
            return round(start - fault, 2)
    return None


def _recovered(shares: list[tuple[float, int, int]], repair: float, fair: float, span: float = 1.0) -> float | None:
    """From the repair until the worker is served again: the first bucket after it that sends the
    worker attempts and starts `span` seconds in which it gets a third of its fair share (an
    avoided worker gets 1-3%: exploration only)."""
    end = shares[-1][0] if shares else 0.0
    for t, n, _ in shares:
        start = t - BUCKET
        if start < repair - 1e-9 or not n:
            continue
        if start + span > end + 1e-9:
            return None
        share = _window_share(shares, start, start + span)
        if share is not None and share >= fair / 3:
            return round(start - repair, 2)
    return None


def _errors(load: JsonObject) -> str:
    if "error" in load:
        return f"load failed: {load['error'][:40]}"
    return f"{load.get('failed', 0)} of {load.get('sent', 0)}"


def _row(name: str, detect: Mark, away: Mark, hint: Mark, recovery: Mark, load: JsonObject, note: str,
         shares: list[tuple[float, int, int]] | None = None) -> ScenarioRow:
    return {"scenario": name, "detect_s": detect, "route_away_s": away, "hint_s": hint, "recovery_s": recovery,
            "client_errors": _errors(load), "note": note, "attempts": shares or []}


def crash(lab: Lab) -> ScenarioRow:
    victim = lab.workers[1]
    run = Run(lab, victim.node_id, 11.0)
    run.at(2.0)
    victim.kill()
    fault = run.now()
    marks = run.watch(5.0, {"detect": lambda: _bad(lab, victim.node_id),
                            "hint": lambda: _hint_at(lab.observer, victim.node_id)}, fault)
    run.at(5.0)
    victim.start(wait=False)
    repaired = run.now()
    victim.wait_ready()
    load = run.finish()
    shares = _shares(load, victim.node_id)
    return _row("crash (kill -9, restart at 5 s)", marks["detect"], _routed_away(shares, fault, repaired),
                marks["hint"], _recovered(shares, repaired, lab.fair), load, "recovery includes the restart", shares)


def _fault(name: str, fault: dict[str, float], note: str) -> Callable[[Lab], ScenarioRow]:
    def scenario(lab: Lab) -> ScenarioRow:
        victim = lab.workers[2]
        run = Run(lab, victim.node_id, 11.0)
        run.at(2.0)
        victim.post("/debug/rpc-fault", fault)
        start = run.now()
        marks = run.watch(6.0, {"detect": lambda: _bad(lab, victim.node_id),
                                "hint": lambda: _hint_at(lab.observer, victim.node_id)}, start)
        run.at(6.0)
        victim.post("/debug/rpc-fault", {})
        repaired = run.now()
        load = run.finish()
        shares = _shares(load, victim.node_id)
        return _row(name, marks["detect"], _routed_away(shares, start, repaired), marks["hint"],
                    _recovered(shares, repaired, lab.fair), load, note, shares)
    return scenario


def false_gossip(lab: Lab) -> ScenarioRow:
    """The observer lies: DEGRADED hints about a healthy worker, 2 a second for 4 s."""
    victim = lab.workers[0]
    run = Run(lab, victim.node_id, 12.0)
    run.at(2.0)
    start = run.now()
    marks: dict[str, float | None] = {"hint": None}
    while run.now() < 6.0:
        lab.observer.post("/debug/rpc-hint", {"subject": victim.node_id, "status": "DEGRADED", "service": SERVICE})
        got = run.watch(run.now() + 0.5, {"hint": lambda: _hint_at(lab.client, victim.node_id)}, start)
        marks["hint"] = marks["hint"] if marks["hint"] is not None else got["hint"]
    stopped = run.now()
    gone = run.watch(12.0, {"gone": lambda: not _hint_at(lab.client, victim.node_id)}, stopped)
    load = run.finish()
    shares = _shares(load, victim.node_id)
    before, during = _window_share(shares, 0.0, start), _window_share(shares, start, stopped)
    kept = "no data" if before is None or during is None else f"share {before:.0%} before, {during:.0%} while lied about"
    away = _routed_away(shares, start, stopped)
    return _row("false gossip (lying hints)", "-", away if away is not None else "never", marks["hint"],
                gone["gone"], load, kept, shares)


def grape_crash(lab: Lab, grape: Grape | None) -> ScenarioRow:
    if grape is None:
        return _row("grape crash", "-", "-", "-", "-", {}, f"skipped: {Grape.missing()}")
    subject = lab.workers[0].node_id
    run = Run(lab, subject, 10.0)

    def grape_state() -> str:
        return cast("str", (lab.client.get("/status")["router"].get("grenache") or {}).get("grape", "?"))

    wait_for(lambda: grape_state() == "up", 10, "the client to reach the grape")
    run.at(2.0)
    grape.kill()
    fault = run.now()
    detect = run.watch(7.0, {"detect": lambda: grape_state() == "down"}, fault)["detect"]
    run.at(6.0)
    grape.start()
    repaired = run.now()
    back = run.watch(10.0, {"back": lambda: grape_state() == "up"}, repaired)["back"]
    load = run.finish()
    return _row("grape crash (kill -9, restart at 6 s)", detect, "not needed", "-", back, load,
                "links carry on; recovery = grape seen again")


SCENARIOS: dict[str, Callable[[Lab], ScenarioRow]] = {
    "crash": crash,
    "slow": _fault("slow (+100 ms per answer)", {"delay": 0.1}, ""),
    "flaky": _fault("flaky (50% internal errors)", {"fail": 0.5}, ""),
    "false_gossip": false_gossip,
}


def run_failures(base: Path | None = None, scenarios: tuple[str, ...] = (*SCENARIOS, "grape_crash"),
                 say: Callable[[str], None] = print) -> FailuresReport:
    owned = base is None
    base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="exchange-node-failures-"))
    processes = Processes()
    rows = []
    started = time.monotonic()
    with work_dir(base, owned, say), processes:
        grape = None
        if "grape_crash" in scenarios and Grape.missing() is None:
            grape = Grape(processes)
            grape.start()
        lab = Lab(base, processes, grape)
        say(f"3 workers, a client at {CLIENT_RATE:g} req/s and an observer at {OBSERVER_RATE:g} req/s are up")
        for name in scenarios:
            say(f"scenario {name} ...")
            rows.append(grape_crash(lab, grape) if name == "grape_crash" else SCENARIOS[name](lab))
    one, five, _ = os.getloadavg()
    return {"rows": rows, "seconds": round(time.monotonic() - started, 1), "pids": processes.pids,
            "load": f"{one:.2f} {five:.2f} ({os.cpu_count()} cores)"}


def render(report: FailuresReport) -> str:
    def cell(value: Mark) -> str:
        if value is None:
            return "not seen"
        return f"{value:.2f} s" if isinstance(value, (int, float)) else str(value)

    header = ("scenario", "detect", "route away", "hint spread", "recovery", "client errors", "note")
    rows = [header] + [(r["scenario"], cell(r["detect_s"]), cell(r["route_away_s"]), cell(r["hint_s"]),
                        cell(r["recovery_s"]), r["client_errors"], r["note"]) for r in report["rows"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"times from the fault (or the repair, for recovery), measured on the live processes "
                 f"({BUCKET:g} s buckets, marks polled every 50 ms); whole demo {report['seconds']} s; "
                 f"load average {report['load']}")
    return "\n".join(lines)
