"""Real Grenache (Node.js) processes for tests and benchmarks: grapes, workers and the helper scripts.

Network choice: grapes run on the HOST loopback, not in a network namespace. A process inside a
namespace is unreachable from the host's 127.0.0.1, and the Python nodes other tests start live on
the host loopback and must reach the grape HTTP API. Stock `grape` binds its DHT UDP socket on every
interface, so we start it through `js/grape.js`, which binds that socket to 127.0.0.1 and is
otherwise the unchanged CLI; `--b 127.0.0.1` keeps the HTTP API on loopback, `--bn` names only
loopback peers, and `--dpa` / `--check_maxPayloadSize` are always given. The Node workers bind
127.0.0.1 too (js/common.js `bindLoopback`). Every process is ended by its own PID only.

The pytest fixtures `require_node`, `grapes` and `node_worker` are defined at the end of this module
(conftest.py imports them; other directories can import them too, see conftest.py).
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import pytest

JS_DIR = Path(__file__).resolve().parent / "js"
NODE_PACKAGES = ("grenache-grape", "grenache-nodejs-link", "grenache-nodejs-http", "bittorrent-dht")
DEFAULT_DPA_MS = 120_000
DEFAULT_MAX_PAYLOAD = 8192


def node_missing_reason() -> str | None:
    """Why the Node side cannot run here, or None when node and the npm packages are installed."""
    if shutil.which("node") is None:
        return "node is not installed (Grenache interop needs Node.js >= 16)"
    missing = [p for p in NODE_PACKAGES if not (JS_DIR / "node_modules" / p / "package.json").exists()]
    if missing:
        return (f"npm packages missing in {JS_DIR}/node_modules: {', '.join(missing)} "
                f"(run `make npm-deps` or `cd tests/interop/js && npm install --no-audit --no-fund`)")
    return None


def free_port(kinds: Sequence[int] = (socket.SOCK_STREAM, socket.SOCK_DGRAM)) -> int:
    """A loopback port currently free for every socket kind given (TCP and UDP by default)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kinds[0]) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                for kind in kinds[1:]:
                    with socket.socket(socket.AF_INET, kind) as other:
                        other.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port found")


