"""Red-team tools for the Grenache HTTP endpoints of real nodes: raw HTTP/1.1 requests from chosen loopback source
addresses (127/8 is all on lo, so 127.0.N.x looks like another /24), an honest-latency probe (one Grenache-only
node's unicasts to another, each timed until it shows in the receiver's /debug/received) and a CPU/RSS sampler of
the attacked process (/proc/<pid>/stat and status, /proc/loadavg)."""
from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Coroutine

import orjson

from p2p.framing import encode_body
from tests.harness import NodeProcess, cpu_seconds, rss_kib


# --- raw HTTP -----------------------------------------------------------------------------------
def grenache_body(key: str, payload: Any, rid: str | None = None) -> bytes:
    return orjson.dumps([rid or str(uuid.uuid4()), key, payload])


def post_head(length: int | None, *, headers: dict[str, str] | None = None, version: str = "1.1",
              path: str = "/") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (headers or {"grc-compress": "none"}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(body: bytes, **kwargs: Any) -> bytes:
    return post_head(len(body), **kwargs) + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP response (Content-Length framed, as aiohttp answers): (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, await reader.readexactly(length)


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


def note_frames(count: int, payload: str = "flood") -> list[str]:
    """`count` valid-shaped broadcast frames (one id: the receiver drops the copies as seen)."""
    frame = base64.b64encode(encode_body({"type": "note", "id": "x" * 16, "origin": "0" * 40, "ts": time.time(),
                                          "hops": 0, "payload": payload})).decode()
    return [frame] * count


Attack = Callable[[threading.Event], Coroutine[Any, Any, None]]


class Background:
    """An async attack run in a thread with its own loop until `stop` (the nodes are other processes)."""

    def __init__(self, attack: Attack) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                asyncio.run(attack(self.stop))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc
        self.thread = threading.Thread(target=run, name="grenache-attack", daemon=True)

    def __enter__(self) -> "Background":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(20)


# --- measuring -----------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    return rss_kib(pid) / 1024


def loadavg() -> float:
    return float(open("/proc/loadavg").read().split()[0])


class Usage:
    """CPU seconds per wall second and peak RSS of `pid` while the block runs (RSS sampled every 0.2 s)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = self.rss_before = rss_mb(pid)
        self.cpu = 0.0
        self.load = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, rss_mb(self.pid))

    def __enter__(self) -> "Usage":
        self._t0, self._c0 = time.monotonic(), cpu_seconds(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = (cpu_seconds(self.pid) - self._c0) / (time.monotonic() - self._t0)
        self.rss_after = rss_mb(self.pid)
        self.load = loadavg()

    def __str__(self) -> str:
        return (f"cpu {self.cpu:.2f} s/s, rss {self.rss_before:.0f} -> peak {self.peak_rss:.0f} -> "
                f"{self.rss_after:.0f} MB, load {self.load:.2f}")


class Probe:
    """`sender` sends `receiver` one unicast every `interval` s (its /debug/send) in a thread; each is timed until
    it shows in the receiver's /debug/received (polled every 0.1 s)."""

    def __init__(self, sender: NodeProcess, receiver: NodeProcess, interval: float = 0.25) -> None:
        self.sender, self.receiver, self.interval = sender, receiver, interval
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self.outcomes: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]

    def _send(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                _, answer = self.sender.api("POST", "/debug/send", {"node_id": self.receiver.node_id,
                                                                    "payload": {"probe": n}})
                self.sent[answer["id"]] = time.monotonic()
                self.outcomes[answer.get("outcome")] = self.outcomes.get(answer.get("outcome"), 0) + 1
            except Exception:  # noqa: BLE001 - a busy sender API is part of what is measured
                self.outcomes["api_error"] = self.outcomes.get("api_error", 0) + 1
            n += 1
            self._stop.wait(self.interval)

    def _watch(self) -> None:
        while not self._stop.is_set() or len(self.seen) < len(self.sent):
            try:
                rows = self.receiver.get("/debug/received?type=note")["received"]
            except Exception:  # noqa: BLE001
                rows = []
            now = time.monotonic()
            for row in rows:
                self.seen.setdefault(row[0], now)
            if self._stop.is_set() and time.monotonic() > self._stopped + 15:
                return
            time.sleep(0.1)

    def start(self) -> "Probe":
        for thread in self._threads:
            thread.start()
        return self

    def mark(self) -> float:
        return time.monotonic()

    def finish(self) -> None:
        self._stopped = time.monotonic()
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def latencies(self, since: float = 0.0, until: float = float("inf")) -> tuple[list[float], int]:
        """(delivery latencies of the unicasts sent in [since, until), how many of them never arrived)."""
        chosen = [i for i, t in self.sent.items() if since <= t < until]
        got = sorted(self.seen[i] - self.sent[i] for i in chosen if i in self.seen)
        return got, len(chosen) - len(got)


def p99(values: list[float]) -> float:
    if not values:
        return float("inf")
    return values[min(len(values) - 1, int(len(values) * 0.99))]


# --- an honest sender before and during an attack ----------------------------------------------
@dataclass
class AttackWindow:
    """What an honest sender's unicasts met before and during an attack on their receiver, and what it cost."""

    started: float
    ended: float
    before: list[float]             # delivery latencies of the unicasts sent before the attack
    lost_before: int
    during: list[float]             # ... and of those sent during it, from `settle` s in
    lost: int
    failed: int                     # the sender's Grenache requests that failed while the attack ran
    outcomes: dict[str, int]        # how the sender's /debug/send answered
    limits: dict[str, Any]          # the receiver's message-path limits once it ended
    usage: Usage                    # the receiver's CPU and RSS while it ran
    error: BaseException | None     # what the attack raised, if anything

    def honest(self) -> str:
        p50 = self.during[len(self.during) // 2] if self.during else None
        return (f"honest p99 {p99(self.before):.3f} s before ({len(self.before)}, lost {self.lost_before}), "
                f"{p99(self.during):.3f} s during ({len(self.during)}, lost {self.lost}), p50 {p50}; "
                f"a's requests failed {self.failed}, outcomes {self.outcomes}")


def honest_under_attack(sender: NodeProcess, receiver: NodeProcess, attack: Attack, *, seconds: float = 16.0,
                        warmup: float = 3.0, settle: float = 2.0, interval: float = 0.25) -> AttackWindow:
    """`sender` sends `receiver` a unicast every `interval` s for `warmup` s, then while `attack` runs for
    `seconds`; the unicasts of its first `settle` s are in neither window."""
    def failed_requests() -> int:
        return int(sender.status()["router"]["grenache"]["counters"]["requests_failed"])

    assert receiver.proc is not None
    probe = Probe(sender, receiver, interval=interval).start()
    time.sleep(warmup)
    failed_before = failed_requests()
    with Usage(receiver.proc.pid) as usage, Background(attack) as background:
        started = time.monotonic()
        time.sleep(seconds)
        ended = time.monotonic()
    probe.finish()
    before, lost_before = probe.latencies(until=started)
    during, lost = probe.latencies(since=started + settle, until=ended)
    return AttackWindow(started, ended, before, lost_before, during, lost, failed_requests() - failed_before,
                        dict(probe.outcomes), receiver.status()["router"]["grenache"]["limits"], usage,
                        background.error)