def http_post_json(url: str, data: Any, timeout: float = 1.0) -> Any:
    """Synchronous POST {"rid", "data"} to a grape; returns the decoded answer (None for an empty body)."""
    body = json.dumps({"rid": str(uuid.uuid4()), "data": data}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:     # a loopback test Grape
        raw = resp.read()
    return json.loads(raw) if raw.strip() else None


class NodeProcess:
    """One Node.js child process, output captured to a temp file, stopped by its PID."""

    def __init__(self, args: Sequence[str], name: str) -> None:
        self.name = name
        self.args = list(args)
        self.log = tempfile.NamedTemporaryFile(prefix=f"grenache-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(["node", *self.args], cwd=JS_DIR, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM this PID, SIGKILL it after `grace` seconds, reap it, delete the log."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class GrapeCluster(Sequence[str]):
    """Real grapes on loopback, joined in one DHT; behaves as the list of their URLs.

    `stop()` ends every grape; `start()` brings them back on the SAME ports (a fresh, empty DHT).
    """

    def __init__(self, count: int = 2, *, dpa_ms: int = DEFAULT_DPA_MS,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.dpa_ms = dpa_ms
        self.max_payload = max_payload
        taken: set[int] = set()
        self.dht_ports = [self._pick(taken) for _ in range(count)]
        self.api_ports = [self._pick(taken) for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.api_ports]
        self.procs: list[NodeProcess] = []

    @staticmethod
    def _pick(taken: set[int]) -> int:
        while (port := free_port()) in taken:
            pass
        taken.add(port)
        return port

    def __getitem__(self, index):
        return self.urls[index]

    def __len__(self) -> int:
        return len(self.urls)

    def __iter__(self) -> Iterator[str]:
        return iter(self.urls)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def running(self) -> bool:
        return bool(self.procs) and all(p.alive() for p in self.procs)

    def start(self, timeout: float = 15.0) -> "GrapeCluster":
        """Start every grape on its ports and wait until the DHT connects them.

        The first grape bootstraps to itself and the others to the first, started once it answers:
        a grape whose bootstrap peer is not listening yet blocks every API call until its DHT
        bootstrap times out (about 2.5 s), which parallel starts hit half of the time.
        """
        if self.procs:
            raise RuntimeError("grapes already running")
        deadline = time.monotonic() + timeout
        try:
            for i in range(len(self.urls)):
                anchor = f"127.0.0.1:{self.dht_ports[0]}"
                self.procs.append(NodeProcess([
                    "grape.js", "--dp", str(self.dht_ports[i]), "--aph", str(self.api_ports[i]), "--b", "127.0.0.1",
                    "--bn", anchor, "--dpa", str(self.dpa_ms), "--check_maxPayloadSize", str(self.max_payload)],
                    name=f"grape{i}"))
                if i == 0 or i == len(self.urls) - 1:
                    self._wait_answering(range(i + 1) if i else [0], deadline)
            self._wait_connected(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_answering(self, indexes: Iterable[int], deadline: float) -> None:
        probe = f"__interop_probe_{uuid.uuid4().hex[:8]}"
        for i in indexes:
            url = self.urls[i]
            while True:
                if not self.procs[i].alive():
                    raise RuntimeError(f"grape {url} exited:\n{self.procs[i].output()[-2000:]}")
                try:
                    if http_post_json(f"{url}/lookup", probe, timeout=0.5) == []:
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"grape {url} did not answer in time; its output:\n"
                                       f"{self.procs[i].output()[-2000:]}")
                time.sleep(0.02)

    def _wait_connected(self, deadline: float) -> None:
        """An announce on each grape must be visible on every other grape."""
        for i, source in enumerate(self.urls):
            probe = f"__interop_ready_{i}_{uuid.uuid4().hex[:8]}"
            http_post_json(f"{source}/announce", [probe, 1])
            for url in self.urls:
                while not http_post_json(f"{url}/lookup", probe):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"grape DHT not connected: {url} never saw an announce on {source}")
                    time.sleep(0.02)
                    http_post_json(f"{source}/announce", [probe, 1])

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        for proc in procs:
            proc.stop()

    def restart(self, timeout: float = 15.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> "GrapeCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NodeWorker:
    """`js/worker.js`: a grenache-nodejs-http worker announcing `service` on `grape_url`."""

    def __init__(self, grape_url: str, service: str, *, worker_id: str = "node-worker",
                 interval_ms: int = 1000) -> None:
        self.service = service
        self.process = NodeProcess(["worker.js", "--grape", grape_url, "--service", service, "--id", worker_id,
                                    "--interval", str(interval_ms)], name="worker")
        self.port: int | None = None

    def wait_ready(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.process.output().splitlines():
                if line.startswith("{") and '"ready"' in line:
                    self.port = int(json.loads(line)["port"])
                    return self.port
            if not self.process.alive():
                break
            time.sleep(0.05)
        out = self.process.output()[-2000:]
        self.process.stop()
        raise RuntimeError(f"node worker not ready within {timeout}s:\n{out}")

    def stop(self) -> None:
        self.process.stop()


def node_script_args(script: str, **flags: Any) -> list[str]:
    """['node', script, '--k', 'v', ...]; True -> bare flag, False/None -> omitted, lists/dicts -> JSON."""
    args = ["node", script]
    for key, value in flags.items():
        if value is None or value is False:
            continue
        args.append(f"--{key}")
        if value is not True:
            args.append(json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    return args


def run_node_json(script: str, *, timeout: float = 20.0, **flags: Any) -> Any:
    """Run a Node helper script to completion (blocking) and return its JSON output."""
    done = subprocess.run(node_script_args(script, **flags), cwd=JS_DIR, capture_output=True, timeout=timeout,
                          text=True, stdin=subprocess.DEVNULL)
    return _parse_output(script, done.returncode, done.stdout, done.stderr)


async def arun_node_json(script: str, *, timeout: float = 20.0, **flags: Any) -> Any:
    """`run_node_json` without blocking the event loop (needed when the script calls a server in this loop)."""
    proc = await asyncio.create_subprocess_exec(*node_script_args(script, **flags), cwd=JS_DIR,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                stdin=asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return _parse_output(script, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _parse_output(script: str, code: int | None, out: str, err: str) -> Any:
    lines = [line for line in out.splitlines() if line.strip()]
    if code != 0 or not lines:
        raise RuntimeError(f"node {script} exited {code}: stdout={out[-1000:]!r} stderr={err[-2000:]!r}")
    return json.loads(lines[-1])


# -- pytest fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def require_node() -> None:
    """Skip (or fail under CI=true) when Node.js or the grenache npm packages are not installed."""
    reason = node_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but Grenache interop cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def grapes(require_node) -> Iterator[GrapeCluster]:
    """Two real grapes on free loopback ports, bootstrapped to each other and answering.

    The value behaves as the list of their HTTP URLs (`grapes[0]`, `list(grapes)`); it also has
    `.stop()` and `.start()` (same ports again, empty DHT), `.restart()`, `.pids`, `.dht_ports`.
    """
    cluster = GrapeCluster(2)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def node_worker(require_node) -> Iterator[Callable[..., NodeWorker]]:
    """Factory: `node_worker(grape_url, service, worker_id=...)` starts js/worker.js and waits until
    its first announce succeeded (`.port` is then set). It blocks while waiting, so async tests
    call it as `await asyncio.to_thread(node_worker, url, service)`. All workers stop at teardown."""
    started: list[NodeWorker] = []

    def start(grape_url: str, service: str, **kwargs) -> NodeWorker:
        worker = NodeWorker(grape_url, service, **kwargs)
        started.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
